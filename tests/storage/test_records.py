"""Record kinds, framing, and decoding a stream that ends badly."""

from __future__ import annotations

import struct
import zlib

import cbor2
import pytest

from tests.storage.util import er, hs, snap
from ursula.raft.messages import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from ursula.storage.records import (
    CORRUPT,
    FLAG_MORE,
    TORN,
    CheckpointRecord,
    EntriesRecord,
    GroupCheckpoint,
    HardStateRecord,
    RecordError,
    SnapshotRecord,
    SnapshotRef,
    decode_snapshot_file,
    decode_stream,
    encode_batch,
    encode_record,
    encode_records,
    encode_snapshot_file,
    encode_snapshot_file_parts,
    record_from_wire,
    scan,
    snapshot_data_span,
)

REF = SnapshotRef(SnapshotMeta(7, 2, ConfState((1, 2, 3))), "3-00000000000000000007.snap")
ALL_KINDS = [
    er(3, 1, 4, term=2),
    EntriesRecord(9, (Entry(5, 100, b"", 0), Entry(5, 101, b"\x00\xff" * 50))),
    hs(3, term=4, vote=2, commit=3),
    HardStateRecord(0, HardState()),
    SnapshotRecord(3, REF),
    SnapshotRecord(3, REF, replace=True),
    CheckpointRecord(12),
    CheckpointRecord(
        1, (GroupCheckpoint(3, HardState(4, 2, 3), REF), GroupCheckpoint(4, HardState(1), None))
    ),
]


@pytest.mark.parametrize("record", ALL_KINDS, ids=lambda r: type(r).__name__)
def test_round_trip_every_kind(record):
    assert record_from_wire(cbor2.loads(cbor2.dumps(record.to_wire()))) == record
    records, good = decode_stream(encode_record(record))
    assert records == [record]
    assert good == len(encode_record(record))


def test_stream_of_all_kinds():
    data = encode_records(ALL_KINDS)
    assert decode_stream(data) == (ALL_KINDS, len(data))
    s = scan(data)
    assert s.problem is None and len(s.batch_ends) == len(ALL_KINDS)


def test_frame_layout():
    rec = hs(1, 2)
    frame = encode_record(rec)
    length, crc = struct.unpack_from("<II", frame)
    payload = frame[8:]
    assert length == len(payload)
    assert crc == zlib.crc32(payload, zlib.crc32(frame[:4]))
    assert cbor2.loads(payload) == rec.to_wire()


def test_entries_record_must_be_consecutive_and_non_empty():
    with pytest.raises(ValueError):
        EntriesRecord(1, ())
    with pytest.raises(ValueError):
        EntriesRecord(1, (Entry(1, 1), Entry(1, 3)))


def test_batch_flags_and_atomicity():
    batch = [er(1, 1, 2), hs(1, 1, commit=2), er(2, 1, 1)]
    data = encode_batch(batch)
    words = []
    pos = 0
    while pos < len(data):
        word, _ = struct.unpack_from("<II", data, pos)
        words.append(word)
        pos += 8 + (word & ~FLAG_MORE)
    assert [bool(w & FLAG_MORE) for w in words] == [True, True, False]
    assert decode_stream(data) == (batch, len(data))
    # a stream ending after whole records but inside the batch yields none of them
    first_two = len(encode_record(batch[0], True)) + len(encode_record(batch[1], True))
    s = scan(data[:first_two])
    assert s.records == [] and s.good_length == 0 and s.problem == TORN


def test_every_cut_of_the_last_record_is_torn():
    head = encode_records([er(1, 1, 3), hs(1, 1)])
    last = encode_record(er(1, 4, 9, tag=b"last"))
    for cut in range(len(last)):
        s = scan(head + last[:cut])
        assert s.records == [er(1, 1, 3), hs(1, 1)]
        assert s.good_length == len(head)
        assert s.problem == (None if cut == 0 else TORN)


def test_corrupt_crc_stops_there():
    recs = [er(1, 1, 1), er(1, 2, 2), er(1, 3, 3), er(1, 4, 4)]
    frames = [encode_record(r) for r in recs]
    bad = bytearray(frames[2])
    bad[-1] ^= 0x01
    data = frames[0] + frames[1] + bytes(bad) + frames[3]
    s = scan(data)
    assert s.records == recs[:2]
    assert s.good_length == len(frames[0]) + len(frames[1])
    assert s.problem == CORRUPT and s.problem_offset == s.good_length


def test_zeroed_tail_is_corrupt_not_an_empty_record():
    data = encode_record(hs(1, 1)) + bytes(64)
    s = scan(data)
    assert s.records == [hs(1, 1)] and s.problem == CORRUPT


def test_crc_valid_garbage_raises_instead_of_truncating():
    payload = cbor2.dumps([99, 1, 2])
    lw = struct.pack("<I", len(payload))
    frame = lw + struct.pack("<I", zlib.crc32(payload, zlib.crc32(lw))) + payload
    with pytest.raises(RecordError):
        scan(frame)
    newer = cbor2.dumps([0, 999, 1, []])
    lw = struct.pack("<I", len(newer))
    frame = lw + struct.pack("<I", zlib.crc32(newer, zlib.crc32(lw))) + newer
    with pytest.raises(RecordError, match="newer"):
        scan(frame)


def test_snapshot_file_round_trip_and_damage():
    s = snap(10, 3, data=b"x" * 1000)
    data = encode_snapshot_file(4, s)
    assert decode_snapshot_file(data) == (4, s)
    for broken in (data[:-1], data[:5], data + b"\x00", data[:20] + b"\xff" + data[21:]):
        with pytest.raises(RecordError):
            decode_snapshot_file(broken)


@pytest.mark.parametrize("size", [0, 1, 23, 24, 255, 256, 65535, 65536, 1 << 20])
@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_snapshot_file_parts_are_the_cbor_of_the_whole(size, kind):
    # The parts (written without copying the data) are byte for byte the framing of
    # cbor2.dumps([KIND_SNAPSHOT_FILE, group, snapshot.to_wire()]), so older files and newer
    # ones decode alike; and the data sits where snapshot_data_span says.
    data = kind(bytes(range(256)) * (size // 256) + b"z" * (size % 256))
    s = Snapshot(SnapshotMeta(12, 4, ConfState((1, 2, 3))), data)
    parts = encode_snapshot_file_parts(7, s)
    assert parts[2] is data  # not copied
    whole = b"".join(parts)
    payload = cbor2.dumps([16, 7, [s.meta.to_wire(), bytes(data)]])
    lw = struct.pack("<I", len(payload))
    assert whole == lw + struct.pack("<I", zlib.crc32(payload, zlib.crc32(lw))) + payload
    group, back = decode_snapshot_file(whole)
    assert group == 7 and back.meta == s.meta and back.data == bytes(data)
    offset, length = snapshot_data_span(7, s.meta, len(whole))
    assert (offset, length) == (len(parts[0]) + len(parts[1]), size)
    assert whole[offset:offset + length] == bytes(data)


def test_snapshot_data_span_of_a_file_too_short_is_an_error():
    with pytest.raises(RecordError):
        snapshot_data_span(7, SnapshotMeta(12, 4, ConfState((1,))), 5)
