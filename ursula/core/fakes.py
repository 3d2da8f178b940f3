"""Fakes of the runtime's parts, for tests (as Twisted ships fakes beside its interfaces).

* ``FakeScheduler``: remembers the scheduled groups; ``run()`` processes them (no reactor).
* ``FakeForwarder``: proposes on the local leader only; no forwarding, no waits.
* ``FakeForkCoordinator``: records the forks asked for and answers them with a fixed outcome.
* ``FakeReadPath``: reads the local replica with no barrier.
* ``FakeFlusher``: flushes nothing; refuses writes to the groups in ``full``.

``MemoryPersister`` (``ursula.core.persist``) is the fake ``IPersister``, ``LocalCore`` the fake
``ICore``, and ``ursula.wire.fake.FakePeerTransport`` the fake ``IPeerTransport``.

May import: Twisted, zope.interface, ``ursula.stream``, ``ursula.core``.
"""

from __future__ import annotations

from twisted.internet import defer
from zope.interface import implementer

from ursula.core.interfaces import (
    IFlusher,
    IForkCoordinator,
    IForwarder,
    IReadPath,
    IScheduler,
    Unavailable,
)
from ursula.stream.machine import Outcome, StreamError


@implementer(IScheduler)
class FakeScheduler:
    def __init__(self):
        self.groups: list = []
        self.scheduled: dict[int, object] = {}
        self.stopped = False

    def start(self, groups) -> None:
        self.groups = list(groups)
        for group in self.groups:
            self.schedule(group)

    def stop(self) -> None:
        self.stopped = True

    def schedule(self, group) -> None:
        self.scheduled[group.group_id] = group

    def run(self) -> None:
        """Run one turn: every scheduled group's ``process()``."""
        scheduled, self.scheduled = self.scheduled, {}
        for group in scheduled.values():
            group.process()


@implementer(IForwarder)
class FakeForwarder:
    def __init__(self):
        self.submitted: list = []
        self.leader_changes: list[int] = []
        self.stopped = False
        self.draining = False
        self.load = None  # counts nothing

    def submit(self, group, command, deadline: float):
        self.submitted.append(command)
        if self.stopped or not group.is_leader:
            return defer.fail(Unavailable("the fake forwarder only proposes on a leader"))
        return group.submit(command)

    def leader_changed(self, group) -> None:
        self.leader_changes.append(group.group_id)

    def answer(self, group, payload: bytes, decoded=None):
        raise NotImplementedError("the fake forwarder serves no peers")

    def stop(self) -> None:
        self.stopped = True


@implementer(IForkCoordinator)
class FakeForkCoordinator:
    def __init__(self, outcome: Outcome | None = None):
        self.forks: list = []
        self.applied: list[int] = []
        self.outcome = outcome or Outcome(created=True)

    def create_fork(self, command):
        self.forks.append(command)
        return defer.succeed(self.outcome)

    def after_apply(self, group) -> None:
        self.applied.append(group.group_id)


@implementer(IReadPath)
class FakeReadPath:
    def __init__(self, group_for, now_ms):
        self.group_for = group_for
        self.now_ms = now_ms

    def barrier(self, group, deadline: float | None = None):
        return defer.succeed(None)

    def head(self, bucket, stream):
        try:
            return defer.succeed(self.group_for(bucket, stream).machine.head(
                bucket, stream, self.now_ms()))
        except StreamError as error:
            return defer.fail(error)

    def read_applied(self, bucket, stream, offset, max_bytes):
        try:
            return defer.succeed(self.group_for(bucket, stream).machine.read(
                bucket, stream, offset, max_bytes, self.now_ms()))
        except StreamError as error:
            return defer.fail(error)

    def list_streams(self, bucket, after, limit):
        raise NotImplementedError("the fake read path lists nothing")


@implementer(IFlusher)
class FakeFlusher:
    def __init__(self):
        self.full: set[int] = set()
        self.kicked: list[int] = []
        self.running = False

    def start(self):
        self.running = True

    def stop(self):
        self.running = False

    def kick(self, group):
        self.kicked.append(group.group_id)

    def admit(self, group):
        return f"group {group.group_id} is full" if group.group_id in self.full else None

    def stats(self):
        return {"uploads": 0, "uploaded_bytes": 0, "upload_errors": 0, "collected": 0}
