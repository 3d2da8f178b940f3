"""``multipart/mixed`` bodies (RFC 2046), as ursula's bootstrap answers them: the boundary
from the ``Content-Type``, then each part's headers and bytes. Parsing only, on whole bodies;
anything that is not a well-formed body raises ``MalformedResponse``.

May import: the standard library and ``ursula_client.core`` modules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ursula_client.core.errors import MalformedResponse

_BOUNDARY = re.compile(r'''(?:^|;)\s*boundary\s*=\s*(?:"([^"]{1,70})"|([^\s;"]{1,70}))''',
                       re.IGNORECASE)


@dataclass(frozen=True)
class Part:
    """One part: its headers (lowercase names) and bytes."""

    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def content_type(self) -> str:
        # RFC 2046: a part without a Content-Type is text/plain
        return self.headers.get("content-type", "text/plain")


def boundary_of(content_type: str | None) -> bytes:
    """The boundary of a ``multipart/mixed`` Content-Type."""
    if not content_type or content_type.split(";")[0].strip().lower() != "multipart/mixed":
        raise MalformedResponse(f"not a multipart/mixed answer (Content-Type: {content_type!r})")
    found = _BOUNDARY.search(content_type.split(";", 1)[1] if ";" in content_type else "")
    if found is None:
        raise MalformedResponse(f"multipart/mixed without a boundary ({content_type!r})")
    return (found.group(1) or found.group(2)).encode("latin-1")


def _part(raw: bytes, index: int) -> Part:
    if raw.startswith(b"\r\n"):  # no headers
        return Part({}, raw[2:])
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise MalformedResponse(f"part {index} has no blank line after its headers")
    headers: dict[str, str] = {}
    for line in head.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if not colon or not name.strip() or name != name.strip():
            raise MalformedResponse(f"part {index} has a malformed header line {line[:80]!r}")
        headers[name.decode("latin-1").lower()] = value.strip().decode("latin-1")
    return Part(headers, body)


def parse(content_type: str | None, body: bytes) -> list[Part]:
    """The parts of a ``multipart/mixed`` body (a preamble and an epilogue are ignored)."""
    boundary = boundary_of(content_type)
    dash = b"--" + boundary
    delimiter = b"\r\n" + dash
    if body.startswith(dash):
        position = len(dash)
    else:
        found = body.find(delimiter)
        if found < 0:
            raise MalformedResponse("the multipart body holds no boundary delimiter")
        position = found + len(delimiter)
    parts: list[Part] = []
    while True:
        if body.startswith(b"--", position):  # the close delimiter
            return parts
        end_of_line = body.find(b"\r\n", position)
        if end_of_line < 0 or body[position:end_of_line].strip(b" \t"):
            raise MalformedResponse(f"the boundary before part {len(parts)} is not followed "
                                    "by a line end")
        start = end_of_line + 2
        end = body.find(delimiter, start)
        if end < 0:
            raise MalformedResponse(f"part {len(parts)} is not terminated by a boundary (the "
                                    "body is truncated)")
        raw = body[start:end]
        parts.append(_part(raw, len(parts)) if raw else Part({}, b""))
        position = end + len(delimiter)
