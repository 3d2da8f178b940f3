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
