"""A tiny synchronous in-memory cluster for unit tests of ursula.raft.

Messages are queued and delivered in FIFO order by `deliver()`; `cut`/`heal` drop traffic
between pairs.  Each node's "disk" is its MemoryStorage; `crash()` discards the RaftNode (and
anything not persisted), `restart()` builds a new one from the storage.  The applied state
machine is a list of entry payloads per node (empty no-op entries skipped).
"""

from __future__ import annotations

import random

from ursula.raft import ENTRY_NORMAL, ConfChange, Config, MemoryStorage, Message, RaftNode, Ready


class Cluster:
    def __init__(self, n: int = 3, seed: int = 0, **cfg) -> None:
        self.ids = list(range(1, n + 1))
        self.genesis = list(self.ids)  # the membership the group was created with
        self.joining: set[int] = set()  # nodes started on a new disk in the existing group
        self.cfg = cfg
        self.rng = random.Random(seed)
        self.storages = {i: MemoryStorage(self.ids) for i in self.ids}
        self.nodes: dict[int, RaftNode | None] = {}
        self.applied: dict[int, list[bytes]] = {i: [] for i in self.ids}
        self.applied_index: dict[int, int] = {i: 0 for i in self.ids}
        self.snap_installed: dict[int, bytes] = {}
        self.read_states: dict[int, list] = {i: [] for i in self.ids}
        self.queue: list[Message] = []
        self.cut_pairs: set[tuple[int, int]] = set()
        self.sent: list[Message] = []
        for i in self.ids:
            self.nodes[i] = self._make(i)

    def _make(self, i: int) -> RaftNode:
        cfg = Config(id=i, joining=i in self.joining, **self.cfg)
        return RaftNode(cfg, self.storages[i], random.Random(self.rng.random()))

    def node(self, i: int) -> RaftNode:
        n = self.nodes[i]
        assert n is not None
        return n

    # -- ready handling ---------------------------------------------------------------------
    def process(self, i: int) -> None:
        node = self.nodes[i]
        if node is None:
            return
        st = self.storages[i]
        while node.has_ready():
            rd: Ready = node.ready()
            if rd.snapshot is not None:
                st.apply_snapshot(rd.snapshot)
                self.snap_installed[i] = rd.snapshot.data
                self.applied[i] = decode_list(rd.snapshot.data)
                self.applied_index[i] = rd.snapshot.meta.index
            if rd.entries:
                st.append(rd.entries)
            if rd.hard_state is not None:
                st.set_hard_state(rd.hard_state)
            for m in rd.messages:
                self.sent.append(m)
                self.queue.append(m)
            for e in rd.committed_entries:
                assert e.index == self.applied_index[i] + 1, (i, e.index, self.applied_index[i])
                self.applied_index[i] = e.index
                if e.data and e.kind == ENTRY_NORMAL:
                    self.applied[i].append(e.data)
            self.read_states[i].extend(rd.read_states)
            node.advance(rd)

    def process_all(self) -> None:
        for i in self.ids:
            self.process(i)

    def deliver(self, max_steps: int = 100_000, drop=None) -> int:
        """Deliver until quiet.  `drop(msg)` -> True discards a message."""
        n = 0
        self.process_all()
        while self.queue and n < max_steps:
            m = self.queue.pop(0)
            n += 1
            if (m.src, m.dst) in self.cut_pairs or self.nodes.get(m.dst) is None:
                continue
            if drop is not None and drop(m):
                continue
            self.node(m.dst).step(m)
            self.process(m.dst)
        return n

    def tick(self, i: int, times: int = 1) -> None:
        for _ in range(times):
            self.node(i).tick()
        self.process(i)

    def tick_all(self, times: int = 1, deliver: bool = True) -> None:
        for _ in range(times):
            for i in self.ids:
                if self.nodes[i] is not None:
                    self.node(i).tick()
            self.process_all()
            if deliver:
                self.deliver()

    # -- helpers ----------------------------------------------------------------------------
    def elect(self, i: int) -> RaftNode:
        self.node(i).campaign()
        self.deliver()
        assert self.node(i).role == "leader", self.node(i)
        return self.node(i)

    def leaders(self) -> list[int]:
        return [i for i in self.ids if self.nodes[i] is not None and self.node(i).role == "leader"]

    def propose(self, i: int, data: bytes) -> int:
        idx = self.node(i).propose(data)
        self.deliver()
        return idx

    def change(self, i: int, op: int, node: int) -> int:
        """Node i (the leader) proposes a membership change; delivered until quiet."""
        idx = self.node(i).propose_conf_change(ConfChange(op, node))
        self.deliver()
        return idx

    def join(self, i: int) -> RaftNode:
        """A new node i with an empty disk: it starts from the group's genesis membership, which
        it is not part of, and learns every change from the leader's log or snapshot."""
        if i not in self.ids:
            self.ids.append(i)
        self.joining.add(i)
        self.storages[i] = MemoryStorage(self.genesis)
        self.applied[i] = []
        self.applied_index[i] = 0
        self.read_states[i] = []
        self.nodes[i] = self._make(i)
        return self.node(i)

    def cut(self, a: int, b: int) -> None:
        self.cut_pairs |= {(a, b), (b, a)}

    def isolate(self, i: int) -> None:
        for j in self.ids:
            if j != i:
                self.cut(i, j)

    def heal(self) -> None:
        self.cut_pairs.clear()

    def crash(self, i: int) -> None:
        self.nodes[i] = None
        self.queue = [m for m in self.queue if m.dst != i]

    def restart(self, i: int) -> RaftNode:
        st = self.storages[i]
        snap = st.snapshot()
        self.applied[i] = decode_list(snap.data) if snap.meta.index else []
        self.applied_index[i] = snap.meta.index
        self.nodes[i] = self._make(i)
        self.process(i)
        return self.node(i)

    def snapshot_and_compact(self, i: int, keep: int = 0) -> None:
        """Node i snapshots its applied list and compacts its log up to applied - keep."""
        st = self.storages[i]
        idx = self.applied_index[i]
        st.create_snapshot(idx, encode_list(self.applied[i]), self.node(i).conf_at(idx))
        if idx - keep > st.first_index() - 1:
            st.compact(idx - keep)


def encode_list(items: list[bytes]) -> bytes:
    import cbor2

    return cbor2.dumps(items)


def decode_list(data: bytes) -> list[bytes]:
    import cbor2

    return list(cbor2.loads(data)) if data else []
