"""The state machine's side of the cold tier: ColdFlushed, reads below the hot start, chunk
references in snapshots and fork prefixes, chunks collected after a delete."""

from __future__ import annotations

from ursula.stream import StreamMachine
from ursula.stream import commands as C
from ursula.stream.commands import decode_command, encode_command

B = "_default"


def machine_with(body_parts, name="s", content_type="application/octet-stream"):
    m = StreamMachine()
    m.apply(C.CreateStream(B, name, content_type), 1)
    for part in body_parts:
        assert m.apply(C.Append(B, name, content_type, part), 2).error is None
    return m


def flush(m, start, end, name="s", key=None):
    uid = m.streams[(B, name)].uid
    cmd = C.ColdFlushed(B, name, uid, start, end, key or f"k{start}-{end}", 7)
    assert decode_command(encode_command(cmd)) == cmd
    return m.apply(cmd, 3)


def test_flush_drops_hot_bytes_and_reads_name_the_cold_range():
    m = machine_with([b"aaaa", b"bbbb", b"cccc"])
    assert m.total_bytes == 12
    assert flush(m, 0, 6).error is None
    s = m.streams[(B, "s")]
    assert (s.base, bytes(s.data), s.tail, s.ends) == (6, b"bbcccc", 12, [4, 8, 12])
    assert (m.total_bytes, m.cold_bytes) == (6, 6)
    r = m.read(B, "s", 0, 100, 4)
    assert (r.start, r.next_offset, r.data) == (0, 12, b"bbcccc")
    assert r.cold == ((0, 6, "k0-6", 7, 0, 6),)
    r = m.read(B, "s", 4, 4, 4)  # one record, half cold
    assert (r.next_offset, r.data, r.cold) == (8, b"bb", ((4, 6, "k0-6", 7, 0, 6),))
    r = m.read(B, "s", 8, 100, 4)
    assert (r.data, r.cold) == (b"cccc", ())


def test_flush_is_idempotent_and_checked():
    m = machine_with([b"aaaa", b"bbbb"])
    assert flush(m, 0, 4).error is None
    assert flush(m, 0, 4).duplicate  # a new leader's retry
    assert flush(m, 2, 6).error == "bad_request"  # not at the hot start
    assert flush(m, 4, 9).error == "bad_request"  # past the tail
    uid = m.streams[(B, "s")].uid
    assert m.apply(C.ColdFlushed(B, "s", uid + 1, 4, 8, "x", 0), 3).error == "not_found"
    assert m.total_bytes == 4 and m.cold_bytes == 4


def test_snapshot_holds_references_not_bytes():
    m = machine_with([b"x" * 1000, b"tail"])
    flush(m, 0, 1000)
    blob = m.snapshot()
    assert b"x" * 100 not in blob
    restored = StreamMachine.restore(blob)
    assert restored.snapshot() == blob
    assert (restored.total_bytes, restored.cold_bytes) == (4, 1000)
    r = restored.read(B, "s", 0, 10_000, 4)
    assert r.cold == ((0, 1000, "k0-1000", 7, 0, 1000),) and r.data == b"tail"


def test_delete_collects_own_chunks():
    m = machine_with([b"aaaa", b"bbbb"])
    flush(m, 0, 4)
    flush(m, 4, 8)
    m.apply(C.DeleteStream(B, "s"), 5)
    assert m.cold_garbage == ["k0-4", "k4-8"] and m.cold_bytes == 0
    assert StreamMachine.restore(m.snapshot()).cold_garbage == ["k0-4", "k4-8"]
    m.apply(C.ColdCollected(("k0-4",)), 6)
    assert m.cold_garbage == ["k4-8"]


def test_fork_inherits_references_and_does_not_collect_them():
    m = machine_with([b"aaaa", b"bbbb", b"cccc"])
    flush(m, 0, 6)
    assert m.apply(C.CreateStream(B, "f", fork_bucket=B, fork_stream="s", fork_offset=4),
                   4).error is None
    f = m.streams[(B, "f")]
    assert (f.base, bytes(f.data), f.tail, f.inherited) == (4, b"", 4, 1)
    r = m.read(B, "f", 0, 100, 4)
    assert r.cold == ((0, 4, "k0-6", 7, 0, 6),) and r.data == b""
    m.apply(C.Append(B, "f", "application/octet-stream", b"ffff"), 5)
    r = m.read(B, "f", 0, 100, 5)
    assert r.cold == ((0, 4, "k0-6", 7, 0, 6),) and r.data == b"ffff"
    assert flush(m, 4, 8, name="f", key="fk").error is None
    r = m.read(B, "f", 0, 100, 5)
    assert r.cold == ((0, 4, "k0-6", 7, 0, 6), (4, 8, "fk", 7, 4, 8)) and r.data == b""
    m.apply(C.DeleteStream(B, "f"), 6)
    assert m.cold_garbage == ["fk"]
    # a fork above the hot start copies the hot part
    m.apply(C.CreateStream(B, "g", fork_bucket=B, fork_stream="s", fork_offset=10), 7)
    g = m.streams[(B, "g")]
    assert (g.base, bytes(g.data), [c[2] for c in g.chunks]) == (6, b"bbcc", ["k0-6"])


def test_json_stream_boundaries_survive_a_flush():
    m = machine_with([b"[1,2]", b"[3]"], content_type="application/json")
    flush(m, 0, 3)
    r = m.read(B, "s", 0, 2, 4)
    assert (r.start, r.next_offset, r.cold, r.data) == (0, 2, ((0, 2, "k0-3", 7, 0, 3),), b"")
    r = m.read(B, "s", 2, 100, 4)
    assert r.cold == ((2, 3, "k0-3", 7, 0, 3),) and r.data == b",3,"
