"""Offsets as the client sees them: opaque strings that sort in stream order, and the two
sentinels a read may start from (``START`` = ``-1``, ``NOW`` = ``now``).

May import: the standard library only.
"""

from __future__ import annotations

import re

#: read from the beginning of the stream
START = "-1"
#: read from the current tail (only data appended from now on)
NOW = "now"
#: the tail of an empty stream on ursula (and the reference server)
ZERO = "0000000000000000_0000000000000000"

_SAFE = re.compile(r"[^,&=?/\s\x00-\x1f]{1,255}")


def check_offset(offset: str) -> str:
    """``offset`` if it can be sent as a read offset (a sentinel or a server-issued offset);
    ValueError otherwise. Offsets are opaque: the client only checks they are URL-safe."""
    if not isinstance(offset, str):
        raise TypeError(f"an offset is a str, not {type(offset).__name__}")
    if offset in (START, NOW) or _SAFE.fullmatch(offset):
        return offset
    raise ValueError(f"not an offset: {offset!r}")


def is_after(a: str, b: str) -> bool:
    """Whether offset ``a`` is later in the stream than ``b`` (both concrete: the protocol
    makes offsets sort as strings)."""
    if a in (START, NOW) or b in (START, NOW):
        raise ValueError("sentinels have no order")
    return a > b
