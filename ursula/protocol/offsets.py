"""Offsets on the wire: ``\\d{16}_\\d{16}``, the sentinels ``-1`` and ``now``.

Internally an offset is the byte position in the stream's stored representation (for JSON
streams: the canonical ``message,`` records). On the wire it is rendered as
``0000000000000000_<position>``, zero-padded so that string order equals numeric order. The
first field is reserved (always zero today).

May import: the standard library and ``ursula.protocol.errors``.
"""

from __future__ import annotations

import re

from ursula.protocol.errors import ProtocolError

START = "start"
NOW = "now"
_WIRE = re.compile(r"([0-9]{16})_([0-9]{16})")
ZERO = "0000000000000000_0000000000000000"


def render_offset(position: int) -> str:
    """The wire form of a byte position."""
    return f"0000000000000000_{position:016d}"


def tail_etag(position: int) -> str:
    """The ETag of a stream's tail, as an append answers it and ``If-Match`` expects it: the
    quoted wire offset (a GET's ETag has another form)."""
    return f'"{render_offset(position)}"'


def parse_wire_offset(text: str) -> int:
    """Parse a concrete wire offset (no sentinels). Raises ProtocolError(400)."""
    match = _WIRE.fullmatch(text)
    if match is None or match.group(1) != "0000000000000000":
        raise ProtocolError(400, "malformed offset")
    return int(match.group(2))


def parse_read_offset(values: list[str] | None) -> int | str:
    """Parse the ``offset`` query parameter values of a read.

    Returns ``START`` (absent or ``-1``), ``NOW``, or a byte position.
    """
    if values is None:
        return START
    if len(values) != 1:
        raise ProtocolError(400, "offset must be given at most once")
    value = values[0]
    if value == "-1":
        return START
    if value == "now":
        return NOW
    return parse_wire_offset(value)
