"""The data of one stream: bytes, record boundaries, producers, lifetime, fork links.

A stream's offsets are byte positions. A fork shares its source's offset space: bytes below
``base`` are read through ``parent``; the fork's own bytes start at ``base``. ``ends`` holds the
end offset of every own record (one per append for byte streams, one per message for JSON
streams); ``append_ends`` the end of every own append (the same list for byte streams).

May import: the standard library only.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

RECORDS = "records"
APPENDS = "appends"


@dataclass(slots=True)
class ProducerState:
    epoch: int
    seq: int
    next_offset: int


class Stream:
    __slots__ = (
        "uid", "bucket", "name", "content_type", "json", "ttl_seconds", "expires_at_ms",
        "expires_at_text", "touched_ms", "closed", "base", "parent", "data", "ends",
        "append_ends", "last_seq", "producers", "forks", "deleted", "fork_spec",
        "requested_lifetime",
    )

    def __init__(self, uid: int, bucket: str, name: str, content_type: str, json: bool,
                 base: int = 0, parent: Stream | None = None):
        self.uid = uid
        self.bucket = bucket
        self.name = name
        self.content_type = content_type
        self.json = json
        self.ttl_seconds: int | None = None
        self.expires_at_ms: int | None = None
        self.expires_at_text: str | None = None
        self.requested_lifetime: tuple[int | None, int | None] = (None, None)
        self.touched_ms = 0
        self.closed = False
        self.base = base
        self.parent = parent
        self.data = bytearray()
        self.ends: list[int] = []
        self.append_ends: list[int] = [] if json else self.ends
        self.last_seq: str | None = None
        self.producers: dict[str, ProducerState] = {}
        self.forks = 0
        self.deleted = False
        self.fork_spec: tuple | None = None

    @property
    def tail(self) -> int:
        return self.base + len(self.data)

    def deadline_ms(self) -> int | None:
        """When the stream expires (sliding TTL or absolute), or None."""
        if self.expires_at_ms is not None:
            return self.expires_at_ms
        if self.ttl_seconds is not None:
            return self.touched_ms + self.ttl_seconds * 1000
        return None

    def expired(self, now_ms: int) -> bool:
        deadline = self.deadline_ms()
        return deadline is not None and now_ms >= deadline

    # -- writing ---------------------------------------------------------------------------

    def write_records(self, records: list[bytes]) -> int:
        """Append records as one append; returns the start offset."""
        start = self.tail
        for record in records:
            self.data += record
            self.ends.append(self.base + len(self.data))
        if self.json and records:
            self.append_ends.append(self.tail)
        return start

    # -- the view through fork links -------------------------------------------------------

    def _ends(self, kind: str) -> list[int]:
        return self.ends if kind == RECORDS else self.append_ends

    def boundary_after(self, position: int, kind: str = RECORDS) -> int | None:
        """The smallest record (or append) boundary greater than ``position``."""
        if position < self.base:
            inherited = self.parent.boundary_after(position, kind)
            return self.base if inherited is None or inherited > self.base else inherited
        ends = self._ends(kind)
        index = bisect_right(ends, position)
        return ends[index] if index < len(ends) else None

    def boundary_at_or_before(self, position: int, kind: str = RECORDS) -> int:
        """The largest boundary that is not greater than ``position`` (0 is a boundary)."""
        ends = self._ends(kind)
        index = bisect_right(ends, position)
        if index:
            return ends[index - 1]
        if position >= self.base:
            return self.base
        return self.parent.boundary_at_or_before(position, kind)

    def slice(self, start: int, end: int) -> bytes:
        """The stored bytes of ``[start, end)`` in this stream's view."""
        if start >= end:
            return b""
        if end <= self.base:
            return self.parent.slice(start, end)
        own = self.data[max(start, self.base) - self.base:end - self.base]
        if start < self.base:
            return self.parent.slice(start, self.base) + own
        return bytes(own)
