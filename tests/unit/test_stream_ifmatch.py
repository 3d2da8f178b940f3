"""If-Match conditional appends in the state machine: the check order (404, 409 closed, 409
content type, 400, 412, then Stream-Seq and the body), close-only requests, conditional
append-batch (all frames or none), the request-id memory, and the command encoding."""

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ursula.protocol.errors import status_for
from ursula.protocol.headers import IF_MATCH_ANY
from ursula.stream import StreamMachine, commands, decode_command, encode_command
from ursula.stream.commands import Append, AppendBatch, CreateStream, DeleteStream, Producer

B = "_default"
OCT = "application/octet-stream"
JSON = "application/json"
T0 = 1_000_000


def machine(body=b"abc", content_type=None, closed=False):
    sm = StreamMachine()
    assert sm.apply(CreateStream(B, "s", content_type=content_type, body=body,
                                 closed=closed), T0).created
    return sm


def data(sm, name="s"):
    return sm.read(B, name, 0, 1 << 20, T0).data


def test_a_matching_if_match_appends_at_the_expected_tail():
    sm = machine()
    out = sm.apply(Append(B, "s", OCT, b"de", if_match=3), T0)
    assert out.error is None
    assert (out.start_offset, out.next_offset, out.closed) == (3, 5, False)
    assert data(sm) == b"abcde"
    # chained: the new tail is the next expectation
    out = sm.apply(Append(B, "s", OCT, b"f", if_match=out.next_offset), T0)
    assert out.error is None and out.start_offset == 5 and data(sm) == b"abcdef"


def test_a_stale_if_match_is_412_with_the_current_tail_and_writes_nothing():
    sm = machine()
    out = sm.apply(Append(B, "s", OCT, b"x", if_match=0), T0)
    assert out.error == "precondition_failed" and status_for(out.error) == 412
    assert out.next_offset == 3 and not out.closed
    # an offset past the tail, or inside it, does not match either
    for expected in (2, 4, 10**12):
        assert sm.apply(Append(B, "s", OCT, b"x", if_match=expected), T0).error == \
            "precondition_failed"
    assert data(sm) == b"abc"


def test_two_writers_with_the_same_expectation_one_wins():
    sm = machine(b"")
    first = sm.apply(Append(B, "s", OCT, b"A", if_match=0), T0)
    second = sm.apply(Append(B, "s", OCT, b"B", if_match=0), T0)
    assert first.error is None and first.start_offset == 0
    assert second.error == "precondition_failed" and second.next_offset == 1
    retry = sm.apply(Append(B, "s", OCT, b"B", if_match=second.next_offset), T0)
    assert retry.error is None and data(sm) == b"AB"


def test_a_missing_or_deleted_stream_comes_first():
    sm = StreamMachine()
    for cmd in [Append(B, "nope", OCT, b"x", if_match=0),
                Append(B, "nope", OCT, b"x", if_match=IF_MATCH_ANY),
                Append(B, "nope", OCT, b"x", producer=Producer("p", 0, 0), if_match=5),
                AppendBatch(B, "nope", OCT, (b"x",), if_match=0)]:
        assert sm.apply(cmd, T0).error == "not_found"
    sm.apply(CreateStream(B, "src", body=b"ab"), T0)
    sm.apply(CreateStream(B, "fork", fork_bucket=B, fork_stream="src"), T0)
    sm.apply(DeleteStream(B, "src"), T0)  # soft-deleted: a fork still refers to it
    assert sm.apply(Append(B, "src", OCT, b"x", if_match=2), T0).error == "gone"


@pytest.mark.parametrize("if_match", [0, 3, IF_MATCH_ANY])
def test_a_closed_stream_is_409_before_the_precondition(if_match):
    sm = machine(closed=True)
    out = sm.apply(Append(B, "s", OCT, b"x", if_match=if_match), T0)
    assert (out.error, out.closed, out.next_offset) == ("closed", True, 3)
    out = sm.apply(Append(B, "s", OCT, b"x", producer=Producer("p", 0, 0), if_match=if_match),
                   T0)
    assert out.error == "closed"
    out = sm.apply(AppendBatch(B, "s", OCT, (b"x",), if_match=if_match), T0)
    assert out.error == "closed" and out.closed


@pytest.mark.parametrize("if_match", [0, 3, IF_MATCH_ANY])
def test_a_content_type_mismatch_is_409_before_400_and_412(if_match):
    sm = machine(content_type="text/plain")
    out = sm.apply(Append(B, "s", "application/json", b"[1]", if_match=if_match,
                          producer=Producer("p", 0, 0)), T0)
    assert out.error == "content_type_mismatch"
    assert sm.apply(AppendBatch(B, "s", JSON, (b"1",), if_match=if_match), T0).error == \
        "content_type_mismatch"
    # the parameters of a media type do not matter, as for any append
    assert sm.apply(Append(B, "s", "Text/Plain; charset=utf-8", b"d", if_match=3), T0).error \
        is None


@pytest.mark.parametrize("if_match", [0, 3])
def test_producer_headers_with_if_match_are_400_before_412(if_match):
    sm = machine()
    out = sm.apply(Append(B, "s", OCT, b"x", producer=Producer("p", 0, 0), if_match=if_match),
                   T0)
    assert out.error == "if_match_with_producer" and status_for(out.error) == 400
    assert data(sm) == b"abc" and not sm.streams[(B, "s")].producers


def test_a_wildcard_is_400_after_the_409s():
    sm = machine()
    out = sm.apply(Append(B, "s", OCT, b"x", if_match=IF_MATCH_ANY), T0)
    assert out.error == "if_match_wildcard" and status_for(out.error) == 400
    assert sm.apply(AppendBatch(B, "s", OCT, (b"x",), if_match=IF_MATCH_ANY), T0).error == \
        "if_match_wildcard"
    assert data(sm) == b"abc"


def test_412_comes_before_stream_seq_and_the_body():
    sm = machine(b"[1]", content_type=JSON)
    tail = sm.streams[(B, "s")].tail
    assert sm.apply(Append(B, "s", JSON, b"[2]", stream_seq="b"), T0).error is None
    tail2 = sm.streams[(B, "s")].tail
    # stale expectation and a Stream-Seq regression: 412
    out = sm.apply(Append(B, "s", JSON, b"[3]", stream_seq="a", if_match=tail), T0)
    assert out.error == "precondition_failed" and out.next_offset == tail2
    # stale expectation and a body that is not JSON: 412
    assert sm.apply(Append(B, "s", JSON, b"{", if_match=tail), T0).error == \
        "precondition_failed"
    # matching: then Stream-Seq and the body are judged as usual
    assert sm.apply(Append(B, "s", JSON, b"[3]", stream_seq="a", if_match=tail2), T0).error == \
        "stream_seq_conflict"
    assert sm.apply(Append(B, "s", JSON, b"{", if_match=tail2), T0).error == "invalid_json"
    assert sm.apply(Append(B, "s", JSON, b"[]", if_match=tail2), T0).error == "empty_json_array"
    out = sm.apply(Append(B, "s", JSON, b"[3, 4]", stream_seq="c", if_match=tail2), T0)
    assert out.error is None and out.start_offset == tail2
    assert sm.read(B, "s", 0, 1 << 20, T0).data == b"1,2,3,4,"


def test_close_only_with_if_match():
    sm = machine()
    out = sm.apply(Append(B, "s", None, b"", close=True, if_match=1), T0)
    assert out.error == "precondition_failed" and not out.closed
    assert not sm.streams[(B, "s")].closed
    out = sm.apply(Append(B, "s", None, b"", close=True, if_match=3), T0)
    assert out.error is None and out.closed and out.next_offset == 3
    # again on the closed stream: the same tail is a no-op success, another one 412 + closed
    out = sm.apply(Append(B, "s", None, b"", close=True, if_match=3), T0)
    assert out.error is None and out.closed and out.next_offset == 3
    out = sm.apply(Append(B, "s", None, b"", close=True, if_match=0), T0)
    assert (out.error, out.closed, out.next_offset) == ("precondition_failed", True, 3)
    out = sm.apply(Append(B, "s", None, b"", close=True, if_match=IF_MATCH_ANY), T0)
    assert out.error == "if_match_wildcard"


def test_append_and_close_with_if_match():
    sm = machine()
    assert sm.apply(Append(B, "s", OCT, b"z", close=True, if_match=2), T0).error == \
        "precondition_failed"
    out = sm.apply(Append(B, "s", OCT, b"z", close=True, if_match=3), T0)
    assert out.error is None and out.closed and (out.start_offset, out.next_offset) == (3, 4)
    assert sm.apply(Append(B, "s", OCT, b"y", if_match=4), T0).error == "closed"


def test_a_conditional_append_renews_a_sliding_ttl_and_a_refused_one_does_not():
    sm = StreamMachine()
    sm.apply(CreateStream(B, "s", ttl_seconds=10), T0)
    assert sm.apply(Append(B, "s", OCT, b"a", if_match=5), T0 + 9_000).error == \
        "precondition_failed"
    assert sm.apply(Append(B, "s", OCT, b"a", if_match=0), T0 + 10_500).error == "not_found"
    sm.apply(CreateStream(B, "s", ttl_seconds=10), T0)
    assert sm.apply(Append(B, "s", OCT, b"a", if_match=0), T0 + 9_000).error is None
    assert sm.apply(Append(B, "s", OCT, b"b", if_match=1), T0 + 18_000).error is None


# == append-batch ==============================================================================

def test_a_conditional_batch_appends_every_frame_at_the_expected_tail():
    sm = machine()
    out = sm.apply(AppendBatch(B, "s", OCT, (b"d", b"ef", b"g"), if_match=3), T0)
    assert out.error is None and (out.start_offset, out.next_offset) == (3, 7)
    assert [(r.error, r.start_offset, r.next_offset) for r in out.results] == \
        [(None, 3, 4), (None, 4, 6), (None, 6, 7)]
    assert data(sm) == b"abcdefg"
    assert sm.total_bytes == 7


def test_a_stale_conditional_batch_appends_nothing():
    sm = machine()
    out = sm.apply(AppendBatch(B, "s", OCT, (b"d", b"e"), if_match=0), T0)
    assert out.error == "precondition_failed" and out.next_offset == 3 and not out.results
    assert data(sm) == b"abc"


@pytest.mark.parametrize(("frames", "code", "index"), [
    ((b"1", b"", b"3"), "empty_append", 1),
    ((b"1", b"2", b"{"), "invalid_json", 2),
    ((b"[]", b"2"), "empty_json_array", 0),
])
def test_a_conditional_batch_with_a_bad_frame_appends_nothing(frames, code, index):
    sm = machine(b"[0]", content_type=JSON)
    tail = sm.streams[(B, "s")].tail
    out = sm.apply(AppendBatch(B, "s", JSON, frames, if_match=tail), T0)
    assert out.error == code and out.payload == {"frame": index} and out.next_offset == tail
    assert data(sm) == b"0,"
    # the same frames without If-Match: each judged on its own, the good ones appended
    out = sm.apply(AppendBatch(B, "s", JSON, frames), T0)
    assert out.error is None and [r.error for r in out.results].count(code) == 1
    assert sm.streams[(B, "s")].tail > tail


def test_a_conditional_json_batch_counts_messages_as_records():
    sm = machine(b"", content_type=JSON)
    out = sm.apply(AppendBatch(B, "s", JSON, (b"[1, 2]", b'"x"'), if_match=0), T0)
    assert out.error is None
    assert sm.read(B, "s", 0, 1 << 20, T0).data == b'1,2,"x",'
    assert sm.streams[(B, "s")].ends == [2, 4, 8]


# == the request-id memory and determinism =====================================================

def test_a_repeated_request_id_gets_its_first_answer_not_a_412():
    sm = machine()
    first = sm.apply_request("r1", Append(B, "s", OCT, b"d", if_match=3), T0)
    again = sm.apply_request("r1", Append(B, "s", OCT, b"d", if_match=3), T0)
    assert first.error is None and again is first
    assert data(sm) == b"abcd"
    refused = sm.apply_request("r2", Append(B, "s", OCT, b"e", if_match=3), T0)
    assert refused.error == "precondition_failed"
    sm.apply(Append(B, "s", OCT, b"e"), T0)
    assert sm.apply_request("r2", Append(B, "s", OCT, b"e", if_match=3), T0) is refused
    restored = StreamMachine.restore(sm.snapshot())
    back = restored.apply_request("r2", Append(B, "s", OCT, b"e", if_match=3), T0)
    assert (back.error, back.next_offset) == ("precondition_failed", 4)


def test_replicas_applying_the_encoded_commands_agree():
    cmds = [CreateStream(B, "s", body=b"x"),
            Append(B, "s", OCT, b"a", if_match=1), Append(B, "s", OCT, b"b", if_match=1),
            AppendBatch(B, "s", OCT, (b"c", b""), if_match=2),
            AppendBatch(B, "s", OCT, (b"c", b"d"), if_match=2),
            Append(B, "s", None, b"", close=True, if_match=IF_MATCH_ANY),
            Append(B, "s", None, b"", close=True, if_match=4)]
    a, b = StreamMachine(), StreamMachine()
    for cmd in cmds:
        assert a.apply(cmd, T0) == b.apply(decode_command(encode_command(cmd)), T0)
    assert a.snapshot() == b.snapshot()


# == the encoding ==============================================================================

def test_an_append_without_if_match_encodes_as_before_it_existed():
    cmd = Append(B, "s", OCT, b"x", False, Producer("p", 1, 2), "7")
    assert encode_command(cmd) == cbor2.dumps([commands._TAG[Append], B, "s", OCT, b"x", False,
                                               ["p", 1, 2], "7"])
    batch = AppendBatch(B, "s", OCT, (b"a", b"b"))
    assert encode_command(batch) == cbor2.dumps([commands._TAG[AppendBatch], B, "s", OCT,
                                                 [b"a", b"b"]])
    # and an entry of that shape decodes to an unconditional command
    assert decode_command(encode_command(cmd)).if_match is None
    assert decode_command(encode_command(batch)).if_match is None


@pytest.mark.parametrize("cmd", [
    Append(B, "s", OCT, b"x", if_match=0),
    Append(B, "s", OCT, b"x", if_match=IF_MATCH_ANY),
    Append(B, "s", None, b"", True, None, None, 2**53 - 1),
    AppendBatch(B, "s", OCT, (b"a",), if_match=9),
], ids=["zero", "wildcard", "close", "batch"])
def test_a_conditional_command_round_trips(cmd):
    data_ = encode_command(cmd)
    back = decode_command(data_)
    assert back == cmd and encode_command(back) == data_
    assert cbor2.loads(data_)[-1] == cmd.if_match


@given(st.text(max_size=8), st.text(max_size=8), st.one_of(st.none(), st.text(max_size=8)),
       st.binary(max_size=16), st.booleans(),
       st.one_of(st.none(), st.builds(Producer, st.text(max_size=4), st.integers(0, 9),
                                      st.integers(0, 9))),
       st.one_of(st.none(), st.text(max_size=4)),
       st.one_of(st.none(), st.integers(-1, 2**53 - 1)))
def test_the_append_fast_path_encodes_as_the_generic_encoder(bucket, name, ctype, body, close,
                                                              producer, seq, if_match):
    cmd = Append(bucket, name, ctype, body, close, producer, seq, if_match)
    assert encode_command(cmd) == cbor2.dumps(commands._to_plain(cmd))
    assert decode_command(encode_command(cmd)) == cmd
