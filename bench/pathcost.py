"""The CPU cost of one append on ursula's own code path, in process and repeatable.

    python bench/pathcost.py [--appends 20000] [--conns 64] [--write-iterations 4]
                             [--think-iterations 3] [--streams 100] [--groups 4]
                             [--gc 700,10,10] [--profile out.prof]

What it runs: the real data plane (``ursula.http.dataplane``), the real ``RaftCore`` of a
one-node cluster (4 groups), the real group committer and journal (``fsync = never``, in a
temporary directory), driven on a fake clock one reactor iteration at a time: ``--conns``
keep-alive connections (fake transports), each with one 256-byte POST in flight, the next one
sent 0..``--think-iterations`` iterations after its answer (a seeded closed loop); a journal
write's result comes back ``--write-iterations`` iterations after it started. No sockets, no
threads (the journal's pool runs the job at once), no fsync, no load generator: what is
left is the Python work of an append, which is what limits a core process (see
docs/benchmarks.md). The figure printed is CPU microseconds per append (``time.process_time``),
plus the proposals and journal writes per append.

Use it to compare two commits. On a busy machine the CPU figure moves by 10-20 % between runs;
instruction counts do not move at all: run it under callgrind twice, with two sizes, and take
the difference per append (the start-up cancels out)::

    for n in 1600 4800; do valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        python bench/pathcost.py --appends $n 2>&1 | grep Collected; done
    # (second - first) / 3200 = instructions per append

Speed is never asserted in tests; this is a measuring tool (CI runs it once, small, so that it
keeps working).
"""

from __future__ import annotations

import os
import sys

# bench/ holds a profile.py that would shadow the standard library's (cProfile imports it)
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402
import cProfile  # noqa: E402
import random  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from twisted.internet.task import Clock  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402


class _Reactor(Clock):
    """A fake clock that also takes ``callFromThread`` (the committer's results)."""

    def callFromThread(self, f, *args, **kwargs):  # noqa: N802 (Twisted's name)
        self.callLater(0, f, *args, **kwargs)

    def callWhenRunning(self, f, *args, **kwargs):  # noqa: N802
        self.callLater(0, f, *args, **kwargs)

    def iterate(self, seconds: float = 0.0) -> None:
        """One reactor iteration, ``seconds`` after the last: the calls due then; calls they
        arm wait for the next one (as in ``runUntilCurrent``; ``Clock.advance`` would run those
        too)."""
        self.rightNow += seconds
        now = self.seconds()
        for call in [c for c in self.calls if c.getTime() <= now]:
            if call.cancelled or call.called:
                continue
            self.calls.remove(call)
            call.called = 1
            call.func(*call.args, **call.kw)


class _InlinePool:
    """A thread pool that runs each job at once, on the caller's thread, and hands its result
    back ``iterations`` reactor iterations later (a write + fsync takes that long)."""

    def __init__(self, reactor, iterations: int):
        self.reactor = reactor
        self.iterations = iterations

    def callInThreadWithCallback(self, on_result, f, *args, **kwargs):  # noqa: N802
        try:
            outcome = (True, f(*args, **kwargs))
        except BaseException:
            outcome = (False, Failure())
        self._later(self.iterations - 1, on_result, outcome)

    def _later(self, n, on_result, outcome):
        if n <= 0:
            on_result(*outcome)  # deferToThreadPool's callFromThread adds the last iteration
        else:
            self.reactor.callLater(0, self._later, n - 1, on_result, outcome)


def build(groups: int, directory: str, write_iterations: int, hot_bytes: int):
    from ursula.cold.memory import MemoryColdStore
    from ursula.config import NodeConfig
    from ursula.core.cluster import RaftCore
    from ursula.core.persist import JournalPersister
    from ursula.http.dataplane import data_plane_factory
    from ursula.http.metrics import Metrics
    from ursula.raft import MemoryStorage
    from ursula.storage.committer import GroupCommitter
    from ursula.storage.journal import Journal

    reactor = _Reactor()
    journal = Journal(directory, fsync="never")
    committer = GroupCommitter(journal, reactor, _InlinePool(reactor, write_iterations))
    from ursula.supervisor import core_settings
    config = NodeConfig()
    settings = core_settings(config)
    if hot_bytes:
        settings.hot_bytes, settings.hot_max_bytes = hot_bytes, 4 * hot_bytes
    core = RaftCore(reactor, 1, groups, {g: MemoryStorage([1]) for g in range(groups)},
                    JournalPersister(committer), settings=settings,
                    cold_store=MemoryColdStore(reactor) if hot_bytes else None)
    core.start()
    for _ in range(100):  # elections: one node, so each group elects itself
        reactor.advance(0.1)
        if all(g.is_leader for g in core.groups.values()):
            break
    factory = data_plane_factory(core, config, reactor, Metrics(core))
    return reactor, core, factory


def pump(reactor, limit: int = 10000) -> None:
    """Run every call that is due now, and the calls those arm, until none is left."""
    for _ in range(limit):
        due = [c for c in reactor.getDelayedCalls() if c.getTime() <= reactor.seconds()]
        if not due:
            return
        reactor.iterate()
    raise RuntimeError("the reactor did not settle")


def connect(factory, n: int) -> list:
    """``n`` connections of ``factory``'s protocol on fake transports: (protocol, transport)."""
    conns = []
    for _ in range(n):
        proto = factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        conns.append((proto, transport))
    return conns


def create_streams(conns, count: int, settle) -> list[bytes]:
    """PUT ``count`` streams through the first connection (``settle(transport)`` runs the
    reactor until the answer is there); returns a 256-byte POST request for each."""
    names = [f"/v1/stream/cost-{i}" for i in range(count)]
    proto, transport = conns[0]
    for name in names:
        proto.dataReceived(f"PUT {name} HTTP/1.1\r\nHost: x\r\nContent-Type: "
                           "application/octet-stream\r\nContent-Length: 0\r\n\r\n".encode())
        settle(transport)
        if not transport.value().startswith(b"HTTP/1.1 201"):
            raise SystemExit(f"creating {name} failed: {transport.value()[:300]!r}")
        transport.clear()
    body = b"x" * 256
    return [(f"POST {name} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
             f"Content-Length: {len(body)}\r\n\r\n").encode() + body for name in names]


def closed_loop(conns, posts, appends: int, iterate, think_iterations: int) -> int:
    """Send ``appends`` POSTs, one in flight per connection, the next one 0..think_iterations
    reactor iterations (``iterate()``, seeded) after each answer; returns the answers (all 204,
    else SystemExit)."""
    rng = random.Random(1)
    sent = answered = idle = 0
    due = {i: 0 for i in range(len(conns))}  # connection -> iterations until its next request
    while sent < appends or answered < sent:
        for i in [i for i, n in due.items() if n <= 0]:
            del due[i]
            if sent < appends:
                conns[i][0].dataReceived(posts[sent % len(posts)])
                sent += 1
        iterate()
        for i in due:
            due[i] -= 1
        progressed = False
        for i, (_proto, t) in enumerate(conns):  # closed loop: an answer, then a think time
            if t.value():
                if not t.value().startswith(b"HTTP/1.1 204"):
                    raise SystemExit(f"an append failed: {t.value()[:300]!r}")
                answered += 1
                progressed = True
                t.clear()
                due[i] = rng.randint(0, think_iterations)
        idle = 0 if progressed else idle + 1
        if idle > 100000:
            raise SystemExit(f"stuck: {sent} sent, {answered} answered")
    return answered


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--appends", type=int, default=20000)
    p.add_argument("--conns", type=int, default=64, help="connections, one request in flight each")
    p.add_argument("--write-iterations", type=int, default=4,
                   help="reactor iterations a journal write takes (its result comes back then)")
    p.add_argument("--think-iterations", type=int, default=3,
                   help="a client sends its next request 0..N reactor iterations after an answer")
    p.add_argument("--streams", type=int, default=100)
    p.add_argument("--groups", type=int, default=4)
    p.add_argument("--profile", help="write a cProfile of the measured part here")
    p.add_argument("--hot-bytes", type=int, default=0,
                   help="per group: flush to a memory cold tier above this (0: no cold tier)")
    p.add_argument("--iteration-us", type=float, default=50.0,
                   help="clock time per reactor iteration (ticks and the flusher's timers)")
    p.add_argument("--gc", help="gc thresholds to set before measuring, e.g. 700,10,10 (default: as a core process)")
    a = p.parse_args(argv)

    directory = tempfile.mkdtemp(prefix="ursula-pathcost-")
    reactor, core, factory = build(a.groups, directory, a.write_iterations, a.hot_bytes)
    conns = connect(factory, a.conns)
    posts = create_streams(conns, a.streams, lambda transport: pump(reactor))

    if a.gc:
        import gc
        gc.set_threshold(*(int(x) for x in a.gc.split(",")))
    else:  # as a core process does ([node] gc_threshold)
        from ursula.config import NodeConfig
        from ursula.process import tune_gc
        tune_gc(NodeConfig().node.gc_threshold)
    proposals0 = core.batches.entries
    writes0 = committer_batches(core)
    profiler = cProfile.Profile() if a.profile else None
    t0 = time.process_time()
    if profiler:
        profiler.enable()
    answered = closed_loop(conns, posts, a.appends, lambda: reactor.iterate(a.iteration_us / 1e6),
                           a.think_iterations)
    if profiler:
        profiler.disable()
    k = answered
    cpu = time.process_time() - t0
    print(f"appends {k}  connections {a.conns}  write iterations {a.write_iterations}  streams {a.streams}  groups {a.groups}")
    print(f"cpu {cpu:.3f} s  = {1e6 * cpu / k:.1f} us per append")
    print(f"proposals per append {(core.batches.entries - proposals0) / k:.3f}")
    if writes0 is not None:
        print(f"journal writes per append {(committer_batches(core) - writes0) / k:.3f}")
    if profiler:
        profiler.dump_stats(a.profile)
        print(f"profile written to {a.profile}")
    return 0


def committer_batches(core):
    committer = getattr(core.persister, "committer", None)
    return committer.batches if committer is not None else None


if __name__ == "__main__":
    sys.exit(main())
