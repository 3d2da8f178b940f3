"""``append-batch`` bodies: frames of ``u32 big-endian length`` followed by that many bytes.

May import: the standard library and ``ursula.protocol`` modules.
"""

from __future__ import annotations

import struct

from ursula.protocol.errors import ProtocolError

_LENGTH = struct.Struct(">I")


def split_frames(body: bytes, max_frames: int) -> list[bytes]:
    """Split a batch body into frames. Raises ProtocolError (400 malformed, 413 too many)."""
    frames = []
    index = 0
    while index < len(body):
        if index + 4 > len(body):
            raise ProtocolError(400, "append-batch body ends inside a frame length")
        (length,) = _LENGTH.unpack_from(body, index)
        index += 4
        if index + length > len(body):
            raise ProtocolError(400, "append-batch frame is longer than the remaining body")
        frames.append(body[index:index + length])
        index += length
        if len(frames) > max_frames:
            raise ProtocolError(413, f"append-batch holds more than {max_frames} frames")
    if not frames:
        raise ProtocolError(400, "append-batch body holds no frames")
    return frames


def encode_frames(frames: list[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(frame)) + frame for frame in frames)
