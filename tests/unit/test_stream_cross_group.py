"""Forks whose source lives in another group: AcquireFork / ReleaseFork / AckReleases, the
inherited prefix, queued releases, and the Outcome wire form."""

import pytest

from ursula.protocol.jsonmode import render_records
from ursula.stream import StreamMachine
from ursula.stream.commands import (
    AckReleases,
    AcquireFork,
    Append,
    AppendBatch,
    CreateStream,
    DeleteStream,
    Producer,
    ReleaseFork,
)
from ursula.stream.machine import Outcome, StreamError, outcome_from_wire, outcome_to_wire
from ursula.stream.model import ForkPrefix

B = "_default"
OCT = "application/octet-stream"
JSON = "application/json"
T0 = 1_000_000


def in_group(prefix):
    return lambda bucket, stream: stream.startswith(prefix)


@pytest.fixture
def groups():
    """Machine S owns streams named s*, machine F owns f*. S holds s1 = b"abcdef" + b"gh"."""
    s = StreamMachine(owns=in_group("s"))
    f = StreamMachine(owns=in_group("f"))
    assert s.apply(CreateStream(B, "s1", body=b"abcdef", ttl_seconds=600), T0).created
    s.apply(Append(B, "s1", OCT, b"gh"), T0)
    return s, f


def code(query, *args):
    with pytest.raises(StreamError) as info:
        query(*args)
    return info.value.code


def cross_fork(s, f, name="f1", offset=None, sub=0, fork_id="fid", **kw):
    acquired = s.apply(AcquireFork(B, "s1", fork_id, kw.pop("content_type", None), offset, sub),
                       T0)
    assert acquired.error is None, acquired
    created = f.apply(CreateStream(B, name, fork_bucket=B, fork_stream="s1", fork_offset=offset,
                                   fork_sub_offset=sub, fork_id=fork_id,
                                   inherited=acquired.fork.to_wire(), **kw), T0)
    return acquired, created


def test_acquire_answers_the_prefix(groups):
    s, _ = groups
    out = s.apply(AcquireFork(B, "s1", "fid", None, 6, 1), T0)
    assert out.error is None and out.next_offset == 7
    prefix = out.fork
    assert prefix.data == b"abcdefg"
    assert prefix.ends == (6, 7)
    assert prefix.content_type == OCT and prefix.ttl_seconds == 600
    assert s.head(B, "s1", T0).tail == 8  # the source is unchanged


def test_acquire_at_the_tail_by_default(groups):
    s, _ = groups
    out = s.apply(AcquireFork(B, "s1", "fid", None, None, 0), T0)
    assert out.fork.data == b"abcdefgh" and out.fork.ends == (6, 8)


@pytest.mark.parametrize("stream, ct, offset, sub, error", [
    ("missing", None, None, 0, "fork_source_not_found"),
    ("s1", "text/plain", None, 0, "content_type_mismatch"),
    ("s1", None, 9, 0, "invalid_fork"),
    ("s1", None, 6, 3, "invalid_fork"),
    ("s1", None, None, 1, "invalid_fork"),
])
def test_acquire_errors(groups, stream, ct, offset, sub, error):
    s, _ = groups
    out = s.apply(AcquireFork(B, stream, "fid", ct, offset, sub), T0)
    assert out.error == error and out.fork is None
    # a failed acquire registers nothing: deleting the source is a hard delete
    if stream == "s1":
        s.apply(DeleteStream(B, "s1"), T0)
        assert code(s.head, B, "s1", T0) == "not_found"


def test_acquire_of_soft_deleted_source(groups):
    s, _ = groups
    s.apply(AcquireFork(B, "s1", "a", None, None, 0), T0)
    s.apply(DeleteStream(B, "s1"), T0)
    out = s.apply(AcquireFork(B, "s1", "b", None, None, 0), T0)
    assert out.error == "soft_deleted_conflict"


def test_fork_from_an_inherited_prefix(groups):
    s, f = groups
    _, created = cross_fork(s, f, offset=6, sub=1)
    assert created.error is None and created.created and created.next_offset == 7
    assert f.read(B, "f1", 0, 100, T0).data == b"abcdefg"
    info = f.head(B, "f1", T0)
    assert info.content_type == OCT and info.ttl_seconds == 600
    out = f.apply(Append(B, "f1", OCT, b"XY"), T0)
    assert (out.start_offset, out.next_offset) == (7, 9)
    r = f.read(B, "f1", 0, 6, T0)
    assert r.data == b"abcdef" and r.next_offset == 6  # inherited boundaries are kept
    r = f.read(B, "f1", 6, 1, T0)
    assert r.data == b"g" and r.next_offset == 7
    assert s.read(B, "s1", 0, 100, T0).data == b"abcdefgh"


def test_cross_group_fork_is_idempotent(groups):
    s, f = groups
    cross_fork(s, f, offset=6)
    again = f.apply(CreateStream(B, "f1", fork_bucket=B, fork_stream="s1", fork_offset=6,
                                 fork_id="other", inherited=ForkPrefix(
                                     b"abcdef", (6,), (6,), OCT, None, None, None).to_wire()),
                    T0)
    assert again.error is None and not again.created


def test_release_lifecycle(groups):
    s, f = groups
    cross_fork(s, f)
    assert s.apply(DeleteStream(B, "s1"), T0).error is None
    assert code(s.head, B, "s1", T0) == "gone"
    assert s.apply(CreateStream(B, "s1"), T0).error == "soft_deleted_conflict"
    # the fork is dropped in its own group: the release is queued for the source's group
    assert f.apply(DeleteStream(B, "f1"), T0).error is None
    assert f.pending_releases == [(B, "s1", "fid")]
    blob = f.snapshot()
    assert StreamMachine.restore(blob, owns=in_group("f")).pending_releases == [(B, "s1", "fid")]
    # the runtime delivers it
    assert s.apply(ReleaseFork(B, "s1", "fid"), T0).error is None
    assert code(s.head, B, "s1", T0) == "not_found"
    assert s.apply(CreateStream(B, "s1"), T0).created
    assert s.apply(ReleaseFork(B, "s1", "fid"), T0).error is None  # idempotent
    assert f.apply(AckReleases(("fid",)), T0).error is None
    assert f.pending_releases == []


def test_release_of_one_fork_keeps_the_others(groups):
    s, f = groups
    cross_fork(s, f, name="f1", fork_id="one")
    cross_fork(s, f, name="f2", fork_id="two")
    s.apply(DeleteStream(B, "s1"), T0)
    s.apply(ReleaseFork(B, "s1", "one"), T0)
    s.apply(ReleaseFork(B, "s1", "one"), T0)  # a duplicate release must not count twice
    assert code(s.head, B, "s1", T0) == "gone"
    s.apply(ReleaseFork(B, "s1", "unknown"), T0)
    assert code(s.head, B, "s1", T0) == "gone"
    s.apply(ReleaseFork(B, "s1", "two"), T0)
    assert code(s.head, B, "s1", T0) == "not_found"


def test_release_of_a_live_source_only_forgets_the_fork(groups):
    s, f = groups
    cross_fork(s, f)
    s.apply(ReleaseFork(B, "s1", "fid"), T0)
    assert s.read(B, "s1", 0, 100, T0).data == b"abcdefgh"
    s.apply(DeleteStream(B, "s1"), T0)
    assert code(s.head, B, "s1", T0) == "not_found"


def test_ack_only_removes_acknowledged_releases(groups):
    s, f = groups
    cross_fork(s, f, name="f1", fork_id="one")
    cross_fork(s, f, name="f2", fork_id="two")
    f.apply(DeleteStream(B, "f1"), T0)
    f.apply(DeleteStream(B, "f2"), T0)
    assert sorted(r[2] for r in f.pending_releases) == ["one", "two"]
    f.apply(AckReleases(("one", "nope")), T0)
    assert f.pending_releases == [(B, "s1", "two")]


def test_expired_cross_group_fork_queues_its_release(groups):
    s, f = groups
    cross_fork(s, f, ttl_seconds=1)
    f.apply(CreateStream(B, "f-other"), T0 + 5_000)  # any command sweeps expired streams
    assert code(f.head, B, "f1", T0 + 5_000) == "not_found"
    assert f.pending_releases == [(B, "s1", "fid")]


def test_local_fork_release_is_not_queued():
    m = StreamMachine()
    m.apply(CreateStream(B, "a", body=b"x"), T0)
    m.apply(CreateStream(B, "b", fork_bucket=B, fork_stream="a"), T0)
    m.apply(DeleteStream(B, "a"), T0)
    m.apply(DeleteStream(B, "b"), T0)
    assert m.pending_releases == []
    assert m.stream_count == 0


def test_json_prefix_and_chained_local_fork(groups):
    s, f = groups
    s.apply(CreateStream(B, "s2", content_type=JSON, body=b"[1,2,3]"), T0)
    s.apply(Append(B, "s2", JSON, b"[4,5]"), T0)
    acquired = s.apply(AcquireFork(B, "s2", "j", None, 0, 2), T0)
    assert acquired.fork.data == b"1,2,"
    assert acquired.fork.ends == (2, 4) and acquired.fork.append_ends == (4,)
    out = f.apply(CreateStream(B, "fj", fork_bucket=B, fork_stream="s2", fork_offset=0,
                               fork_sub_offset=2, fork_id="j",
                               inherited=acquired.fork.to_wire()), T0)
    assert out.created and f.head(B, "fj", T0).json
    f.apply(Append(B, "fj", JSON, b'[{"own":1}]'), T0)
    assert render_records(f.read(B, "fj", 0, 100, T0).data) == b'[1,2,{"own":1}]'
    # sub-offsets count from the inherited boundaries: the prefix ends an append at 4
    assert f.apply(CreateStream(B, "fk", fork_bucket=B, fork_stream="fj", fork_offset=0,
                                fork_sub_offset=3), T0).error == "invalid_fork"
    assert f.apply(CreateStream(B, "fk", fork_bucket=B, fork_stream="fj", fork_offset=4,
                                fork_sub_offset=1), T0).created
    assert render_records(f.read(B, "fk", 0, 100, T0).data) == b'[1,2,{"own":1}]'


def test_fork_prefix_wire_round_trip():
    prefix = ForkPrefix(b"\x00ab", (1, 3), (3,), JSON, 5, None, None)
    assert ForkPrefix.from_wire(prefix.to_wire()) == prefix


def test_outcome_wire_round_trip():
    inner = Outcome(error="empty_append", next_offset=3)
    outcome = Outcome(error=None, created=True, duplicate=False, start_offset=1, next_offset=9,
                      closed=True, producer_epoch=2, producer_seq=7, expected_seq=None,
                      received_seq=None, content_type="text/plain",
                      fork=ForkPrefix(b"ab", (2,), (2,), OCT, None, 10, "x"),
                      results=[inner, Outcome(start_offset=3, next_offset=4)])
    assert outcome_from_wire(outcome_to_wire(outcome)) == outcome
    assert outcome_from_wire(outcome_to_wire(Outcome())) == Outcome()


def test_real_outcomes_survive_the_wire(groups):
    s, _ = groups
    outcomes = [
        s.apply(Append(B, "s1", OCT, b"x", producer=Producer("p", 0, 3)), T0),
        s.apply(AppendBatch(B, "s1", OCT, (b"1", b"")), T0),
        s.apply(AcquireFork(B, "s1", "w", None, 2, 1), T0),
    ]
    for outcome in outcomes:
        assert outcome_from_wire(outcome_to_wire(outcome)) == outcome
