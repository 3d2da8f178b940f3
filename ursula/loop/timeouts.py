"""``Timeouts``: many short, usually cancelled timeouts for the price of one reactor timer.

Every request has a few timeouts (its headers or body must arrive, the cluster must answer, an
idle connection closes) and nearly all of them are cancelled long before they fire. A Twisted
``DelayedCall`` per timeout costs a heap insertion in the reactor, a cancellation that the
reactor later cleans out of its heap, and a few Python objects: at thousands of requests a
second that was a visible share of the reactor's time. ``Timeouts`` keeps them in buckets of
``resolution`` seconds instead (a dict of sets, keyed by the bucket's end): arming and
cancelling are a set insertion and removal, and one ``DelayedCall`` is armed for the earliest
bucket. A timeout fires at or at most ``resolution`` after its time, never before.

    timeouts = Timeouts(reactor, resolution=0.1)
    handle = timeouts.call_later(5.0, fn, *args)
    handle.cancel()            # safe to call twice, or after it fired
    timeouts.deadline(d, 5.0)  # d.cancel() after 5 s unless d has fired by then

May import: Twisted and the standard library.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

log = Logger()

DEFAULT_RESOLUTION_S = 0.1


class Timeout:
    """One armed timeout: ``cancel()`` it, or ask whether it is still ``active()``."""

    __slots__ = ("_owner", "_key", "fn", "args")

    def __init__(self, owner: Timeouts, key: int, fn: Callable[..., Any], args: tuple):
        self._owner = owner
        self._key = key
        self.fn = fn
        self.args = args

    def active(self) -> bool:
        return self._key is not None

    def cancel(self) -> None:
        key, self._key = self._key, None
        if key is not None:
            bucket = self._owner._buckets.get(key)
            if bucket is not None:
                bucket.discard(self)


class Timeouts:
    def __init__(self, clock, resolution: float = DEFAULT_RESOLUTION_S):
        if resolution <= 0:
            raise ValueError("resolution must be positive")
        self.clock = clock
        self.resolution = resolution
        self._buckets: dict[int, set[Timeout]] = {}
        self._keys: list[int] = []  # heap of the keys in _buckets
        self._timer = None
        self._timer_key: int | None = None

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets.values())

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> Timeout:
        """Call ``fn(*args)`` in ``delay`` seconds (at most ``resolution`` later)."""
        key = math.ceil((self.clock.seconds() + max(delay, 0.0)) / self.resolution)
        handle = Timeout(self, key, fn, args)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = set()
            heapq.heappush(self._keys, key)
            if self._timer_key is None or key < self._timer_key:
                self._arm(key)
        bucket.add(handle)
        return handle

    def deadline(self, d, seconds: float):
        """Cancel the Deferred ``d`` after ``seconds`` unless it has a result by then; returns
        ``d`` (its canceller or a ``CancelledError`` tells the waiter)."""
        handle = self.call_later(seconds, _cancel_unless_called, d)

        def disarm(result):
            handle.cancel()
            return result
        return d.addBoth(disarm)

    def stop(self) -> None:
        """Drop every armed timeout (shutdown)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self._timer_key = None
        for bucket in self._buckets.values():
            for handle in bucket:
                handle._key = None
        self._buckets.clear()
        self._keys.clear()

    def _arm(self, key: int) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer_key = key
        delay = max(key * self.resolution - self.clock.seconds(), 0.0)
        self._timer = self.clock.callLater(delay, self._fire)

    def _fire(self) -> None:
        self._timer = self._timer_key = None
        now_key = math.floor(self.clock.seconds() / self.resolution + 1e-9)
        keys = self._keys
        due: list[Timeout] = []
        while keys and keys[0] <= now_key:
            bucket = self._buckets.pop(heapq.heappop(keys), None)
            if bucket:
                due.extend(bucket)
        while keys and not self._buckets.get(keys[0]):  # empty buckets: all cancelled
            self._buckets.pop(heapq.heappop(keys), None)
        if keys:
            self._arm(keys[0])
        for handle in due:
            if handle._key is None:
                continue
            handle._key = None
            try:
                handle.fn(*handle.args)
            except Exception:
                log.failure("a timeout's callback failed")


def _cancel_unless_called(d) -> None:
    if not d.called:
        d.cancel()
