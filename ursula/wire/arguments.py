"""AMP argument types for values bigger than AMP's 65,535-byte limit, and Raft batch framing.

What lives here:

* `BigBytes`: an AMP `Argument` that carries `bytes` of any length.  The value is cut into
  chunks of at most `MAX_VALUE_LENGTH` bytes, stored under the keys ``name``, ``name.1``,
  ``name.2``, ... and a count key ``name.count`` (ASCII decimal, always present, at least 1).
  An empty value is one empty chunk.
* `RaftItems`: a `BigBytes` whose Python value is a list of ``(group, message bytes)`` pairs,
  framed as ``group (u64) | length (u32) | message`` records.
* `encode_items` / `decode_items` (that framing) and `split_items`, which cuts a list of items
  into batches whose framed size stays under a cap (`RAFT_BATCH_CAP`, 1 MiB), so a huge burst
  goes out as several `RaftBatch` calls and small messages are never queued behind one giant
  box.  A single item bigger than the cap travels alone.

May import: Twisted (``twisted.protocols.amp``) and the standard library.  Nothing from the
rest of ursula.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from twisted.protocols import amp

#: AMP's per-value limit (``twisted.protocols.amp.MAX_VALUE_LENGTH``).
MAX_VALUE_LENGTH = amp.MAX_VALUE_LENGTH
#: Upper bound of the framed size of one `RaftBatch` (except a single bigger item).
RAFT_BATCH_CAP = 1 << 20

_ITEM_HEADER = struct.Struct("!QI")
_COUNT_SUFFIX = b".count"


class BadBigValue(ValueError):
    """A box claims a multi-key value that is missing chunks or has a malformed count."""


def _wire_name(name: bytes) -> str:
    # The same normalization AMP applies (``amp._wireNameToPythonIdentifier``), public here.
    return amp._wireNameToPythonIdentifier(name)


class BigBytes(amp.Argument):
    """Bytes of any length, split across the keys ``name``, ``name.1``, ... plus ``name.count``."""

    def toBox(self, name, strings, objects, proto):
        value = self.retrieve(objects, _wire_name(name), proto)
        if self.optional and value is None:
            return
        data = self.toStringProto(value, proto)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"{name!r}: expected bytes, got {type(data).__name__}")
        view = memoryview(data)
        chunks = max(1, -(-len(view) // MAX_VALUE_LENGTH))
        strings[name] = bytes(view[:MAX_VALUE_LENGTH])
        for i in range(1, chunks):
            start = i * MAX_VALUE_LENGTH
            strings[name + b".%d" % i] = bytes(view[start:start + MAX_VALUE_LENGTH])
        strings[name + _COUNT_SUFFIX] = b"%d" % chunks

    def fromBox(self, name, strings, objects, proto):
        key = _wire_name(name)
        count_raw = strings.pop(name + _COUNT_SUFFIX, None)
        first = strings.pop(name, None)
        if first is None and count_raw is None and self.optional:
            objects[key] = None
            return
        if first is None or count_raw is None:
            raise BadBigValue(f"{name!r}: missing first chunk or count")
        if not (count_raw.isdigit() and count_raw.isascii()) or int(count_raw) < 1:
            raise BadBigValue(f"{name!r}: bad chunk count {count_raw[:20]!r}")
        count = int(count_raw)
        parts = [first]
        for i in range(1, count):
            part = strings.pop(name + b".%d" % i, None)
            if part is None:
                raise BadBigValue(f"{name!r}: chunk {i} of {count} missing")
            parts.append(part)
        objects[key] = self.fromStringProto(b"".join(parts) if count > 1 else first, proto)

    def toString(self, inObject):
        return inObject

    def fromString(self, inString):
        return inString


def encode_items(items: Iterable[tuple[int, bytes]]) -> bytes:
    """Frame ``(group, message)`` pairs as ``group u64 | length u32 | message`` records."""
    out = bytearray()
    pack = _ITEM_HEADER.pack
    for group, message in items:
        out += pack(group, len(message))
        out += message
    return bytes(out)


def decode_items(data: bytes) -> list[tuple[int, bytes]]:
    """The inverse of `encode_items`; raises `BadBigValue` on a truncated record."""
    view = memoryview(data)
    items = []
    pos, end, header = 0, len(view), _ITEM_HEADER.size
    unpack = _ITEM_HEADER.unpack_from
    while pos < end:
        if end - pos < header:
            raise BadBigValue("truncated raft item header")
        group, length = unpack(view, pos)
        pos += header
        if end - pos < length:
            raise BadBigValue("truncated raft item")
        items.append((group, bytes(view[pos:pos + length])))
        pos += length
    return items


def item_size(message: bytes) -> int:
    """The framed size of one item."""
    return _ITEM_HEADER.size + len(message)


def split_items(items: Sequence[tuple[int, bytes]],
                cap: int = RAFT_BATCH_CAP) -> list[list[tuple[int, bytes]]]:
    """Cut `items` (order kept) into batches whose framed size is at most `cap`.

    An item bigger than `cap` on its own forms a batch by itself.
    """
    batches: list[list[tuple[int, bytes]]] = []
    current: list[tuple[int, bytes]] = []
    size = 0
    for item in items:
        n = item_size(item[1])
        if current and size + n > cap:
            batches.append(current)
            current, size = [], 0
        current.append(item)
        size += n
    if current:
        batches.append(current)
    return batches


class RaftItems(BigBytes):
    """A list of ``(group, message bytes)`` pairs, framed by `encode_items`, any total size."""

    def toString(self, inObject):
        return encode_items(inObject)

    def fromString(self, inString):
        return decode_items(inString)
