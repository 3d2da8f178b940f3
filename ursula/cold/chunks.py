"""The chunk layout: one object per stream range ``[start, end)``, a 32-byte header, then the
stream's bytes.

::

    0   4  magic  b"URSC"
    4   2  version (1), u16 little endian
    6   2  header length (32)
    8   8  stream start offset, u64
    16  8  stream end offset, u64
    24  4  zlib.crc32 of the payload (the checksum the ColdFlushed command records)
    28  4  zlib.crc32 of header bytes 0..28
    32  -  payload: the stream bytes [start, end)

Keys are deterministic (group, stream uid, a hash of the stream's name, the range), so an
upload retried by a new leader overwrites the same object.

May import: the standard library.
"""

from __future__ import annotations

import hashlib
import struct
import zlib

from ursula.cold.interfaces import ChunkCorrupt

MAGIC = b"URSC"
VERSION = 1
_HEADER = struct.Struct("<4sHHQQI")
HEADER_BYTES = 32


def checksum(payload) -> int:
    return zlib.crc32(payload)


def encode_chunk(start: int, end: int, payload: bytes) -> tuple[bytes, int]:
    """The object bytes of a chunk and its payload checksum."""
    if end - start != len(payload):
        raise ValueError(f"chunk [{start}, {end}) with {len(payload)} bytes")
    crc = checksum(payload)
    head = _HEADER.pack(MAGIC, VERSION, HEADER_BYTES, start, end, crc)
    return head + struct.pack("<I", zlib.crc32(head)) + payload, crc


def decode_chunk(blob: bytes, key: str, start: int, end: int, expected: int) -> bytes:
    """The payload of a chunk object, checked against its header and ``expected`` (the
    checksum the state machine recorded); ``ChunkCorrupt`` naming ``key`` otherwise."""
    if len(blob) < HEADER_BYTES:
        raise ChunkCorrupt(f"cold chunk {key}: {len(blob)} bytes, shorter than its header")
    magic, version, hlen, h_start, h_end, crc = _HEADER.unpack_from(blob)
    (head_crc,) = struct.unpack_from("<I", blob, 28)
    if magic != MAGIC or head_crc != zlib.crc32(blob[:28]):
        raise ChunkCorrupt(f"cold chunk {key}: bad header")
    if version != VERSION or hlen != HEADER_BYTES:
        raise ChunkCorrupt(f"cold chunk {key}: unknown version {version}")
    if (h_start, h_end) != (start, end) or crc != expected:
        raise ChunkCorrupt(f"cold chunk {key}: holds [{h_start}, {h_end}) crc {crc:08x}, "
                           f"expected [{start}, {end}) crc {expected:08x}")
    payload = memoryview(blob)[HEADER_BYTES:]
    if len(payload) != end - start or checksum(payload) != expected:
        raise ChunkCorrupt(f"cold chunk {key}: checksum mismatch")
    return bytes(payload) if not isinstance(blob, bytes) else blob[HEADER_BYTES:]


def chunk_key(group: int, uid: int, bucket: str, stream: str, start: int, end: int) -> str:
    name = hashlib.blake2b(f"{bucket}/{stream}".encode(), digest_size=6).hexdigest()
    return f"g{group}/s{uid}-{name}/{start:016x}-{end:016x}.chunk"
