"""``GroupReplica``: one Raft group on this node — a RaftNode, its MemoryStorage, the group's
StreamMachine, proposals waiting to commit and reads waiting for their read index.

The runtime (``ursula.core.cluster.RaftCore``) drives it: ``process()`` once per reactor turn
when the group has work. The Ready contract is kept in this order: persist (snapshot, entries,
hard state: durable before anything that depends on them), then send messages, apply committed
entries, release reads, ``advance``.

Entries carry cbor2 ``[now_ms, [command bytes, ...]]``: every command submitted to the leader
in one reactor turn becomes one entry, stamped with the leader's clock, so all replicas apply
the same commands at the same time and reach the same state.

May import: Twisted (Deferreds only), cbor2, ``ursula.raft``, ``ursula.stream``,
``ursula.core``.
"""

from __future__ import annotations

import random

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger

from ursula.core.interfaces import Unavailable
from ursula.raft import LEADER, NONE, Config, ProposalDropped, RaftNode
from ursula.stream import StreamMachine, encode_command
from ursula.stream import commands as C
from ursula.stream.entries import apply_entry, encode_entry

log = Logger()

_STREAM_COMMANDS = (C.CreateStream, C.Append, C.AppendBatch, C.DeleteStream)


class NotLeader(Exception):
    def __init__(self, leader: int):
        super().__init__(f"not the leader (leader: {leader or 'unknown'})")
        self.leader = leader


class GroupReplica:
    def __init__(self, runtime, group_id: int, node_id: int, storage, raft_config: dict,
                 seed: int):
        self.runtime = runtime
        self.group_id = group_id
        self.storage = storage
        snapshot = storage.snapshot()
        self.owns = runtime.owns_for(group_id)
        self.machine = (StreamMachine.restore(snapshot.data, self.owns) if snapshot.meta.index
                        else StreamMachine(self.owns))
        self.releasing = False
        self.snapshots_installed = 0
        self.log_bytes = 0  # entry bytes applied since the last snapshot
        self.node = RaftNode(Config(id=node_id, **raft_config), storage, random.Random(seed))
        self.applied = self.node.applied
        self.buffer: list[tuple[bytes, Deferred]] = []
        self.pending: dict[int, tuple[int, list[Deferred]]] = {}
        self.reads: dict[bytes, Deferred] = {}
        self.waiting_reads: list[tuple[int, Deferred]] = []
        self.leader_waiters: list[Deferred] = []
        self.read_seq = 0
        self.busy = False
        self.snapshotting = False
        self.role = self.node.role
        self.leader = self.node.leader

    # -- requests ---------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.node.role == LEADER

    def submit(self, command) -> Deferred:
        """Propose a command (leader only); fires with its Outcome once applied here."""
        if not self.is_leader:
            return fail(NotLeader(self.node.leader))
        d = Deferred()
        self.buffer.append((encode_command(command), d))
        self.runtime.schedule(self)
        return d

    def read_barrier(self) -> Deferred:
        """Fires once this replica has applied everything committed when it was called
        (ReadIndex: linearizable, no log write)."""
        self.read_seq += 1
        ctx = b"%d:%d" % (self.group_id, self.read_seq)
        if not self.node.read_index(ctx):
            return fail(NotLeader(NONE))
        d = Deferred(lambda _: self.reads.pop(ctx, None))
        self.reads[ctx] = d
        self.runtime.schedule(self)
        return d

    def wait_for_leader(self) -> Deferred:
        d = Deferred(lambda d: self.leader_waiters.remove(d) if d in self.leader_waiters
                     else None)
        self.leader_waiters.append(d)
        return d

    # -- the Ready loop ---------------------------------------------------------------------

    def process(self) -> None:
        if self.busy:
            return
        self._propose_buffer()
        node = self.node
        if not node.has_ready():
            return
        rd = node.ready()
        self.busy = True
        d = self.runtime.persist(self.group_id, rd)
        d.addCallback(self._persisted, rd)
        d.addErrback(self.runtime.fatal, f"group {self.group_id}: persisting a Ready failed")

    def _propose_buffer(self) -> None:
        if not self.buffer:
            return
        buffer, self.buffer = self.buffer, []
        node = self.node
        if node.role != LEADER:
            for _, d in buffer:
                _fire_error(d, NotLeader(node.leader))
            return
        data = encode_entry(self.runtime.now_ms(), [raw for raw, _ in buffer])
        try:
            index = node.propose(data)
        except ProposalDropped:
            for _, d in buffer:
                _fire_error(d, Unavailable("the proposal was dropped (leadership changing)"))
            return
        self.pending[index] = (node.term, [d for _, d in buffer])

    def _persisted(self, _, rd) -> None:
        storage = self.storage
        if rd.snapshot is not None:
            storage.apply_snapshot(rd.snapshot)
            self.machine = StreamMachine.restore(rd.snapshot.data, self.owns)
            self.applied = rd.snapshot.meta.index
            self.snapshots_installed += 1
            self.runtime.notify_all(self)
        if rd.entries:
            storage.append(rd.entries)
        if rd.hard_state is not None:
            storage.set_hard_state(rd.hard_state)
        if rd.messages:
            self.runtime.send(self.group_id, rd.messages)
        for entry in rd.committed_entries:
            self._apply(entry)
        for state in rd.read_states:
            d = self.reads.pop(state.ctx, None)
            if d is not None:
                self.waiting_reads.append((state.index, d))
        self.node.advance(rd)
        self.busy = False
        self._leadership_changed(rd)
        if self.waiting_reads:
            self._release_reads()
        self.runtime.after_apply(self)
        self.runtime.schedule(self)

    def _leadership_changed(self, rd) -> None:
        if rd.role != self.role or rd.leader != self.leader:
            self.role, self.leader = rd.role, rd.leader
            if rd.role != LEADER:
                # proposals of this node may never commit now; their clients retry
                for _term, waiters in self.pending.values():
                    for d in waiters:
                        _fire_error(d, Unavailable("leadership changed; retry"))
                self.pending.clear()
                for d in self.reads.values():
                    _fire_error(d, NotLeader(rd.leader))
                self.reads.clear()
        if rd.leader != NONE and self.leader_waiters:
            waiters, self.leader_waiters = self.leader_waiters, []
            for d in waiters:
                if not d.called:
                    d.callback(rd.leader)

    def _apply(self, entry) -> None:
        if entry.index <= self.applied:
            return
        self.applied = entry.index
        self.log_bytes += len(entry.data)
        outcomes = []
        for command, outcome in apply_entry(self.machine, entry.data):
            outcomes.append(outcome)
            if isinstance(command, _STREAM_COMMANDS) and outcome.error is None:
                self.runtime.notify((command.bucket, command.stream))
        pending = self.pending.pop(entry.index, None)
        if pending is not None:
            term, waiters = pending
            if term == entry.term:
                for d, outcome in zip(waiters, outcomes, strict=True):
                    if not d.called:
                        d.callback(outcome)
            else:
                for d in waiters:
                    _fire_error(d, Unavailable("the proposal was overwritten; retry"))

    def _release_reads(self) -> None:
        keep = []
        for index, d in self.waiting_reads:
            if self.applied >= index:
                if not d.called:
                    d.callback(None)
            else:
                keep.append((index, d))
        self.waiting_reads = keep

    # -- snapshots --------------------------------------------------------------------------

    def maybe_snapshot(self, every: int, keep: int, log_bytes: int) -> None:
        """Snapshot after ``every`` entries, or once the log since the last snapshot holds
        more than ``log_bytes`` and at least half the state's size (so the in-memory log stays
        bounded while a large state is not rewritten for every few appends)."""
        storage = self.storage
        if self.snapshotting:
            return
        by_count = self.applied - storage.snapshot().meta.index >= every
        by_bytes = self.log_bytes >= max(log_bytes, self.machine.total_bytes // 2)
        if not (by_count or by_bytes) or self.applied <= storage.snapshot().meta.index:
            return
        snapshot = storage.create_snapshot(self.applied, self.machine.snapshot())
        self.snapshotting = True
        self.log_bytes = 0

        def saved(_):
            self.snapshotting = False
            upto = snapshot.meta.index - keep
            if upto > storage.first_index():
                storage.compact(upto)
            self.runtime.compacted(self.group_id, snapshot.meta.index)

        d = self.runtime.save_snapshot(self.group_id, snapshot)
        d.addCallback(saved)
        d.addErrback(self.runtime.fatal, f"group {self.group_id}: saving a snapshot failed")

    def fail_all(self, error: Exception) -> None:
        for _, d in self.buffer:
            _fire_error(d, error)
        self.buffer = []
        for _term, waiters in self.pending.values():
            for d in waiters:
                _fire_error(d, error)
        self.pending.clear()
        for d in list(self.reads.values()) + [d for _, d in self.waiting_reads]:
            _fire_error(d, error)
        self.reads.clear()
        self.waiting_reads = []


def _fire_error(d: Deferred, error: Exception) -> None:
    if not d.called:
        d.errback(error)
