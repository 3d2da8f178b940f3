"""``LocalCore``: an unreplicated, in-memory ``ICore`` over one ``StreamMachine``.

The fake of ``RaftCore`` (as Twisted ships fakes beside its interfaces): the HTTP tests run
against both. Commands are applied in the reactor thread as they arrive; every change to a
stream wakes its live readers in the same turn. Time comes from the reactor.

May import: Twisted, zope.interface, ``ursula.stream``, ``ursula.core``.
"""

from __future__ import annotations

from twisted.internet.defer import fail, succeed
from zope.interface import implementer

from ursula.core.compute import make_reducer, reducer_stats
from ursula.core.interfaces import ICore
from ursula.core.watchers import WatcherRegistry
from ursula.stream import StreamMachine, commands
from ursula.stream.machine import StreamError

_STREAM_COMMANDS = (commands.CreateStream, commands.Append, commands.AppendBatch,
                    commands.DeleteStream)


@implementer(ICore)
class LocalCore:
    def __init__(self, clock, max_live_readers: int = 10_000,
                 machine: StreamMachine | None = None, compute: bool = True):
        self.clock = clock
        self.reducer = make_reducer(compute) if machine is None else machine.reducer
        self.machine = machine or StreamMachine(reducer=self.reducer)
        self.watchers = WatcherRegistry(max_live_readers)

    @property
    def live_readers(self) -> int:
        return self.watchers.count

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def submit(self, command):
        outcome = self.machine.apply(command, self.now_ms())
        if isinstance(command, _STREAM_COMMANDS) and outcome.error is None:
            self.watchers.notify((command.bucket, command.stream))
        return succeed(outcome)

    def head(self, bucket, stream):
        try:
            return succeed(self.machine.head(bucket, stream, self.now_ms()))
        except StreamError as error:
            return fail(error)

    def read_applied(self, bucket, stream, offset, max_bytes):
        try:
            return succeed(self.machine.read(bucket, stream, offset, max_bytes, self.now_ms()))
        except StreamError as error:
            return fail(error)

    def list_streams(self, bucket, after, limit):
        try:
            return succeed(self.machine.list_streams(bucket, after, limit, self.now_ms()))
        except StreamError as error:
            return fail(error)

    def view(self, bucket, stream, kind, max_bytes):
        try:
            return succeed(self.machine.view(bucket, stream, kind, max_bytes, self.now_ms()))
        except StreamError as error:
            return fail(error)

    def subscribe(self, bucket, stream, callback):
        return self.watchers.add((bucket, stream), callback)

    def is_ready(self) -> bool:
        return True

    def stats(self) -> dict:
        return {"streams": self.machine.stream_count, "bytes": self.machine.total_bytes,
                "live_readers": self.watchers.count, **reducer_stats(self.reducer)}
