"""Idempotent producers: every row of the validation table, close interplay, body checks."""

import pytest

from ursula.protocol.jsonmode import render_records
from ursula.stream import StreamMachine
from ursula.stream.commands import Append, CreateStream, Producer

B = "_default"
OCT = "application/octet-stream"
JSON = "application/json"
T0 = 1_000_000


class Harness:
    def __init__(self):
        self.sm = StreamMachine()

    def create(self, name="s", **kw):
        return self.sm.apply(CreateStream(B, name, **kw), T0)

    def send(self, body, epoch, seq, pid="p", name="s", ct=OCT, **kw):
        return self.sm.apply(Append(B, name, ct, body, producer=Producer(pid, epoch, seq), **kw),
                             T0)

    def data(self, name="s"):
        return self.sm.read(B, name, 0, 1 << 30, T0).data


@pytest.fixture
def h():
    harness = Harness()
    harness.create()
    return harness


def test_new_producer_seq_zero_is_accepted(h):
    out = h.send(b"abc", 0, 0)
    assert out.error is None and not out.duplicate
    assert (out.producer_epoch, out.producer_seq) == (0, 0)
    assert (out.start_offset, out.next_offset) == (0, 3)
    assert h.data() == b"abc"


def test_new_producer_any_epoch_with_seq_zero(h):
    out = h.send(b"a", 7, 0)
    assert out.error is None and out.producer_epoch == 7


@pytest.mark.parametrize("seq", [1, 5])
def test_new_producer_nonzero_seq_is_a_gap(h, seq):
    out = h.send(b"abc", 0, seq)
    assert out.error == "producer_seq_gap"
    assert (out.expected_seq, out.received_seq) == (0, seq)
    assert h.data() == b""
    assert h.send(b"abc", 0, 0).error is None  # nothing was recorded


def test_next_seq_is_accepted(h):
    h.send(b"a", 0, 0)
    out = h.send(b"b", 0, 1)
    assert out.error is None and out.producer_seq == 1 and (out.start_offset, out.next_offset) == (1, 2)
    assert h.data() == b"ab"


@pytest.mark.parametrize("retry_seq", [0, 1, 2])
def test_duplicate_writes_nothing_and_reports_highest_seq(h, retry_seq):
    for seq, body in enumerate([b"a", b"b", b"c"]):
        h.send(body, 0, seq)
    out = h.send(b"DIFFERENT", 0, retry_seq)
    assert out.error is None and out.duplicate
    assert (out.producer_epoch, out.producer_seq) == (0, 2)
    assert out.next_offset == 3
    assert h.data() == b"abc"


def test_gap_reports_expected_and_received(h):
    h.send(b"a", 0, 0)
    h.send(b"b", 0, 1)
    out = h.send(b"x", 0, 5)
    assert out.error == "producer_seq_gap"
    assert (out.expected_seq, out.received_seq) == (2, 5)
    assert h.data() == b"ab"


def test_stale_epoch_is_fenced(h):
    h.send(b"a", 3, 0)
    out = h.send(b"b", 2, 1)
    assert out.error == "producer_epoch_stale" and out.producer_epoch == 3
    out = h.send(b"b", 0, 0)
    assert out.error == "producer_epoch_stale" and out.producer_epoch == 3
    assert h.data() == b"a"


def test_epoch_bump_with_seq_zero(h):
    h.send(b"a", 0, 0)
    h.send(b"b", 0, 1)
    out = h.send(b"c", 1, 0)
    assert out.error is None and (out.producer_epoch, out.producer_seq) == (1, 0)
    assert h.send(b"d", 1, 1).error is None
    assert h.send(b"x", 0, 2).error == "producer_epoch_stale"
    assert h.data() == b"abcd"


def test_epoch_bump_with_nonzero_seq_is_invalid(h):
    h.send(b"a", 0, 0)
    out = h.send(b"c", 1, 1)
    assert out.error == "invalid_producer"
    assert h.data() == b"a"
    assert h.send(b"b", 0, 1).error is None  # old epoch still current


def test_producers_are_independent(h):
    assert h.send(b"a", 0, 0, pid="p1").error is None
    assert h.send(b"b", 0, 0, pid="p2").error is None
    assert h.send(b"c", 0, 1, pid="p1").error is None
    assert h.send(b"d", 0, 0, pid="p2").duplicate
    assert h.data() == b"abc"


def test_producers_are_per_stream(h):
    h.create("t")
    h.send(b"a", 0, 0)
    assert h.send(b"b", 0, 0, name="t").error is None
    assert h.send(b"b", 0, 0, name="t").duplicate
    assert h.data("t") == b"b" and h.data() == b"a"


def test_append_and_close_with_producer(h):
    out = h.send(b"last", 0, 0, close=True)
    assert out.error is None and out.closed and out.producer_seq == 0
    assert h.sm.head(B, "s", T0).closed


def test_close_only_with_producer_updates_state(h):
    h.send(b"a", 0, 0)
    out = h.send(b"", 0, 1, close=True, ct=None)
    assert out.error is None and out.closed and not out.duplicate
    assert (out.producer_epoch, out.producer_seq) == (0, 1)
    assert out.next_offset == 1
    retry = h.send(b"", 0, 1, close=True, ct=None)
    assert retry.duplicate and retry.closed and retry.producer_seq == 1


def test_retry_after_close_is_a_duplicate_even_with_another_body(h):
    h.send(b"a", 0, 0)
    h.send(b"b", 0, 1, close=True)
    out = h.send(b"zzz", 0, 1, close=True)
    assert out.error is None and out.duplicate and out.closed
    assert out.producer_seq == 1
    assert h.data() == b"ab"
    assert h.send(b"zzz", 0, 0).duplicate


def test_other_tuple_on_closed_stream_is_closed(h):
    h.send(b"a", 0, 0, close=True)
    for epoch, seq in [(0, 1), (1, 0), (0, 5)]:
        out = h.send(b"x", epoch, seq)
        assert out.error == "closed" and out.closed
    out = h.send(b"x", 0, 0, pid="other")
    assert out.error == "closed"
    out = h.send(b"", 0, 0, pid="other", close=True)
    assert out.error == "closed"


def test_stale_epoch_beats_closed(h):
    h.send(b"a", 2, 0, close=True)
    out = h.send(b"x", 1, 0)
    assert out.error == "producer_epoch_stale" and out.producer_epoch == 2


@pytest.mark.parametrize("body, ct, code", [
    (b"", OCT, "empty_append"),
    (b"x", "text/plain", "content_type_mismatch"),
    (b"x", None, "content_type_mismatch"),
])
def test_body_checks_apply_and_do_not_record_state(h, body, ct, code):
    assert h.send(body, 0, 0, ct=ct).error == code
    assert h.send(b"ok", 0, 0).error is None
    assert h.data() == b"ok"


@pytest.mark.parametrize("body, code", [(b"[]", "empty_json_array"), (b"{x", "invalid_json")])
def test_json_body_checks_with_producer(h, body, code):
    h.create("j", content_type=JSON)
    assert h.send(body, 0, 0, name="j", ct=JSON).error == code
    assert h.send(b"[1,2]", 0, 0, name="j", ct=JSON).error is None
    assert render_records(h.data("j")) == b"[1,2]"


def test_missing_stream_with_producer(h):
    assert h.send(b"x", 0, 0, name="missing").error == "not_found"


def test_duplicate_wins_over_stream_seq_regression(h):
    h.send(b"a", 0, 0, stream_seq="5")
    out = h.send(b"a", 0, 0, stream_seq="5")
    assert out.error is None and out.duplicate


def test_producer_with_stream_seq_conflict(h):
    h.send(b"a", 0, 0, stream_seq="5")
    out = h.send(b"b", 0, 1, stream_seq="4")
    assert out.error == "stream_seq_conflict"
    assert h.send(b"b", 0, 1, stream_seq="6").error is None
    assert h.data() == b"ab"


def test_duplicate_next_offset_is_that_of_the_last_accepted_append(h):
    h.send(b"aa", 0, 0)
    h.sm.apply(Append(B, "s", OCT, b"plain"), T0)
    out = h.send(b"aa", 0, 0)
    assert out.duplicate and out.next_offset == 2
