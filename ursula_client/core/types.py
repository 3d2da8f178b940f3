"""The values operations return: stream metadata, append results, read batches, bucket pages.

May import: the standard library and ``ursula_client.core`` modules.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StreamInfo:
    """``HEAD`` of a stream."""

    content_type: str
    next_offset: str
    closed: bool = False
    ttl_seconds: int | None = None
    expires_at: str | None = None
    #: bytes held for the stream (``Ursula-Stream-Bytes``; None from other servers)
    size_bytes: int | None = None
    #: the retention floor (``Stream-Retained-Offset``: reads below it are ``Retained``)
    retained_offset: str | None = None
    #: the latest snapshot's offset and digest (None when none is published)
    snapshot_offset: str | None = None
    snapshot_digest: str | None = None

    @property
    def json(self) -> bool:
        return is_json_type(self.content_type)


@dataclass(frozen=True)
class CreateResult:
    created: bool  # False: it existed with the same configuration (200)
    next_offset: str
    closed: bool = False
    location: str | None = None


@dataclass(frozen=True)
class AppendResult:
    """What the server answered to an append (or to a producer's batch).

    ``next_offset`` is the stream's tail after the append (None for a producer duplicate: the
    server tells only that it already holds the batch). ``etag`` is the tail as an
    ``If-Match`` value (ursula only)."""

    next_offset: str | None
    closed: bool = False
    producer_epoch: int | None = None
    producer_seq: int | None = None
    duplicate: bool = False
    etag: str | None = None


@dataclass(frozen=True)
class BatchItem:
    """One frame's result in an ``append-batch``: ``status`` 204 with offsets, or an error."""

    status: int
    offset: str | None = None
    next_offset: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass(frozen=True)
class ReadBatch:
    """Data read from ``offset`` up to ``next_offset`` (resume from ``next_offset``).

    ``data`` is the raw bytes (for JSON streams: a JSON array); ``records`` the decoded
    messages of a JSON stream. ``up_to_date``: the read reached the tail; ``closed``: the
    stream is closed and this is its end (EOF)."""

    offset: str
    next_offset: str
    data: bytes = b""
    json_mode: bool = False
    up_to_date: bool = False
    closed: bool = False
    cursor: str | None = None
    etag: str | None = None
    _records: tuple[Any, ...] | None = field(default=None, repr=False, compare=False)
    #: set on the batch a follower made of a bootstrap (``on_retained="bootstrap"``): the
    #: state of the stream up to ``offset``; replace yours with it, then apply the records
    snapshot: Snapshot | None = None

    @property
    def records(self) -> list[Any]:
        """The messages of a JSON stream, in order (TypeError on other streams)."""
        if not self.json_mode:
            raise TypeError("records are decoded for JSON streams only (use .data or .text)")
        if self._records is not None:
            return list(self._records)
        return decode_json_body(self.data)

    @property
    def text(self) -> str:
        return self.data.decode("utf-8")

    def __len__(self) -> int:
        return len(self.records) if self.json_mode else len(self.data)


@dataclass(frozen=True)
class Snapshot:
    """A published snapshot: the application's state of the stream up to ``offset`` (read on
    from there). ``data`` is the blob as stored, of ``content_type``; ``digest`` is
    ``Stream-Snapshot-Digest`` (the value ``publish_snapshot(..., match=)`` takes).
    ``up_to_date``: ``offset`` is the stream's tail (on a read of the snapshot)."""

    offset: str
    digest: str | None
    content_type: str
    data: bytes = b""
    up_to_date: bool = False

    @property
    def json(self) -> bool:
        return is_json_type(self.content_type)

    @property
    def value(self) -> Any:
        """The blob decoded as JSON (ValueError if it is not)."""
        return json.loads(self.data)

    @property
    def text(self) -> str:
        return self.data.decode("utf-8")


@dataclass(frozen=True)
class Bootstrap:
    """``GET {stream}/bootstrap``: the latest snapshot (None without one), then the records
    after it: ``updates`` are the decoded messages of a JSON stream, or each append of a byte
    stream as bytes. Read on from ``next_offset``; ``up_to_date``: that is the tail (else
    more records follow: read or follow from ``next_offset``); ``closed``: the stream is
    closed and this is its end."""

    snapshot: Snapshot | None
    updates: list[Any]
    next_offset: str
    up_to_date: bool = False
    closed: bool = False
    json_mode: bool = False
    retained_offset: str | None = None
    #: where the updates start (the snapshot's offset; None without a snapshot: the start)
    offset: str | None = None
    #: the raw bytes of each update part, as sent
    raw_updates: tuple[bytes, ...] = field(default=(), repr=False)

    def as_batch(self) -> ReadBatch:
        """The updates as one ``ReadBatch`` (carrying ``snapshot``), the way a follower
        yields a bootstrap."""
        if self.json_mode:
            data = b"[" + b",".join(self.raw_updates) + b"]" if self.raw_updates else b""
            records: tuple[Any, ...] | None = tuple(self.updates)
        else:
            data, records = b"".join(self.raw_updates), None
        return ReadBatch(offset=self.offset or "-1", next_offset=self.next_offset, data=data,
                         json_mode=self.json_mode, up_to_date=self.up_to_date,
                         closed=self.closed, _records=records, snapshot=self.snapshot)


@dataclass(frozen=True)
class BucketEntry:
    name: str
    content_type: str
    next_offset: str
    closed: bool


@dataclass(frozen=True)
class BucketPage:
    bucket: str
    streams: list[BucketEntry]
    next_cursor: str | None


def is_json_type(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() == "application/json"


def is_text_type(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower().startswith("text/")


def decode_json_body(data: bytes) -> list[Any]:
    """The messages of a JSON read body (a JSON array; empty for an empty body)."""
    if not data.strip():
        return []
    value = json.loads(data)
    if not isinstance(value, list):
        raise ValueError("a JSON stream read is not a JSON array")
    return value


def encode_json_records(records: list[Any] | tuple[Any, ...]) -> bytes:
    """A POST body that stores each value as its own message: the server flattens one level
    of array, so the values are always wrapped in one (a value that is itself a list stays
    one message)."""
    if not records:
        raise ValueError("no records to append")
    return ("[" + ",".join(json.dumps(r, separators=(",", ":"), ensure_ascii=False)
                           for r in records) + "]").encode()
