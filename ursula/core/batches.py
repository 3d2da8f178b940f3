"""``BatchSizes``: how many commands each Raft entry carried (one entry per group per turn).

A plain-int histogram on the hot path (one ``observe`` per proposed entry); the metrics
collector exports it as ``ursula_proposal_batch_commands``.

May import: the standard library.
"""

from __future__ import annotations

from bisect import bisect_left

BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class BatchSizes:
    def __init__(self, bounds: tuple[int, ...] = BOUNDS):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound
        self.total = 0
        self.entries = 0

    def observe(self, commands: int) -> None:
        self.counts[bisect_left(self.bounds, commands)] += 1
        self.total += commands
        self.entries += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(upper bound, entries with at most that many commands), ...]`` ending in +Inf."""
        out, running = [], 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            out.append((str(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out
