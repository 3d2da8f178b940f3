"""Payloads whose large byte strings travel beside their cbor, not inside it.

A cross-core read answer (``ursula.core.routed``) is mostly one byte string of up to
``max_read_bytes``. Inside cbor it is copied into the encoding, and cbor2 reads a long byte
string back in pieces and joins them: two more copies of every byte on top of AMP's, each a
fresh multi-MiB allocation. Here a handler marks such a value with ``Bulk(data)``:

* ``pack(obj) -> (structure, bulk)``: the cbor of ``obj`` in which each ``Bulk`` is the tag
  ``BULK_TAG [offset, length]``, and the marked byte strings concatenated (``b""`` if none);
* ``unpack(structure, bulk) -> obj``: ``obj`` with each tag replaced by its bytes (the buffer
  itself when one value fills it, so a lone read answer is not copied again). A tag that points
  outside the buffer is ``BadBulk``.

May import: cbor2 and the standard library.
"""

from __future__ import annotations

import cbor2

#: An unassigned cbor tag (first-come range), only ever seen on ursula's local link.
BULK_TAG = 4_151_001


class BadBulk(ValueError):
    """A bulk tag that does not fit the bulk buffer."""


class Bulk:
    """A byte string to send beside the cbor structure (``pack``)."""

    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data

    def __repr__(self) -> str:
        return f"Bulk({len(self.data)} bytes)"


def pack(obj) -> tuple[bytes, bytes]:
    pieces: list = []
    size = 0

    def default(encoder, value):
        nonlocal size
        if not isinstance(value, Bulk):
            raise cbor2.CBOREncodeTypeError(f"cannot encode {type(value).__name__}")
        length = len(value.data)
        encoder.encode(cbor2.CBORTag(BULK_TAG, [size, length]))
        pieces.append(value.data)
        size += length

    structure = cbor2.dumps(obj, default=default)
    if not pieces:
        return structure, b""
    if len(pieces) == 1 and isinstance(pieces[0], bytes):
        return structure, pieces[0]
    return structure, b"".join(pieces)


def unpack(structure: bytes, bulk: bytes | None):
    bulk = bulk or b""

    def tag_hook(first, second):
        # cbor2 5 calls ``tag_hook(decoder, tag)``, cbor2 6 ``tag_hook(tag, immutable)``
        tag = first if isinstance(first, cbor2.CBORTag) else second
        if tag.tag != BULK_TAG:
            return tag
        value = tag.value
        if (not isinstance(value, list | tuple) or len(value) != 2
                or not all(type(v) is int for v in value)):
            raise BadBulk(f"a bulk tag of {value!r}")
        offset, length = value
        if offset < 0 or length < 0 or offset + length > len(bulk):
            raise BadBulk(f"bytes {offset}+{length} of a bulk buffer of {len(bulk)}")
        if offset == 0 and length == len(bulk):
            return bulk
        return bulk[offset:offset + length]

    return cbor2.loads(structure, tag_hook=tag_hook)
