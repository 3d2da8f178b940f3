"""Forks: inherited prefixes, sub-offsets, chains, isolation, lifetime and soft deletes."""

import pytest

from ursula.protocol.jsonmode import render_records
from ursula.stream import StreamMachine
from ursula.stream.commands import Append, CreateStream, DeleteStream, Producer, Touch
from ursula.stream.machine import StreamError

B = "_default"
OCT = "application/octet-stream"
JSON = "application/json"
T0 = 1_000_000


class Harness:
    def __init__(self):
        self.sm = StreamMachine()
        self.now = T0

    def do(self, cmd, now=None):
        return self.sm.apply(cmd, self.now if now is None else now)

    def create(self, name, **kw):
        return self.do(CreateStream(B, name, **kw))

    def fork(self, name, source, offset=None, sub=0, **kw):
        return self.do(CreateStream(B, name, fork_bucket=B, fork_stream=source, fork_offset=offset,
                                    fork_sub_offset=sub, **kw))

    def append(self, name, body, ct=OCT, **kw):
        return self.do(Append(B, name, ct, body, **kw))

    def data(self, name, offset=0, max_bytes=1 << 30, now=None):
        return self.sm.read(B, name, offset, max_bytes, self.now if now is None else now).data

    def json(self, name, offset=0):
        return render_records(self.data(name, offset))

    def code(self, query, *args):
        with pytest.raises(StreamError) as info:
            query(*args)
        return info.value.code

    def head_code(self, name, now=None):
        return self.code(self.sm.head, B, name, self.now if now is None else now)


@pytest.fixture
def h():
    return Harness()


@pytest.fixture
def src(h):
    """Source stream "a" holding two appends: b"aaaa" then b"bbbb"."""
    h.create("a")
    h.append("a", b"aaaa")
    h.append("a", b"bbbb")
    return h


# == creation and reading ====================================================================


def test_fork_at_default_offset_inherits_everything(src):
    out = src.fork("f", "a")
    assert out.error is None and out.created and out.next_offset == 8
    assert src.data("f") == b"aaaabbbb"
    assert src.sm.head(B, "f", T0).content_type == OCT


def test_fork_at_offset_inherits_the_prefix(src):
    out = src.fork("f", "a", offset=4)
    assert out.created and out.next_offset == 4
    assert src.data("f") == b"aaaa"
    a = src.append("f", b"cc")
    assert (a.start_offset, a.next_offset) == (4, 6)
    assert src.data("f") == b"aaaacc"
    assert src.data("f", offset=2) == b"aacc"
    assert src.data("a") == b"aaaabbbb"


def test_fork_at_zero_offset(src):
    out = src.fork("f", "a", offset=0)
    assert out.next_offset == 0 and src.data("f") == b""


def test_fork_does_not_see_source_appends_after_the_fork(src):
    src.fork("f", "a")
    src.append("a", b"late")
    src.append("f", b"mine")
    assert src.data("f") == b"aaaabbbbmine"
    assert src.data("a") == b"aaaabbbblate"


def test_fork_initial_body_follows_the_prefix(src):
    out = src.fork("f", "a", offset=4, body=b"init")
    assert out.next_offset == 8 and src.data("f") == b"aaaainit"


def test_fork_of_closed_source_starts_open(src):
    src.append("a", b"", close=True)
    out = src.fork("f", "a")
    assert out.created and not out.closed
    assert src.append("f", b"x").error is None


def test_fork_content_type(src):
    assert src.fork("f1", "a", content_type="text/plain").error == "content_type_mismatch"
    assert src.fork("f2", "a", content_type="Application/Octet-Stream; x=1").created
    assert src.sm.head(B, "f2", T0).content_type == "Application/Octet-Stream; x=1"


def test_fork_missing_source(h):
    assert h.fork("f", "nope").error == "fork_source_not_found"
    assert h.head_code("f") == "not_found"


def test_fork_offset_beyond_tail(src):
    assert src.fork("f", "a", offset=9).error == "invalid_fork"
    assert src.fork("f", "a", offset=8).created


def test_fork_reads_chunk_across_the_boundary(src):
    src.fork("f", "a", offset=4)
    src.append("f", b"cccc")
    r = src.sm.read(B, "f", 0, 5, T0)
    assert r.data == b"aaaa" and r.next_offset == 4
    r = src.sm.read(B, "f", 4, 5, T0)
    assert r.data == b"cccc" and r.up_to_date


# == sub-offsets: binary =====================================================================


@pytest.mark.parametrize("offset, sub, expected", [
    (0, 0, b""),
    (0, 1, b"a"),
    (0, 3, b"aaa"),
    (0, 4, b"aaaa"),  # equal to the append length is OK
    (4, 2, b"aaaabb"),
    (4, 4, b"aaaabbbb"),
    (2, 2, b"aaaa"),
    (None, 0, b"aaaabbbb"),
])
def test_binary_sub_offsets(src, offset, sub, expected):
    out = src.fork("f", "a", offset=offset, sub=sub)
    assert out.error is None and out.next_offset == len(expected)
    assert src.data("f") == expected


@pytest.mark.parametrize("offset, sub", [(0, 5), (4, 5), (2, 3), (8, 1), (None, 1)])
def test_binary_sub_offset_overshoot(src, offset, sub):
    assert src.fork("f", "a", offset=offset, sub=sub).error == "invalid_fork"


def test_sub_offset_on_empty_source(h):
    h.create("a")
    assert h.fork("f", "a", offset=0, sub=1).error == "invalid_fork"


def test_binary_sub_offset_fork_reads_and_appends(src):
    src.fork("f", "a", offset=0, sub=2)
    src.append("f", b"XY")
    assert src.data("f") == b"aaXY"
    assert src.data("f", offset=1) == b"aXY"
    r = src.sm.read(B, "f", 0, 1, T0)
    assert r.data == b"aa" and r.next_offset == 2  # the inherited part ends at the fork base


# == sub-offsets: JSON =======================================================================


@pytest.fixture
def jsrc(h):
    """JSON source "a": append [1,2,3] (records end at 2, 4, 6) then append [4,5]."""
    h.create("a", content_type=JSON)
    h.append("a", b"[1,2,3]", ct=JSON)
    h.append("a", b"[4,5]", ct=JSON)
    return h


@pytest.mark.parametrize("offset, sub, expected", [
    (0, 0, b"[]"),
    (0, 1, b"[1]"),
    (0, 2, b"[1,2]"),
    (0, 3, b"[1,2,3]"),
    (2, 2, b"[1,2,3]"),
    (6, 1, b"[1,2,3,4]"),
    (6, 2, b"[1,2,3,4,5]"),
    (4, 0, b"[1,2]"),
    (None, 0, b"[1,2,3,4,5]"),
])
def test_json_sub_offsets_count_messages(jsrc, offset, sub, expected):
    out = jsrc.fork("f", "a", offset=offset, sub=sub)
    assert out.error is None
    assert jsrc.json("f") == expected
    assert jsrc.sm.head(B, "f", T0).json


@pytest.mark.parametrize("offset, sub", [(0, 4), (2, 3), (6, 3), (10, 1), (None, 1)])
def test_json_sub_offset_overshoot(jsrc, offset, sub):
    assert jsrc.fork("f", "a", offset=offset, sub=sub).error == "invalid_fork"


@pytest.mark.parametrize("offset", [1, 3, 5, 7])
def test_json_fork_offset_inside_a_message(jsrc, offset):
    assert jsrc.fork("f", "a", offset=offset).error == "invalid_fork"


def test_json_reads_across_the_fork_boundary_are_one_array(jsrc):
    jsrc.fork("f", "a", offset=0, sub=2)
    jsrc.append("f", b'{"own":true}', ct=JSON)
    assert jsrc.json("f") == b'[1,2,{"own":true}]'
    assert jsrc.json("f", offset=2) == b'[2,{"own":true}]'


# == chains ==================================================================================


def test_chained_binary_forks_compose():
    h = Harness()
    h.create("a", body=b"abcdef")
    h.fork("b", "a", offset=0, sub=4)
    h.append("b", b"XY")
    assert h.data("b") == b"abcdXY"
    assert h.fork("c1", "b", offset=4, sub=1).error is None
    assert h.data("c1") == b"abcdX"
    assert h.fork("c2", "b", offset=2, sub=1).error is None
    assert h.data("c2") == b"abc"
    assert h.fork("c3", "b", offset=2, sub=3).error == "invalid_fork"  # past b's base (4)
    assert h.fork("c4", "b", offset=2, sub=2).error is None
    assert h.data("c4") == b"abcd"
    h.fork("d", "c1")
    h.append("d", b"!")
    assert h.data("d") == b"abcdX!"
    assert h.data("d", offset=3) == b"dX!"


def test_chained_json_forks_compose(jsrc):
    jsrc.fork("b", "a", offset=0, sub=2)  # [1,2], base 4 inside the first append
    assert jsrc.fork("c", "b", offset=0, sub=3).error == "invalid_fork"
    assert jsrc.fork("c", "b", offset=0, sub=2).error is None
    assert jsrc.json("c") == b"[1,2]"
    jsrc.append("b", b"[7,8]", ct=JSON)
    assert jsrc.fork("d", "b", offset=4, sub=2).error is None
    assert jsrc.json("d") == b"[1,2,7,8]"
    assert jsrc.fork("e", "b", offset=4, sub=3).error == "invalid_fork"


def test_deep_chain(h):
    h.create("s0", body=b"0")
    for i in range(1, 30):
        assert h.fork(f"s{i}", f"s{i - 1}").created
        h.append(f"s{i}", str(i % 10).encode())
    assert h.data("s29") == b"".join(str(i % 10).encode() for i in range(30))


# == isolation ===============================================================================


def test_fork_does_not_inherit_producer_state(h):
    h.create("a")
    for seq in range(3):
        h.append("a", b"x", producer=Producer("p", 0, seq))
    h.fork("f", "a")
    out = h.append("f", b"y", producer=Producer("p", 0, 3))
    assert out.error == "producer_seq_gap" and out.expected_seq == 0
    assert h.append("f", b"y", producer=Producer("p", 0, 0)).error is None
    assert h.data("f") == b"xxxy"


def test_fork_does_not_inherit_stream_seq(h):
    h.create("a")
    h.append("a", b"x", stream_seq="9")
    h.fork("f", "a")
    assert h.append("f", b"y", stream_seq="1").error is None


# == idempotent fork PUT =====================================================================


def test_fork_put_is_idempotent(src):
    src.fork("f", "a", offset=4, sub=2)
    again = src.fork("f", "a", offset=4, sub=2)
    assert again.error is None and not again.created and again.next_offset == 6
    assert src.fork("f", "a", offset=4, sub=2, content_type=OCT).error is None


@pytest.mark.parametrize("kw", [
    {"offset": 4, "sub": 1}, {"offset": 0, "sub": 2}, {"offset": None, "sub": 0},
    {"offset": 4, "sub": 2, "content_type": "text/plain"},
    {"offset": 4, "sub": 2, "ttl_seconds": 5},
])
def test_fork_put_with_other_spec_conflicts(src, kw):
    src.fork("f", "a", offset=4, sub=2)
    offset, sub = kw.pop("offset"), kw.pop("sub")
    assert src.fork("f", "a", offset=offset, sub=sub, **kw).error == "exists_conflict"


def test_plain_put_on_a_fork_conflicts(src):
    src.fork("f", "a")
    assert src.create("f").error == "exists_conflict"
    src.create("plain")
    assert src.fork("plain", "a").error == "exists_conflict"


# == lifetime ================================================================================


def test_fork_inherits_ttl_as_its_own_window(h):
    h.create("a", ttl_seconds=10)
    h.do(CreateStream(B, "f", fork_bucket=B, fork_stream="a"), now=T0 + 5_000)
    info = h.sm.head(B, "f", T0 + 5_000)
    assert info.ttl_seconds == 10
    assert h.sm.head(B, "f", T0 + 14_999).tail == 0
    assert h.head_code("f", now=T0 + 15_000) == "not_found"


def test_fork_explicit_ttl_wins(h):
    h.create("a", ttl_seconds=10)
    h.fork("f", "a", ttl_seconds=100)
    assert h.sm.head(B, "f", T0).ttl_seconds == 100
    assert h.sm.head(B, "f", T0 + 50_000).tail == 0


def test_fork_inherits_expires_at(h):
    h.create("a", expires_at_ms=T0 + 10_000, expires_at_text="x")
    h.fork("f", "a")
    assert h.sm.head(B, "f", T0).expires_at_text == "x"
    assert h.head_code("f", now=T0 + 10_000) in ("not_found", "gone")


def test_source_expiry_with_live_fork(h):
    h.create("a", ttl_seconds=1, body=b"data")
    h.fork("f", "a", ttl_seconds=1000)
    later = T0 + 5_000
    assert h.head_code("a", now=later) == "gone"
    assert h.data("f", now=later) == b"data"
    assert h.do(Append(B, "f", OCT, b"+"), now=later).error is None
    assert h.data("f", now=later) == b"data+"
    assert h.do(CreateStream(B, "a"), now=later).error == "soft_deleted_conflict"
    assert h.do(Append(B, "a", OCT, b"x"), now=later).error == "gone"
    # deleting the fork releases the expired source, and the path is free again
    assert h.do(DeleteStream(B, "f"), now=later).error is None
    assert h.head_code("a", now=later) == "not_found"
    assert h.do(CreateStream(B, "a"), now=later).created


def test_fork_from_expired_source_without_forks(h):
    h.create("a", ttl_seconds=1)
    assert h.do(CreateStream(B, "f", fork_bucket=B, fork_stream="a"),
                now=T0 + 1_000).error == "fork_source_not_found"


# == soft delete and garbage collection =======================================================


def test_soft_delete_of_a_source_with_forks(src):
    src.fork("f", "a", offset=4)
    assert src.do(DeleteStream(B, "a")).error is None
    assert src.head_code("a") == "gone"
    assert src.code(src.sm.read, B, "a", 0, 100, T0) == "gone"
    assert src.append("a", b"x").error == "gone"
    assert src.append("a", b"", close=True).error == "gone"
    assert src.do(Touch(B, "a")).error == "gone"
    assert src.do(DeleteStream(B, "a")).error == "gone"
    assert src.create("a").error == "soft_deleted_conflict"
    assert src.fork("g", "a").error == "soft_deleted_conflict"
    assert src.data("f") == b"aaaa"
    assert [n for n, _ in src.sm.list_streams(B, "", 10, T0)] == ["f"]


def test_deleting_the_last_fork_collects_the_source(src):
    src.fork("f1", "a")
    src.fork("f2", "a")
    src.do(DeleteStream(B, "a"))
    src.do(DeleteStream(B, "f1"))
    assert src.head_code("a") == "gone"
    assert src.data("f2") == b"aaaabbbb"
    src.do(DeleteStream(B, "f2"))
    assert src.head_code("a") == "not_found"
    assert src.sm.stream_count == 0
    assert src.sm.total_bytes == 0
    out = src.create("a")
    assert out.created and out.next_offset == 0


def test_cascading_collection_up_a_chain(h):
    h.create("a", body=b"1")
    h.fork("b", "a")
    h.append("b", b"2")
    h.fork("c", "b")
    h.do(DeleteStream(B, "a"))
    h.do(DeleteStream(B, "b"))
    assert h.data("c") == b"12"
    assert h.sm.stream_count == 3
    h.do(DeleteStream(B, "c"))
    assert h.sm.stream_count == 0
    for name in "abc":
        assert h.head_code(name) == "not_found"


def test_deleting_a_fork_keeps_a_live_source(src):
    src.fork("f", "a")
    src.do(DeleteStream(B, "f"))
    assert src.data("a") == b"aaaabbbb"
    assert src.do(DeleteStream(B, "a")).error is None
    assert src.head_code("a") == "not_found"  # hard delete: no forks left


@pytest.mark.parametrize("kw", [{"content_type": "text/plain"}, {"offset": 99},
                                {"offset": 0, "sub": 99}])
def test_failed_fork_does_not_leak_a_reference(src, kw):
    offset, sub = kw.pop("offset", None), kw.pop("sub", 0)
    assert src.fork("f", "a", offset=offset, sub=sub, **kw).error is not None
    src.do(DeleteStream(B, "a"))
    assert src.head_code("a") == "not_found"


def test_failed_json_fork_body_does_not_leak_a_reference(jsrc):
    assert jsrc.fork("f", "a", body=b"{bad").error == "invalid_json"
    assert jsrc.head_code("f") == "not_found"
    jsrc.do(DeleteStream(B, "a"))
    assert jsrc.head_code("a") == "not_found"


def test_fork_of_a_fork_keeps_soft_deleted_middle_alive(h):
    h.create("a", body=b"A")
    h.fork("b", "a")
    h.append("b", b"B")
    h.do(DeleteStream(B, "b"))  # b has no forks: hard delete
    assert h.head_code("b") == "not_found"
    h.fork("b2", "a")
    h.fork("c", "b2")
    h.do(DeleteStream(B, "b2"))
    assert h.head_code("b2") == "gone"
    assert h.data("c") == b"A"
    h.do(DeleteStream(B, "c"))
    assert h.head_code("b2") == "not_found"
    assert h.data("a") == b"A"
