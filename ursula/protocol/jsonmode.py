"""JSON mode: validating a body and splitting it into messages.

A JSON body that is an array is flattened by exactly one level; anything else is one message.
Each message is kept as its original text (whitespace between elements dropped), so numbers,
key order and escapes round-trip exactly. Stored records are ``<message>,`` so a read of a
message-aligned byte range renders as ``[`` + records without the last comma + ``]``.

May import: the standard library and ``ursula.protocol`` modules.
"""

from __future__ import annotations

import json

from ursula.protocol.errors import ProtocolError

_WHITESPACE = " \t\n\r"


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


_decoder = json.JSONDecoder(parse_constant=_reject_constant)


def _skip(text: str, index: int) -> int:
    while index < len(text) and text[index] in _WHITESPACE:
        index += 1
    return index


def split_messages(body: bytes) -> list[bytes]:
    """Split a JSON body into message texts. Raises ProtocolError(400) on invalid JSON.

    ``[]`` yields an empty list; the caller decides whether that is allowed.
    """
    try:
        text = body.decode("utf-8")
        start = _skip(text, 0)
        if start < len(text) and text[start] == "[":
            messages = []
            index = _skip(text, start + 1)
            if index < len(text) and text[index] == "]":
                index += 1
            else:
                while True:
                    _, end = _decoder.raw_decode(text, index)
                    messages.append(text[index:end].encode("utf-8"))
                    index = _skip(text, end)
                    if index < len(text) and text[index] == ",":
                        index = _skip(text, index + 1)
                        continue
                    if index < len(text) and text[index] == "]":
                        index += 1
                        break
                    raise ValueError("expected , or ]")
            if _skip(text, index) != len(text):
                raise ValueError("trailing data")
            return messages
        _, end = _decoder.raw_decode(text, start)
        if _skip(text, end) != len(text):
            raise ValueError("trailing data")
        return [text[start:end].encode("utf-8")]
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ProtocolError(400, "body is not valid JSON") from None


def render_records(records: bytes) -> bytes:
    """Stored ``m1,m2,`` records -> the JSON array ``[m1,m2]``."""
    if not records:
        return b"[]"
    return b"[" + records[:-1] + b"]"
