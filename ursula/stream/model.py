"""The data of one stream: bytes, record boundaries, producers, lifetime, fork references.

A stream's offsets are byte positions in ``data``. ``ends`` holds the end offset of every
record (one per append for byte streams, one per message for JSON streams); ``append_ends`` the
end of every append (the same list for byte streams). A fork is created with a copy of its
source's prefix (data and boundaries), so it shares the source's offset space but never links
to it: the source and the fork may live in different Raft groups. The source only keeps the ids
of its live forks (``fork_ids``), which makes its deletion a soft delete while forks remain.

The cold tier: ``data`` holds only the hot bytes ``[base, tail)``; the bytes below ``base`` are
in cold chunks, ``chunks`` lists their references ``(start, end, key, checksum)`` in offset
order (an object holds the stream bytes ``[start, end)``; a reference counts up to the next
one's start, or ``base``, whichever is lower: a fork may inherit a chunk that goes past its fork
point). The first ``inherited`` references came with a fork's prefix and belong to its source;
the rest were flushed by this stream, whose deletion collects them. Offsets and record
boundaries (``ends``) never change when bytes go cold.

Snapshots and retention (``docs/api.md``): ``snapshot`` is the stream's one visible application
snapshot (a ``SnapshotMeta``: the state of ``[0, offset)``, its blob inline until the leader
moved it to the cold tier, then a reference), ``retained`` the retention floor: reads below it
are refused (410), the hot bytes below it are dropped, the cold chunks wholly below it are
released, and the record boundaries below it are forgotten (``retained`` is a boundary itself).
``attrs`` is the stream's attribute object (canonical JSON bytes) or None. ``compute`` is the
stream's compute binding and materialised state (``ursula.stream.compute.Binding``) or None.

May import: the standard library only.
"""

from __future__ import annotations

import hashlib
import struct
from bisect import bisect_left, bisect_right
from dataclasses import dataclass

RECORDS = "records"
APPENDS = "appends"


@dataclass(slots=True)
class ProducerState:
    epoch: int
    seq: int
    next_offset: int


class SnapshotMeta:
    """A stream's visible snapshot: the state of ``[0, offset)`` as the application (or the
    compute extension, ``auto``) published it. ``blob`` holds it until the leader stored it in
    the cold tier (``key``, ``checksum`` of its chunk-layout object); then it is None."""

    __slots__ = ("offset", "content_type", "digest", "size", "blob", "key", "checksum", "auto")

    def __init__(self, offset: int, content_type: str, digest: str, size: int,
                 blob: bytes | None, key: str | None = None, checksum: int = 0,
                 auto: bool = False):
        self.offset = offset
        self.content_type = content_type
        self.digest = digest
        self.size = size
        self.blob = blob
        self.key = key
        self.checksum = checksum
        self.auto = auto

    def to_wire(self) -> list:
        return [self.offset, self.content_type, self.digest, self.size, self.blob, self.key,
                self.checksum, self.auto]

    @classmethod
    def from_wire(cls, data: list) -> SnapshotMeta:
        return cls(*data)


def snapshot_digest(content_type: str, body: bytes) -> str:
    """The digest of a snapshot: SHA-256 of ``u64le(len(content type)) || content type ||
    body``, in hex (the original server frames its BLAKE3 digest the same way)."""
    ct = content_type.encode("utf-8")
    digest = hashlib.sha256(struct.pack("<Q", len(ct)))
    digest.update(ct)
    digest.update(body)
    return digest.hexdigest()


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
    chunks: tuple = ()  # cold references below ``hot_start`` (``data`` is [hot_start, base))
    hot_start: int = 0
    retained: int = 0  # the source's retention floor (the fork's starts there too)

    def to_wire(self) -> list:
        wire = [self.data, list(self.ends), list(self.append_ends), self.content_type,
                self.ttl_seconds, self.expires_at_ms, self.expires_at_text]
        if self.chunks or self.hot_start or self.retained:
            wire += [[list(c) for c in self.chunks], self.hot_start]
        if self.retained:
            wire.append(self.retained)
        return wire

    @classmethod
    def from_wire(cls, data: list) -> ForkPrefix:
        chunks = tuple(tuple(c) for c in data[7]) if len(data) > 7 else ()
        hot_start = data[8] if len(data) > 8 else 0
        retained = data[9] if len(data) > 9 else 0
        return cls(data[0], tuple(data[1]), tuple(data[2]), *data[3:7], chunks, hot_start,
                   retained)


class Stream:
    __slots__ = (
        "uid", "bucket", "name", "content_type", "json", "ttl_seconds", "expires_at_ms",
        "expires_at_text", "touched_ms", "closed", "data", "ends", "append_ends", "last_seq",
        "producers", "fork_ids", "deleted", "fork_spec", "fork_source", "requested_lifetime",
        "base", "chunks", "inherited", "retained", "snapshot", "attrs", "compute",
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
        self.base = 0  # the hot start: bytes below it are cold
        self.chunks: list[tuple[int, int, str, int]] = []
        self.inherited = 0
        self.ends: list[int] = []
        self.append_ends: list[int] = [] if json else self.ends
        self.last_seq: str | None = None
        self.producers: dict[str, ProducerState] = {}
        self.fork_ids: set[str] = set()
        self.deleted = False
        self.fork_spec: tuple | None = None  # the fork request, for idempotent re-creation
        self.fork_source: tuple[str, str, str] | None = None  # (bucket, stream, fork id)
        self.retained = 0  # the retention floor: reads below it are 410
        self.snapshot: SnapshotMeta | None = None
        self.attrs: bytes | None = None
        self.compute = None  # the compute binding (ursula.stream.compute.Binding) or None

    @property
    def tail(self) -> int:
        return self.base + len(self.data)

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
        base = self.base
        for record in records:
            self.data += record
            self.ends.append(base + len(self.data))
        if self.json and records:
            self.append_ends.append(self.tail)
        return start

    def inherit(self, prefix: ForkPrefix) -> None:
        self.data = bytearray(prefix.data)
        self.base = prefix.hot_start
        self.chunks = [tuple(c) for c in prefix.chunks]
        self.inherited = len(self.chunks)
        self.ends = list(prefix.ends)
        self.append_ends = list(prefix.append_ends) if self.json else self.ends
        self.retained = prefix.retained

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
        hot_start = min(base, self.base)
        chunks = tuple(c for c in self.chunks if c[0] < hot_start)
        return ForkPrefix(self.slice(hot_start, base), tuple(ends), tuple(append_ends),
                          self.content_type, self.ttl_seconds, self.expires_at_ms,
                          self.expires_at_text, chunks, hot_start, self.retained)

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
        return ends[index - 1] if index else self.retained

    def is_boundary(self, position: int, kind: str = RECORDS) -> bool:
        """``position`` is the retention floor, the tail, or the end of a record (append)."""
        if position == self.retained or position == self.tail:
            return True
        ends = self._ends(kind)
        index = bisect_left(ends, position)
        return index < len(ends) and ends[index] == position

    def slice(self, start: int, end: int) -> bytes:
        """The stored hot bytes of ``[start, end)`` (``start >= base``)."""
        if start >= end:
            return b""
        base = self.base
        return bytes(self.data[start - base:end - base])

    # -- the cold tier -----------------------------------------------------------------------

    def cold_spans(self, start: int, end: int) -> tuple:
        """Where the cold bytes of ``[start, min(end, base))`` are: ``(from, to, key, checksum,
        chunk start, chunk end)`` per chunk, in order."""
        end = min(end, self.base)
        chunks = self.chunks
        out = []
        index = max(0, bisect_right(chunks, (start, float("inf"))) - 1)
        while index < len(chunks) and start < end:
            c_start, c_end, key, checksum = chunks[index]
            index += 1
            limit = min(c_end, chunks[index][0] if index < len(chunks) else self.base, end)
            if limit <= start:
                continue
            out.append((start, limit, key, checksum, c_start, c_end))
            start = limit
        return tuple(out)

    def flush(self, start: int, end: int, key: str, checksum: int) -> int:
        """Bytes ``[start, end)`` (``start == base``) are now in the cold chunk ``key``: drop
        them from memory. Returns how many bytes were dropped."""
        del self.data[:end - start]
        self.base = end
        self.chunks.append((start, end, key, checksum))
        return end - start

    def retain(self, floor: int, keep_chunks: bool) -> tuple[int, list]:
        """Move the retention floor up to ``floor`` (a boundary, at most the tail): drop the
        hot bytes below it and forget the boundaries below it; unless ``keep_chunks`` (live
        forks may read them), release the cold references wholly below it. Returns (hot bytes
        dropped, own chunk references released)."""
        self.retained = floor
        dropped = 0
        if floor > self.base:
            dropped = floor - self.base
            del self.data[:dropped]
            self.base = floor
        released = []
        if not keep_chunks:
            chunks = self.chunks
            keep_from = 0
            while keep_from < len(chunks):
                nxt = chunks[keep_from + 1][0] if keep_from + 1 < len(chunks) else self.base
                if min(chunks[keep_from][1], nxt) > floor:
                    break
                keep_from += 1
            if keep_from:
                inherited = min(self.inherited, keep_from)
                released = chunks[inherited:keep_from]
                del chunks[:keep_from]
                self.inherited -= inherited
        del self.ends[:bisect_right(self.ends, floor)]
        if self.json:
            del self.append_ends[:bisect_right(self.append_ends, floor)]
        return dropped, released

    def own_chunks(self) -> list[tuple[int, int, str, int]]:
        """The chunks this stream flushed (its deletion collects them)."""
        return self.chunks[self.inherited:]

    @property
    def cold_bytes(self) -> int:
        return sum(c[1] - c[0] for c in self.own_chunks())
