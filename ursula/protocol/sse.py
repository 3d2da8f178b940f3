"""Server-Sent Events framing for live reads.

Each event is rendered as one bytes value so that a whole catch-up batch can be written with a
single transport write. Text payloads are split on CR, LF and CRLF into ``data:`` lines (so an
embedded ``\\n\\nevent: control`` stays data); a line that begins with a space gets one extra
space, because SSE clients strip one. Binary streams are base64 (padded) on one line.

May import: the standard library and ``ursula.protocol`` modules.
"""

from __future__ import annotations

import base64
import json
import re

_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def data_event(payload: bytes, base64_mode: bool) -> bytes:
    """``event: data`` with the payload (already rendered: JSON array text, text, or bytes)."""
    if base64_mode:
        return b"event: data\ndata:" + base64.b64encode(payload) + b"\n\n"
    parts = [b"event: data\n"]
    for line in _LINE_BREAK.split(payload):
        parts.append(b"data: " + line + b"\n" if line.startswith(b" ") else b"data:" + line + b"\n")
    parts.append(b"\n")
    return b"".join(parts)


def control_event(next_offset: str, cursor: str | None, up_to_date: bool, closed: bool) -> bytes:
    body: dict[str, object] = {"streamNextOffset": next_offset}
    if cursor is not None and not closed:
        body["streamCursor"] = cursor
    if up_to_date:
        body["upToDate"] = True
    if closed:
        body["streamClosed"] = True
    return b"event: control\ndata:" + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"
