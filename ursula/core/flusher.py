"""``Flusher``: the cold tier's writer (``IFlusher``). On every group this node leads, while the
group holds more than ``hot_bytes`` of hot (in-memory) stream bytes, it takes the largest
stream's oldest hot bytes (at most ``chunk_bytes``), uploads them as one chunk, then proposes
``ColdFlushed``; every replica drops the bytes when it applies it. One upload per group at a
time, so a stream's chunks go in order.

* Idempotent: a chunk's key is derived from the group, the stream's uid and the range, so an
  upload retried (by this leader or the next) overwrites the same object; a ``ColdFlushed`` of
  a range already cold is a no-op in the state machine. An upload whose stream is gone by the
  time it commits is deleted again.
* Faults: a failed upload or delete is retried with exponential back-off (``backoff_max_s``),
  counted (``upload_errors``) and logged. Appends go on meanwhile, until a group holds
  ``max_hot_bytes``: then ``admit`` refuses writes to it (503 with Retry-After), nothing
  acknowledged is dropped, and writes resume once flushing has caught up.
* Collection: the chunks of dropped streams (``StreamMachine.cold_garbage``, replicated) are
  deleted from the store by the leader after the drop committed, then acknowledged with
  ``ColdCollected``.

May import: Twisted, zope.interface, ``ursula.cold``, ``ursula.stream``, ``ursula.core``.
"""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer

from ursula.cold.chunks import chunk_key, encode_chunk
from ursula.core.interfaces import IFlusher
from ursula.stream import commands as C

log = Logger()

COLLECT_BATCH = 64


@implementer(IFlusher)
class Flusher:
    def __init__(self, reactor, groups: dict, store, cache=None, hot_bytes: int = 32 << 20,
                 max_hot_bytes: int = 128 << 20, chunk_bytes: int = 4 << 20,
                 interval_s: float = 0.1, backoff_max_s: float = 30.0):
        self.reactor = reactor
        self.groups = groups
        self.store = store
        self.cache = cache
        self.hot_bytes = hot_bytes
        self.max_hot_bytes = max(max_hot_bytes, hot_bytes)
        self.chunk_bytes = chunk_bytes
        self.interval_s = interval_s
        self.backoff_max_s = backoff_max_s
        self.busy: set[int] = set()
        self.retry_at: dict[int, float] = {}
        self.backoff: dict[int, float] = {}
        self.counts = {"uploads": 0, "uploaded_bytes": 0, "upload_errors": 0, "collected": 0}
        self.stopped = False
        self._loop = None

    # -- IFlusher ----------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = task.LoopingCall(self.poll)
        self._loop.clock = self.reactor
        self._loop.start(self.interval_s, now=False)

    def stop(self) -> None:
        self.stopped = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def kick(self, group) -> None:
        machine = group.machine
        if machine.total_bytes > self.hot_bytes or machine.cold_garbage:
            self._run(group)

    def admit(self, group):
        hot = group.machine.total_bytes
        if hot >= self.max_hot_bytes:
            return (f"group {group.group_id} holds {hot} hot bytes (the cap is "
                    f"{self.max_hot_bytes}): the cold tier is behind; retry later")
        return None

    def stats(self) -> dict:
        return dict(self.counts)

    def lag_bytes(self, group) -> int:
        """Hot bytes above the flush threshold (what is waiting for the cold tier)."""
        return max(0, group.machine.total_bytes - self.hot_bytes)

    # -- the work ----------------------------------------------------------------------------

    def poll(self) -> None:
        for group in self.groups.values():
            self._run(group)

    def _run(self, group) -> None:
        gid = group.group_id
        if (self.stopped or gid in self.busy or not group.is_leader
                or self.reactor.seconds() < self.retry_at.get(gid, 0.0)):
            return
        machine = group.machine
        if machine.cold_garbage:
            self._collect(group, list(machine.cold_garbage[:COLLECT_BATCH]))
            return
        if machine.total_bytes <= self.hot_bytes:
            return
        stream = max((s for s in machine.streams.values() if s.data),
                     key=lambda s: len(s.data), default=None)
        if stream is None:
            return
        start = stream.base
        end = start + min(self.chunk_bytes, len(stream.data))
        key = chunk_key(gid, stream.uid, stream.bucket, stream.name, start, end)
        blob, checksum = encode_chunk(start, end, stream.slice(start, end))
        command = C.ColdFlushed(stream.bucket, stream.name, stream.uid, start, end, key, checksum)
        self.busy.add(gid)
        d = self.store.put(key, blob)
        d.addCallbacks(lambda _: self._propose(group, command),
                       self._failed, errbackArgs=(group, f"upload of {key}"))

    def _propose(self, group, command) -> None:
        d = group.submit(command)
        d.addCallbacks(self._flushed, self._not_proposed, callbackArgs=(group, command),
                       errbackArgs=(group,))

    def _flushed(self, outcome, group, command) -> None:
        gid = group.group_id
        self.busy.discard(gid)
        self.backoff.pop(gid, None)
        if outcome.error == "not_found":  # the stream went away: the object is garbage
            self.store.delete(command.key).addErrback(lambda _: None)
        elif outcome.error is None and not outcome.duplicate:
            self.counts["uploads"] += 1
            self.counts["uploaded_bytes"] += command.end - command.start
        self._run(group)

    def _not_proposed(self, failure, group) -> None:
        """Leadership moved (or the proposal may not commit): the next leader flushes."""
        self.busy.discard(group.group_id)

    def _collect(self, group, keys: list[str]) -> None:
        gid = group.group_id
        self.busy.add(gid)
        if self.cache is not None:
            for key in keys:
                self.cache.forget(key)
        d = defer.gatherResults([self.store.delete(key) for key in keys], consumeErrors=True)

        def deleted(_):
            return group.submit(C.ColdCollected(tuple(keys))).addCallbacks(
                lambda _: self._collected(group, len(keys)), self._not_proposed,
                errbackArgs=(group,))
        d.addCallbacks(deleted, self._failed, errbackArgs=(group, f"delete of {keys[0]}"))

    def _collected(self, group, count: int) -> None:
        self.busy.discard(group.group_id)
        self.counts["collected"] += count
        self._run(group)

    def _failed(self, failure, group, what: str) -> None:
        gid = group.group_id
        self.busy.discard(gid)
        self.counts["upload_errors"] += 1
        delay = min(self.backoff_max_s, self.backoff.get(gid, 0.1) * 2)
        self.backoff[gid] = delay
        self.retry_at[gid] = self.reactor.seconds() + delay
        error = getattr(failure.value, "subFailure", failure).value
        log.warn("cold tier: {what} failed ({error}); retrying in {delay:.1f} s", what=what,
                 error=error, delay=delay)
