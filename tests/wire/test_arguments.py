"""Big AMP values split across keys, Raft item framing and batch splitting (no network)."""

from __future__ import annotations

import os

import pytest
from twisted.protocols import amp

from ursula.wire.arguments import (
    MAX_VALUE_LENGTH,
    RAFT_BATCH_CAP,
    BadBigValue,
    BigBytes,
    RaftItems,
    decode_items,
    encode_items,
    item_size,
    split_items,
)


class Carry(amp.Command):
    arguments = [(b"blob", BigBytes()), (b"other", amp.Integer())]


def _roundtrip_box(command, **objects):
    """Objects -> AmpBox -> wire bytes -> AmpBox -> objects, as AMP does it."""
    box = amp._objectsToStrings(objects, command.arguments, amp.AmpBox(), None)
    wire = box.serialize()  # raises TooLong if any key or value is over AMP's limits
    parsed = _parse(wire)
    return box, amp._stringsToObjects(parsed, command.arguments, None)


def _parse(wire: bytes) -> amp.AmpBox:
    boxes = []

    class Receiver:
        def startReceivingBoxes(self, sender):
            pass

        def ampBoxReceived(self, box):
            boxes.append(box)

        def stopReceivingBoxes(self, reason):
            pass

    proto = amp.BinaryBoxProtocol(Receiver())
    proto.makeConnection(_NullTransport())
    proto.dataReceived(wire)
    assert len(boxes) == 1
    return boxes[0]


class _NullTransport:
    def write(self, data):
        pass

    def loseConnection(self):
        pass


@pytest.mark.parametrize("size", [0, 1, MAX_VALUE_LENGTH, MAX_VALUE_LENGTH + 1, 5 * 2**20])
def test_big_bytes_roundtrip(size):
    blob = os.urandom(size)
    box, objects = _roundtrip_box(Carry, blob=blob, other=7)
    assert objects == {"blob": blob, "other": 7}
    chunks = max(1, -(-size // MAX_VALUE_LENGTH))
    assert box[b"blob.count"] == str(chunks).encode()
    assert all(len(v) <= MAX_VALUE_LENGTH for v in box.values())
    assert sum(1 for k in box if k == b"blob" or k[:5] == b"blob." and k[5:].isdigit()) == chunks


def test_key_layout_at_the_boundary():
    box, _ = _roundtrip_box(Carry, blob=b"x" * (MAX_VALUE_LENGTH + 1), other=1)
    assert set(box) == {b"blob", b"blob.1", b"blob.count", b"other"}
    assert len(box[b"blob"]) == MAX_VALUE_LENGTH and box[b"blob.1"] == b"x"


def test_missing_chunk_is_an_error():
    box, _ = _roundtrip_box(Carry, blob=b"y" * (3 * MAX_VALUE_LENGTH), other=1)
    del box[b"blob.2"]
    with pytest.raises(BadBigValue):
        amp._stringsToObjects(box, Carry.arguments, None)


@pytest.mark.parametrize("count", [b"0", b"-1", b"x", b"\xd9\xa3"])
def test_bad_count_is_an_error(count):
    box, _ = _roundtrip_box(Carry, blob=b"z", other=1)
    box[b"blob.count"] = count
    with pytest.raises(BadBigValue):
        amp._stringsToObjects(box, Carry.arguments, None)


def test_optional_big_bytes():
    class Maybe(amp.Command):
        arguments = [(b"blob", BigBytes(optional=True))]

    box, objects = _roundtrip_box(Maybe, blob=None)
    assert objects == {"blob": None} and dict(box) == {}


def test_non_bytes_rejected():
    with pytest.raises(TypeError):
        amp._objectsToStrings({"blob": "text", "other": 1}, Carry.arguments, amp.AmpBox(), None)


def test_raft_items_roundtrip_and_framing():
    items = [(0, b""), (1, b"a"), (2**64 - 1, os.urandom(70_000)), (42, b"hb")]
    assert decode_items(encode_items(items)) == items

    class Batch(amp.Command):
        arguments = [(b"items", RaftItems())]

    _, objects = _roundtrip_box(Batch, items=items)
    assert objects["items"] == items
    with pytest.raises(BadBigValue):
        decode_items(encode_items(items)[:-1])
    with pytest.raises(BadBigValue):
        decode_items(b"\x00" * 5)


def test_split_items_caps_batches_and_keeps_order():
    items = [(g, os.urandom(100_000)) for g in range(40)]  # ~4 MB
    batches = split_items(items)
    assert [i for b in batches for i in b] == items
    assert len(batches) >= 4
    for batch in batches:
        assert sum(item_size(m) for _, m in batch) <= RAFT_BATCH_CAP


def test_split_items_oversized_item_travels_alone():
    big = (1, b"b" * (RAFT_BATCH_CAP + 1))
    items = [(0, b"hb"), big, (2, b"hb")]
    assert split_items(items) == [[(0, b"hb")], [big], [(2, b"hb")]]
    assert split_items([]) == []
    assert split_items([(g, b"h") for g in range(1000)]) == [[(g, b"h") for g in range(1000)]]
