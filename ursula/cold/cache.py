"""``ChunkCache``: the payloads of recently read cold chunks, least recently used first out,
under a byte cap. Concurrent reads of one chunk share one fetch; a chunk whose header or
checksum fails is never served (nor cached): the readers get ``ChunkCorrupt``, the failure is
counted and logged with the object's key, and the next read fetches it again.

May import: Twisted.
"""

from __future__ import annotations

from collections import OrderedDict

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from ursula.cold.chunks import decode_chunk, fetch_range
from ursula.cold.interfaces import ChunkCorrupt

log = Logger()


class ChunkCache:
    def __init__(self, store, cap_bytes: int = 64 << 20):
        self.store = store
        self.cap_bytes = cap_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.corrupt = 0
        self.fetch_errors = 0
        self._chunks: OrderedDict[str, bytes] = OrderedDict()
        self._fetching: dict[str, list[defer.Deferred]] = {}

    def get(self, start: int, end: int, key: str, checksum: int) -> defer.Deferred:
        """A Deferred of the chunk's payload (the stream bytes ``[start, end)``); ``key`` is a
        chunk reference (an object's key, or a chunk's place in a pack)."""
        payload = self._chunks.get(key)
        if payload is not None:
            self.hits += 1
            self._chunks.move_to_end(key)
            return defer.succeed(payload)
        self.misses += 1
        d = defer.Deferred()
        waiters = self._fetching.get(key)
        if waiters is not None:
            waiters.append(d)
            return d
        self._fetching[key] = [d]
        fetch = self.store.get(*fetch_range(key, start, end))
        fetch.addCallback(decode_chunk, key, start, end, checksum)
        fetch.addBoth(self._fetched, key)
        return d

    def _fetched(self, result, key: str) -> None:
        waiters = self._fetching.pop(key, [])
        if isinstance(result, Failure):
            if result.check(ChunkCorrupt):
                self.corrupt += 1
                log.error("cold tier: {why} (not served)", why=str(result.value))
            else:
                self.fetch_errors += 1
            for d in waiters:
                d.errback(result)
            return None
        self._insert(key, result)
        for d in waiters:
            d.callback(result)
        return None

    def _insert(self, key: str, payload: bytes) -> None:
        if len(payload) > self.cap_bytes:
            return
        self._chunks[key] = payload
        self.bytes += len(payload)
        while self.bytes > self.cap_bytes:
            _, old = self._chunks.popitem(last=False)
            self.bytes -= len(old)

    def forget(self, key: str) -> None:
        payload = self._chunks.pop(key, None)
        if payload is not None:
            self.bytes -= len(payload)
