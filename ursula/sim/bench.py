"""No-fault throughput of the pure Raft core: a 3-node cluster in one process.

What lives here: `bench()`.  Messages go straight from one node's Ready to the next node's
`step` (no network, no clock, no state machine): this measures what the core itself costs
per committed entry.  Two numbers: one 100-byte entry per round trip (no batching), and
batches of entries proposed between Readies (how the leader batches one reactor turn).

May import: the standard library and ursula.raft.
"""

from __future__ import annotations

import random
import time
from collections import deque

from ursula.raft import Config, MemoryStorage, RaftNode


class _Cluster:
    def __init__(self, n: int) -> None:
        ids = list(range(1, n + 1))
        self.storages = {i: MemoryStorage(ids) for i in ids}
        self.nodes = {i: RaftNode(Config(id=i), self.storages[i], random.Random(i)) for i in ids}
        self.queue: deque = deque()
        self.applied = 0

    def process(self, i: int) -> None:
        node = self.nodes[i]
        st = self.storages[i]
        while node.has_ready():
            rd = node.ready()
            if rd.entries:
                st.append(rd.entries)
            if rd.hard_state is not None:
                st.hard_state = rd.hard_state
            self.queue.extend(rd.messages)
            if i == 1:
                self.applied += sum(1 for e in rd.committed_entries if e.data)
            node.advance(rd)

    def pump(self) -> None:
        nodes = self.nodes
        q = self.queue
        for i in nodes:
            self.process(i)
        while q:
            m = q.popleft()
            nodes[m.dst].step(m)
            self.process(m.dst)


def bench(seconds: float = 2.0, batch: int = 1, nodes: int = 3, size: int = 100) -> float:
    """Committed entries per second."""
    c = _Cluster(nodes)
    leader = c.nodes[1]
    leader.campaign()
    c.pump()
    assert leader.role == "leader"
    payload = b"x" * size
    start = time.perf_counter()
    deadline = start + seconds
    rounds = 0
    while True:
        for _ in range(batch):
            leader.propose(payload)
        c.pump()
        rounds += 1
        if rounds % 16 == 0:
            # keep the log short, as a real node would after snapshots
            for i, st in c.storages.items():
                applied = c.nodes[i].applied
                if applied - st.first_index() > 4096:
                    st.create_snapshot(applied, b"")
                    st.compact(applied)
            if time.perf_counter() >= deadline:
                break
    elapsed = time.perf_counter() - start
    return c.applied / elapsed


def main(seconds: float = 2.0) -> None:
    one = bench(seconds, batch=1)
    many = bench(seconds, batch=64)
    print(f"bench: 3 nodes, no faults, pure core: {one:,.0f} commits/s (one entry per round)")
    print(f"bench: 3 nodes, no faults, pure core: {many:,.0f} commits/s (64 entries per round)")
