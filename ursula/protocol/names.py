"""Bucket and stream names: the rules, and the mapping of both URL layouts onto them.

Two layouts address the same streams:

- ``/{bucket}/{stream}``: ``bucket`` matches ``[a-z0-9][a-z0-9_-]{2,62}`` (3-63 characters),
  ``stream`` is one path segment.
- ``/v1/stream/{name...}``: the upstream layout. The name may contain ``/`` and lives in the
  reserved bucket ``_default``. So ``/v1/stream/a/b`` is ``/_default/a%2Fb``.

Stream names: 1..max_name_bytes bytes of UTF-8 (after percent-decoding), no control characters,
no ``.`` or ``..`` path segments, no empty segments. Names beginning with ``__`` are reserved for
the server (``__ursula``, ``__ds``).

The extension routes follow a stream's URL: ``{stream}/snapshot``, ``/snapshot/{offset}``,
``/retention/{offset}``, ``/bootstrap``, ``/attrs``, ``/compute``, ``/compute/state``
(``split_extension``). In the upstream layout a name may contain ``/``, so a name that ends in
one of these forms is reserved (400): its URL addresses the extension of the shorter name.

May import: the standard library and ``ursula.protocol`` modules.
"""

from __future__ import annotations

import re

from ursula.protocol.errors import ProtocolError

DEFAULT_BUCKET = "_default"
BUCKET_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{2,62}")
RESERVED_BUCKETS = frozenset({"v1"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


_EXTENSION = re.compile(
    r"(?P<stream>.+)/(?:(?P<one>snapshot|bootstrap|attrs|compute)"
    r"|(?P<two>snapshot|retention)/(?P<arg>[^/]+)|(?P<state>compute/state))")
EXTENSIONS_ONE = frozenset({"snapshot", "bootstrap", "attrs", "compute"})
EXTENSIONS_TWO = frozenset({"snapshot", "retention"})


def split_extension(path: str) -> tuple[str, str, str | None] | None:
    """``name/snapshot/123`` -> ("name", "snapshot", "123"); ``name/compute/state`` ->
    ("name", "compute", "state"); None when ``path`` is no extension route."""
    match = _EXTENSION.fullmatch(path)
    if match is None:
        return None
    if match.group("one"):
        return match.group("stream"), match.group("one"), None
    if match.group("state"):
        return match.group("stream"), "compute", "state"
    return match.group("stream"), match.group("two"), match.group("arg")


def check_bucket(bucket: str) -> str:
    if bucket == DEFAULT_BUCKET:
        return bucket
    if not BUCKET_PATTERN.fullmatch(bucket) or bucket in RESERVED_BUCKETS:
        raise ProtocolError(
            400, "bucket names are 3-63 characters of a-z, 0-9, '_' and '-', starting with a "
                 "letter or digit")
    return bucket


def check_stream(name: str, max_name_bytes: int, allow_slash: bool) -> str:
    if not name:
        raise ProtocolError(400, "stream name must not be empty")
    if len(name.encode("utf-8")) > max_name_bytes:
        raise ProtocolError(400, f"stream name is longer than {max_name_bytes} bytes")
    if _CONTROL.search(name):
        raise ProtocolError(400, "stream name must not contain control characters")
    if name.startswith("__"):
        raise ProtocolError(400, "stream names starting with '__' are reserved")
    segments = name.split("/")
    if not allow_slash and len(segments) > 1:
        raise ProtocolError(400, "stream name must not contain '/' in the /{bucket}/{stream} layout")
    for segment in segments:
        if segment in ("", ".", ".."):
            raise ProtocolError(400, "stream name must not contain empty, '.' or '..' segments")
    if allow_slash and len(segments) > 1 and split_extension(name) is not None:
        raise ProtocolError(400, "stream names ending in /snapshot, /bootstrap, /attrs, "
                                 "/compute or /snapshot|retention/<x> are reserved")
    return name
