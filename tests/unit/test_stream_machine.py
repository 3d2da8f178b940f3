"""StreamMachine: create, append, Stream-Seq, content types, close, JSON mode, TTL, delete,
buckets, append batches and read chunking."""

import pytest

from ursula.protocol.jsonmode import render_records
from ursula.stream import StreamMachine
from ursula.stream.commands import (
    Append,
    AppendBatch,
    CreateBucket,
    CreateStream,
    DeleteBucket,
    DeleteStream,
    Touch,
)
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

    def create(self, name="s", bucket=B, **kw):
        return self.do(CreateStream(bucket, name, **kw))

    def append(self, body, name="s", ct=OCT, bucket=B, **kw):
        return self.do(Append(bucket, name, ct, body, **kw))

    def read(self, name="s", offset=0, max_bytes=1 << 30, bucket=B, now=None):
        return self.sm.read(bucket, name, offset, max_bytes, self.now if now is None else now)

    def data(self, name="s", offset=0, **kw):
        return self.read(name, offset, **kw).data

    def head(self, name="s", bucket=B, now=None):
        return self.sm.head(bucket, name, self.now if now is None else now)

    def error(self, query, *args):
        with pytest.raises(StreamError) as info:
            query(*args)
        return info.value.code


@pytest.fixture
def h():
    return Harness()


# == create ===================================================================================


def test_create_new_stream(h):
    out = h.create(content_type="text/plain")
    assert out.error is None and out.created
    assert out.next_offset == 0 and not out.closed
    assert out.content_type == "text/plain"
    info = h.head()
    assert info.tail == 0 and info.content_type == "text/plain" and not info.json


def test_create_default_content_type(h):
    assert h.create().content_type == OCT
    assert h.head().content_type == OCT


def test_create_with_initial_body(h):
    out = h.create(body=b"hello")
    assert out.created and out.next_offset == 5
    assert h.data() == b"hello"


def test_idempotent_create_returns_existing(h):
    h.create(content_type="text/plain", ttl_seconds=60)
    h.append(b"abc", ct="text/plain")
    out = h.create(content_type="TEXT/PLAIN; charset=utf-8", ttl_seconds=60)
    assert out.error is None and not out.created
    assert out.next_offset == 3
    assert out.content_type == "text/plain"  # the stored type is echoed as given at creation


def test_idempotent_create_without_type_matches_default(h):
    h.create()
    out = h.create()
    assert out.error is None and not out.created
    assert h.create(content_type=OCT).error is None


@pytest.mark.parametrize("first, second", [
    ({"content_type": "text/plain"}, {"content_type": JSON}),
    ({"content_type": "text/plain"}, {}),
    ({}, {"content_type": "text/plain"}),
    ({"ttl_seconds": 60}, {"ttl_seconds": 61}),
    ({"ttl_seconds": 60}, {}),
    ({}, {"ttl_seconds": 60}),
    ({"expires_at_ms": 10**13, "expires_at_text": "x"},
     {"expires_at_ms": 10**13 + 1000, "expires_at_text": "y"}),
    ({"expires_at_ms": 10**13, "expires_at_text": "x"}, {"ttl_seconds": 60}),
    ({"closed": True}, {}),
    ({}, {"closed": True}),
])
def test_create_with_different_config_conflicts(h, first, second):
    assert h.create(**first).created
    out = h.create(**second)
    assert out.error == "exists_conflict"
    assert not out.created


def test_create_closed_stream(h):
    out = h.create(closed=True, body=b"final")
    assert out.created and out.closed and out.next_offset == 5
    assert h.head().closed
    assert h.create(closed=True).error is None
    assert h.append(b"more").error == "closed"


def test_create_on_closed_after_close_needs_closed_flag(h):
    h.create()
    h.append(b"", close=True)
    assert h.create().error == "exists_conflict"
    assert h.create(closed=True).error is None


def test_create_json_with_invalid_body_fails_and_creates_nothing(h):
    out = h.create(content_type=JSON, body=b"{nope")
    assert out.error == "invalid_json" and not out.created
    assert h.error(h.head) == "not_found"
    assert h.create(content_type=JSON).created


def test_create_json_with_empty_array_is_empty_stream(h):
    out = h.create(content_type=JSON, body=b"[]")
    assert out.created and out.next_offset == 0
    assert render_records(h.data()) == b"[]"


def test_uids_are_unique(h):
    h.create("a")
    h.create("b")
    assert h.head("a").uid != h.head("b").uid


# == append ===================================================================================


def test_append_offsets(h):
    h.create()
    a = h.append(b"abc")
    assert (a.error, a.start_offset, a.next_offset) == (None, 0, 3)
    b = h.append(b"defgh")
    assert (b.start_offset, b.next_offset) == (3, 8)
    assert h.data() == b"abcdefgh"
    assert h.data(offset=3) == b"defgh"
    assert h.data(offset=8) == b""
    assert h.head().tail == 8


def test_append_to_missing_stream(h):
    assert h.append(b"x").error == "not_found"
    assert h.append(b"", close=True).error == "not_found"


def test_empty_append_without_close(h):
    h.create()
    out = h.append(b"")
    assert out.error == "empty_append"
    assert h.head().tail == 0


def test_binary_round_trip(h):
    h.create()
    payload = bytes(range(256)) * 4
    h.append(payload)
    assert h.data() == payload


@pytest.mark.parametrize("ct", [None, "text/plain", JSON, "application/octet-stream2"])
def test_content_type_mismatch(h, ct):
    h.create()
    out = h.append(b"x", ct=ct)
    assert out.error == "content_type_mismatch"
    assert h.head().tail == 0


def test_content_type_match_ignores_case_and_parameters(h):
    h.create(content_type="text/plain")
    assert h.append(b"x", ct="TEXT/Plain; charset=utf-8").error is None


def test_close_only_ignores_content_type(h):
    h.create(content_type="text/plain")
    out = h.append(b"", ct=None, close=True)
    assert out.error is None and out.closed


# == Stream-Seq ===============================================================================


@pytest.mark.parametrize("first, second, ok", [
    ("2", "10", False),
    ("09", "10", True),
    ("a", "B", False),
    ("B", "a", True),
    ("5", "5", False),
    ("5", "4", False),
    ("1", "1a", True),
    ("abc", "abd", True),
    ("\u00e9", "z", False),  # UTF-8 bytes: 0xC3 0xA9 > 'z'
])
def test_stream_seq_is_bytewise(h, first, second, ok):
    h.create()
    assert h.append(b"x", stream_seq=first).error is None
    out = h.append(b"y", stream_seq=second)
    if ok:
        assert out.error is None
        assert h.data() == b"xy"
    else:
        assert out.error == "stream_seq_conflict"
        assert h.data() == b"x"


def test_stream_seq_absent_does_not_reset(h):
    h.create()
    h.append(b"a", stream_seq="5")
    assert h.append(b"b").error is None
    assert h.append(b"c", stream_seq="5").error == "stream_seq_conflict"
    assert h.append(b"c", stream_seq="6").error is None


def test_failed_append_does_not_record_stream_seq(h):
    h.create()
    assert h.append(b"x", ct="text/plain", stream_seq="5").error == "content_type_mismatch"
    assert h.append(b"x", stream_seq="1").error is None


def test_error_precedence_closed_over_ct_over_seq(h):
    h.create()
    h.append(b"a", stream_seq="5")
    assert h.append(b"b", ct="text/plain", stream_seq="1").error == "content_type_mismatch"
    h.append(b"", close=True)
    out = h.append(b"b", ct="text/plain", stream_seq="1")
    assert out.error == "closed" and out.closed and out.next_offset == 1


# == close ====================================================================================


def test_close_only(h):
    h.create()
    h.append(b"abc")
    out = h.append(b"", close=True)
    assert out.error is None and out.closed and out.next_offset == 3
    assert h.head().closed
    again = h.append(b"", close=True)
    assert again.error is None and again.closed and again.next_offset == 3


def test_append_to_closed_is_409_with_closed_flag(h):
    h.create()
    h.append(b"abc", close=True)
    out = h.append(b"more")
    assert out.error == "closed" and out.closed and out.next_offset == 3
    assert h.data() == b"abc"


def test_append_and_close_is_atomic(h):
    h.create()
    out = h.append(b"last", close=True)
    assert out.error is None and out.closed and out.start_offset == 0 and out.next_offset == 4
    assert h.data() == b"last"


def test_append_and_close_on_closed_stream_conflicts(h):
    h.create()
    h.append(b"", close=True)
    out = h.append(b"x", close=True)
    assert out.error == "closed" and out.closed


def test_closed_stream_read_eof(h):
    h.create()
    h.append(b"abcdef", close=True)
    r = h.read(offset=0)
    assert r.closed and r.up_to_date
    partial = h.read(offset=0, max_bytes=2)  # one record -> whole record anyway
    assert partial.data == b"abcdef"
    h.append(b"", close=True)
    tail = h.read(offset=6)
    assert tail.data == b"" and tail.closed


def test_partial_read_of_closed_stream_is_not_eof(h):
    h.create()
    h.append(b"aaa")
    h.append(b"bbb", close=True)
    r = h.read(offset=0, max_bytes=3)
    assert r.data == b"aaa" and not r.up_to_date and not r.closed
    assert h.read(offset=3).closed


def test_closed_stream_can_be_deleted(h):
    h.create(closed=True)
    assert h.do(DeleteStream(B, "s")).error is None
    assert h.error(h.head) == "not_found"


# == JSON mode ================================================================================


def test_json_flattening_on_append(h):
    h.create(content_type=JSON)
    h.append(b'{"a":1}', ct=JSON)
    h.append(b'[{"b":2},{"c":3}]', ct=JSON)
    h.append(b"[[1,2],[3,4]]", ct=JSON)
    h.append(b"[[[1,2,3]]]", ct=JSON)
    assert render_records(h.data()) == (
        b'[{"a":1},{"b":2},{"c":3},[1,2],[3,4],[[1,2,3]]]')


def test_json_initial_body_is_flattened(h):
    h.create(content_type=JSON, body=b"[1, 2, 3]")
    assert render_records(h.data()) == b"[1,2,3]"


def test_json_empty_array_append_is_error(h):
    h.create(content_type=JSON)
    out = h.append(b"[]", ct=JSON)
    assert out.error == "empty_json_array"
    assert h.head().tail == 0


def test_json_empty_array_append_and_close_is_error(h):
    h.create(content_type=JSON)
    assert h.append(b" [ ] ", ct=JSON, close=True).error == "empty_json_array"
    assert not h.head().closed


@pytest.mark.parametrize("body", [b"{", b"NaN", b"[1,]", b"1 2", b"[1]x"])
def test_json_invalid_append(h, body):
    h.create(content_type=JSON)
    h.append(b"1", ct=JSON)
    out = h.append(body, ct=JSON)
    assert out.error == "invalid_json"
    assert render_records(h.data()) == b"[1]"


def test_json_reads_render_as_arrays_and_empty(h):
    h.create(content_type="application/json; charset=utf-8")
    assert h.head().json
    assert render_records(h.data()) == b"[]"
    first = h.append(b'{"x": "y"}', ct=JSON)
    h.append(b'[1,"two"]', ct=JSON)
    assert render_records(h.data()) == b'[{"x": "y"},1,"two"]'
    assert render_records(h.data(offset=first.next_offset)) == b'[1,"two"]'
    assert render_records(h.data(offset=h.head().tail)) == b"[]"


def test_json_unaligned_read_snaps_forward_to_a_message(h):
    h.create(content_type=JSON)
    h.append(b'["aaaa","bbbb"]', ct=JSON)
    r = h.read(offset=2)
    assert r.start == len(b'"aaaa",')
    assert render_records(r.data) == b'["bbbb"]'


def test_json_read_chunks_at_message_boundaries(h):
    h.create(content_type=JSON)
    h.append(b"[10,20,30,40]", ct=JSON)
    r = h.read(offset=0, max_bytes=7)
    assert render_records(r.data) == b"[10,20]"
    r2 = h.read(offset=r.next_offset, max_bytes=1)
    assert render_records(r2.data) == b"[30]"


# == TTL / expiry =============================================================================


def test_ttl_expiry_makes_stream_not_found(h):
    h.create(ttl_seconds=10)
    h.append(b"abc")
    assert h.head(now=T0 + 9_999).tail == 3
    assert h.error(h.head, B, "s", T0 + 10_000) == "not_found"
    assert h.error(h.sm.read, B, "s", 0, 100, T0 + 10_000) == "not_found"
    assert h.append(b"x").error is None  # still T0: alive
    assert h.do(Append(B, "s", OCT, b"x"), now=T0 + 20_000).error == "not_found"


def test_append_extends_ttl(h):
    h.create(ttl_seconds=10)
    assert h.do(Append(B, "s", OCT, b"a"), now=T0 + 8_000).error is None
    assert h.head(now=T0 + 17_999).tail == 1
    assert h.error(h.head, B, "s", T0 + 18_000) == "not_found"


def test_touch_extends_ttl(h):
    h.create(ttl_seconds=10)
    out = h.do(Touch(B, "s"), now=T0 + 9_000)
    assert out.error is None and out.next_offset == 0
    assert h.head(now=T0 + 18_000).tail == 0
    assert h.error(h.head, B, "s", T0 + 19_000) == "not_found"


def test_close_only_extends_ttl(h):
    h.create(ttl_seconds=10)
    h.do(Append(B, "s", None, b"", close=True), now=T0 + 5_000)
    h.do(Append(B, "s", None, b"", close=True), now=T0 + 9_000)
    assert h.head(now=T0 + 18_000).closed


def test_head_does_not_extend_ttl(h):
    h.create(ttl_seconds=10)
    h.head(now=T0 + 9_000)
    h.read(now=T0 + 9_000)
    assert h.error(h.head, B, "s", T0 + 10_000) == "not_found"


def test_touch_missing_or_expired(h):
    assert h.do(Touch(B, "s")).error == "not_found"
    h.create(ttl_seconds=1)
    assert h.do(Touch(B, "s"), now=T0 + 1_000).error == "not_found"


def test_touch_seen_alive_renews_though_stamped_after_the_window(h):
    # The read arrived at 9.9 s (alive); its Touch entry was stamped at 10.2 s (a slow fsync).
    h.create(ttl_seconds=10)
    out = h.do(Touch(B, "s", seen_ms=T0 + 9_900), now=T0 + 10_200)
    assert out.error is None
    assert h.head(now=T0 + 20_100).tail == 0
    assert h.error(h.head, B, "s", T0 + 20_200) == "not_found"


def test_touch_seen_after_the_window_does_not_revive(h):
    h.create(ttl_seconds=10)
    assert h.do(Touch(B, "s", seen_ms=T0 + 10_000), now=T0 + 10_200).error == "not_found"
    assert h.error(h.head, B, "s", T0 + 10_300) == "not_found"


def test_touch_seen_in_the_future_is_judged_at_its_stamp(h):
    # A seen_ms later than the entry's stamp (a skewed clock) cannot extend the judgement.
    h.create(ttl_seconds=10)
    assert h.do(Touch(B, "s", seen_ms=T0 + 9_000), now=T0 + 10_000).error is None
    assert h.do(Touch(B, "s", seen_ms=T0 + 30_000), now=T0 + 20_000).error == "not_found"


def test_recreate_after_expiry_is_fresh(h):
    h.create(ttl_seconds=1, content_type="text/plain")
    h.append(b"old", ct="text/plain", stream_seq="9")
    old_uid = h.head().uid
    later = T0 + 5_000
    out = h.do(CreateStream(B, "s", content_type=JSON), now=later)
    assert out.created and out.next_offset == 0 and out.error is None
    info = h.head(now=later)
    assert info.uid != old_uid and info.json and info.tail == 0
    assert h.do(Append(B, "s", JSON, b"1", stream_seq="1"), now=later).error is None


def test_expires_at_is_absolute(h):
    h.create(expires_at_ms=T0 + 10_000, expires_at_text="t")
    h.do(Touch(B, "s"), now=T0 + 9_000)
    h.do(Append(B, "s", OCT, b"a"), now=T0 + 9_500)
    assert h.head(now=T0 + 9_999).tail == 1
    assert h.head(now=T0 + 9_999).expires_at_text == "t"
    assert h.error(h.head, B, "s", T0 + 10_000) == "not_found"
    assert h.do(CreateStream(B, "s"), now=T0 + 10_000).created


def test_head_reports_ttl(h):
    h.create(ttl_seconds=60)
    info = h.head()
    assert info.ttl_seconds == 60 and info.expires_at_text is None


def test_expired_streams_are_swept(h):
    for i in range(5):
        h.create(f"s{i}", ttl_seconds=1)
    h.create("keep")
    assert h.sm.stream_count == 6
    h.do(CreateStream(B, "other"), now=T0 + 2_000)
    assert h.sm.stream_count == 2
    names = [name for name, _ in h.sm.list_streams(B, "", 100, T0 + 2_000)]
    assert names == ["keep", "other"]


def test_sweep_does_not_drop_a_touched_stream(h):
    h.create(ttl_seconds=10)
    h.do(Touch(B, "s"), now=T0 + 9_000)
    h.do(CreateStream(B, "other"), now=T0 + 12_000)
    assert h.head(now=T0 + 12_000).tail == 0


# == delete ===================================================================================


def test_delete_then_recreate(h):
    h.create(content_type="text/plain")
    h.append(b"abc", ct="text/plain")
    assert h.do(DeleteStream(B, "s")).error is None
    assert h.error(h.head) == "not_found"
    assert h.do(DeleteStream(B, "s")).error == "not_found"
    assert h.append(b"x", ct="text/plain").error == "not_found"
    out = h.create()
    assert out.created and out.next_offset == 0
    assert h.head().content_type == OCT


def test_delete_missing(h):
    assert h.do(DeleteStream(B, "nope")).error == "not_found"


def test_total_bytes_accounting(h):
    h.create("a", body=b"12345")
    h.create("b")
    h.append(b"xyz", name="b")
    assert h.sm.total_bytes == 8
    h.do(DeleteStream(B, "a"))
    assert h.sm.total_bytes == 3


# == buckets ==================================================================================


def test_create_bucket_created_flag(h):
    assert h.do(CreateBucket("bkt")).created is True
    again = h.do(CreateBucket("bkt"))
    assert again.error is None and again.created is False
    assert h.do(CreateBucket(B)).created is False


def test_delete_bucket(h):
    h.do(CreateBucket("bkt"))
    h.create("x", bucket="bkt")
    assert h.do(DeleteBucket("bkt")).error == "bucket_not_empty"
    h.do(DeleteStream("bkt", "x"))
    assert h.do(DeleteBucket("bkt")).error is None
    assert h.do(DeleteBucket("bkt")).error == "bucket_not_found"
    assert h.error(h.sm.list_streams, "bkt", "", 10, T0) == "bucket_not_found"


def test_delete_bucket_with_only_expired_streams(h):
    h.do(CreateBucket("bkt"))
    h.create("x", bucket="bkt", ttl_seconds=1)
    assert h.do(DeleteBucket("bkt"), now=T0 + 1_000).error is None


def test_default_bucket_cannot_be_deleted(h):
    assert h.do(DeleteBucket(B)).error == "bad_request"


def test_streams_in_different_buckets_are_separate(h):
    h.do(CreateBucket("one"))
    h.do(CreateBucket("two"))
    h.create("s", bucket="one")
    h.create("s", bucket="two", content_type="text/plain")
    h.append(b"1", bucket="one")
    assert h.sm.read("one", "s", 0, 100, T0).data == b"1"
    assert h.sm.read("two", "s", 0, 100, T0).data == b""


def test_list_streams_paging(h):
    h.do(CreateBucket("bkt"))
    names = [f"n{i:02d}" for i in range(7)]
    for name in reversed(names):
        h.create(name, bucket="bkt")
    page1 = h.sm.list_streams("bkt", "", 3, T0)
    assert [n for n, _ in page1] == names[:3]
    page2 = h.sm.list_streams("bkt", page1[-1][0], 3, T0)
    assert [n for n, _ in page2] == names[3:6]
    page3 = h.sm.list_streams("bkt", page2[-1][0], 3, T0)
    assert [n for n, _ in page3] == names[6:]
    assert h.sm.list_streams("bkt", "n06", 3, T0) == []
    info = page1[0][1]
    assert info.tail == 0 and info.content_type == OCT


def test_list_streams_skips_deleted_and_expired(h):
    h.create("a")
    h.create("b", ttl_seconds=1)
    h.create("c")
    h.do(DeleteStream(B, "c"))
    assert [n for n, _ in h.sm.list_streams(B, "", 10, T0)] == ["a", "b"]
    assert [n for n, _ in h.sm.list_streams(B, "", 10, T0 + 1_000)] == ["a"]


# == append batch =============================================================================


def test_append_batch_judges_each_frame(h):
    h.create(content_type=JSON)
    out = h.do(AppendBatch(B, "s", JSON, (b"1", b"", b"[2,3]", b"{bad", b"[]", b"4")))
    assert out.error is None
    assert [r.error for r in out.results] == [
        None, "empty_append", None, "invalid_json", "empty_json_array", None]
    assert render_records(h.data()) == b"[1,2,3,4]"
    assert out.next_offset == h.head().tail
    ok = [r for r in out.results if r.error is None]
    assert ok[0].start_offset == 0 and ok[1].start_offset == ok[0].next_offset


def test_append_batch_missing_and_closed(h):
    assert h.do(AppendBatch(B, "s", OCT, (b"a",))).error == "not_found"
    h.create(closed=True)
    out = h.do(AppendBatch(B, "s", OCT, (b"a",)))
    assert out.results[0].error == "closed"


def test_append_batch_content_type_mismatch(h):
    h.create()
    out = h.do(AppendBatch(B, "s", "text/plain", (b"a", b"b")))
    assert [r.error for r in out.results] == ["content_type_mismatch"] * 2
    assert h.head().tail == 0


# == read chunking ============================================================================


def test_read_chunks_at_record_boundaries(h):
    h.create()
    for chunk in (b"aaaa", b"bb", b"cccccc"):
        h.append(chunk)
    r = h.read(offset=0, max_bytes=5)
    assert (r.data, r.start, r.next_offset) == (b"aaaa", 0, 4)
    assert not r.up_to_date
    r = h.read(offset=0, max_bytes=6)
    assert r.data == b"aaaabb"
    r = h.read(offset=4, max_bytes=7)
    assert r.data == b"bb"
    r = h.read(offset=6, max_bytes=6)
    assert r.data == b"cccccc" and r.up_to_date


def test_read_always_returns_at_least_one_record(h):
    h.create()
    h.append(b"x" * 100)
    h.append(b"y")
    r = h.read(offset=0, max_bytes=1)
    assert r.data == b"x" * 100 and r.next_offset == 100
    r = h.read(offset=0, max_bytes=0)
    assert r.data == b"x" * 100


def test_read_from_inside_a_binary_record(h):
    h.create()
    h.append(b"abcdef")
    h.append(b"gh")
    assert h.read(offset=2, max_bytes=1).data == b"cdef"
    assert h.read(offset=2).data == b"cdefgh"


def test_read_beyond_tail_is_invalid_offset(h):
    h.create()
    h.append(b"abc")
    assert h.error(h.sm.read, B, "s", 4, 100, T0) == "invalid_offset"
    assert h.read(offset=3).data == b""


def test_read_missing(h):
    assert h.error(h.sm.read, B, "nope", 0, 100, T0) == "not_found"
