"""The CPU cost of one append through a 3-node cluster, in one process and repeatable.

    python bench/clustercost.py [--appends 20000] [--conns 64] [--streams 500] [--groups 4]
                                [--leaders 1,2,3,3] [--write-iterations 4]
                                [--think-iterations 3] [--profile out.prof]

What it runs: three real ``RaftCore`` nodes, each with its own group committer and journal
(``fsync = never``, in a temporary directory) and its own real ``PeerTransport``; the peers'
AMP connections are ``twisted.test.iosim`` pumps (authenticated with the real handshake), all
on one fake clock, one reactor iteration at a time. The data plane of node 1 takes every
request (``--conns`` keep-alive connections on fake transports, one 256-byte POST in flight
each, the next sent 0..``--think-iterations`` iterations after its answer); each group's
leader is placed first (``--leaders``: the node id of group 0, 1, ...; the default is what
elections gave the 500-stream run in docs/benchmarks.md), so node 1 forwards the appends of
the groups it does not lead, as in ``bench/cpu.py --server ursula-3node``. No sockets, no
threads, no fsync, no load generator: what is left is the Python work an append costs the
cluster (all three nodes together), which is what limits three nodes sharing two CPUs.

Printed: CPU microseconds per append (``time.process_time``), and per append the proposals,
journal writes and Raft messages and boxes each node sent. Compare two commits with it (as
``bench/pathcost.py``: under ``valgrind --tool=callgrind`` with two sizes the instruction
count per append is exactly repeatable). A measuring tool, never a test assert.
"""

from __future__ import annotations

import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402
import cProfile  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from twisted.test import iosim  # noqa: E402


def _pathcost():
    spec = importlib.util.spec_from_file_location("pathcost", os.path.join(_HERE, "pathcost.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pathcost = _pathcost()
SECRET = b"clustercost-secret-0123456789abcdef"


class Cluster:
    """Three nodes on one fake clock, joined by iosim pumps."""

    def __init__(self, groups: int, directory: str, write_iterations: int):
        from ursula.config import NodeConfig
        from ursula.core.cluster import RaftCore
        from ursula.core.persist import JournalPersister
        from ursula.raft import MemoryStorage
        from ursula.storage.committer import GroupCommitter
        from ursula.storage.journal import Journal
        from ursula.supervisor import core_settings
        from ursula.wire import PeerTransport

        self.reactor = reactor = pathcost._Reactor()
        reactor.advance(1000)
        ids = (1, 2, 3)
        self.config = NodeConfig()
        self.cores = {}
        self.transports = {}
        for n in ids:
            journal = Journal(os.path.join(directory, f"node{n}"), fsync="never")
            committer = GroupCommitter(journal, reactor,
                                       pathcost._InlinePool(reactor, write_iterations))
            transport = PeerTransport(n, {p: "unused" for p in ids if p != n}, SECRET, reactor)
            core = RaftCore(reactor, n, groups, {g: MemoryStorage(list(ids)) for g in range(groups)},
                            JournalPersister(committer), transport,
                            settings=core_settings(self.config))
            self.cores[n] = core
            self.transports[n] = transport
        from ursula.wire.transport import _AcceptFactory, _DialFactory
        self.pumps = []
        for a in ids:
            for b in ids:
                if a < b:  # the lower id dials, the higher accepts
                    client = _DialFactory(self.transports[a], b).buildProtocol(None)
                    server = _AcceptFactory(self.transports[b]).buildProtocol(None)
                    self.pumps.append(iosim.connect(server, iosim.makeFakeServer(server),
                                                    client, iosim.makeFakeClient(client),
                                                    greet=False))
        for core in self.cores.values():
            core.start()

    def iterate(self, seconds: float) -> None:
        self.reactor.iterate(seconds)
        self.deliver()

    def deliver(self) -> None:
        for _ in range(100):
            if not any([pump.pump() for pump in self.pumps]):
                return

    def settle(self, seconds: float, step: float = 0.01) -> None:
        end = self.reactor.seconds() + seconds
        while self.reactor.seconds() < end:
            self.reactor.advance(step)
            self.deliver()

    def leader_of(self, g: int) -> int:
        for n, core in self.cores.items():
            if core.groups[g].is_leader:
                return n
        return 0

    def place_leaders(self, leaders: list[int]) -> None:
        for _ in range(200):
            if all(self.leader_of(g) for g in self.cores[1].groups):
                break
            self.settle(0.1)
        for g, want in enumerate(leaders):
            for _ in range(50):
                now = self.leader_of(g)
                if now == want:
                    break
                if now:
                    self.cores[now].transfer_leader(g, want).addErrback(lambda _: None)
                self.settle(0.3)
            if self.leader_of(g) != want:
                raise SystemExit(f"group {g}: could not move its leader to node {want}")


def counters(cluster):
    out = {}
    for n, core in cluster.cores.items():
        stats = cluster.transports[n].stats.values()
        out[n] = {
            "proposals": core.batches.entries,
            "journal writes": core.persister.committer.batches,
            "raft messages": sum(s.raft_messages_sent for s in stats),
            "raft boxes": sum(s.raft_batches_sent for s in stats),
            "forwards": sum(s.forwards_sent for s in stats),
        }
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--appends", type=int, default=20000)
    p.add_argument("--conns", type=int, default=64)
    p.add_argument("--streams", type=int, default=500)
    p.add_argument("--groups", type=int, default=4)
    p.add_argument("--leaders", default="1,2,3,3",
                   help="the node id that leads group 0, 1, ... (cycled over the groups)")
    p.add_argument("--write-iterations", type=int, default=4)
    p.add_argument("--think-iterations", type=int, default=3)
    p.add_argument("--iteration-us", type=float, default=50.0)
    p.add_argument("--profile", help="write a cProfile of the measured part here")
    a = p.parse_args(argv)

    directory = tempfile.mkdtemp(prefix="ursula-clustercost-")
    cluster = Cluster(a.groups, directory, a.write_iterations)
    wanted = [int(x) for x in a.leaders.split(",")]
    cluster.place_leaders([wanted[g % len(wanted)] for g in range(a.groups)])

    from ursula.http.dataplane import data_plane_factory
    from ursula.http.metrics import Metrics
    entry = cluster.cores[1]
    factory = data_plane_factory(entry, cluster.config, cluster.reactor, Metrics(entry))
    conns = pathcost.connect(factory, a.conns)

    def settle(transport):
        for _ in range(50):
            cluster.iterate(0.001)
            if transport.value():
                return
    posts = pathcost.create_streams(conns, a.streams, settle)

    from ursula.process import tune_gc
    tune_gc(cluster.config.node.gc_threshold)
    before = counters(cluster)
    profiler = cProfile.Profile() if a.profile else None
    t0 = time.process_time()
    if profiler:
        profiler.enable()
    answered = pathcost.closed_loop(conns, posts, a.appends,
                                    lambda: cluster.iterate(a.iteration_us / 1e6),
                                    a.think_iterations)
    if profiler:
        profiler.disable()
    cpu = time.process_time() - t0
    after = counters(cluster)
    k = answered
    print(f"appends {k}  connections {a.conns}  streams {a.streams}  groups {a.groups}  "
          f"leaders {[cluster.leader_of(g) for g in range(a.groups)]}")
    print(f"cpu {cpu:.3f} s  = {1e6 * cpu / k:.1f} us per append (three nodes together)")
    for n in cluster.cores:
        parts = "  ".join(f"{name} {(after[n][name] - before[n][name]) / k:.3f}"
                          for name in after[n])
        print(f"node {n} per append: {parts}")
    if profiler:
        profiler.dump_stats(a.profile)
        print(f"profile written to {a.profile}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
