"""RaftCore's snapshot triggers, on a cluster of one driven by a fake clock."""

from __future__ import annotations

from twisted.internet import task

from ursula.core.cluster import CoreSettings, MemoryPersister, RaftCore
from ursula.raft import MemoryStorage
from ursula.stream import commands as C


def _core(**settings) -> tuple[task.Clock, RaftCore]:
    clock = task.Clock()
    clock.advance(1_700_000_000)
    core = RaftCore(clock, 1, 1, {0: MemoryStorage([1])}, MemoryPersister(),
                    settings=CoreSettings(**settings))
    core.start()
    for _ in range(5):
        clock.advance(0)
    assert core.groups[0].is_leader
    return clock, core


def _append(clock, core, body: bytes):
    results = []
    core.submit(C.Append("_default", "s", "application/octet-stream", body)) \
        .addBoth(results.append)
    for _ in range(5):
        clock.advance(0)
    assert results and results[0].error is None, results


def test_snapshot_after_enough_log_bytes():
    clock, core = _core(snapshot_entries=1_000_000, snapshot_log_bytes=8192, snapshot_keep=1)
    core.submit(C.CreateStream("_default", "s", "application/octet-stream"))
    for _ in range(5):
        clock.advance(0)
    for _ in range(4):
        _append(clock, core, b"x" * 1024)
    assert core.groups[0].storage.snapshot().meta.index == 0  # 4 KiB of log: not yet
    for _ in range(8):
        _append(clock, core, b"x" * 1024)
    snapshot_index = core.groups[0].storage.snapshot().meta.index
    assert snapshot_index > 0
    assert core.groups[0].storage.first_index() > 1  # the log was compacted
    core.stop()


def test_snapshot_after_enough_entries():
    clock, core = _core(snapshot_entries=10, snapshot_log_bytes=1 << 30, snapshot_keep=1)
    core.submit(C.CreateStream("_default", "s", "application/octet-stream"))
    for _ in range(5):
        clock.advance(0)
    for _ in range(12):
        _append(clock, core, b"y")
    assert core.groups[0].storage.snapshot().meta.index >= 10
    core.stop()
