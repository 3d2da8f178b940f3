"""Forks whose source lives in another group: AcquireFork / CreateStream(inherited) /
ReleaseFork / AckReleases, as the multi-Raft runtime drives them."""

from __future__ import annotations

from ursula.stream import StreamMachine
from ursula.stream import commands as C
from ursula.stream.machine import outcome_from_wire, outcome_to_wire


def _two_groups():
    source_group = StreamMachine(owns=lambda bucket, stream: stream.startswith("src"))
    fork_group = StreamMachine(owns=lambda bucket, stream: not stream.startswith("src"))
    return source_group, fork_group


def test_acquire_returns_prefix_and_counts_a_live_fork():
    source, _ = _two_groups()
    source.apply(C.CreateStream("b", "src", "text/plain", body=b"hello"), 0)
    out = source.apply(C.AcquireFork("b", "src", "f1", None, 0, 3), 0)
    assert out.error is None
    assert out.fork.data == b"hel" and out.next_offset == 3
    assert source.streams[("b", "src")].fork_ids == {"f1"}
    # the prefix travels between nodes
    assert outcome_from_wire(outcome_to_wire(out)).fork == out.fork


def test_acquire_validates_like_a_local_fork():
    source, _ = _two_groups()
    source.apply(C.CreateStream("b", "src", "text/plain", body=b"hello"), 0)
    assert source.apply(C.AcquireFork("b", "nope", "f", None, None), 0).error == \
        "fork_source_not_found"
    assert source.apply(C.AcquireFork("b", "src", "f", "application/json", None), 0).error == \
        "content_type_mismatch"
    assert source.apply(C.AcquireFork("b", "src", "f", None, 99), 0).error == "invalid_fork"
    assert source.streams[("b", "src")].fork_ids == set()


def test_cross_group_fork_lifecycle_with_soft_delete():
    source, forks = _two_groups()
    source.apply(C.CreateStream("b", "src", "text/plain", body=b"abc"), 0)
    prefix = source.apply(C.AcquireFork("b", "src", "f1", None, None), 0).fork
    out = forks.apply(C.CreateStream("b", "fork", None, fork_bucket="b", fork_stream="src",
                                     fork_id="f1", inherited=prefix.to_wire()), 0)
    assert out.created and out.next_offset == 3 and out.content_type == "text/plain"
    forks.apply(C.Append("b", "fork", "text/plain", b"Z"), 0)
    assert forks.read("b", "fork", 0, 100, 0).data == b"abcZ"
    # deleting the source while the fork lives: a soft delete
    source.apply(C.DeleteStream("b", "src"), 0)
    assert ("b", "src") in source.streams and source.streams[("b", "src")].deleted
    # deleting the fork queues a release for the source's group
    forks.apply(C.DeleteStream("b", "fork"), 0)
    assert forks.pending_releases == [("b", "src", "f1")]
    source.apply(C.ReleaseFork("b", "src", "f1"), 0)
    assert ("b", "src") not in source.streams  # garbage-collected with its last fork
    forks.apply(C.AckReleases(("f1",)), 0)
    assert forks.pending_releases == []
    # releases are idempotent
    assert source.apply(C.ReleaseFork("b", "src", "f1"), 0).error is None


def test_pending_releases_survive_snapshots():
    source, forks = _two_groups()
    source.apply(C.CreateStream("b", "src", "text/plain", body=b"abc"), 0)
    prefix = source.apply(C.AcquireFork("b", "src", "f1", None, None), 0).fork
    forks.apply(C.CreateStream("b", "fork", None, fork_bucket="b", fork_stream="src",
                               fork_id="f1", inherited=prefix.to_wire()), 0)
    forks.apply(C.DeleteStream("b", "fork"), 0)
    restored = StreamMachine.restore(forks.snapshot(), forks.owns)
    assert restored.pending_releases == [("b", "src", "f1")]
    restored_source = StreamMachine.restore(source.snapshot(), source.owns)
    assert restored_source.streams[("b", "src")].fork_ids == {"f1"}


def test_expired_fork_releases_its_source():
    source, forks = _two_groups()
    source.apply(C.CreateStream("b", "src", "text/plain", body=b"abc"), 0)
    prefix = source.apply(C.AcquireFork("b", "src", "f1", None, None), 0).fork
    forks.apply(C.CreateStream("b", "fork", None, ttl_seconds=1, fork_bucket="b",
                               fork_stream="src", fork_id="f1", inherited=prefix.to_wire()), 0)
    forks.apply(C.Touch("b", "other"), 5000)  # any later command sweeps the expired fork
    assert ("b", "fork") not in forks.streams
    assert forks.pending_releases == [("b", "src", "f1")]
