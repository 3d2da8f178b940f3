"""One simulated replica: a real RaftNode driving a real StreamMachine, with a crashable disk.

What lives here: `Replica`.  Its `storage` (a MemoryStorage) is the disk: it survives
`crash()`; everything else (the RaftNode, the state machine, unpersisted entries, proposals
being batched, reads waiting) is lost, as after a power cut.  `restart()` rebuilds the node
from the disk and the state machine from the stored snapshot plus the committed log.

The Ready loop runs after a simulated disk delay, in the documented order: persist snapshot,
entries and hard state; then send messages; then apply committed entries; then `advance`.

Entries carry cbor2 `[now_ms, [command bytes, ...]]`: the leader batches every command that
arrived in one turn of the event loop into one entry and stamps its own simulated time, so
every replica applies identically.

May import: the standard library, cbor2, ursula.raft, ursula.stream and ursula.sim.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import cbor2

from ursula.raft import LEADER, Config, MemoryStorage, ProposalDropped, RaftNode
from ursula.raft.messages import from_wire
from ursula.stream import StreamMachine
from ursula.stream import commands as C
from ursula.stream.entries import apply_entry, encode_entry
from ursula.stream.machine import StreamError

if TYPE_CHECKING:
    from ursula.sim.run import Simulation

Reply = Callable[[tuple], Any]


class Replica:
    def __init__(self, sim: Simulation, nid: int, skew: float) -> None:
        self.sim = sim
        self.id = nid
        self.storage = MemoryStorage(sim.ids)
        self.tick_interval = int(sim.tick_us * (1.0 + skew))
        self.incarnation = 0
        self.up = False
        self.node: RaftNode | None = None
        self.machine: StreamMachine | None = None
        self.restarts = 0
        self.start()

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        sim = self.sim
        self.incarnation += 1
        snap = self.storage.snapshot()
        self.machine = StreamMachine.restore(snap.data) if snap.meta.index else StreamMachine()
        cfg = Config(id=self.id, **sim.raft_config)
        self.node = RaftNode(cfg, self.storage, random.Random(sim.rng.getrandbits(64)))
        self.applied = self.node.applied
        self.buffer: list[tuple[bytes, Reply]] = []
        self.pending: dict[int, tuple[int, list[Reply]]] = {}
        self.reads: dict[bytes, tuple[str, Reply]] = {}
        self.waiting_reads: list[tuple[int, str, Reply]] = []
        self.read_seq = 0
        self.ready_scheduled = False
        self.flush_scheduled = False
        self.led_term = -1
        self.up = True
        inc = self.incarnation
        if sim.lazy_fsync:
            st = self.storage
            self.disk = (st.hard_state, st.snap, list(st.ents))
            sim.world.after(sim.rng.randint(5, 60) * 1000, self._sync_disk, inc)
        sim.world.after(sim.rng.randint(0, self.tick_interval), self._tick, inc)
        self._after_event()

    def _sync_disk(self, inc: int) -> None:
        """Broken mode "lazy_fsync" only: the disk catches up with the page cache."""
        if inc != self.incarnation:
            return
        st = self.storage
        self.disk = (st.hard_state, st.snap, list(st.ents))
        self.sim.world.after(self.sim.rng.randint(5, 60) * 1000, self._sync_disk, inc)

    def crash(self) -> None:
        if self.sim.lazy_fsync:
            # what was "written" but never synced is lost
            hs, snap, ents = self.disk
            self.storage = MemoryStorage(self.sim.ids)
            self.storage.hard_state, self.storage.snap, self.storage.ents = hs, snap, list(ents)
        self.up = False
        self.incarnation += 1
        self.node = None
        self.machine = None
        self.buffer = []
        self.pending = {}
        self.reads = {}
        self.waiting_reads = []

    def restart(self) -> None:
        self.restarts += 1
        self.start()

    # -- events -----------------------------------------------------------------------------------
    def _tick(self, inc: int) -> None:
        if inc != self.incarnation:
            return
        self.node.tick()
        self._after_event()
        self.sim.world.after(self.tick_interval, self._tick, inc)

    def deliver(self, msg: Any) -> None:
        if not self.up:
            return
        if self.sim.wire:
            msg = from_wire(cbor2.loads(msg))
        self.node.step(msg)
        self._after_event()

    def _after_event(self) -> None:
        node = self.node
        if node.role == LEADER:
            chk = self.sim.checker
            chk.on_leader(self.id, node.term)
            if self.led_term != node.term:
                self.led_term = node.term
                chk.on_new_leader(self.id, node.term, node.log)
        if not self.ready_scheduled and node.has_ready():
            self.ready_scheduled = True
            self.sim.world.after(self.sim.disk_delay(), self._on_ready, self.incarnation)

    def _on_ready(self, inc: int) -> None:
        if inc != self.incarnation:
            return  # crashed before the disk write finished: all of it is lost
        self.ready_scheduled = False
        sim = self.sim
        node = self.node
        st = self.storage
        net = sim.net
        while node.has_ready():
            rd = node.ready()
            if rd.snapshot is not None:
                st.apply_snapshot(rd.snapshot)
                self.machine = StreamMachine.restore(rd.snapshot.data)
                self.applied = rd.snapshot.meta.index
                sim.snapshots_installed += 1
            if rd.entries:
                sim.checker.on_persist(self.id, rd.entries, node.log)
                st.append(rd.entries)
            if rd.hard_state is not None:
                st.set_hard_state(rd.hard_state)
            for m in rd.messages:
                dst = sim.replicas[m.dst]
                payload = cbor2.dumps(m.to_wire()) if sim.wire else m
                net.send(self.id, m.dst, dst.deliver, payload)
            for e in rd.committed_entries:
                self._apply(e)
            for rs in rd.read_states:
                r = self.reads.pop(rs.ctx, None)
                if r is not None:
                    self.waiting_reads.append((rs.index, r[0], r[1]))
            node.advance(rd)
        if self.waiting_reads:
            self._serve_reads()
        self._after_event()

    # -- applying -------------------------------------------------------------------------------
    def _apply(self, e) -> None:
        sim = self.sim
        chk = sim.checker
        if e.index != self.applied + 1:
            chk.fail(f"node {self.id} applied index {e.index} after {self.applied}")
        self.applied = e.index
        outs = []
        for cmd, out in apply_entry(self.machine, e.data):
            outs.append(out)
            if (
                isinstance(cmd, C.Append)
                and cmd.producer is not None
                and out.error is None
                and not out.duplicate
            ):
                p = cmd.producer
                chk.on_write(p.id, p.seq, cmd.stream, out.start_offset, out.next_offset, e.index)
        summary = tuple((o.error, o.duplicate, o.start_offset, o.next_offset) for o in outs)
        chk.on_apply(self.id, e.index, e.term, e.data, summary)
        pend = self.pending.pop(e.index, None)
        if pend is not None:
            term, replies = pend
            if term == e.term:
                for reply, out in zip(replies, outs, strict=True):
                    reply(("ok", out))
            else:
                for reply in replies:
                    reply(("retry", None))
        snap = self.storage.snapshot().meta.index
        if self.applied - snap >= sim.snapshot_every:
            self.storage.create_snapshot(self.applied, self.machine.snapshot())
            upto = self.applied - sim.compact_keep
            if upto > self.storage.first_index() - 1:
                self.storage.compact(upto)

    def _serve_reads(self) -> None:
        keep = []
        for index, stream, reply in self.waiting_reads:
            if self.applied >= index:
                try:
                    r = self.machine.read(
                        self.sim.bucket, stream, 0, 1 << 30, self.sim.world.now_ms
                    )
                    reply(("read", r.data))
                except StreamError as err:
                    reply(("read_error", err.code))
            else:
                keep.append((index, stream, reply))
        self.waiting_reads = keep

    # -- client requests --------------------------------------------------------------------------
    def submit(self, cmd: bytes, reply: Reply) -> None:
        if not self.up:
            return
        node = self.node
        if node.role != LEADER:
            reply(("not_leader", node.leader))
            return
        self.buffer.append((cmd, reply))
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.sim.world.after(0, self._flush, self.incarnation)

    def _flush(self, inc: int) -> None:
        if inc != self.incarnation:
            return
        self.flush_scheduled = False
        buf, self.buffer = self.buffer, []
        node = self.node
        if node.role != LEADER:
            for _, reply in buf:
                reply(("not_leader", node.leader))
            return
        data = encode_entry(self.sim.world.now_ms, [c for c, _ in buf])
        try:
            index = node.propose(data)
        except ProposalDropped:
            for _, reply in buf:
                reply(("retry", None))
            return
        self.pending[index] = (node.term, [r for _, r in buf])
        self._after_event()

    def submit_read(self, stream: str, reply: Reply) -> None:
        if not self.up:
            return
        self.read_seq += 1
        ctx = b"%d:%d:%d" % (self.id, self.incarnation, self.read_seq)
        if not self.node.read_index(ctx):
            reply(("not_leader", self.node.leader))
            return
        self.reads[ctx] = (stream, reply)
        self._after_event()

    def transfer_leadership(self, to: int) -> None:
        if self.up and self.node.role == LEADER:
            self.node.transfer_leadership(to)
            self._after_event()
