"""Stream and bucket operations as pure functions: ``*_request`` builds the ``Request``,
``parse_*`` reads the ``Response`` into a result or raises the matching ``HTTPError``.

May import: the standard library and ``ursula_client.core`` modules.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ursula_client.core import framing
from ursula_client.core.errors import Conflict, UrsulaError, error_for
from ursula_client.core.http import Request, Response, with_query
from ursula_client.core.offsets import START, check_offset
from ursula_client.core.types import (
    AppendResult,
    BatchItem,
    BucketEntry,
    BucketPage,
    CreateResult,
    ReadBatch,
    StreamInfo,
    is_json_type,
)

DEFAULT_BUCKET = "_default"


def _segment(text: str, keep_slash: bool) -> str:
    # the server percent-decodes each path segment once: a literal "%" goes as %25
    return quote(text, safe="/" if keep_slash else "")


@dataclass(frozen=True)
class StreamRef:
    """Where a stream lives: ``bucket`` None (or ``_default``) is the upstream layout
    ``/v1/stream/<name>`` (the name may hold ``/``); otherwise ``/<bucket>/<name>``."""

    name: str
    bucket: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a stream needs a name")
        if self.bucket not in (None, DEFAULT_BUCKET) and "/" in self.name:
            raise ValueError("in a bucket a stream name is one path segment (no '/')")

    @property
    def in_default_bucket(self) -> bool:
        return self.bucket in (None, DEFAULT_BUCKET)

    @property
    def path(self) -> str:
        if self.in_default_bucket:
            return "/v1/stream/" + _segment(self.name, True)
        return f"/{_segment(self.bucket or '', False)}/{_segment(self.name, False)}"

    @property
    def header_path(self) -> str:
        """The form a header such as ``Stream-Forked-From`` takes (decoded once)."""
        if self.in_default_bucket:
            return "/v1/stream/" + quote(self.name, safe="/")
        return f"/{quote(self.bucket or '', safe='')}/{quote(self.name, safe='')}"

    def __str__(self) -> str:
        return self.name if self.in_default_bucket else f"{self.bucket}/{self.name}"


def _headers(extra: Mapping[str, str] | None, **named: str | None) -> tuple[tuple[str, str], ...]:
    items = [(k.replace("_", "-"), v) for k, v in named.items() if v is not None]
    if extra:
        items.extend(extra.items())
    return tuple(items)


def expect(response: Response, request: Request, ok: Sequence[int], *,
           creating: bool = False, subscription: bool = False,
           conflict: type[Conflict] | None = None) -> Response:
    """``response`` if its status is one of ``ok``; else raise the matching error."""
    if response.status in ok:
        return response
    raise error_for(response.status, response.headers, response.body, request.method,
                    request.target.split("?")[0], subscription=subscription, creating=creating,
                    conflict=conflict)


def _required(response: Response, name: str) -> str:
    value = response.header(name)
    if value is None:
        raise UrsulaError(f"the server's {response.status} has no {name} header")
    return value


# -- create -------------------------------------------------------------------------------

def create_request(ref: StreamRef, content_type: str | None = None, *,
                   ttl_seconds: int | None = None, expires_at: str | None = None,
                   closed: bool = False, body: bytes = b"",
                   fork_from: StreamRef | None = None, fork_offset: str | None = None,
                   fork_sub_offset: int | None = None,
                   attrs: Mapping[str, Any] | None = None,
                   headers: Mapping[str, str] | None = None) -> Request:
    if ttl_seconds is not None and expires_at is not None:
        raise ValueError("give ttl_seconds or expires_at, not both")
    if ttl_seconds is not None and (not isinstance(ttl_seconds, int) or ttl_seconds < 0):
        raise ValueError("ttl_seconds is a non-negative int")
    if fork_from is None and (fork_offset is not None or fork_sub_offset is not None):
        raise ValueError("fork_offset and fork_sub_offset need fork_from")
    if fork_offset is not None:
        check_offset(fork_offset)
    if attrs is not None and not isinstance(attrs, Mapping):
        raise TypeError("attrs is a JSON object (a dict)")
    return Request("PUT", ref.path, _headers(
        headers, content_type=content_type,
        stream_ttl=None if ttl_seconds is None else str(ttl_seconds),
        stream_expires_at=expires_at, stream_closed="true" if closed else None,
        stream_forked_from=None if fork_from is None else fork_from.header_path,
        stream_fork_offset=fork_offset,
        stream_fork_sub_offset=None if fork_sub_offset is None else str(fork_sub_offset),
        stream_attrs=None if attrs is None else encode_attrs(attrs)),
        body)


def encode_attrs(attrs: Mapping[str, Any]) -> str:
    """An attribute object as the server keeps it (sorted keys, no spaces); ASCII, so that it
    also fits the ``Stream-Attrs`` header."""
    return json.dumps(dict(attrs), sort_keys=True, separators=(",", ":"))


def parse_create(response: Response, request: Request) -> CreateResult:
    expect(response, request, (200, 201), creating=True)
    return CreateResult(created=response.status == 201,
                        next_offset=_required(response, "stream-next-offset"),
                        closed=response.flag("stream-closed"),
                        location=response.header("location"))


# -- append / close -----------------------------------------------------------------------

def append_request(ref: StreamRef, body: bytes, content_type: str, *, close: bool = False,
                   stream_seq: str | None = None,
                   producer: tuple[str, int, int] | None = None,
                   if_match: str | None = None,
                   headers: Mapping[str, str] | None = None) -> Request:
    """A POST; an empty ``body`` with ``close`` is a close-only request."""
    if not body and not close:
        raise ValueError("an append needs a non-empty body (or close=True)")
    if if_match is not None and producer is not None:
        raise ValueError("if_match cannot be combined with a producer (the server refuses it)")
    pid = epoch = seq = None
    if producer is not None:
        pid, e, s = producer
        if not pid:
            raise ValueError("a producer id is a non-empty string")
        epoch, seq = str(e), str(s)
    return Request("POST", ref.path, _headers(
        headers, content_type=content_type if body else None,
        stream_closed="true" if close else None, stream_seq=stream_seq,
        producer_id=pid, producer_epoch=epoch, producer_seq=seq,
        if_match=None if if_match is None else f'"{check_offset(if_match)}"'), body)


def parse_append(response: Response, request: Request) -> AppendResult:
    expect(response, request, (200, 204))
    epoch, seq = response.header("producer-epoch"), response.header("producer-seq")
    producer = request.header("producer-id") is not None
    etag = response.header("etag")
    return AppendResult(
        next_offset=response.header("stream-next-offset"),
        closed=response.flag("stream-closed"),
        producer_epoch=int(epoch) if epoch and epoch.isdigit() else None,
        producer_seq=int(seq) if seq and seq.isdigit() else None,
        duplicate=producer and response.status == 204 and bool(request.body),
        etag=etag.strip('"') if etag else None)


def append_batch_request(ref: StreamRef, frames: Sequence[bytes], content_type: str,
                         if_match: str | None = None) -> Request:
    """``POST /{bucket}/{stream}/append-batch`` (an ursula extension: each frame is appended
    on its own, in order, in one request; with ``if_match`` all frames or none, at that
    tail). Only streams in a named bucket have this route."""
    if ref.in_default_bucket:
        raise ValueError("append-batch is routed for /{bucket}/{stream} only, not for the "
                         "_default bucket (/v1/stream/...): use a named bucket, or append")
    if not frames:
        raise ValueError("no frames")
    headers: tuple[tuple[str, str], ...] = (("content-type", content_type),)
    if if_match is not None:
        headers += (("if-match", f'"{check_offset(if_match)}"'),)
    return Request("POST", ref.path + "/append-batch", headers, framing.encode_frames(frames))


def parse_append_batch(response: Response, request: Request) -> list[BatchItem]:
    expect(response, request, (200,))
    items = json.loads(response.body)
    return [BatchItem(status=int(i["status"]), offset=i.get("offset"),
                      next_offset=i.get("next_offset"), error=i.get("error")) for i in items]


# -- read ---------------------------------------------------------------------------------

def read_request(ref: StreamRef, offset: str = START, *, live: str | None = None,
                 cursor: str | None = None, timeout: float | None = None,
                 if_none_match: str | None = None) -> Request:
    if live not in (None, "long-poll", "sse"):
        raise ValueError("live is None, 'long-poll' or 'sse'")
    target = with_query(ref.path, {"offset": check_offset(offset), "live": live,
                                   "cursor": cursor})
    headers: tuple[tuple[str, str], ...] = ()
    if live == "sse":
        headers = (("accept", "text/event-stream"),)
    if if_none_match is not None:
        headers += (("if-none-match", if_none_match),)
    return Request("GET", target, headers, streaming=live == "sse", timeout=timeout)


def parse_read(response: Response, request: Request, offset: str,
               json_mode: bool | None = None) -> ReadBatch | None:
    """A catch-up or long-poll answer as a ``ReadBatch``; None for 304 (not modified).
    ``json_mode``: what the caller knows of the stream, for answers without a Content-Type
    (a long-poll 204)."""
    expect(response, request, (200, 204, 304))
    if response.status == 304:
        return None
    content_type = response.header("content-type")
    if content_type is not None and response.status == 200:
        json_mode = is_json_type(content_type)
    data = response.body if response.status == 200 else b""
    return ReadBatch(offset=offset, next_offset=_required(response, "stream-next-offset"),
                     data=data, json_mode=bool(json_mode),
                     up_to_date=response.flag("stream-up-to-date"),
                     closed=response.flag("stream-closed"),
                     cursor=response.header("stream-cursor"), etag=response.header("etag"))


# -- head / delete ------------------------------------------------------------------------

def head_request(ref: StreamRef) -> Request:
    return Request("HEAD", ref.path)


def parse_head(response: Response, request: Request) -> StreamInfo:
    expect(response, request, (200,))
    ttl = response.header("stream-ttl")
    size = response.header("ursula-stream-bytes")
    return StreamInfo(retained_offset=response.header("stream-retained-offset"),
                      snapshot_offset=response.header("stream-snapshot-offset"),
                      snapshot_digest=response.header("stream-snapshot-digest"),content_type=response.header("content-type") or "application/octet-stream",
                      next_offset=_required(response, "stream-next-offset"),
                      closed=response.flag("stream-closed"),
                      ttl_seconds=int(ttl) if ttl and ttl.isdigit() else None,
                      expires_at=response.header("stream-expires-at"),
                      size_bytes=int(size) if size and size.isdigit() else None)


def delete_request(ref: StreamRef) -> Request:
    return Request("DELETE", ref.path)


def parse_delete(response: Response, request: Request) -> None:
    expect(response, request, (200, 204))


# -- buckets ------------------------------------------------------------------------------

def _bucket_path(bucket: str) -> str:
    if not bucket or "/" in bucket:
        raise ValueError(f"not a bucket name: {bucket!r}")
    return "/" + quote(bucket, safe="")


def create_bucket_request(bucket: str) -> Request:
    return Request("PUT", _bucket_path(bucket))


def parse_create_bucket(response: Response, request: Request) -> bool:
    """True when the bucket was created (201), False when it existed (200)."""
    expect(response, request, (200, 201))
    return response.status == 201


def list_bucket_request(bucket: str, limit: int | None = None,
                        cursor: str | None = None) -> Request:
    return Request("GET", with_query(_bucket_path(bucket), {
        "limit": None if limit is None else str(limit), "cursor": cursor}))


def parse_list_bucket(response: Response, request: Request) -> BucketPage:
    expect(response, request, (200,))
    page = json.loads(response.body)
    return BucketPage(bucket=page["bucket"], next_cursor=page.get("next_cursor"), streams=[
        BucketEntry(s["name"], s["content_type"], s["next_offset"], bool(s["closed"]))
        for s in page["streams"]])


def delete_bucket_request(bucket: str) -> Request:
    return Request("DELETE", _bucket_path(bucket))


def parse_delete_bucket(response: Response, request: Request) -> None:
    expect(response, request, (200, 204))

