"""The state machine's snapshots, retention and attributes: the publish and retention rules,
reads below the floor, memory and chunk release, forks after retention, machine images; and a
hypothesis property against a model (random appends, flushes, publishes and retention moves:
every read at or above the floor answers the model's bytes, every read below it is refused,
and a restored image answers the same)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ursula.stream import commands as C
from ursula.stream.machine import StreamError, StreamMachine
from ursula.stream.model import snapshot_digest

B, S = "_default", "s"


def machine_with(pieces, content_type="text/plain"):
    m = StreamMachine()
    assert m.apply(C.CreateStream(B, S, content_type), 0).error is None
    for piece in pieces:
        assert m.apply(C.Append(B, S, content_type, piece), 0).error is None
    return m


def test_publish_and_retention_rules():
    m = machine_with([b"ab", b"cd", b"ef"])
    assert m.apply(C.AdvanceRetention(B, S, 2), 0).error == "retention_no_snapshot"
    assert m.apply(C.PublishSnapshot(B, S, 3, "x", b"1"), 0).error == "snapshot_unaligned"
    assert m.apply(C.PublishSnapshot(B, S, 7, "x", b"1"), 0).error == "snapshot_beyond_tail"
    ok = m.apply(C.PublishSnapshot(B, S, 4, "x", b"1"), 0)
    assert ok.error is None and ok.payload["digest"] == snapshot_digest("x", b"1")
    assert m.apply(C.PublishSnapshot(B, S, 4, "x", b"1"), 0).duplicate
    assert m.apply(C.PublishSnapshot(B, S, 4, "x", b"2"), 0).error == "snapshot_digest_conflict"
    assert m.apply(C.PublishSnapshot(B, S, 2, "x", b"2"), 0).error == "snapshot_older"
    assert m.apply(C.PublishSnapshot(B, S, 6, "x", b"2", match="nope"), 0).error == \
        "snapshot_match_failed"
    assert m.apply(C.AdvanceRetention(B, S, 6), 0).error == "retention_beyond_snapshot"
    assert m.apply(C.AdvanceRetention(B, S, 3), 0).error == "retention_unaligned"
    assert m.apply(C.AdvanceRetention(B, S, 2), 0).error is None
    assert m.apply(C.AdvanceRetention(B, S, 0), 0).error == "retention_backwards"
    assert m.apply(C.AdvanceRetention(B, S, 2), 0).duplicate
    assert m.apply(C.PublishSnapshot(B, S, 0, "x", b"2"), 0).error == "retained"
    assert m.apply(C.PublishSnapshot(B, S, 6, "x", b"3", match=ok.payload["digest"]),
                   0).error is None
    assert m.snapshot_bytes == 1
    assert m.apply(C.AdvanceRetention(B, S, 6), 0).error is None
    stream = m.streams[(B, S)]
    assert stream.data == b"" and stream.base == 6 and m.total_bytes == 0
    with pytest.raises(StreamError) as refused:
        m.read(B, S, 4, 100, 0)
    assert refused.value.code == "retained" and refused.value.next_offset == 6
    assert m.read(B, S, 6, 100, 0).data == b""
    assert m.apply(C.Append(B, S, "text/plain", b"gh"), 0).next_offset == 8
    assert m.read(B, S, 6, 100, 0).data == b"gh"
    assert m.apply(C.PublishSnapshot(B, S, 7, "x", b"3"), 0).error == "snapshot_unaligned"


def test_retention_releases_cold_chunks_and_keeps_them_for_live_forks():
    m = machine_with([b"aaaa", b"bbbb", b"cccc"])
    assert m.apply(C.ColdFlushed(B, S, 1, 0, 4, "k0", 1), 0).error is None
    assert m.apply(C.ColdFlushed(B, S, 1, 4, 8, "pack#32", 2), 0).error is None
    m.apply(C.PublishSnapshot(B, S, 8, "x", b"s"), 0)
    m.apply(C.AdvanceRetention(B, S, 4), 0)
    assert m.cold_garbage == ["k0"] and m.cold_bytes == 4
    m.apply(C.CreateStream(B, "fork", fork_bucket=B, fork_stream=S, fork_offset=8), 0)
    fork = m.streams[(B, "fork")]
    assert fork.retained == 4
    with pytest.raises(StreamError):
        m.read(B, "fork", 0, 100, 0)
    assert m.apply(C.CreateStream(B, "early", fork_bucket=B, fork_stream=S, fork_offset=0),
                   0).error == "invalid_fork"
    m.apply(C.AdvanceRetention(B, S, 8), 0)  # a fork lives: its chunk stays referenced
    assert m.cold_garbage == ["k0"] and m.streams[(B, S)].chunks
    m.apply(C.DeleteStream(B, "fork"), 0)
    m.apply(C.PublishSnapshot(B, S, 12, "x", b"t"), 0)
    m.apply(C.AdvanceRetention(B, S, 12), 0)
    assert m.cold_garbage == ["k0", "pack#32"] and m.streams[(B, S)].chunks == []
    assert m.total_bytes == 0 and m.cold_bytes == 0


def test_snapshot_flushed_and_collection_of_replaced_and_dropped_snapshots():
    m = machine_with([b"ab"])
    digest = m.apply(C.PublishSnapshot(B, S, 2, "x", b"blob"), 0).payload["digest"]
    assert m.apply(C.SnapshotFlushed(B, S, 1, 2, "other", "key", 7), 0).error == \
        "snapshot_not_found"
    assert m.apply(C.SnapshotFlushed(B, S, 1, 2, digest, "key", 7), 0).error is None
    assert m.snapshot_bytes == 0 and m.streams[(B, S)].snapshot.blob is None
    view = m.view(B, S, "snapshot", 0, 0)
    assert view.snapshot_blob is None and view.snapshot_ref == ("key", 7)
    m.apply(C.Append(B, S, "text/plain", b"c"), 0)
    m.apply(C.PublishSnapshot(B, S, 3, "x", b"new"), 0)
    assert m.cold_garbage == ["key"]
    m.apply(C.SnapshotFlushed(B, S, 1, 3, m.streams[(B, S)].snapshot.digest, "key2", 1), 0)
    m.apply(C.DeleteStream(B, S), 0)
    assert m.cold_garbage == ["key", "key2"]


def test_attrs_and_images_carry_everything():
    m = machine_with([b"ab", b"cd"])
    m.apply(C.SetAttrs(B, S, b'{"a":1}'), 0)
    m.apply(C.PublishSnapshot(B, S, 2, "x", b"s"), 0)
    m.apply(C.AdvanceRetention(B, S, 2), 0)
    restored = StreamMachine.restore(m.snapshot())
    for kind in ("snapshot", "bootstrap", "attrs"):
        assert restored.view(B, S, kind, 100, 0) == m.view(B, S, kind, 100, 0)
    assert restored.snapshot_bytes == 1 and restored.head(B, S, 0) == m.head(B, S, 0)
    m.apply(C.SetAttrs(B, S, b""), 0)
    assert m.view(B, S, "attrs", 0, 0).attrs is None
    old = C.decode_command(C.encode_command(C.CreateStream(B, "x")))
    assert old.attrs is None


ops = st.lists(st.one_of(
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=6)),
    st.tuples(st.just("flush"), st.integers(0, 3)),
    st.tuples(st.just("publish"), st.integers(0, 40)),
    st.tuples(st.just("retain"), st.integers(0, 40)),
), max_size=40)


@settings(max_examples=150)
@given(ops)
def test_property_reads_at_or_above_the_floor_match_the_model(operations):
    m = machine_with([])
    model = b""
    appends = [0]
    floor = 0
    snapshot = None
    for kind, arg in operations:
        stream = m.streams[(B, S)]
        if kind == "append":
            m.apply(C.Append(B, S, "text/plain", arg), 0)
            model += arg
            appends.append(len(model))
        elif kind == "flush" and stream.data:
            end = min(stream.tail, stream.base + 1 + arg)
            m.apply(C.ColdFlushed(B, S, 1, stream.base, end, f"k{stream.base}", 0), 0)
        elif kind == "publish":
            offset = appends[arg % len(appends)]
            outcome = m.apply(C.PublishSnapshot(B, S, offset, "x", b"%d" % offset), 0)
            if outcome.error is None and not outcome.duplicate:
                assert offset >= floor and (snapshot is None or offset > snapshot)
                snapshot = offset
        elif kind == "retain":
            offset = appends[arg % len(appends)]
            outcome = m.apply(C.AdvanceRetention(B, S, offset), 0)
            if outcome.error is None and not outcome.duplicate:
                assert snapshot is not None and floor <= offset <= snapshot
                floor = offset
    stream = m.streams[(B, S)]
    assert stream.retained == floor and stream.base >= floor or stream.base == stream.tail
    for machine in (m, StreamMachine.restore(m.snapshot())):
        for offset in appends:
            if offset < floor:
                with pytest.raises(StreamError):
                    machine.read(B, S, offset, 1 << 20, 0)
                continue
            result = machine.read(B, S, offset, 1 << 20, 0)
            hot = result.data
            cold_len = sum(span[1] - span[0] for span in result.cold)
            assert result.next_offset == len(model)
            assert hot == model[offset + cold_len:]
            for span in result.cold:
                assert span[0] >= floor
    # garbage: exactly the chunks wholly below the floor that are no longer referenced
    referenced = {c[2] for c in stream.chunks}
    assert not referenced & set(m.cold_garbage)
