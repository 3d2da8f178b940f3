"""``Stream-Cursor``: the CDN request-collapsing interval number.

``cursor = floor((now - 2024-10-09T00:00:00Z) / interval)``. When a client echoes a cursor that
is not older than the current one, the server answers a strictly larger one, jittered by
``jitter_intervals`` (chosen by the caller, 1..180 for a 1-3600 s jitter at 20 s intervals).

May import: the standard library only. The caller passes the time; nothing here reads a clock.
"""

from __future__ import annotations

import re

_DIGITS = re.compile(r"[0-9]{1,30}")
CURSOR_EPOCH_MS = 1728432000000  # 2024-10-09T00:00:00Z
DEFAULT_INTERVAL_MS = 20_000


def next_cursor(now_ms: int, client_cursor: str | None, jitter_intervals: int,
                interval_ms: int = DEFAULT_INTERVAL_MS) -> str:
    current = max(0, (now_ms - CURSOR_EPOCH_MS) // interval_ms)
    if client_cursor is not None and _DIGITS.fullmatch(client_cursor):
        echoed = int(client_cursor)
        if echoed >= current:
            return str(echoed + max(1, jitter_intervals))
    return str(current)
