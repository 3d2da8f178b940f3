"""Every part of the runtime, and every fake, provides its interface (``verifyObject``)."""

from __future__ import annotations

import pytest
from twisted.internet import task
from zope.interface.verify import verifyObject

from tests.core.harness import Harness
from ursula.core import LocalCore
from ursula.core.cluster import CoreSettings, RaftCore
from ursula.core.fakes import FakeForkCoordinator, FakeForwarder, FakeReadPath, FakeScheduler
from ursula.core.forks import ForkCoordinator
from ursula.core.forwarder import Forwarder
from ursula.core.interfaces import (
    ICore,
    IForkCoordinator,
    IForwarder,
    IPersister,
    IReadPath,
    IScheduler,
)
from ursula.core.persist import JournalPersister, MemoryPersister
from ursula.core.reads import ReadPath
from ursula.core.scheduler import Scheduler
from ursula.wire import PeerTransport
from ursula.wire.fake import FakeNetwork, FakePeerTransport
from ursula.wire.interfaces import IPeerTransport


def _core() -> RaftCore:
    return Harness(nodes=3, groups=2).cores[1]


def _objects():
    clock = task.Clock()
    core = _core()
    settings = CoreSettings()
    forwarder = Forwarder(clock, 1, None, settings)
    return [
        (ICore, core), (ICore, LocalCore(clock)),
        (IScheduler, core.scheduler), (IScheduler, Scheduler(clock, 0.1)),
        (IScheduler, FakeScheduler()),
        (IForwarder, core.forwarder), (IForwarder, forwarder), (IForwarder, FakeForwarder()),
        (IForkCoordinator, core.forks),
        (IForkCoordinator, ForkCoordinator(clock, 1, forwarder, core._group_for, 3.0)),
        (IForkCoordinator, FakeForkCoordinator()),
        (IReadPath, core.reads), (IReadPath, ReadPath(clock, {}, None, settings, None)),
        (IReadPath, FakeReadPath(core._group_for, core.now_ms)),
        (IPersister, MemoryPersister()), (IPersister, JournalPersister(committer=None)),
        (IPeerTransport, PeerTransport(1, {2: "tcp:host=127.0.0.1:port=1"}, b"s" * 32, clock)),
        (IPeerTransport, FakePeerTransport(FakeNetwork(clock), 1)),
        (IPeerTransport, core.transport),
    ]


@pytest.mark.parametrize("interface,obj", _objects(),
                         ids=lambda v: getattr(v, "__name__", type(v).__name__))
def test_provides(interface, obj):
    assert verifyObject(interface, obj)


def test_fake_scheduler_runs_a_turn():
    core = _core()
    fake = FakeScheduler()
    core.scheduler = fake
    core.start()
    assert sorted(fake.scheduled) == [0, 1]
    fake.run()
    # group 1 had nothing more to do; group 0 (node 1 is its preferred leader) campaigned, and
    # persisting its vote asks for one more turn
    assert sorted(fake.scheduled) == [0]
    fake.run()
    assert fake.scheduled == {}


def test_fake_forwarder_proposes_only_on_a_leader():
    clock = task.Clock()
    core = RaftCore(clock, 1, 1, {0: __import__("ursula.raft", fromlist=["MemoryStorage"])
                                  .MemoryStorage([1])}, MemoryPersister())
    fake = FakeForwarder()
    core.forwarder = fake
    core.start()
    for _ in range(5):
        clock.advance(0)
    from ursula.stream import commands as C
    results = []
    core.submit(C.CreateStream("_default", "s", "text/plain")).addBoth(results.append)
    for _ in range(5):
        clock.advance(0)
    assert results[0].created and len(fake.submitted) == 1
    core.stop()
