"""RaftNode: one replica of one Raft group, sans-I/O, modelled on etcd/raft.

What lives here: `Config`, `Ready`, `RaftNode` (the role state machine: follower,
pre-candidate, candidate, leader) and its errors.

The node never reads a clock, never does I/O and draws randomness only from the
`random.Random` the caller passes in.  The caller drives it:

    node.tick()                 # every tick of the caller's clock
    node.step(msg)              # every message that arrives from a peer
    node.propose(data)          # leader only; returns the entry's index
    node.propose_conf_change(cc)  # leader only: add a learner, promote it, remove a member
    node.read_index(ctx)        # linearizable read; answer comes back as a ReadState
    while node.has_ready():
        rd = node.ready()
        persist rd.snapshot, rd.entries, rd.hard_state   (in that order, durably)
        send rd.messages                                  (only after persisting)
        install rd.snapshot into the state machine, then apply rd.committed_entries
        serve reads in rd.read_states once applied >= their index
        node.advance(rd)

Membership (`ConfChange`, one server at a time, as the Raft thesis and etcd have it): a
learner receives the log and snapshots and never counts towards a quorum; a change is an entry
of its own kind (`ENTRY_CONF_CHANGE`, which the application skips) that takes effect on every
replica when it is applied (committed), and is kept in snapshots (`conf_at`). The leader takes
one change at a time (the previous one applied) and none before it has committed an entry of
its own term; a leader removed by a change steps down once the change is applied. A joining
node (`Config.joining`: a new or wiped disk) takes its commit index only from AppendEntries,
never from a heartbeat (whose commit a stale leader caps by the node's progress from before
the wipe).

May import: the standard library and ursula.raft.* only.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ursula.raft.log import MemoryStorage, RaftLog
from ursula.raft.messages import (
    ENTRY_CONF_CHANGE,
    NONE,
    PROMOTE,
    AppendEntries,
    AppendResponse,
    ConfChange,
    ConfState,
    Entry,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    Snapshot,
    SnapshotResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from ursula.raft.progress import (
    PROBE,
    REPLICATE,
    SNAPSHOT,
    VOTE_LOST,
    VOTE_WON,
    ProgressTracker,
)
from ursula.raft.readonly import ReadOnly, ReadState

FOLLOWER = "follower"
PRE_CANDIDATE = "pre-candidate"
CANDIDATE = "candidate"
LEADER = "leader"


class RaftError(Exception):
    pass


class NotLeader(RaftError):
    """Proposal or transfer on a non-leader.  `leader` is the known leader id or NONE."""

    def __init__(self, leader: int) -> None:
        super().__init__(f"not leader (leader is {leader or 'unknown'})")
        self.leader = leader


class ProposalDropped(RaftError):
    """The leader is handing leadership over and takes no proposals, or cannot take this
    membership change now (one is in flight, or it has not committed an entry of its term)."""


class ConfChangeRefused(RaftError):
    """A membership change that does not apply to the group's membership."""


@dataclass
class Config:
    id: int
    election_tick: int = 10
    heartbeat_tick: int = 1
    max_size_per_msg: int = 1 << 20
    max_inflight: int = 256
    pre_vote: bool = True
    check_quorum: bool = True
    snapshot_chunk_size: int = 60 * 1024
    snapshot_window: int = 4  # snapshot chunks in flight to one follower
    snapshot_ahead: int = 16  # early chunks a follower keeps until the ones before them come
    max_apply_size: int | None = None
    # Deliberately broken rules, for showing that the simulator's checker bites.  Never set
    # these outside tests.
    unsafe_commit_any_term: bool = False
    unsafe_vote_twice: bool = False
    unsafe_vote_stale_log: bool = False  # grant a vote without the up-to-date check (5.4.1)
    unsafe_no_prev_check: bool = False  # accept AppendEntries without the prev-term check
    unsafe_no_truncate: bool = False  # keep our entries that conflict with the leader's
    unsafe_commit_past_last_new: bool = False  # follower commit not capped by last new entry
    unsafe_heartbeat_commit_uncapped: bool = False  # heartbeats carry the leader's commit as is
    unsafe_read_no_quorum: bool = False  # answer ReadIndex without a quorum heartbeat round
    unsafe_conf_changes_in_flight: bool = False  # take a change while another is not applied
    # A node whose disk is new in a group that already exists (it joins, or comes back after
    # its disk was wiped): it has lost any vote it cast before, so it neither votes nor
    # campaigns until it has heard from a leader (and taken its term) and then applied its
    # own promotion.
    joining: bool = False
    unsafe_learners_count: bool = False  # count learners towards the commit quorum
    unsafe_joining_heartbeat_commit: bool = False  # a joining node commits from heartbeats
    unsafe_snapshot_retransmit: bool = False  # a chunk for every chunk answer and heartbeat

    def validate(self) -> None:
        if self.id == NONE:
            raise ValueError("node id must be a positive int")
        if self.heartbeat_tick <= 0 or self.election_tick <= self.heartbeat_tick:
            raise ValueError("need 0 < heartbeat_tick < election_tick")
        if self.max_inflight <= 0 or self.snapshot_chunk_size <= 0 or self.snapshot_window <= 0:
            raise ValueError("max_inflight, snapshot_chunk_size and snapshot_window must be "
                             "positive")


@dataclass
class Ready:
    """One batch of work for the application.  See the module docstring for the order."""

    hard_state: HardState | None = None  # None: unchanged since the last Ready
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    role: str = FOLLOWER
    leader: int = NONE

    @property
    def must_sync(self) -> bool:
        return bool(self.entries) or self.hard_state is not None or self.snapshot is not None


@dataclass(slots=True)
class _SnapRecv:
    leader: int
    term: int
    meta: object
    data: bytearray
    ahead: dict = field(default_factory=dict)  # offset -> (chunk, done) that came early



class RaftNode:
    def __init__(self, config: Config, storage: MemoryStorage, rng: random.Random) -> None:
        config.validate()
        self.config = config
        self.id = config.id
        self.rng = rng
        self.storage = storage
        # an empty membership: a node that joins an existing group (it waits for the leader's
        # log or snapshot, and never campaigns until a change makes it a voter)
        hs, conf = storage.initial_state()
        self.log = RaftLog(storage, config.max_apply_size)
        self.tracker = ProgressTracker(conf.voters, config.max_inflight, conf.learners)
        if config.unsafe_learners_count:
            self.tracker.unsafe_learners_count = True
        # the memberships applied, (index, conf), oldest first: the snapshot's, then changes
        self.confs: list[tuple[int, ConfState]] = [(self.log.first_index() - 1, conf)]
        self.pending_conf_index = 0  # the last membership change this leader appended
        self.joining = config.joining
        self._joined_term = 0  # joining: the term of the first leader heard from
        self.term = hs.term
        self.vote = hs.vote
        if hs.commit > self.log.committed:
            self.log.commit_to(hs.commit)
        self.role = FOLLOWER
        self.lead = NONE
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.readonly = ReadOnly()
        self.pending_reads: list[tuple[bytes, int]] = []  # before the first commit in term
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = config.election_tick
        self.lead_transferee = NONE
        self._need_bcast = False
        self._snap_recv: _SnapRecv | None = None
        self._prev_hs = hs
        self._become_follower(self.term, NONE)
        # committed changes take effect now, before the application replays them
        first = self.log.first_index()
        if self.log.committed >= first:
            for entry in self.log.slice(first, self.log.committed + 1) or ():
                if entry.kind == ENTRY_CONF_CHANGE:
                    self.apply_conf_entry(entry)

    # ------------------------------------------------------------------ introspection
    @property
    def voters(self) -> tuple[int, ...]:
        return self.tracker.voters

    @property
    def learners(self) -> tuple[int, ...]:
        return self.tracker.learners

    @property
    def conf_state(self) -> ConfState:
        """The membership in effect (the last change applied)."""
        return self.confs[-1][1]

    def conf_at(self, index: int) -> ConfState:
        """The membership in effect once entry ``index`` is applied (for a snapshot there)."""
        for at, conf in reversed(self.confs):
            if at <= index:
                return conf
        return self.confs[0][1]

    @property
    def leader(self) -> int:
        return self.lead

    @property
    def committed(self) -> int:
        return self.log.committed

    @property
    def applied(self) -> int:
        return self.log.applied

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def __repr__(self) -> str:
        return f"RaftNode(id={self.id} {self.role} term={self.term} lead={self.lead} {self.log})"

    # ------------------------------------------------------------------ public driving API
    def tick(self) -> None:
        if self.role == LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def campaign(self) -> None:
        """Start an election now (as if the election timeout fired)."""
        self._hup(transfer=False)

    def propose(self, data: bytes) -> int:
        """Append `data` as a new entry; returns its index (its term is `self.term`)."""
        if self.role != LEADER:
            raise NotLeader(self.lead)
        if self.lead_transferee != NONE:
            raise ProposalDropped("leadership transfer in progress")
        index = self.log.last_index() + 1
        self.log.append([Entry(self.term, index, data)])
        self._need_bcast = True
        return index

    def propose_conf_change(self, cc: ConfChange) -> int:
        """Append a membership change; returns its index. It takes effect when applied."""
        if self.role != LEADER:
            raise NotLeader(self.lead)
        if self.lead_transferee != NONE:
            raise ProposalDropped("leadership transfer in progress")
        if not self.config.unsafe_conf_changes_in_flight:
            if not self._committed_in_term():
                raise ProposalDropped("a new leader commits an entry of its term first")
            if self.pending_conf_index > self.log.applied:
                raise ProposalDropped("another membership change is in flight")
        try:
            self.conf_state.changed(cc)
        except ValueError as error:
            raise ConfChangeRefused(str(error)) from None
        index = self.log.last_index() + 1
        self.log.append([Entry(self.term, index, cc.encode(), ENTRY_CONF_CHANGE)])
        self.pending_conf_index = index
        self._need_bcast = True
        return index

    def read_index(self, ctx: bytes) -> bool:
        """Ask for a linearizable read point.  The answer arrives as a ReadState with this ctx
        in a later Ready (ctx must be unique per request).  Returns False if the request was
        dropped (no known leader); the caller retries."""
        if not ctx:
            raise ValueError("ctx must be non-empty")
        if self.role == LEADER:
            if not self._committed_in_term():
                self.pending_reads.append((ctx, self.id))
            else:
                self._leader_read(ctx, self.id)
            return True
        if self.lead == NONE:
            return False
        self._send(ReadIndexRequest(self.term, self.id, self.lead, ctx))
        return True

    def match_of(self, peer: int) -> int:
        """The last log index the leader knows ``peer`` holds (0 when not the leader, or for a
        node that is not a member)."""
        if self.role != LEADER:
            return 0
        pr = self.tracker.progress.get(peer)
        return 0 if pr is None else pr.match

    def last_index(self) -> int:
        """The index of the last entry of this node's log."""
        return self.log.last_index()

    def transfer_leadership(self, to: int) -> None:
        """Hand leadership to `to` (graceful shutdown): catch it up, then send TimeoutNow."""
        if self.role != LEADER:
            raise NotLeader(self.lead)
        if to == self.id or to not in self.tracker.voters:
            return
        if self.lead_transferee == to:
            return
        self.lead_transferee = to
        self.election_elapsed = 0
        pr = self.tracker.progress[to]
        if pr.match == self.log.last_index():
            self._send(TimeoutNow(self.term, self.id, to))
        else:
            self._send_append(to)

    # ------------------------------------------------------------------ ready / advance
    def _flush(self) -> None:
        if self._need_bcast:
            self._need_bcast = False
            if self.role == LEADER:
                self._bcast_append()

    def has_ready(self) -> bool:
        self._flush()
        u = self.log.unstable
        return bool(
            self.msgs
            or u.entries
            or u.snapshot is not None
            or self.read_states
            or self.log.has_next_committed()
            or self.hard_state() != self._prev_hs
        )

    def ready(self) -> Ready:
        self._flush()
        u = self.log.unstable
        hs = self.hard_state()
        rd = Ready(
            hard_state=hs if hs != self._prev_hs else None,
            entries=list(u.entries),
            snapshot=u.snapshot,
            committed_entries=self.log.next_committed_entries(),
            messages=self.msgs,
            read_states=self.read_states,
            role=self.role,
            leader=self.lead,
        )
        self.msgs = []
        self.read_states = []
        return rd

    def advance(self, rd: Ready) -> None:
        """The application has persisted, sent and applied everything in `rd`."""
        if rd.hard_state is not None:
            self._prev_hs = rd.hard_state
        if rd.snapshot is not None:
            self.log.stable_snap_to(rd.snapshot.meta.index)
            self.log.applied_to(rd.snapshot.meta.index)
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
            if self.role == LEADER:
                # The leader counts itself towards a quorum only once its own copy is durable.
                pr = self.tracker.progress.get(self.id)
                if pr is not None and pr.maybe_update(self.log.stable_last_index()):
                    if self._maybe_commit():
                        self._need_bcast = True
        if rd.committed_entries:
            for entry in rd.committed_entries:
                if entry.kind == ENTRY_CONF_CHANGE:
                    self.apply_conf_entry(entry)
            self.log.applied_to(rd.committed_entries[-1].index)

    # ------------------------------------------------------------------ membership
    def apply_conf_entry(self, entry: Entry) -> None:
        """Put the committed membership change ``entry`` into effect (``advance`` does it for
        the committed entries of a Ready; an application that applies entries before calling
        ``advance`` calls it then, so that a snapshot of its state has the right ``conf_at``).
        Idempotent."""
        if entry.index <= self.confs[-1][0]:
            return  # already in effect (replayed at start, or below a snapshot)
        try:
            change = ConfChange.decode(entry.data)
            conf = self.conf_state.changed(change)
        except (ValueError, TypeError):
            return  # one that does not apply changes nothing, on every replica alike
        if (self.joining and change.op == PROMOTE and change.node == self.id
                and self._joined_term and entry.term >= self._joined_term):
            self.joining = False  # promoted since it joined: a voter like the others
        floor = self.log.first_index() - 1  # the snapshot's index: older changes are history
        older = [c for c in self.confs if c[0] < floor]
        self.confs = older[-1:] + [c for c in self.confs if c[0] >= floor]
        self.confs.append((entry.index, conf))
        self.tracker.set_members(conf.voters, conf.learners, self.log.last_index())
        if self.role == LEADER:
            if self.id not in conf.voters:
                self._become_follower(self.term, NONE)  # removed: step down
                return
            if self.lead_transferee != NONE and self.lead_transferee not in conf.voters:
                self.lead_transferee = NONE
            self._maybe_commit()  # a smaller quorum may commit more
            self._need_bcast = True
        elif self.role != FOLLOWER and self.id not in conf.voters:
            self._become_follower(self.term, NONE)

    # ------------------------------------------------------------------ role changes
    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_election_timeout()
        self.lead_transferee = NONE
        self.tracker.reset_votes()
        self.tracker.reset_progress(
            self.id, self.log.last_index(), min(self.log.stable_last_index(), self.log.last_index())
        )
        self.readonly.reset()
        self.pending_reads = []
        self._need_bcast = False

    def _reset_randomized_election_timeout(self) -> None:
        et = self.config.election_tick
        self.randomized_election_timeout = et + self.rng.randrange(et)

    def _become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.role = FOLLOWER
        self.lead = lead

    def _become_pre_candidate(self) -> None:
        # Does not change term or vote: a pre-vote must not disturb anyone.
        self.tracker.reset_votes()
        self.role = PRE_CANDIDATE
        self.lead = NONE

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = CANDIDATE

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.lead = self.id
        self.role = LEADER
        self.tracker.progress[self.id].become_replicate()
        # a change appended by an earlier leader may still be in flight
        self.pending_conf_index = self.log.last_index()
        # A no-op entry of the new term: committing it commits everything before it (§5.4.2)
        # and lets ReadIndex know the commit index is current.
        self.log.append([Entry(self.term, self.log.last_index() + 1, b"")])
        self._need_bcast = True

    def _promotable(self) -> bool:
        return not self.joining and self.id in self.tracker.voters

    def _hup(self, transfer: bool) -> None:
        if self.role == LEADER or not self._promotable():
            return
        if self.config.pre_vote and not transfer:
            self._campaign(pre=True, transfer=False)
        else:
            self._campaign(pre=False, transfer=transfer)

    def _campaign(self, pre: bool, transfer: bool) -> None:
        if pre:
            self._become_pre_candidate()
            vote_term = self.term + 1
        else:
            self._become_candidate()
            vote_term = self.term
        if self._poll(self.id, True) == VOTE_WON:
            # single-voter group
            if pre:
                self._campaign(pre=False, transfer=transfer)
            else:
                self._become_leader()
            return
        last_index = self.log.last_index()
        last_term = self.log.last_term()
        for v in self.tracker.voters:
            if v != self.id:
                self._send(VoteRequest(vote_term, self.id, v, last_index, last_term, pre, transfer))

    def _poll(self, node: int, granted: bool) -> str:
        self.tracker.record_vote(node, granted)
        return self.tracker.tally()

    # ------------------------------------------------------------------ ticks
    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self._promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self._hup(transfer=False)

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.config.election_tick:
            self.election_elapsed = 0
            if self.config.check_quorum:
                if not self.tracker.quorum_active(self.id):
                    # Cannot reach a majority: step down so clients look elsewhere.
                    self._become_follower(self.term, NONE)
                    return
                self.tracker.reset_recent_active(self.id)
            if self.lead_transferee != NONE:
                self.lead_transferee = NONE  # transfer timed out
        if self.heartbeat_elapsed >= self.config.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat(self.readonly.last_pending_ctx())

    # ------------------------------------------------------------------ step
    def step(self, m: Message) -> None:
        """Handle one message from a peer."""
        if m.dst != self.id:
            return
        if m.term > self.term:
            if isinstance(m, VoteRequest):
                in_lease = (
                    self.config.check_quorum
                    and self.lead != NONE
                    and self.election_elapsed < self.config.election_tick
                )
                if in_lease and not m.transfer:
                    # We heard from a live leader within the election timeout: a node that
                    # wants an election is partitioned or rejoining; do not let it disrupt us.
                    return
            if isinstance(m, VoteRequest) and m.pre:
                pass  # never adopt a pre-vote's term
            elif isinstance(m, VoteResponse) and m.pre and m.granted:
                pass  # the would-be term; we adopt it only when the pre-vote wins
            elif isinstance(m, (AppendEntries, Heartbeat, InstallSnapshot)):
                self._become_follower(m.term, m.src)
            else:
                self._become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.config.check_quorum or self.config.pre_vote) and isinstance(
                m, (AppendEntries, Heartbeat)
            ):
                # A stale leader (e.g. back from a partition) learns our term and steps down;
                # otherwise, with pre-vote, it could keep us from ever electing anyone.
                self._send(AppendResponse(self.term, self.id, m.src, 0))
            elif isinstance(m, VoteRequest) and m.pre:
                self._send(VoteResponse(self.term, self.id, m.src, False, True))
            return

        if isinstance(m, VoteRequest):
            self._handle_vote_request(m)
            return
        if self.role == LEADER:
            self._step_leader(m)
        elif self.role == FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _handle_vote_request(self, m: VoteRequest) -> None:
        if self.joining:  # it may have voted in this term before its disk was new
            self._send(VoteResponse(self.term, self.id, m.src, False, m.pre))
            return
        can_vote = (
            self.vote == m.src
            or (self.vote == NONE and self.lead == NONE)
            or (m.pre and m.term > self.term)
        )
        if self.config.unsafe_vote_twice and not m.pre and self.role == FOLLOWER:
            can_vote = True  # BROKEN on purpose: a second vote in the same term
        up_to_date = self.log.is_up_to_date(m.last_index, m.last_term)
        if self.config.unsafe_vote_stale_log:
            up_to_date = True  # BROKEN on purpose: vote for a candidate missing entries
        if can_vote and up_to_date:
            self._send(VoteResponse(m.term, self.id, m.src, True, m.pre))
            if not m.pre:
                self.election_elapsed = 0
                self.vote = m.src
        else:
            self._send(VoteResponse(self.term, self.id, m.src, False, m.pre))

    # -- leader
    def _step_leader(self, m: Message) -> None:
        if isinstance(m, AppendResponse):
            self._leader_append_response(m)
        elif isinstance(m, HeartbeatResponse):
            pr = self.tracker.progress.get(m.src)
            if pr is None:
                return
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state == REPLICATE and pr.inflights.full():
                # Appends in the window may have been lost: free a slot so we send again (a
                # gap is then rejected by the follower and we fall back to probing).
                pr.inflights.free_first()
            if pr.state == SNAPSHOT:
                # retransmit the chunk we are waiting on (from where the follower said it is,
                # if it said it is behind) when no answer moved the transfer on since the last
                # heartbeat (the chunk was lost): one sent while chunks still flow would add
                # one more chunk in circulation per heartbeat, a storm that never drains
                if not pr.snap_answered or self.config.unsafe_snapshot_retransmit:
                    if pr.snap_low is not None:
                        pr.snap_offset, pr.snap_low = pr.snap_low, None
                    self._send_snapshot_chunk(m.src, again=True)
                pr.snap_answered = False
            elif pr.match < self.log.last_index():
                self._send_append(m.src)
            if m.ctx:
                acks = self.readonly.recv_ack(m.src, m.ctx)
                if acks is not None and self.tracker.has_quorum(acks | {self.id}):
                    for st in self.readonly.advance(m.ctx):
                        self._answer_read(st.ctx, st.index, st.requester)
        elif isinstance(m, SnapshotResponse):
            pr = self.tracker.progress.get(m.src)
            if pr is None:
                return
            pr.recent_active = True
            if pr.state == SNAPSHOT and pr.snap is not None and pr.snap.meta.index == m.index:
                if m.offset > pr.snap_offset or self.config.unsafe_snapshot_retransmit:
                    pr.snap_offset = m.offset  # it took the chunk: send the next
                    pr.snap_answered = True
                    pr.snap_low = None
                    self._send_snapshot_chunk(m.src)
                else:
                    # not ahead: a late or duplicate answer (the chunk it asks for is on its
                    # way), or a follower that started again. Answering it with a chunk too
                    # would keep one more chunk circulating for good: under reordering and
                    # duplication they pile up into a storm. Note it; a heartbeat with no
                    # answer that moved the transfer on sends from there.
                    pr.snap_low = m.offset
        elif isinstance(m, ReadIndexRequest):
            if m.src not in self.tracker.progress:
                return
            if not self._committed_in_term():
                self.pending_reads.append((m.ctx, m.src))
            else:
                self._leader_read(m.ctx, m.src)

    def _leader_append_response(self, m: AppendResponse) -> None:
        pr = self.tracker.progress.get(m.src)
        if pr is None:
            return
        pr.recent_active = True
        if m.reject:
            next_probe = m.hint_index
            if m.hint_term > 0:
                next_probe, _ = self.log.find_conflict_by_term(m.hint_index, m.hint_term)
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state == REPLICATE:
                    pr.become_probe()
                self._send_append(m.src)
            return
        was_paused = pr.is_paused()
        updated = pr.maybe_update(m.index)
        if not updated and not (pr.match == m.index and pr.state in (PROBE, SNAPSHOT)):
            return
        if pr.state == PROBE:
            pr.become_replicate()
        elif pr.state == SNAPSHOT:
            if pr.match >= pr.pending_snapshot or pr.match + 1 >= self.log.first_index():
                # The follower has the snapshot, or already holds everything the snapshot
                # would give it: back to normal replication.
                pr.become_probe()
                pr.become_replicate()
        elif pr.state == REPLICATE:
            pr.inflights.free_le(m.index)
        if self._maybe_commit():
            # The new commit goes out with the next Ready (``_flush``): the entries proposed
            # meanwhile (the ones held while this commit was outstanding) carry it, instead
            # of an empty AppendEntries now and another one with the entries after it.
            self._need_bcast = True
        elif was_paused:
            self._send_append(m.src)
        # Fill the pipeline window.
        while self._send_append(m.src, send_if_empty=False):
            pass
        if m.src == self.lead_transferee and pr.match == self.log.last_index():
            self._send(TimeoutNow(self.term, self.id, m.src))

    def _maybe_commit(self) -> bool:
        mci = self.tracker.committed()
        if self.config.unsafe_commit_any_term:
            # BROKEN on purpose: commit by counting regardless of the entry's term.
            if mci > self.log.committed:
                self.log.commit_to(mci)
                self._on_commit()
                return True
            return False
        if self.log.maybe_commit(mci, self.term):
            self._on_commit()
            return True
        return False

    def _on_commit(self) -> None:
        if self.pending_reads and self._committed_in_term():
            pending, self.pending_reads = self.pending_reads, []
            for ctx, requester in pending:
                self._leader_read(ctx, requester)

    def _committed_in_term(self) -> bool:
        return self.log.term(self.log.committed) == self.term

    def _leader_read(self, ctx: bytes, requester: int) -> None:
        index = self.log.committed
        if len(self.tracker.voters) == 1 or self.config.unsafe_read_no_quorum:
            # (BROKEN on purpose if unsafe_read_no_quorum: a deposed leader may answer)
            self._answer_read(ctx, index, requester)
            return
        self.readonly.add_request(index, ctx, requester)
        self._bcast_heartbeat(ctx)

    def _answer_read(self, ctx: bytes, index: int, requester: int) -> None:
        if requester == self.id:
            self.read_states.append(ReadState(index, ctx))
        else:
            self._send(ReadIndexResponse(self.term, self.id, requester, ctx, index))

    # -- candidate (pre or real)
    def _step_candidate(self, m: Message) -> None:
        if isinstance(m, AppendEntries):
            self._become_follower(m.term, m.src)
            self._handle_append(m)
        elif isinstance(m, Heartbeat):
            self._become_follower(m.term, m.src)
            self._handle_heartbeat(m)
        elif isinstance(m, InstallSnapshot):
            self._become_follower(m.term, m.src)
            self._handle_snapshot_chunk(m)
        elif isinstance(m, VoteResponse):
            if m.pre != (self.role == PRE_CANDIDATE):
                return  # a stale answer to the other kind of campaign
            result = self._poll(m.src, m.granted)
            if result == VOTE_WON:
                if self.role == PRE_CANDIDATE:
                    self._campaign(pre=False, transfer=False)
                else:
                    self._become_leader()
            elif result == VOTE_LOST:
                self._become_follower(self.term, NONE)

    # -- follower
    def _step_follower(self, m: Message) -> None:
        if self.joining and not self._joined_term and isinstance(
                m, (AppendEntries, Heartbeat, InstallSnapshot)):
            self._joined_term = m.term
        if isinstance(m, AppendEntries):
            self.election_elapsed = 0
            self.lead = m.src
            self._handle_append(m)
        elif isinstance(m, Heartbeat):
            self.election_elapsed = 0
            self.lead = m.src
            self._handle_heartbeat(m)
        elif isinstance(m, InstallSnapshot):
            self.election_elapsed = 0
            self.lead = m.src
            self._handle_snapshot_chunk(m)
        elif isinstance(m, TimeoutNow):
            self._hup(transfer=True)
        elif isinstance(m, ReadIndexResponse):
            self.read_states.append(ReadState(m.index, m.ctx))

    def _handle_append(self, m: AppendEntries) -> None:
        log = self.log
        if m.prev_index < log.committed:
            self._send(AppendResponse(self.term, self.id, m.src, log.committed))
            return
        cfg = self.config
        if cfg.unsafe_no_prev_check or cfg.unsafe_no_truncate or cfg.unsafe_commit_past_last_new:
            if self._broken_append(m):
                return
        last_new = log.maybe_append(m.prev_index, m.prev_term, m.commit, m.entries)
        if last_new is not None:
            self._send(AppendResponse(self.term, self.id, m.src, last_new))
            return
        hint_index = min(m.prev_index, log.last_index())
        hint_index, hint_term = log.find_conflict_by_term(hint_index, m.prev_term)
        self._send(
            AppendResponse(self.term, self.id, m.src, m.prev_index, True, hint_index, hint_term)
        )

    def _broken_append(self, m: AppendEntries) -> bool:
        """The planted AppendEntries mistakes (tests only).  True if `m` was handled."""
        log = self.log
        cfg = self.config
        last = log.last_index()
        if cfg.unsafe_no_prev_check and log.first_index() - 1 <= m.prev_index <= last:
            # BROKEN on purpose: take the leader's entries after prev_index whatever term we
            # hold there
            local = log.term(m.prev_index)
            if local is not None and local != m.prev_term:
                last_new = log.maybe_append(m.prev_index, local, m.commit, m.entries)
                self._send(AppendResponse(self.term, self.id, m.src, last_new))
                return True
        if cfg.unsafe_no_truncate and m.entries and log.match_term(m.prev_index, m.prev_term):
            ci = log.find_conflict(m.entries)
            if ci and ci <= last:
                # BROKEN on purpose: keep our conflicting entries, append only what is new
                tail = tuple(e for e in m.entries if e.index > last)
                last_new = m.prev_index + len(m.entries)
                log.maybe_append(last, log.last_term(), min(m.commit, last_new), tail)
                self._send(AppendResponse(self.term, self.id, m.src, last_new))
                return True
        if cfg.unsafe_commit_past_last_new:
            last_new = log.maybe_append(m.prev_index, m.prev_term, m.commit, m.entries)
            if last_new is not None:
                # BROKEN on purpose: commit up to the leader's commit, past what it sent us
                log.commit_to(min(m.commit, log.last_index()))
                self._send(AppendResponse(self.term, self.id, m.src, last_new))
                return True
        return False

    def _handle_heartbeat(self, m: Heartbeat) -> None:
        if self.joining and not self.config.unsafe_joining_heartbeat_commit:
            # A node on a new disk takes its commit index only from AppendEntries (which prove
            # the prefix): a leader that has not applied the node's removal still holds the
            # node's progress from before the wipe, and caps the heartbeat's commit by it.
            self._send(HeartbeatResponse(self.term, self.id, m.src, m.ctx))
            return
        if self.config.unsafe_heartbeat_commit_uncapped:
            # BROKEN on purpose: commit whatever we hold up to the leader's commit
            self.log.commit_to(min(m.commit, self.log.last_index()))
        else:
            self.log.commit_to(m.commit)
        self._send(HeartbeatResponse(self.term, self.id, m.src, m.ctx))

    def _handle_snapshot_chunk(self, m: InstallSnapshot) -> None:
        log = self.log
        meta = m.meta
        if meta.index <= log.committed:
            self._snap_recv = None
            self._send(AppendResponse(self.term, self.id, m.src, log.committed))
            return
        buf = self._snap_recv
        same = buf is not None and buf.meta == meta and buf.term == m.term
        old_way = self.config.unsafe_snapshot_retransmit
        if not same:
            if old_way and m.offset != 0:
                self._send(SnapshotResponse(self.term, self.id, m.src, meta.index, 0))
                return
            buf = self._snap_recv = _SnapRecv(m.src, m.term, meta, bytearray())
        assert buf is not None
        have = len(buf.data)
        if old_way and m.offset != have:
            self._send(SnapshotResponse(self.term, self.id, m.src, meta.index, have))
            return
        if m.offset > have:
            # early (reordered, or a chunk before it was lost): keep it for later, a few
            if len(buf.ahead) < self.config.snapshot_ahead:
                buf.ahead[m.offset] = (m.data, m.done)
            self._send(SnapshotResponse(self.term, self.id, m.src, meta.index, have))
            return
        end = m.offset + len(m.data)
        if end < have or (end == have and not m.done):
            # a duplicate: tell the leader where we are
            self._send(SnapshotResponse(self.term, self.id, m.src, meta.index, have))
            return
        buf.data += m.data[have - m.offset:]
        done = m.done
        while not done and len(buf.data) in buf.ahead:
            chunk, done = buf.ahead.pop(len(buf.data))
            buf.data += chunk
        if not done:
            buf.ahead = {o: c for o, c in buf.ahead.items() if o > len(buf.data)}
            self._send(SnapshotResponse(self.term, self.id, m.src, meta.index, len(buf.data)))
            return
        self._snap_recv = None
        snap = Snapshot(meta, bytes(buf.data))
        if self._restore(snap):
            self._send(AppendResponse(self.term, self.id, m.src, log.last_index()))
        else:
            self._send(AppendResponse(self.term, self.id, m.src, log.committed))

    def _restore(self, snap: Snapshot) -> bool:
        meta = snap.meta
        if meta.index <= self.log.committed:
            return False
        if self.log.match_term(meta.index, meta.term):
            # We already have the entry: just fast-forward the commit index.
            self.log.commit_to(meta.index)
            return False
        self.log.restore(snap)
        self.confs = [(meta.index, meta.conf)]
        self.tracker.set_members(meta.conf.voters, meta.conf.learners, self.log.last_index())
        self.tracker.reset_progress(self.id, self.log.last_index(), 0)
        return True

    # ------------------------------------------------------------------ sending
    def _send(self, m: Message) -> None:
        self.msgs.append(m)

    def _bcast_append(self) -> None:
        """An AppendEntries to every follower: the entries it has not been sent, or an empty
        one if it has them all but not the current commit index."""
        committed = self.log.committed
        progress = self.tracker.progress
        for v in self.tracker.members:
            if v != self.id:
                self._send_append(v, send_if_empty=progress[v].commit_sent < committed)

    def _bcast_heartbeat(self, ctx: bytes) -> None:
        committed = self.log.committed
        for v in self.tracker.members:
            if v != self.id:
                pr = self.tracker.progress[v]
                commit = min(pr.match, committed)
                if self.config.unsafe_heartbeat_commit_uncapped:
                    commit = committed  # BROKEN on purpose: not capped by what v holds
                self._send(Heartbeat(self.term, self.id, v, commit, ctx))

    def _send_append(self, to: int, send_if_empty: bool = True) -> bool:
        pr = self.tracker.progress[to]
        if pr.is_paused():
            return False
        log = self.log
        prev_index = pr.next - 1
        prev_term = log.term(prev_index)
        ents = log.entries_from(pr.next, self.config.max_size_per_msg)
        if prev_term is None or ents is None:
            # The follower needs entries we compacted: send the snapshot instead.
            if not pr.recent_active:
                return False
            pr.become_snapshot(log.snapshot())
            self._send_snapshot_chunk(to)
            return True
        if not ents and not send_if_empty:
            return False
        self._send(
            AppendEntries(self.term, self.id, to, prev_index, prev_term, tuple(ents), log.committed)
        )
        pr.commit_sent = log.committed
        if ents:
            if pr.state == REPLICATE:
                last = ents[-1].index
                pr.optimistic_update(last)
                pr.inflights.add(last)
            elif pr.state == PROBE:
                pr.probe_sent = True
        return True

    def _send_snapshot_chunk(self, to: int, again: bool = False) -> None:
        """Send the chunks of the window after what the follower acknowledged
        (``snap_offset``) not sent yet (all of them ``again``)."""
        pr = self.tracker.progress[to]
        snap = pr.snap
        if snap is None:
            return
        data = snap.data
        size = self.config.snapshot_chunk_size
        if pr.snap_offset > len(data):
            pr.snap_offset = pr.snap_sent = 0
        off = pr.snap_offset if again else max(pr.snap_offset, pr.snap_sent)
        if self.config.unsafe_snapshot_retransmit:
            off, window = pr.snap_offset, 1  # the old way: one chunk per answer and beat
        else:
            window = self.config.snapshot_window
        end = pr.snap_offset + window * size
        while off < end and (off < len(data) or (off == 0 and not data)):
            chunk = data[off : off + size]
            done = off + len(chunk) >= len(data)
            self._send(InstallSnapshot(self.term, self.id, to, snap.meta, off, chunk, done))
            off += len(chunk)
            pr.snap_sent = max(pr.snap_sent, off)
            if done:
                break
