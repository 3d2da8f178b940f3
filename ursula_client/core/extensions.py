"""ursula's stream extensions as pure functions, like ``ops``: snapshots
(``PUT``/``GET {stream}/snapshot[/{offset}]``), the retention floor
(``PUT {stream}/retention/{offset}``), bootstrap (``GET {stream}/bootstrap``, a
``multipart/mixed`` answer: the snapshot part, then one part per retained record) and stream
attributes (``GET``/``PUT {stream}/attrs``). The rules are in docs/api.md.

May import: the standard library and ``ursula_client.core`` modules.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from typing import Any

from ursula_client.core import multipart
from ursula_client.core.errors import MalformedResponse, RetentionConflict, SnapshotConflict
from ursula_client.core.http import Request, Response
from ursula_client.core.offsets import NOW, START, check_offset
from ursula_client.core.ops import StreamRef, encode_attrs, expect
from ursula_client.core.types import Bootstrap, Snapshot, decode_json_body, is_json_type

#: ``Stream-Snapshot-Offset`` of a bootstrap without a snapshot
NO_SNAPSHOT = "-1"
DEFAULT_SNAPSHOT_TYPE = "application/octet-stream"


def _concrete(offset: str) -> str:
    if offset in (START, NOW):
        raise ValueError(f"a snapshot or retention offset is a stream offset, not {offset!r}")
    return check_offset(offset)


def _required(response: Response, name: str) -> str:
    value = response.header(name)
    if value is None:
        raise MalformedResponse(f"the server's {response.status} has no {name} header",
                                response.status)
    return value


def snapshot_digest(content_type: str, body: bytes) -> str:
    """``Stream-Snapshot-Digest`` as ursula computes it: the hex SHA-256 of
    ``u64le(len(content type)) || content type || body``."""
    ctype = content_type.encode("latin-1")
    return hashlib.sha256(struct.pack("<Q", len(ctype)) + ctype + body).hexdigest()


def encode_snapshot(value: Any, content_type: str | None = None) -> tuple[bytes, str]:
    """(body, content type) of a snapshot: bytes as they are (``application/octet-stream``
    unless ``content_type``), str as UTF-8 (``text/plain; charset=utf-8``), any other value
    as JSON (``application/json``)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), content_type or DEFAULT_SNAPSHOT_TYPE
    if isinstance(value, str):
        return value.encode("utf-8"), content_type or "text/plain; charset=utf-8"
    return (json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"),
            content_type or "application/json")


# -- snapshots ----------------------------------------------------------------------------

def publish_snapshot_request(ref: StreamRef, offset: str, body: bytes, content_type: str, *,
                             match: str | None = None) -> Request:
    """``PUT {stream}/snapshot/{offset}``; ``match``: publish only if the current snapshot's
    digest is this one (``Stream-Snapshot-Match``)."""
    headers: tuple[tuple[str, str], ...] = (("content-type", content_type),)
    if match is not None:
        if not match.strip():
            raise ValueError("match is a snapshot digest, not blank")
        headers += (("stream-snapshot-match", match),)
    return Request("PUT", f"{ref.path}/snapshot/{_concrete(offset)}", headers, body)


def parse_publish_snapshot(response: Response, request: Request) -> Snapshot:
    expect(response, request, (200, 204), conflict=SnapshotConflict)
    return Snapshot(offset=_required(response, "stream-snapshot-offset"),
                    digest=response.header("stream-snapshot-digest"),
                    content_type=request.header("content-type") or DEFAULT_SNAPSHOT_TYPE,
                    data=request.body)


def latest_snapshot_request(ref: StreamRef) -> Request:
    """``GET {stream}/snapshot``: 307 to the latest (not followed: the client reads
    ``{stream}/snapshot/{Stream-Snapshot-Offset}`` on the node it talks to)."""
    return Request("GET", f"{ref.path}/snapshot")


def parse_latest_snapshot(response: Response, request: Request) -> str | Snapshot | None:
    """The latest snapshot's offset (from a 307), the snapshot itself (a 200: an HTTP
    library followed the redirect), or None for a 404 (no snapshot, or no such stream: the
    caller tells them apart)."""
    if response.status == 404:
        return None
    if response.status in (301, 302, 303, 307, 308):
        return _required(response, "stream-snapshot-offset")
    return parse_snapshot(response, request)


def snapshot_request(ref: StreamRef, offset: str) -> Request:
    return Request("GET", f"{ref.path}/snapshot/{_concrete(offset)}")


def parse_snapshot(response: Response, request: Request) -> Snapshot | None:
    """A snapshot's blob; None for a 404 (none at that offset, or no such stream)."""
    if response.status == 404:
        return None
    expect(response, request, (200,))
    return Snapshot(offset=_required(response, "stream-snapshot-offset"),
                    digest=response.header("stream-snapshot-digest"),
                    content_type=response.header("content-type") or DEFAULT_SNAPSHOT_TYPE,
                    data=response.body, up_to_date=response.flag("stream-up-to-date"))


# -- retention ----------------------------------------------------------------------------

def retention_request(ref: StreamRef, offset: str) -> Request:
    """``PUT {stream}/retention/{offset}``: reads below ``offset`` answer 410 from now on."""
    return Request("PUT", f"{ref.path}/retention/{_concrete(offset)}")


def parse_retention(response: Response, request: Request) -> str:
    """The retention floor now."""
    expect(response, request, (200, 204), conflict=RetentionConflict)
    return _required(response, "stream-retained-offset")


# -- bootstrap ----------------------------------------------------------------------------

def bootstrap_request(ref: StreamRef) -> Request:
    return Request("GET", f"{ref.path}/bootstrap")


def parse_bootstrap(response: Response, request: Request,
                    json_mode: bool | None = None) -> Bootstrap:
    """A bootstrap answer: the first part is the snapshot (``Stream-Snapshot-Offset: -1`` and
    an empty part without one), each further part one record. ``json_mode``: what the caller
    knows of the stream, for an answer without records (records of a JSON stream come as
    ``application/json`` parts)."""
    expect(response, request, (200,))
    parts = multipart.parse(response.header("content-type"), response.body)
    if not parts:
        raise MalformedResponse("a bootstrap answer without its snapshot part", 200)
    snapshot_offset = _required(response, "stream-snapshot-offset")
    first, updates = parts[0], parts[1:]
    snapshot = None
    if snapshot_offset != NO_SNAPSHOT:
        snapshot = Snapshot(offset=snapshot_offset,
                            digest=response.header("stream-snapshot-digest"),
                            content_type=first.content_type, data=first.body)
    elif first.body:
        raise MalformedResponse("a bootstrap without a snapshot (Stream-Snapshot-Offset: -1) "
                                "whose snapshot part is not empty", 200)
    if updates:
        kinds = {is_json_type(p.content_type) for p in updates}
        if len(kinds) != 1:
            raise MalformedResponse("a bootstrap mixes JSON and non-JSON records", 200)
        json_mode = kinds.pop()
    raw = tuple(p.body for p in updates)
    decoded: list[Any]
    if json_mode:
        try:
            decoded = decode_json_body(b"[" + b",".join(raw) + b"]") if raw else []
        except ValueError as error:
            raise MalformedResponse(f"a bootstrap record is not JSON: {error}", 200) from None
        if len(decoded) != len(raw):  # a part holding "1,2" would pass as two messages
            raise MalformedResponse("a bootstrap part holds more than one JSON message", 200)
    else:
        decoded = list(raw)
    return Bootstrap(snapshot=snapshot, updates=decoded,
                     next_offset=_required(response, "stream-next-offset"),
                     up_to_date=response.flag("stream-up-to-date"),
                     closed=response.flag("stream-closed"), json_mode=bool(json_mode),
                     retained_offset=response.header("stream-retained-offset"),
                     offset=None if snapshot is None else snapshot.offset, raw_updates=raw)


# -- attributes ---------------------------------------------------------------------------

def get_attrs_request(ref: StreamRef) -> Request:
    return Request("GET", f"{ref.path}/attrs")


def parse_get_attrs(response: Response, request: Request) -> dict[str, Any]:
    expect(response, request, (200,))
    try:
        value = json.loads(response.body) if response.body.strip() else {}
    except ValueError:
        raise MalformedResponse("the attributes are not JSON", response.status) from None
    if not isinstance(value, dict):
        raise MalformedResponse("the attributes are not a JSON object", response.status)
    return value


def set_attrs_request(ref: StreamRef, attrs: Mapping[str, Any]) -> Request:
    """``PUT {stream}/attrs``: replaces the attribute object (``{}`` clears it)."""
    if not isinstance(attrs, Mapping):
        raise TypeError("attrs is a JSON object (a dict)")
    return Request("PUT", f"{ref.path}/attrs", (("content-type", "application/json"),),
                   encode_attrs(attrs).encode("ascii"))


def parse_set_attrs(response: Response, request: Request) -> None:
    expect(response, request, (200, 204))
