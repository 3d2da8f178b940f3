"""The simulated clock and event queue, and the simulated network with faults.

What lives here: `World` (a deterministic discrete-event scheduler: integer microseconds,
ties broken by insertion order) and `Network` (delivers messages between endpoints after a
random delay, with loss, duplication, reordering-by-jitter and directed partitions).  All
randomness comes from `random.Random` objects derived from the run's seed.

May import: the standard library only.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MS = 1000  # one millisecond in World time units (microseconds)


class World:
    def __init__(self) -> None:
        self.now = 0
        self._q: list[tuple[int, int, Callable[..., Any], tuple]] = []
        self._seq = 0
        self.events = 0

    @property
    def now_ms(self) -> int:
        return self.now // MS

    def at(self, t: int, fn: Callable[..., Any], *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._q, (max(t, self.now), self._seq, fn, args))

    def after(self, delay: int, fn: Callable[..., Any], *args: Any) -> None:
        self.at(self.now + delay, fn, *args)

    def run_until(self, t: int, stop: Callable[[], bool] | None = None) -> None:
        q = self._q
        while q and q[0][0] <= t:
            when, _, fn, args = heapq.heappop(q)
            self.now = when
            self.events += 1
            fn(*args)
            if stop is not None and stop():
                return
        self.now = max(self.now, t)


@dataclass
class NetParams:
    loss: float = 0.0
    dup: float = 0.0
    min_delay: int = 1 * MS // 2
    max_delay: int = 3 * MS
    spike: float = 0.0  # probability of a long delay (reorders messages)
    spike_delay: int = 40 * MS


class Network:
    """Directed links between integer endpoints.  `blocked` holds (src, dst) pairs that drop
    everything (a partition; asymmetric if only one direction is listed)."""

    def __init__(self, world: World, rng: random.Random, params: NetParams) -> None:
        self.world = world
        self.rng = rng
        self.params = params
        self.blocked: set[tuple[int, int]] = set()
        self.sent = 0
        self.dropped = 0

    def delay(self) -> int:
        p = self.params
        d = self.rng.randint(p.min_delay, p.max_delay)
        if p.spike and self.rng.random() < p.spike:
            d += self.rng.randint(0, p.spike_delay)
        return d

    def send(self, src: int, dst: int, deliver: Callable[[Any], Any], msg: Any) -> None:
        self.sent += 1
        if (src, dst) in self.blocked:
            self.dropped += 1
            return
        p = self.params
        rng = self.rng
        if p.loss and rng.random() < p.loss:
            self.dropped += 1
            return
        self.world.after(self.delay(), deliver, msg)
        if p.dup and rng.random() < p.dup:
            self.world.after(self.delay(), deliver, msg)

    # -- partitions --------------------------------------------------------------------------
    def heal(self) -> None:
        self.blocked.clear()

    def split(self, side_a: list[int], side_b: list[int]) -> None:
        for a in side_a:
            for b in side_b:
                self.blocked.add((a, b))
                self.blocked.add((b, a))

    def block_one_way(self, srcs: list[int], dsts: list[int]) -> None:
        for a in srcs:
            for b in dsts:
                if a != b:
                    self.blocked.add((a, b))
