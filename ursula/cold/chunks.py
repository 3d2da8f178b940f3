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

A *pack* holds the small chunks of several streams of one group in one object: the chunks'
bytes (header and payload each, as above) one after the other. A stream refers to its chunk in
a pack as ``<pack key>#<offset>`` (a *chunk reference*; a plain key refers to a whole object),
and a read fetches just that range. A pack's key is derived from the group and the ranges it
holds, so a retried upload of the same plan overwrites the same object.

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


def chunk_ref(key: str, offset: int) -> str:
    """The reference to the chunk at byte ``offset`` of the pack ``key``."""
    return f"{key}#{offset}"


def locate(ref: str) -> tuple[str, int | None]:
    """The object key of a chunk reference and the chunk's offset in it (None: the whole
    object is the chunk)."""
    key, sep, offset = ref.rpartition("#")
    if not sep:
        return ref, None
    return key, int(offset)


def object_key(ref: str) -> str:
    """The key of the object that holds the chunk ``ref``."""
    return ref.rpartition("#")[0] or ref


def fetch_range(ref: str, start: int, end: int) -> tuple[str, int, int | None]:
    """What to ask the store for to read the chunk ``ref`` of the stream range ``[start, end)``:
    the object key and the byte range ``[first, last)`` (``last`` None: to the end)."""
    key, offset = locate(ref)
    if offset is None:
        return key, 0, None
    return key, offset, offset + HEADER_BYTES + (end - start)


def pack_key(group: int, ranges) -> str:
    """The key of a pack of ``group`` holding ``ranges`` (``(uid, start, end)`` in pack order)."""
    digest = hashlib.blake2b(digest_size=10)
    for uid, start, end in ranges:
        digest.update(struct.pack("<QQQ", uid, start, end))
    first_uid, first_start, _ = ranges[0]
    return f"g{group}/packs/{first_uid}-{first_start:016x}-{digest.hexdigest()}.pack"


def chunk_key(group: int, uid: int, bucket: str, stream: str, start: int, end: int) -> str:
    name = hashlib.blake2b(f"{bucket}/{stream}".encode(), digest_size=6).hexdigest()
    return f"g{group}/s{uid}-{name}/{start:016x}-{end:016x}.chunk"


def snapshot_key(group: int, uid: int, offset: int, digest: str) -> str:
    """The object of a stream's published snapshot (the chunk layout of ``[0, size)``)."""
    return f"g{group}/s{uid}-snap/{offset:016x}-{digest[:32]}.snap"
