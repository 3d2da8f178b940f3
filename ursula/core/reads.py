"""``ReadPath``: linearizable reads of a node — a ReadIndex barrier (confirmed by a heartbeat
quorum through the group's leader), then the local replica's applied state.

``read_applied`` skips the barrier: live readers use it after a linearizable first read, since
they are woken by local applies. Without a leader a barrier waits up to ``leader_wait_s``,
then fails with ``Unavailable``.

May import: Twisted, zope.interface, ``ursula.stream``, ``ursula.core``.
"""

from __future__ import annotations

from twisted.internet import defer
from zope.interface import implementer

from ursula.core.forwarder import leader_known, with_timeout
from ursula.core.group import NotLeader
from ursula.core.interfaces import IReadPath
from ursula.stream.machine import StreamError


@implementer(IReadPath)
class ReadPath:
    def __init__(self, reactor, groups: dict, group_for, settings, now_ms):
        self.reactor = reactor
        self.groups = groups
        self.group_for = group_for
        self.settings = settings
        self.now_ms = now_ms

    def barrier(self, group, deadline: float | None = None):
        if deadline is None:
            deadline = self.reactor.seconds() + self.settings.leader_wait_s
        d = group.read_barrier()

        def not_leader(failure):
            failure.trap(NotLeader)
            return leader_known(self.reactor, group, deadline).addCallback(
                lambda _: self.barrier(group, deadline))
        return with_timeout(self.reactor, d.addErrback(not_leader),
                            self.settings.request_timeout_s)

    def head(self, bucket, stream):
        group = self.group_for(bucket, stream)
        return self.barrier(group).addCallback(
            lambda _: group.machine.head(bucket, stream, self.now_ms()))

    def read_applied(self, bucket, stream, offset, max_bytes):
        machine = self.group_for(bucket, stream).machine
        try:
            return defer.succeed(machine.read(bucket, stream, offset, max_bytes, self.now_ms()))
        except StreamError as error:
            return defer.fail(error)

    def list_streams(self, bucket, after, limit):
        groups = list(self.groups.values())
        d = defer.gatherResults([self.barrier(g) for g in groups], consumeErrors=True)
        d.addErrback(lambda failure: failure.value.subFailure.raiseException())

        def merge(_):
            found = []
            missing = 0
            for group in groups:
                try:
                    found.extend(group.machine.list_streams(bucket, after, limit, self.now_ms()))
                except StreamError:
                    missing += 1
            if missing == len(groups):
                raise StreamError("bucket_not_found")
            return sorted(found, key=lambda item: item[0])[:limit]
        return d.addCallback(merge)
