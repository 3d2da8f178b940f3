"""The data of one stream: bytes, record boundaries, producers, lifetime, fork references.

A stream's offsets are byte positions in ``data``. ``ends`` holds the end offset of every
record (one per append for byte streams, one per message for JSON streams); ``append_ends`` the
end of every append (the same list for byte streams). A fork is created with a copy of its
source's prefix (data and boundaries), so it shares the source's offset space but never links
to it: the source and the fork may live in different Raft groups. The source only keeps the ids
of its live forks (``fork_ids``), which makes its deletion a soft delete while forks remain.

May import: the standard library only.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass

RECORDS = "records"
APPENDS = "appends"


@dataclass(slots=True)
class ProducerState:
    epoch: int
    seq: int
    next_offset: int


@dataclass(frozen=True, slots=True)
class ForkPrefix:
    """What a fork inherits: the source's bytes and boundaries below ``base``, and its type
    and lifetime (inherited when the fork request names none)."""

    data: bytes
    ends: tuple[int, ...]
    append_ends: tuple[int, ...]
    content_type: str
    ttl_seconds: int | None
    expires_at_ms: int | None
    expires_at_text: str | None

    def to_wire(self) -> list:
        return [self.data, list(self.ends), list(self.append_ends), self.content_type,
                self.ttl_seconds, self.expires_at_ms, self.expires_at_text]

    @classmethod
    def from_wire(cls, data: list) -> ForkPrefix:
        return cls(data[0], tuple(data[1]), tuple(data[2]), *data[3:])


class Stream:
    __slots__ = (
        "uid", "bucket", "name", "content_type", "json", "ttl_seconds", "expires_at_ms",
        "expires_at_text", "touched_ms", "closed", "data", "ends", "append_ends", "last_seq",
        "producers", "fork_ids", "deleted", "fork_spec", "fork_source", "requested_lifetime",
    )

    def __init__(self, uid: int, bucket: str, name: str, content_type: str, json: bool):
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
        self.data = bytearray()
        self.ends: list[int] = []
        self.append_ends: list[int] = [] if json else self.ends
        self.last_seq: str | None = None
        self.producers: dict[str, ProducerState] = {}
        self.fork_ids: set[str] = set()
        self.deleted = False
        self.fork_spec: tuple | None = None  # the fork request, for idempotent re-creation
        self.fork_source: tuple[str, str, str] | None = None  # (bucket, stream, fork id)

    @property
    def tail(self) -> int:
        return len(self.data)

    @property
    def forks(self) -> int:
        return len(self.fork_ids)

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
            self.ends.append(len(self.data))
        if self.json and records:
            self.append_ends.append(self.tail)
        return start

    def inherit(self, prefix: ForkPrefix) -> None:
        self.data = bytearray(prefix.data)
        self.ends = list(prefix.ends)
        self.append_ends = list(prefix.append_ends) if self.json else self.ends

    def prefix(self, base: int) -> ForkPrefix:
        """The fork prefix ``[0, base)``; ``base`` becomes a record and append boundary."""
        ends = self.ends[:bisect_left(self.ends, base)]
        if base and (not ends or ends[-1] != base):
            ends.append(base)
        if self.json:
            append_ends = self.append_ends[:bisect_left(self.append_ends, base)]
            if base and (not append_ends or append_ends[-1] != base):
                append_ends.append(base)
        else:
            append_ends = ends
        return ForkPrefix(bytes(self.data[:base]), tuple(ends), tuple(append_ends),
                          self.content_type, self.ttl_seconds, self.expires_at_ms,
                          self.expires_at_text)

    # -- boundaries ------------------------------------------------------------------------

    def _ends(self, kind: str) -> list[int]:
        return self.ends if kind == RECORDS else self.append_ends

    def boundary_after(self, position: int, kind: str = RECORDS) -> int | None:
        """The smallest record (or append) boundary greater than ``position``."""
        ends = self._ends(kind)
        index = bisect_right(ends, position)
        return ends[index] if index < len(ends) else None

    def boundary_at_or_before(self, position: int, kind: str = RECORDS) -> int:
        """The largest boundary that is not greater than ``position`` (0 is a boundary)."""
        ends = self._ends(kind)
        index = bisect_right(ends, position)
        return ends[index - 1] if index else 0

    def slice(self, start: int, end: int) -> bytes:
        """The stored bytes of ``[start, end)``."""
        if start >= end:
            return b""
        return bytes(self.data[start:end])
