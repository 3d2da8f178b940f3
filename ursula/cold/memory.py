"""``MemoryColdStore``: an ``IColdStore`` in a dict (tests, and ``[cold] backend = memory``).

``fail`` makes every call fail with ``ColdError`` (an outage, for tests).

May import: Twisted, zope.interface.
"""

from __future__ import annotations

from twisted.internet import defer
from zope.interface import implementer

from ursula.cold.interfaces import ChunkMissing, ColdError, IColdStore


@implementer(IColdStore)
class MemoryColdStore:
    def __init__(self, clock=None):
        self.objects: dict[str, bytes] = {}
        self.modified: dict[str, float] = {}
        self.clock = clock.seconds if clock is not None else (lambda: 0.0)
        self.fail = False
        self.gets = 0
        self.puts = 0

    def _check(self):
        if self.fail:
            raise ColdError("memory cold store: failing (test outage)")

    def put(self, key, data):
        try:
            self._check()
        except ColdError as error:
            return defer.fail(error)
        self.puts += 1
        self.objects[key] = bytes(data)
        self.modified[key] = self.clock()
        return defer.succeed(None)

    def list(self, prefix):
        try:
            self._check()
        except ColdError as error:
            return defer.fail(error)
        return defer.succeed([(key, self.modified.get(key, 0.0)) for key in sorted(self.objects)
                              if key.startswith(prefix)])

    def get(self, key, start=0, end=None):
        try:
            self._check()
            blob = self.objects[key]
        except ColdError as error:
            return defer.fail(error)
        except KeyError:
            return defer.fail(ChunkMissing(f"cold chunk {key}: no such object"))
        self.gets += 1
        return defer.succeed(blob[start:end])

    def delete(self, key):
        try:
            self._check()
        except ColdError as error:
            return defer.fail(error)
        self.objects.pop(key, None)
        return defer.succeed(None)
