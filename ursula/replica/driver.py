"""``GroupDriver``: one Raft group on one node, as a pure object (inputs in, effects out).

It owns the group's ``RaftNode``, its ``StreamMachine``, the proposals waiting to be batched,
the proposals waiting to commit and the reads waiting for their read index. It reads no clock,
does no I/O and creates no Deferreds: the node runtime (``ursula.core``) and the simulator
(``ursula.sim``) both run this same class; only the I/O around it differs.

Inputs::

    driver.propose(token, raw_command, request_id)   # queued; batched into one entry per turn
    driver.read(token)                               # a linearizable read (ReadIndex)
    driver.step(message) / driver.tick() / driver.campaign() / driver.transfer_leadership(to)
    rejected = driver.flush(now_ms)    # the queued proposals become one entry (once a turn;
                                       # held while a Work is in flight or an entry is
                                       # uncommitted, see ``holding``)
    work = driver.ready()              # None, or one Work: what to persist, what to send now
    out = driver.persisted()           # the Work is durable: messages, outcomes, reads, ...
    driver.snapshot_saved(snapshot)    # a snapshot requested by an Output is durable

A token is the caller's handle for one request (a Deferred, a callback, anything); the driver
never calls it, it only hands it back in ``Output.outcomes`` / ``Output.reads`` with what
happened. At most one Work is in flight: ``ready`` returns None until ``persisted``.

Parallel write (Raft thesis 10.2.1): a leader whose term and vote are already durable sends the
Work's messages (``Work.send_now``) before its own write is done; RaftNode counts the leader
towards a commit quorum only after ``persisted`` (``advance``), so a commit still needs a
majority of fsyncs. Any other Work sends its messages only after the write (``Output.messages``).

``broken`` names planted rules (for the simulator's bite tests only): see ``BROKEN_RULES``.
``reducer`` is the compute extension's reducer, handed to every ``StreamMachine`` it makes.

May import: the standard library, ``ursula.raft`` and ``ursula.stream``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ursula.raft import LEADER, NONE, Config, ProposalDropped, RaftNode
from ursula.raft.messages import ENTRY_NORMAL, Entry, HardState, Message, Snapshot
from ursula.raft.node import ConfChangeRefused, NotLeader
from ursula.stream import StreamMachine
from ursula.stream import commands as C
from ursula.stream.entries import apply_commands, apply_entry, encode_entry
from ursula.stream.machine import Outcome

#: Planted broken rules of the driver (each must be found by the simulator's checker).
BROKEN_RULES = frozenset({
    "read_without_index",      # serve a read from local state at once (no ReadIndex round)
    "read_before_apply",       # release a read at its read index before applying up to it
    "ack_before_commit",       # answer a proposal as soon as it is in the leader's log
    "no_request_dedup",        # ignore request ids: a re-routed request may apply twice
    "send_before_persist",     # a follower acks entries (and votes) before they are durable
    "reuse_stale_proposal",    # apply a proposal's kept commands to whatever entry took its index
    "held_twice",              # proposals held while a Work was in flight are proposed twice
})

_STREAM_COMMANDS = (C.CreateStream, C.Append, C.AppendBatch, C.DeleteStream)
_REUSABLE = frozenset({C.Append, C.AppendBatch})  # decode(encode(c)) == c, checked in tests
#: While a Work is being persisted, proposals wait (one entry) until they hold this many bytes.
HOLD_BYTES = 1 << 20
#: ... and while a leader has this many entries proposed and not yet committed (0: no limit).
INFLIGHT_ENTRIES = 1


@dataclass(frozen=True, slots=True)
class Rejection:
    """A request the driver could not serve. ``kind``: ``not_leader`` (``leader`` says who
    leads, or NONE), ``retry`` (it may or may not be safe to retry: leadership changed, the
    proposal was overwritten or dropped), ``refused`` (a membership change that does not
    apply), ``shutdown``."""

    kind: str
    reason: str
    leader: int = NONE


@dataclass(frozen=True, slots=True)
class SnapshotPolicy:
    """When a group snapshots its state machine: after ``every`` entries, or once the entries
    applied since the last snapshot hold more than ``log_bytes`` and half the state's size.
    Up to ``keep`` entries, and at most ``keep_bytes`` of them, stay in the log behind a
    snapshot (for followers that lag a little; further behind, they get the snapshot), so the
    log in memory and on disk is bounded by bytes too, whatever the size of the appends."""

    every: int = 5000
    keep: int = 1000
    log_bytes: int = 16 << 20
    keep_bytes: int = 4 << 20


@dataclass(slots=True)
class Work:
    """What to make durable (in this order): ``snapshot``, ``entries``, ``hard_state``; and the
    messages that may go out while the write is in progress (``send_now``).

    ``applied_now``: the Output of the committed entries that were durable here before this
    Work (a leader's entries commit only after its own fsync, so they reach the state machine
    in the next Ready, beside new entries to write). They are applied by ``ready`` itself, and
    their outcomes are carried out at once instead of after this Work's fsync: waiting for it
    would make every answer wait for two fsyncs under load. ``None`` if there were none."""

    snapshot: Snapshot | None
    entries: list[Entry]
    hard_state: HardState | None
    send_now: list[Message]
    group_id: int = 0
    applied_now: Output | None = None  # committed entries already durable here: applied now

    @property
    def must_sync(self) -> bool:
        return bool(self.entries) or self.hard_state is not None or self.snapshot is not None


@dataclass(frozen=True, slots=True)
class AppliedEntry:
    """One applied log entry and what each of its commands did (``record_applied`` only)."""

    index: int
    term: int
    data: bytes
    results: list  # [(command, outcome), ...]


@dataclass(slots=True)
class Output:
    """The effects of one durable Work, to carry out in this order: send ``messages``; resolve
    ``outcomes`` and serve ``reads`` (the machine is now at ``applied``); wake the live readers
    of ``changed`` (or of everything if ``installed_snapshot``); save ``snapshot`` if set."""

    messages: list[Message] = field(default_factory=list)
    outcomes: list[tuple[object, Outcome | Rejection]] = field(default_factory=list)
    reads: list[object] = field(default_factory=list)
    changed: list[tuple[str, str]] = field(default_factory=list)
    installed_snapshot: bool = False
    leadership: tuple[str, int] | None = None  # (role, leader) when either changed
    snapshot: Snapshot | None = None
    applied: list[AppliedEntry] = field(default_factory=list)


class GroupDriver:
    def __init__(self, group_id: int, storage, config: Config, rng: random.Random,
                 owns=None, policy: SnapshotPolicy | None = None, parallel_write: bool = True,
                 record_applied: bool = False, broken: frozenset[str] = frozenset(),
                 hold_bytes: int = HOLD_BYTES, reducer=None,
                 inflight_entries: int = INFLIGHT_ENTRIES):
        unknown = set(broken) - BROKEN_RULES
        if unknown:
            raise ValueError(f"unknown broken rules {sorted(unknown)}")
        self.group_id = group_id
        self.storage = storage
        self.owns = owns
        self.reducer = reducer  # the compute extension's reducer (StreamMachine's)
        self.policy = policy or SnapshotPolicy()
        self.parallel_write = parallel_write
        self.hold_bytes = hold_bytes
        self.inflight_entries = inflight_entries
        self.record_applied = record_applied
        self.broken = frozenset(broken)
        snapshot = storage.snapshot()
        self.machine = (StreamMachine.restore(snapshot.data, owns, reducer)
                        if snapshot.meta.index else StreamMachine(owns, reducer))
        self._nonce = b"%x" % rng.getrandbits(48)
        self.node = RaftNode(config, storage, rng)
        self.id = config.id
        self.applied = self.node.applied
        self.snapshots_installed = 0
        self.log_bytes = 0  # entry bytes applied since the last snapshot
        self.snapshotting = False
        self._compact_all = False  # the snapshot in flight was asked for by snapshot_now
        self.busy = False
        self._work = None  # the Ready behind the Work in flight
        self._buffer: list[tuple[object, bytes, str | None]] = []
        self._buffer_commands: list = []  # the decoded commands of _buffer (or None)
        self._buffer_bytes = 0  # of the raw commands in _buffer
        self._held_once = False  # planted rule "held_twice": the buffer was held
        self._decoded: dict[int, tuple] = {}  # index -> (term, now_ms, commands, request ids)
        self._pending: dict[int, tuple[int, list[object]]] = {}  # index -> (term, tokens)
        self._reads: dict[bytes, object] = {}  # ctx -> token, waiting for a read index
        self._waiting_reads: list[tuple[int, object]] = []  # (read index, token)
        self._read_seq = 0
        self._early: list[tuple[object, Outcome]] = []  # broken rule ack_before_commit only
        self._durable_vote = (self.node.term, self.node.vote)
        self.role = self.node.role
        self.leader = self.node.leader

    # -- state ---------------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.node.role == LEADER

    @property
    def known_leader(self) -> int:
        return self.node.leader

    @property
    def voters(self) -> tuple[int, ...]:
        return self.node.voters

    @property
    def queued(self) -> int:
        """Proposals waiting for the next ``flush`` (they become one entry)."""
        return len(self._buffer)

    def has_work(self) -> bool:
        """Whether ``flush`` or ``ready`` would do something now."""
        if self._buffer and not self.holding:
            return True
        return not self.busy and self.node.has_ready()

    @property
    def holding(self) -> bool:
        """Whether ``flush`` keeps the queued proposals for now: while a Work is being
        persisted, the entries proposed meanwhile could leave only in the next Work anyway
        (a Ready goes out only after the previous one is persisted), so they wait and become
        one entry instead of one per turn, up to ``hold_bytes`` of commands.

        A leader also holds them while ``inflight_entries`` of its entries are proposed and
        not committed yet: under load the commands that arrive during one commit round trip
        (the followers' write included) then become one entry, not one per local write,
        and every entry costs each replica a journal write and two messages. An idle group
        has nothing uncommitted, so a lone request is proposed at once."""
        if self._buffer_bytes >= self.hold_bytes:
            return False
        if self.busy:
            return True
        limit = self.inflight_entries
        node = self.node
        log = node.log
        return (limit > 0 and node.role == LEADER
                and log.last_index() - log.committed >= limit)

    # -- inputs --------------------------------------------------------------------------------

    def propose(self, token, raw_command: bytes, request_id: str | None = None,
                command=None) -> Rejection | None:
        """Queue a command (leader only); its outcome comes back in a later Output.

        ``command``: the decoded form of ``raw_command``, if the caller has it (an ``Append``
        or ``AppendBatch``, whose fields survive the encoding unchanged): this node then
        applies its own entry without decoding it again."""
        if self.node.role != LEADER:
            return Rejection("not_leader", "not the leader", self.node.leader)
        self._buffer.append((token, raw_command, request_id))
        self._buffer_commands.append(command if type(command) in _REUSABLE else None)
        self._buffer_bytes += len(raw_command)
        if "held_twice" in self.broken and self.holding:  # (busy, or an entry uncommitted)
            self._held_once = True
        return None

    def propose_conf_change(self, token, change) -> Rejection | None:
        """Propose a membership change (``ursula.raft.ConfChange``; leader only); ``token``'s
        outcome (an empty ``Outcome`` once the change is applied) comes back in a later Output.
        Refused at once when it does not apply, or while another change is in flight."""
        try:
            index = self.node.propose_conf_change(change)
        except NotLeader:
            return Rejection("not_leader", "not the leader", self.node.leader)
        except ProposalDropped as error:
            return Rejection("retry", str(error))
        except ConfChangeRefused as error:
            return Rejection("refused", str(error))
        self._pending[index] = (self.node.term, [token])
        return None

    def read(self, token) -> Rejection | None:
        """A linearizable read: ``token`` comes back in ``Output.reads`` once the machine has
        applied everything committed when the read arrived (ReadIndex; no log write)."""
        if "read_without_index" in self.broken and self.node.role == LEADER:
            self._waiting_reads.append((0, token))
            return None
        self._read_seq += 1
        ctx = b"%d:%s:%d" % (self.group_id, self._nonce, self._read_seq)
        if not self.node.read_index(ctx):
            return Rejection("not_leader", "no known leader", NONE)
        self._reads[ctx] = token
        return None

    def step(self, message: Message) -> None:
        self.node.step(message)

    def tick(self) -> None:
        self.node.tick()

    def campaign(self) -> None:
        self.node.campaign()

    def transfer_leadership(self, to: int) -> None:
        if self.node.role == LEADER:
            self.node.transfer_leadership(to)

    # -- the Ready loop ------------------------------------------------------------------------

    def flush(self, now_ms: int) -> list[tuple[object, Rejection]]:
        """Turn the queued proposals into one entry stamped ``now_ms``; returns the ones that
        cannot be proposed (leadership moved since they were queued).  While ``holding``
        nothing happens: the proposals wait for the Work in flight to be persisted."""
        if not self._buffer or self.holding:
            return []
        if self._held_once:  # (the planted rule "held_twice" only)
            self._held_once = False
            self._propose_held_copy(now_ms)
        self._buffer_bytes = 0
        buffer, self._buffer = self._buffer, []
        commands, self._buffer_commands = self._buffer_commands, []
        node = self.node
        if node.role != LEADER:
            rejection = Rejection("not_leader", "not the leader", node.leader)
            return [(token, rejection) for token, _, _ in buffer]
        request_ids = [rid for _, _, rid in buffer]
        data = encode_entry(now_ms, [raw for _, raw, _ in buffer], request_ids)
        try:
            index = node.propose(data)
        except ProposalDropped:
            rejection = Rejection("retry", "the proposal was dropped (leadership changing)")
            return [(token, rejection) for token, _, _ in buffer]
        self._pending[index] = (node.term, [token for token, _, _ in buffer])
        if None not in commands:
            self._decoded[index] = (node.term, now_ms, commands,
                                    request_ids if any(request_ids) else None)
        return []

    def _propose_held_copy(self, now_ms: int) -> None:
        """The planted rule ``held_twice``: the held commands once more, in an entry of their
        own that nobody waits for and without their request ids (so they apply twice)."""
        if self.node.role == LEADER:
            data = encode_entry(now_ms, [raw for _, raw, _ in self._buffer],
                                [None] * len(self._buffer))
            try:
                self.node.propose(data)
            except ProposalDropped:
                pass

    def ready(self) -> Work | None:
        """The next Work, or None (nothing to do, or a Work is still being persisted)."""
        if self.busy or not self.node.has_ready():
            return None
        rd = self.node.ready()
        self.busy = True
        self._work = rd
        send_now: list[Message] = []
        hs = rd.hard_state
        vote_durable = hs is None or (hs.term, hs.vote) == self._durable_vote
        if "send_before_persist" in self.broken:
            send_now, rd.messages = rd.messages, []
        elif (self.parallel_write and rd.role == LEADER and vote_durable
              and rd.snapshot is None):
            send_now, rd.messages = rd.messages, []
        if "ack_before_commit" in self.broken and rd.role == LEADER:
            self._ack_unstable(rd)
        return Work(rd.snapshot, rd.entries, hs, send_now, self.group_id,
                    self._apply_durable(rd))

    def _apply_durable(self, rd) -> Output | None:
        """Apply the committed entries of ``rd`` that are already in durable storage (and are
        not rewritten by ``rd``'s own entries); ``persisted`` applies the rest."""
        committed = rd.committed_entries
        if not committed or rd.snapshot is not None:
            return None
        boundary = self.storage.last_index()
        if rd.entries:
            boundary = min(boundary, rd.entries[0].index - 1)
        if committed[0].index > boundary:
            return None
        out = Output()
        for entry in committed:
            if entry.index > boundary:
                break
            self._apply(entry, out)
        if self._waiting_reads:
            self._release_reads(out)
        return out

    def _ack_unstable(self, rd) -> None:
        """Broken rule ``ack_before_commit``: answer proposals from the leader's own log."""
        for entry in rd.entries:
            pending = self._pending.pop(entry.index, None)
            if pending is None:
                continue
            shadow = StreamMachine.restore(self.machine.snapshot(), self.owns, self.reducer)
            results = apply_entry(shadow, entry.data)
            self._early.extend((token, outcome) for token, (_, outcome)
                               in zip(pending[1], results, strict=True))

    def persisted(self) -> Output:
        """The Work from ``ready`` is durable: apply it and return what follows from it."""
        rd = self._work
        assert rd is not None and self.busy, "persisted() without a Work in flight"
        out = Output(messages=rd.messages)
        if self._early:
            out.outcomes.extend(self._early)
            self._early = []
        storage = self.storage
        if rd.snapshot is not None:
            storage.apply_snapshot(rd.snapshot)
            self.machine = StreamMachine.restore(rd.snapshot.data, self.owns, self.reducer)
            self.applied = rd.snapshot.meta.index
            self.snapshots_installed += 1
            out.installed_snapshot = True
            # proposals below the snapshot can no longer be matched to their entries
            for index in [i for i in self._pending if i <= self.applied]:
                _, tokens = self._pending.pop(index)
                out.outcomes.extend((t, Rejection("retry", "superseded by a snapshot"))
                                    for t in tokens)
            for index in [i for i in self._decoded if i <= self.applied]:
                del self._decoded[index]
        if rd.entries:
            storage.append(rd.entries)
        if rd.hard_state is not None:
            storage.set_hard_state(rd.hard_state)
            self._durable_vote = (rd.hard_state.term, rd.hard_state.vote)
        for entry in rd.committed_entries:
            self._apply(entry, out)
        for state in rd.read_states:
            token = self._reads.pop(state.ctx, None)
            if token is not None:
                self._waiting_reads.append((state.index, token))
        self.node.advance(rd)
        self._work = None
        self.busy = False
        self._leadership_changed(rd, out)
        if self._waiting_reads:
            self._release_reads(out)
        out.snapshot = self._maybe_snapshot()
        return out

    def _apply(self, entry: Entry, out: Output) -> None:
        if entry.index <= self.applied:
            return
        self.applied = entry.index
        self.log_bytes += len(entry.data)
        if entry.kind != ENTRY_NORMAL:  # a membership change: the Raft node's own
            self.node.apply_conf_entry(entry)
            if self.record_applied:
                out.applied.append(AppliedEntry(entry.index, entry.term, entry.data, []))
            self._answer_conf_change(entry, out)
            return
        dedup = "no_request_dedup" not in self.broken
        decoded = self._decoded.pop(entry.index, None) if self._decoded else None
        if decoded is not None and (decoded[0] == entry.term
                                    or "reuse_stale_proposal" in self.broken):
            # our own proposal (same index and term: the same entry): no need to decode it
            results = apply_commands(self.machine, decoded[1], decoded[2], decoded[3], dedup)
        else:
            results = apply_entry(self.machine, entry.data, dedup=dedup)
        changed = out.changed
        for command, outcome in results:
            if isinstance(command, _STREAM_COMMANDS) and outcome.error is None:
                changed.append((command.bucket, command.stream))
        if self.record_applied:
            out.applied.append(AppliedEntry(entry.index, entry.term, entry.data, results))
        pending = self._pending.pop(entry.index, None)
        if pending is None:
            return
        term, tokens = pending
        if term == entry.term:
            out.outcomes.extend((token, outcome)
                                for token, (_, outcome) in zip(tokens, results, strict=True))
        else:
            rejection = Rejection("retry", "the proposal was overwritten by a new leader")
            out.outcomes.extend((token, rejection) for token in tokens)

    def _answer_conf_change(self, entry: Entry, out: Output) -> None:
        pending = self._pending.pop(entry.index, None)
        if pending is None:
            return
        term, tokens = pending
        if term == entry.term:
            out.outcomes.extend((token, Outcome()) for token in tokens)
        else:
            rejection = Rejection("retry", "the proposal was overwritten by a new leader")
            out.outcomes.extend((token, rejection) for token in tokens)

    def _leadership_changed(self, rd, out: Output) -> None:
        if rd.role == self.role and rd.leader == self.leader:
            return
        self.role, self.leader = rd.role, rd.leader
        out.leadership = (rd.role, rd.leader)
        if rd.role != LEADER:
            # proposals of this node may never commit now; their clients retry
            rejection = Rejection("retry", "leadership changed; retry")
            for _term, tokens in self._pending.values():
                out.outcomes.extend((token, rejection) for token in tokens)
            self._pending.clear()
            if "reuse_stale_proposal" not in self.broken:
                self._decoded.clear()
            rejection = Rejection("not_leader", "leadership changed", rd.leader)
            out.outcomes.extend((token, rejection) for token in self._reads.values())
            self._reads.clear()

    def _release_reads(self, out: Output) -> None:
        keep = []
        broken = "read_before_apply" in self.broken
        for index, token in self._waiting_reads:
            if self.applied >= index or broken:
                out.reads.append(token)
            else:
                keep.append((index, token))
        self._waiting_reads = keep

    # -- snapshots -----------------------------------------------------------------------------

    def _maybe_snapshot(self) -> Snapshot | None:
        if self.snapshotting:
            return None
        storage = self.storage
        policy = self.policy
        last = storage.snapshot().meta.index
        if self.applied <= last:
            return None
        by_count = self.applied - last >= policy.every
        by_bytes = self.log_bytes >= max(policy.log_bytes, self.machine.total_bytes // 2)
        if not (by_count or by_bytes):
            return None
        self.snapshotting = True
        self.log_bytes = 0
        return storage.create_snapshot(self.applied, self.machine.snapshot(),
                                       self.node.conf_at(self.applied))

    def snapshot_now(self) -> Snapshot | None:
        """A snapshot of the applied state now, whatever the policy (None if one is being
        saved or nothing was applied since the last): for a group whose old entries keep
        journal segments alive. Once it is saved (``snapshot_saved``) the log is compacted
        up to it, no entries kept: a group idle enough to hold the journal back has no
        follower that needs them (one that does gets the snapshot)."""
        storage = self.storage
        if self.snapshotting or self.applied <= storage.snapshot().meta.index:
            return None
        self.snapshotting = True
        self.log_bytes = 0
        self._compact_all = True
        return storage.create_snapshot(self.applied, self.machine.snapshot(),
                                       self.node.conf_at(self.applied))

    def snapshot_saved(self, snapshot: Snapshot) -> int | None:
        """The snapshot from an Output is durable: compact the log behind it. Returns the
        snapshot's index (for the journal to release what it no longer needs)."""
        self.snapshotting = False
        storage = self.storage
        index = snapshot.meta.index
        upto = index - (0 if self._compact_all else self.policy.keep)
        self._compact_all = False
        first = storage.first_index()
        if upto < index and self.policy.keep_bytes is not None:
            # walk back from the snapshot while the kept entries fit in keep_bytes
            kept = 0
            i = index
            while i > max(upto, first - 1):
                kept += len(storage.entries(i, i + 1)[0].data)
                if kept > self.policy.keep_bytes:
                    break
                i -= 1
            upto = i
        if upto > first:
            storage.compact(upto)
        return index

    def fail_all(self, rejection: Rejection) -> list[tuple[object, Rejection]]:
        """Every request still waiting here, with ``rejection`` (shutdown, crash)."""
        tokens = [token for token, _, _ in self._buffer]
        for _term, pending in self._pending.values():
            tokens.extend(pending)
        tokens.extend(self._reads.values())
        tokens.extend(token for _, token in self._waiting_reads)
        tokens.extend(token for token, _ in self._early)
        self._buffer = []
        self._buffer_commands = []
        self._buffer_bytes = 0
        self._pending.clear()
        self._decoded.clear()
        self._reads.clear()
        self._waiting_reads = []
        self._early = []
        return [(token, rejection) for token in tokens]

