"""``append-batch`` bodies: each frame as a 4-byte big-endian length and its bytes.

May import: the standard library only.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

_LENGTH = struct.Struct(">I")


def encode_frames(frames: Sequence[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(f)) + bytes(f) for f in frames)


def decode_frames(body: bytes) -> list[bytes]:
    frames, index = [], 0
    while index < len(body):
        if index + 4 > len(body):
            raise ValueError("the body ends inside a frame length")
        (length,) = _LENGTH.unpack_from(body, index)
        index += 4
        if index + length > len(body):
            raise ValueError("a frame is longer than the rest of the body")
        frames.append(body[index:index + length])
        index += length
    return frames
