"""Snapshots restore everything; commands round-trip through their cbor2 encoding."""

import dataclasses

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ursula.protocol.jsonmode import render_records
from ursula.stream import StreamMachine, commands, decode_command, encode_command
from ursula.stream.commands import (
    AckReleases,
    AcquireFork,
    Append,
    AppendBatch,
    ColdCollected,
    ColdFlushed,
    CreateBucket,
    CreateStream,
    DeleteBucket,
    DeleteStream,
    Producer,
    ReleaseFork,
    Subscription,
    Touch,
)
from ursula.stream.machine import StreamError

B = "_default"
OCT = "application/octet-stream"
JSON = "application/json"
T0 = 1_000_000


def build_rich_machine() -> StreamMachine:
    sm = StreamMachine()
    steps = [
        CreateBucket("bkt"),
        CreateStream("bkt", "plain", content_type="text/plain", ttl_seconds=100),
        Append("bkt", "plain", "text/plain", b"hello ", stream_seq="001"),
        Append("bkt", "plain", "text/plain", b"world", producer=Producer("p1", 2, 0)),
        Append("bkt", "plain", "text/plain", b"!", producer=Producer("p1", 2, 1)),
        CreateStream(B, "json", content_type=JSON, body=b'[{"a":1},[1,2]]',
                     expires_at_ms=T0 + 10**9, expires_at_text="2099-01-01T00:00:00Z"),
        Append(B, "json", JSON, b"[3,4,5]", producer=Producer("w", 0, 0)),
        CreateStream(B, "closed", body=b"\x00\xff", closed=True),
        CreateStream(B, "src", body=b"abcdef"),
        Append(B, "src", OCT, b"ghij"),
        CreateStream(B, "fork1", fork_bucket=B, fork_stream="src", fork_offset=6,
                     fork_sub_offset=2),
        Append(B, "fork1", OCT, b"XY", producer=Producer("fp", 0, 0)),
        CreateStream(B, "fork2", fork_bucket=B, fork_stream="fork1", fork_offset=2,
                     fork_sub_offset=3),
        CreateStream(B, "jfork", fork_bucket=B, fork_stream="json", fork_offset=0,
                     fork_sub_offset=1, ttl_seconds=500),
        DeleteStream(B, "src"),  # soft delete: forks reference it
        CreateStream(B, "gone-later", ttl_seconds=1),
    ]
    for cmd in steps:
        out = sm.apply(cmd, T0)
        assert out.error is None, (cmd, out)
    return sm


NAMES = [("bkt", "plain"), (B, "json"), (B, "closed"), (B, "src"), (B, "fork1"), (B, "fork2"),
         (B, "jfork"), (B, "gone-later"), (B, "nope")]


def observe(sm: StreamMachine, now: int) -> list:
    seen = []
    for bucket, name in NAMES:
        try:
            info = sm.head(bucket, name, now)
            chunks = []
            offset = 0
            while True:
                r = sm.read(bucket, name, offset, 3, now)
                chunks.append((r.start, r.next_offset, r.data, r.up_to_date, r.closed))
                if r.up_to_date:
                    break
                offset = r.next_offset
            seen.append((info, chunks))
        except StreamError as err:
            seen.append(err.code)
    for bucket in ("bkt", B):
        try:
            seen.append(sm.list_streams(bucket, "", 100, now))
        except StreamError as err:
            seen.append(err.code)
    return seen


FOLLOW_UP = [
    Append("bkt", "plain", "text/plain", b"again", producer=Producer("p1", 2, 1)),  # duplicate
    Append("bkt", "plain", "text/plain", b"x", producer=Producer("p1", 1, 0)),  # stale
    Append("bkt", "plain", "text/plain", b"x", producer=Producer("p1", 2, 5)),  # gap
    Append("bkt", "plain", "text/plain", b"x", stream_seq="001"),  # seq conflict
    Append("bkt", "plain", "text/plain", b"x", stream_seq="002"),
    Append(B, "json", JSON, b"[6]", producer=Producer("w", 0, 1)),
    Append(B, "closed", OCT, b"x"),
    Append(B, "fork1", OCT, b"Z", producer=Producer("fp", 0, 0)),  # duplicate
    CreateStream(B, "src"),  # soft-deleted path
    CreateStream(B, "fork1", fork_bucket=B, fork_stream="src", fork_offset=6, fork_sub_offset=2),
    CreateStream(B, "jfork", fork_bucket=B, fork_stream="json", fork_offset=0,
                 fork_sub_offset=1, ttl_seconds=500),
    CreateStream(B, "fresh"),  # takes the next uid
    Touch("bkt", "plain"),
    DeleteStream(B, "fork2"),
    DeleteStream(B, "fork1"),  # last fork of src: src is collected
    CreateStream(B, "src", body=b"new"),
    DeleteBucket("bkt"),
]


def test_restore_reproduces_snapshot_bytes():
    sm = build_rich_machine()
    blob = sm.snapshot()
    restored = StreamMachine.restore(blob)
    assert restored.snapshot() == blob
    assert restored.next_uid == sm.next_uid
    assert restored.total_bytes == sm.total_bytes
    assert restored.stream_count == sm.stream_count


@pytest.mark.parametrize("now", [T0, T0 + 1_000, T0 + 150_000])
def test_restore_answers_queries_identically(now):
    sm = build_rich_machine()
    restored = StreamMachine.restore(sm.snapshot())
    assert observe(restored, now) == observe(sm, now)


@pytest.mark.parametrize("now", [T0 + 10, T0 + 60_000, T0 + 200_000])
def test_restore_applies_commands_identically(now):
    sm = build_rich_machine()
    restored = StreamMachine.restore(sm.snapshot())
    for cmd in FOLLOW_UP:
        assert restored.apply(cmd, now) == sm.apply(cmd, now), cmd
    assert observe(restored, now) == observe(sm, now)
    assert restored.snapshot() == sm.snapshot()


def test_restored_state_details():
    restored = StreamMachine.restore(build_rich_machine().snapshot())
    assert restored.read("bkt", "plain", 0, 100, T0).data == b"hello world!"
    assert render_records(restored.read(B, "json", 0, 100, T0).data) == b'[{"a":1},[1,2],3,4,5]'
    assert render_records(restored.read(B, "jfork", 0, 100, T0).data) == b'[{"a":1}]'
    assert restored.read(B, "fork1", 0, 100, T0).data == b"abcdefghXY"
    assert restored.read(B, "fork2", 0, 100, T0).data == b"abcde"
    assert restored.head(B, "closed", T0).closed
    with pytest.raises(StreamError) as info:
        restored.head(B, "src", T0)
    assert info.value.code == "gone"
    out = restored.apply(Append("bkt", "plain", "text/plain", b"x",
                                producer=Producer("p1", 2, 1)), T0)
    assert out.duplicate and out.producer_seq == 1
    assert restored.apply(Append(B, "json", JSON, b"[1]", producer=Producer("w", 0, 0)),
                          T0).duplicate
    assert restored.head(B, "json", T0).expires_at_text == "2099-01-01T00:00:00Z"
    assert restored.head("bkt", "plain", T0).ttl_seconds == 100


def test_restored_ttl_deadlines_still_sweep():
    restored = StreamMachine.restore(build_rich_machine().snapshot())
    count = restored.stream_count
    restored.apply(CreateBucket("other"), T0 + 1_000)
    assert restored.stream_count == count - 1  # "gone-later" was swept


def test_subscription_state_survives_a_snapshot():
    from ursula.stream.subscriptions import config_hash, key_command, sub_command
    sm = build_rich_machine()
    cfg = {"type": "webhook", "pattern": "*", "streams": [], "webhook": {"url": "https://e.x"},
           "wake_stream": None, "lease_ttl_ms": 1000, "description": None}
    sm.apply(sub_command(B, "s", "put", config=cfg, hash=config_hash(cfg), base_url="u",
                         links=[]), T0)
    sm.apply(key_command(b"k" * 32), T0)
    sm.apply(sub_command(B, "s", "tails", tails=[["json", 2, 9]]), T0)
    sm.apply(sub_command(B, "s", "wake", generation=0, wake_id="w1"), T0)
    sm.apply(sub_command(B, "s", "delivered", wake_id="w1", ok=False, done=False,
                         next_attempt_ms=T0 + 1000), T0)
    blob = sm.snapshot()
    restored = StreamMachine.restore(blob)
    assert restored.snapshot() == blob
    sub = restored.subscriptions.get(B, "s")
    assert (sub.generation, sub.wake.wake_id, sub.wake.next_attempt_ms) == (1, "w1", T0 + 1000)
    assert restored.subscriptions.signing_seed == b"k" * 32
    follow = sub_command(B, "s", "delivered", wake_id="w1", ok=True, done=True,
                         next_attempt_ms=0)
    assert restored.apply(follow, T0 + 5) == sm.apply(follow, T0 + 5)
    assert restored.snapshot() == sm.snapshot()


def test_restore_of_an_empty_machine():
    restored = StreamMachine.restore(StreamMachine().snapshot())
    assert restored.stream_count == 0
    assert restored.list_streams(B, "", 10, T0) == []


def test_restore_rejects_unknown_version():
    blob = cbor2.dumps({"version": 999, "next_uid": 1, "buckets": [], "streams": []})
    with pytest.raises(ValueError):
        StreamMachine.restore(blob)


# == command encoding ========================================================================

ALL_COMMANDS = [
    CreateStream("b", "s"),
    CreateStream("bkt", "a/b", content_type="application/json", ttl_seconds=60,
                 expires_at_ms=None, expires_at_text=None, closed=True, body=b"[1]",
                 fork_bucket="bkt", fork_stream="src", fork_offset=12, fork_sub_offset=3),
    CreateStream("b", "s", expires_at_ms=2**41, expires_at_text="2030-01-01T00:00:00Z"),
    Append("b", "s", None, b""),
    Append("b", "s", "text/plain", b"\x00\xffdata", close=True,
           producer=Producer("prod-\u00e9", 2**53 - 1, 2**53 - 1), stream_seq="0009"),
    AppendBatch("b", "s", OCT, (b"one", b"", b"\x00" * 10)),
    AppendBatch("b", "s", None, ()),
    DeleteStream("b", "s"),
    Touch("b", "s"),
    CreateBucket("bkt"),
    DeleteBucket("bkt"),
    CreateStream("b", "f", fork_bucket="b", fork_stream="s", fork_offset=None, fork_id="n-1",
                 inherited=[b"ab", [1, 2], [2], "application/json", 5, None, None]),
    AcquireFork("b", "s", "n-1", None, None),
    AcquireFork("b", "s", "n-2", "text/plain", 10, 2),
    ReleaseFork("b", "s", "n-1"),
    AckReleases(("n-1", "n-2")),
    AckReleases(()),
    ColdFlushed("b", "s", 3, 0, 4096, "g0/s3-abc/0-1000.chunk", 0xFFFFFFFF),
    ColdCollected(("g0/s3-abc/0-1000.chunk",)),
    Subscription("b", "__ds/subscriptions/s", "tails", {"id": "s", "tails": [["a", 1, 2]]}),
    Subscription("_default", "__ds/keys", "key", {"seed": b"\x00" * 32}),
    CreateStream("b", "s", attrs=b'{"title":"t"}'),
    commands.PublishSnapshot("b", "s", 12, "application/json", b"{}"),
    commands.PublishSnapshot("b", "s", 12, "text/plain", b"x", match="ab" * 32),
    commands.AdvanceRetention("b", "s", 12),
    commands.SetAttrs("b", "s", b""),
    commands.SnapshotFlushed("b", "s", 3, 12, "ab" * 32, "g0/s3-snap/x.snap", 7),
    commands.BindCompute("b", "s", "state", "cd" * 32, b"\0asm\x01\0\0\0", 5_000_000, 256,
                         1 << 20, 1000, 0, "application/json"),
    commands.BindCompute("b", "s", "counter", "ef" * 32, b"\0asm", 1000, 1, 64),
    commands.UnbindCompute("b", "s"),
]


@pytest.mark.parametrize("cmd", ALL_COMMANDS, ids=lambda c: type(c).__name__)
def test_command_round_trip(cmd):
    data = encode_command(cmd)
    assert isinstance(data, bytes)
    back = decode_command(data)
    assert back == cmd
    assert type(back) is type(cmd)
    assert encode_command(back) == data


def test_every_command_type_is_covered():
    assert {type(c) for c in ALL_COMMANDS} == set(commands._TYPES)


def test_an_entry_without_a_later_defaulted_field_still_decodes():
    # A Touch written before seen_ms existed: [tag, bucket, stream].
    old = cbor2.dumps([commands._TAG[Touch], "b", "s"])
    assert decode_command(old) == Touch("b", "s", 0)


def test_an_entry_missing_a_required_field_is_refused():
    with pytest.raises(ValueError, match="Touch"):
        decode_command(cbor2.dumps([commands._TAG[Touch], "b"]))
    with pytest.raises(ValueError, match="Touch"):
        decode_command(cbor2.dumps([commands._TAG[Touch], "b", "s", 1, 2]))


def test_decoded_types_are_exact():
    cmd = decode_command(encode_command(ALL_COMMANDS[4]))
    assert isinstance(cmd.producer, Producer)
    batch = decode_command(encode_command(ALL_COMMANDS[5]))
    assert isinstance(batch.frames, tuple)


def test_distinct_types_with_same_fields_do_not_collide():
    assert decode_command(encode_command(Touch("b", "s"))) != DeleteStream("b", "s")
    assert encode_command(Touch("b", "s")) != encode_command(DeleteStream("b", "s"))
    assert encode_command(CreateBucket("x")) != encode_command(DeleteBucket("x"))


def test_decoded_command_applies_like_the_original():
    sm1, sm2 = StreamMachine(), StreamMachine()
    for cmd in [CreateStream(B, "s", body=b"a"),
                Append(B, "s", OCT, b"b", producer=Producer("p", 0, 0)),
                Append(B, "s", OCT, b"b", producer=Producer("p", 0, 0))]:
        assert sm1.apply(cmd, T0) == sm2.apply(decode_command(encode_command(cmd)), T0)
    assert sm1.snapshot() == sm2.snapshot()


TEXT = st.text(max_size=10)
OPT_INT = st.none() | st.integers(0, 2**53 - 1)
PRODUCERS = st.none() | st.builds(Producer, TEXT, st.integers(0, 2**53 - 1),
                                  st.integers(0, 2**53 - 1))
COMMANDS = st.one_of(
    st.builds(CreateStream, TEXT, TEXT, st.none() | TEXT, OPT_INT, OPT_INT, st.none() | TEXT,
              st.booleans(), st.binary(max_size=20), st.none() | TEXT, st.none() | TEXT,
              OPT_INT, st.integers(0, 2**53 - 1), st.none() | TEXT,
              st.none() | st.builds(lambda d, e, ct, t: [d, e, e[-1:], ct, t, None, None],
                                    st.binary(max_size=8), st.lists(st.integers(0, 99)),
                                    TEXT, OPT_INT)),
    st.builds(Append, TEXT, TEXT, st.none() | TEXT, st.binary(max_size=20), st.booleans(),
              PRODUCERS, st.none() | TEXT),
    st.builds(AppendBatch, TEXT, TEXT, st.none() | TEXT,
              st.lists(st.binary(max_size=8), max_size=5).map(tuple)),
    st.builds(DeleteStream, TEXT, TEXT),
    st.builds(Touch, TEXT, TEXT),
    st.builds(CreateBucket, TEXT),
    st.builds(DeleteBucket, TEXT),
    st.builds(AcquireFork, TEXT, TEXT, TEXT, st.none() | TEXT, OPT_INT, st.integers(0, 99)),
    st.builds(ReleaseFork, TEXT, TEXT, TEXT),
    st.builds(AckReleases, st.lists(TEXT, max_size=4).map(tuple)),
    st.builds(ColdFlushed, TEXT, TEXT, st.integers(0, 2**53 - 1), st.integers(0, 2**53 - 1),
              st.integers(0, 2**53 - 1), TEXT, st.integers(0, 2**32 - 1)),
    st.builds(ColdCollected, st.lists(TEXT, max_size=4).map(tuple)),
)


@settings(max_examples=300, deadline=None)
@given(COMMANDS)
def test_random_command_round_trip(cmd):
    back = decode_command(encode_command(cmd))
    assert back == cmd
    assert dataclasses.astuple(back) == dataclasses.astuple(cmd)


def test_snapshot_keeps_fork_references_and_queued_releases():
    def owns(bucket, stream):
        return stream != "remote"

    sm = StreamMachine(owns=owns)
    sm.apply(CreateStream(B, "src", body=b"abc"), T0)
    sm.apply(AcquireFork(B, "src", "ext-1", None, None), T0)
    sm.apply(CreateStream(B, "f", fork_bucket=B, fork_stream="remote", fork_id="ext-2",
                          inherited=[b"zz", [2], [2], OCT, None, None, None]), T0)
    sm.apply(DeleteStream(B, "f"), T0)
    sm.apply(DeleteStream(B, "src"), T0)
    restored = StreamMachine.restore(sm.snapshot(), owns=owns)
    assert restored.pending_releases == sm.pending_releases == [(B, "remote", "ext-2")]
    assert restored.snapshot() == sm.snapshot()
    with pytest.raises(StreamError) as info:
        restored.head(B, "src", T0)
    assert info.value.code == "gone"
    restored.apply(ReleaseFork(B, "src", "ext-1"), T0)
    with pytest.raises(StreamError) as info:
        restored.head(B, "src", T0)
    assert info.value.code == "not_found"
