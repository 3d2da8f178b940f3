"""``ReadPath``: linearizable reads of a node — a ReadIndex barrier (confirmed by a heartbeat
quorum through the group's leader), then the local replica's applied state.

``read_applied`` skips the barrier: live readers use it after a linearizable first read, since
they are woken by local applies. Without a leader a barrier waits up to ``leader_wait_s``,
then fails with ``Unavailable``.

A read that starts below a stream's hot start names cold spans (``ReadResult.cold``): they are
fetched through the chunk cache (``cache``, a ``ursula.cold.ChunkCache``) and stitched to the hot
bytes; the answer fires later. A read that is all hot keeps its already-fired Deferred. A cold
fetch that fails (store down, chunk missing or corrupt) fails the read with ``Unavailable``.

``view`` (the snapshot, bootstrap, attrs and compute routes) is a barrier, then
``StreamMachine.view``; a snapshot blob already in the cold tier is fetched (its object has the
chunk layout of range ``[0, size)``) and the bootstrap's updates are stitched like a read.

May import: Twisted, zope.interface, ``ursula.stream``, ``ursula.loop``, ``ursula.core``.
"""

from __future__ import annotations

from twisted.internet import defer
from zope.interface import implementer

from ursula.core.forwarder import leader_known, with_timeout
from ursula.core.group import NotLeader
from ursula.core.interfaces import IReadPath, Unavailable
from ursula.loop import Timeouts
from ursula.stream.machine import ReadResult, StreamError, StreamView


@implementer(IReadPath)
class ReadPath:
    def __init__(self, reactor, groups: dict, group_for, settings, now_ms, cache=None,
                 timeouts: Timeouts | None = None):
        self.reactor = reactor
        self.timeouts = timeouts or Timeouts(reactor)
        self.cache = cache
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
        return with_timeout(self.timeouts, d.addErrback(not_leader),
                            self.settings.request_timeout_s)

    def head(self, bucket, stream):
        group = self.group_for(bucket, stream)
        return self.barrier(group).addCallback(
            lambda _: group.machine.head(bucket, stream, self.now_ms()))

    def read_applied(self, bucket, stream, offset, max_bytes, stitch: bool = True):
        """The applied state; ``stitch=False`` leaves the cold spans named in the result."""
        machine = self.group_for(bucket, stream).machine
        try:
            result = machine.read(bucket, stream, offset, max_bytes, self.now_ms())
        except StreamError as error:
            return defer.fail(error)
        if not result.cold or not stitch:
            return defer.succeed(result)
        return self.stitch(result)

    def view(self, bucket, stream, kind, max_bytes):
        group = self.group_for(bucket, stream)

        def query(_):
            view = group.machine.view(bucket, stream, kind, max_bytes, self.now_ms())
            parts = []
            if view.snapshot_ref is not None:
                if self.cache is None:
                    raise Unavailable("the snapshot is in the cold tier, but no cold store is set")
                key, checksum = view.snapshot_ref
                parts.append(self.cache.get(0, view.snapshot[3], key, checksum))
            else:
                parts.append(defer.succeed(view.snapshot_blob))
            updates = view.updates
            parts.append(self.stitch(updates) if updates is not None and updates.cold
                         else defer.succeed(updates))
            d = defer.gatherResults(parts, consumeErrors=True)

            def joined(results):
                blob, read = results
                return StreamView(view.info, view.snapshot, blob, None, read, view.bounds,
                                  view.attrs, view.compute, view.compute_state)

            def failed(failure):
                error = failure.value.subFailure.value
                if isinstance(error, Unavailable):
                    raise error
                raise Unavailable(f"cold tier: {error}")
            return d.addCallbacks(joined, failed)
        return self.barrier(group).addCallback(query)

    def stitch(self, result):
        """The ReadResult with its cold spans fetched and joined to its hot bytes."""
        if self.cache is None:
            return defer.fail(Unavailable("cold bytes requested, but no cold store is set"))
        parts = []
        for start, end, key, checksum, c_start, c_end in result.cold:
            d = self.cache.get(c_start, c_end, key, checksum)
            d.addCallback(lambda payload, a=start - c_start, b=end - c_start: payload[a:b])
            parts.append(d)
        d = defer.gatherResults(parts, consumeErrors=True)

        def joined(pieces):
            pieces.append(result.data)
            return ReadResult(result.info, result.start, result.next_offset, b"".join(pieces))

        def failed(failure):
            error = failure.value.subFailure.value
            raise Unavailable(f"cold tier: {error}")
        return d.addCallbacks(joined, failed)

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
