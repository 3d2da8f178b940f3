"""``ForkCoordinator``: forks whose source lives in another group.

Creating such a fork is a saga of two groups: ``AcquireFork`` on the source's group
(validation, a live-fork reference, the inherited prefix: bytes and record boundaries), then
``CreateStream`` with that prefix on the fork's group; if the fork is not created, a
``ReleaseFork`` gives the reference back. When a fork is dropped (delete, expiry) its group
queues a ``ReleaseFork`` for the source's group; the group's leader delivers the queue after
applying entries and acknowledges it with ``AckReleases``. Every step goes through the
``IForwarder`` and is idempotent, so a new leader simply delivers the queue again.

May import: Twisted, zope.interface, ``ursula.stream``, ``ursula.core``.
"""

from __future__ import annotations

import dataclasses
import uuid

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from ursula.core.interfaces import IForkCoordinator
from ursula.stream import commands as C

log = Logger()


@implementer(IForkCoordinator)
class ForkCoordinator:
    def __init__(self, reactor, node_id: int, forwarder, group_for, leader_wait_s: float):
        self.reactor = reactor
        self.node_id = node_id
        self.forwarder = forwarder
        self.group_for = group_for  # (bucket, stream) -> GroupReplica
        self.leader_wait_s = leader_wait_s

    def _submit(self, group, command):
        return self.forwarder.submit(group, command, self.reactor.seconds() + self.leader_wait_s)

    @defer.inlineCallbacks
    def create_fork(self, command: C.CreateStream):
        source_group = self.group_for(command.fork_bucket, command.fork_stream)
        target_group = self.group_for(command.bucket, command.stream)
        fork_id = f"{self.node_id}-{uuid.uuid4().hex}"
        acquired = yield self._submit(source_group, C.AcquireFork(
            command.fork_bucket, command.fork_stream, fork_id, command.content_type,
            command.fork_offset, command.fork_sub_offset))
        if acquired.error:
            return acquired
        created = None
        try:
            created = yield self._submit(
                target_group, dataclasses.replace(command, fork_id=fork_id,
                                                  inherited=acquired.fork.to_wire()))
        finally:
            if created is None or created.error or not created.created:
                yield self._submit(source_group, C.ReleaseFork(
                    command.fork_bucket, command.fork_stream, fork_id))
        return created

    def after_apply(self, group) -> None:
        if group.machine.pending_releases and group.is_leader and not group.releasing:
            self._deliver_releases(group)

    @defer.inlineCallbacks
    def _deliver_releases(self, group):
        """Forks dropped in ``group`` whose sources live elsewhere: tell the sources."""
        group.releasing = True
        try:
            releases = list(group.machine.pending_releases)
            for bucket, stream, fork_id in releases:
                yield self._submit(self.group_for(bucket, stream),
                                   C.ReleaseFork(bucket, stream, fork_id))
            yield self._submit(group, C.AckReleases(tuple(r[2] for r in releases)))
        except Exception as error:  # retried after the next apply on this leader
            log.info("delivering fork releases failed ({error}); will retry", error=error)
        finally:
            group.releasing = False
