"""An in-process cluster of ``RaftCore``s on one ``task.Clock``: MemoryPersister, and a
``FakeNetwork`` that delivers every message through the clock (deterministic, no sockets)."""

from __future__ import annotations

from twisted.internet import task

from ursula.core.cluster import CoreSettings, RaftCore
from ursula.core.persist import MemoryPersister
from ursula.core.placement import Placement, group_of
from ursula.raft import LEADER, MemoryStorage
from ursula.wire.fake import FakeNetwork

START = 1_700_000_000.0
BUCKET = "_default"
OCTETS = "application/octet-stream"


class Harness:
    def __init__(self, nodes: int = 3, groups: int = 2, latency: float = 0.001,
                 replication: int = 0, **settings):
        self.clock = task.Clock()
        self.clock.advance(START)
        self.net = FakeNetwork(self.clock, latency=latency)
        voters = list(range(1, nodes + 1))
        self.settings = CoreSettings(**settings)
        self.group_count = groups
        if replication:  # groups placed on `replication` of the nodes each
            self.placements = {i: Placement(voters, replication, groups) for i in voters}
            self.cores = {
                i: RaftCore(self.clock, i, groups,
                            {g: MemoryStorage(self.placements[i].initial(g))
                             for g in self.placements[i].placed_on(i)},
                            MemoryPersister(), self.net.transport(i), self.settings,
                            placement=self.placements[i])
                for i in voters}
            return
        self.cores = {
            i: RaftCore(self.clock, i, groups, {g: MemoryStorage(voters) for g in range(groups)},
                        MemoryPersister(), self.net.transport(i), self.settings)
            for i in voters}

    def start(self) -> Harness:
        for core in self.cores.values():
            core.start()
        return self

    def stop(self) -> None:
        for core in self.cores.values():
            core.stop()
        self.run(0.1)

    @property
    def now(self) -> float:
        return self.clock.seconds()

    def run(self, seconds: float, step: float = 0.001) -> None:
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end:
            self.clock.advance(min(step, end - self.clock.seconds()))

    def run_until(self, predicate, timeout: float = 10.0, step: float = 0.001) -> float:
        """Advance until ``predicate()``; returns the seconds it took."""
        started = self.clock.seconds()
        while not predicate():
            if self.clock.seconds() - started > timeout:
                raise AssertionError(f"not reached within {timeout} s of clock time")
            self.clock.advance(step)
        return self.clock.seconds() - started

    def leader(self, group: int) -> int | None:
        """The node that leads ``group`` (ignoring frozen nodes), or None."""
        found = [i for i, core in self.cores.items()
                 if i not in self.net.frozen and group in core.groups
                 and core.groups[group].node.role == LEADER]
        return max(found, key=lambda i: self.cores[i].groups[group].node.term) if found else None

    def elect(self, timeout: float = 10.0) -> None:
        """Run until every group has a leader that every node knows."""
        def settled():
            for g in range(self.group_count):
                leader = self.leader(g)
                if leader is None:
                    return False
                if any(core.groups[g].node.leader != leader for i, core in self.cores.items()
                       if i not in self.net.frozen and g in core.groups):
                    return False
            return True
        self.run_until(settled, timeout)

    def group_of(self, stream: str, bucket: str = BUCKET) -> int:
        return group_of(bucket, stream, self.group_count)

    def stream_in(self, group: int, prefix: str = "s") -> str:
        """A stream name that lands in ``group``."""
        n = 0
        while self.group_of(f"{prefix}{n}") != group:
            n += 1
        return f"{prefix}{n}"

    def submit(self, node: int, command) -> list:
        """Submit through ``node``; the returned list receives the result (or Failure)."""
        results: list = []
        self.cores[node].submit(command).addBoth(results.append)
        return results

    def tail(self, node: int, stream: str, bucket: str = BUCKET) -> int:
        group = self.cores[node].groups[self.group_of(stream, bucket)]
        return group.machine.head(bucket, stream, int(self.now * 1000)).tail
