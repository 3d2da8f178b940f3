"""Live-reader registry: one-shot callbacks per stream, woken when the stream changes.

May import: the standard library.
"""

from __future__ import annotations

from ursula.core.interfaces import TooManyReaders


class Subscription:
    __slots__ = ("_registry", "key", "callback", "active")

    def __init__(self, registry: WatcherRegistry, key, callback):
        self._registry = registry
        self.key = key
        self.callback = callback
        self.active = True

    def cancel(self) -> None:
        if self.active:
            self.active = False
            self._registry._remove(self)


class WatcherRegistry:
    def __init__(self, limit: int):
        self.limit = limit
        self._by_key: dict[tuple[str, str], set[Subscription]] = {}
        self.count = 0

    def add(self, key, callback) -> Subscription:
        if self.count >= self.limit:
            raise TooManyReaders()
        subscription = Subscription(self, key, callback)
        self._by_key.setdefault(key, set()).add(subscription)
        self.count += 1
        return subscription

    def _remove(self, subscription: Subscription) -> None:
        waiters = self._by_key.get(subscription.key)
        if waiters is not None and subscription in waiters:
            waiters.discard(subscription)
            self.count -= 1
            if not waiters:
                del self._by_key[subscription.key]

    def notify_all(self) -> None:
        """Wake every waiter (the whole state changed, e.g. a snapshot was installed)."""
        for key in list(self._by_key):
            self.notify(key)

    def notify(self, key) -> None:
        """Wake every waiter of ``key`` (each one once)."""
        waiters = self._by_key.pop(key, None)
        if not waiters:
            return
        self.count -= len(waiters)
        for subscription in waiters:
            subscription.active = False
        for subscription in waiters:
            subscription.callback()
