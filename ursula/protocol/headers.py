"""Parsing and validation of the Durable Streams request headers.

The functions take a ``get(name) -> str | None`` callable (lower-case header names) so that they
work on any request object (``parse_if_match`` takes the list of values: a repeated header
matters there). Every malformed value raises ``ProtocolError(400, reason)``.

May import: the standard library and ``ursula.protocol`` modules.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from ursula.protocol.errors import ProtocolError
from ursula.protocol.offsets import parse_wire_offset

HeaderGetter = Callable[[str], "str | None"]

#: ``If-Match: *`` in a command's ``if_match``: parsed, and refused by the state machine
#: (400) after the checks that come before it (404, 409 closed, 409 content type).
IF_MATCH_ANY = -1
IF_MATCH_HINT = 'a quoted stream offset, e.g. If-Match: "0000000000000000_0000000000000005"'

DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_SAFE_INTEGER = 2**53 - 1
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_PLAIN_DIGITS = re.compile(r"[0-9]+")
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


@lru_cache(maxsize=512)
def media_type(content_type: str) -> str:
    """The lower-cased media type without parameters: ``Text/Plain; x=y`` -> ``text/plain``
    (cached: every append compares its type with its stream's)."""
    return content_type.split(";", 1)[0].strip().lower()


def is_json_type(content_type: str) -> bool:
    return media_type(content_type) == "application/json"


def is_text_type(content_type: str) -> bool:
    """Text and JSON streams are sent as text in SSE; everything else as base64."""
    media = media_type(content_type)
    return media.startswith("text/") or media == "application/json"


def flag(get: HeaderGetter, name: str) -> bool:
    """A boolean header: only the case-insensitive value ``true`` turns it on."""
    value = get(name)
    return value is not None and value.strip().lower() == "true"


def parse_ttl(value: str) -> int:
    if not _DECIMAL.fullmatch(value) or int(value) > MAX_SAFE_INTEGER:
        raise ProtocolError(400, "Stream-TTL must be a non-negative integer without sign or zeros")
    return int(value)


def parse_expires_at(value: str) -> int:
    """RFC 3339 timestamp -> milliseconds since the epoch."""
    if not _RFC3339.fullmatch(value.strip()):
        raise ProtocolError(400, "Stream-Expires-At must be an RFC 3339 timestamp")
    text = value.strip().replace("z", "Z").replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ProtocolError(400, "Stream-Expires-At must be an RFC 3339 timestamp") from None
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class ProducerHeaders:
    id: str
    epoch: int
    seq: int


def parse_producer(get: HeaderGetter) -> ProducerHeaders | None:
    """``Producer-Id/Epoch/Seq``: all three or none."""
    pid, epoch, seq = get("producer-id"), get("producer-epoch"), get("producer-seq")
    present = [v is not None for v in (pid, epoch, seq)]
    if not any(present):
        return None
    if not all(present):
        raise ProtocolError(400, "Producer-Id, Producer-Epoch and Producer-Seq must be sent together")
    if pid == "":
        raise ProtocolError(400, "Producer-Id must not be empty")
    return ProducerHeaders(pid, _producer_int(epoch, "Producer-Epoch"),
                           _producer_int(seq, "Producer-Seq"))


def _producer_int(value: str, name: str) -> int:
    if not _PLAIN_DIGITS.fullmatch(value) or int(value) > MAX_SAFE_INTEGER:
        raise ProtocolError(400, f"{name} must be an integer between 0 and 2^53-1")
    return int(value)


@dataclass(frozen=True, slots=True)
class Lifetime:
    ttl_seconds: int | None = None
    expires_at_ms: int | None = None
    expires_at_text: str | None = None


def parse_lifetime(get: HeaderGetter) -> Lifetime:
    ttl, expires = get("stream-ttl"), get("stream-expires-at")
    if ttl is not None and expires is not None:
        raise ProtocolError(400, "Stream-TTL and Stream-Expires-At are mutually exclusive")
    if ttl is not None:
        return Lifetime(ttl_seconds=parse_ttl(ttl))
    if expires is not None:
        return Lifetime(expires_at_ms=parse_expires_at(expires), expires_at_text=expires.strip())
    return Lifetime()


def parse_sub_offset(value: str) -> int:
    if not _DECIMAL.fullmatch(value) or int(value) > MAX_SAFE_INTEGER:
        raise ProtocolError(400, "Stream-Fork-Sub-Offset must be a non-negative integer")
    return int(value)


def parse_if_match(values: list[str] | None) -> int | None:
    """``If-Match`` of an append: the quoted tail offset the writer expects (its position),
    ``IF_MATCH_ANY`` for ``*``, or None when absent. Raises ProtocolError(400) for anything
    else: more than one value (a list or a repeated header), a weak tag, an unquoted value, a
    quoted value that is not an offset of this server (the ETag of a GET is not one)."""
    if values is None:
        return None
    if len(values) != 1:
        raise ProtocolError(400, "If-Match must be given once, with one offset")
    value = values[0].strip()
    if value == "*":
        return IF_MATCH_ANY
    if "," in value:
        raise ProtocolError(400, "If-Match takes one offset, not a list")
    if value.startswith(("W/", "w/")):
        raise ProtocolError(400, f"If-Match takes a strong tag: {IF_MATCH_HINT}")
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        raise ProtocolError(400, f"If-Match must be {IF_MATCH_HINT}")
    try:
        return parse_wire_offset(value[1:-1])
    except ProtocolError:
        raise ProtocolError(400, f"If-Match must be {IF_MATCH_HINT} (the tail: Stream-Next-"
                                 f"Offset or the ETag of an append)") from None


#: The largest attribute object (``Stream-Attrs``, ``PUT {stream}/attrs``), canonical JSON.
MAX_ATTRS_BYTES = 16 * 1024


def parse_attrs(text: str | bytes) -> bytes:
    """An attribute object: a JSON object of at most ``MAX_ATTRS_BYTES`` bytes once made
    canonical (keys sorted, no spaces). ``{}`` means none (``b""``). Raises ProtocolError."""
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError(400, "stream attributes must be a JSON object") from None
    if not isinstance(value, dict):
        raise ProtocolError(400, "stream attributes must be a JSON object")
    if not value:
        return b""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False).encode("utf-8")
    if len(canonical) > MAX_ATTRS_BYTES:
        raise ProtocolError(400, f"stream attributes are larger than {MAX_ATTRS_BYTES} bytes")
    return canonical


def parse_snapshot_match(values: list[str] | None) -> str | None:
    """``Stream-Snapshot-Match``: the digest the current snapshot must have (once; not blank)."""
    if values is None:
        return None
    if len(values) != 1:
        raise ProtocolError(400, "Stream-Snapshot-Match must be given at most once")
    value = values[0].strip().strip('"')
    if not value:
        raise ProtocolError(400, "Stream-Snapshot-Match must not be blank")
    return value
