"""RaftCore's snapshot triggers, on a cluster of one driven by a fake clock."""

from __future__ import annotations

from twisted.internet import task
from twisted.python.failure import Failure

from ursula.core.cluster import CoreSettings, MemoryPersister, RaftCore
from ursula.core.persist import JournalPersister
from ursula.raft import MemoryStorage
from ursula.raft.messages import ConfState, Entry, Snapshot, SnapshotMeta
from ursula.storage.committer import GroupCommitter
from ursula.storage.journal import FSYNC_NEVER, Journal, memory_storage
from ursula.storage.records import EntriesRecord
from ursula.storage.snapfile import SnapshotFileData
from ursula.stream import StreamMachine
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


class _ThreadlessReactor(task.Clock):
    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class _InlinePool:
    def callInThreadWithCallback(self, on_result, func, *args, **kwargs):
        try:
            result = func(*args, **kwargs)
        except BaseException:
            on_result(False, Failure())
        else:
            on_result(True, result)


def _journal_core(directory, **settings):
    journal = Journal(directory, fsync=FSYNC_NEVER)
    storages = {0: memory_storage(journal.recovery.groups[0], [1])
                if 0 in journal.recovery.groups else MemoryStorage([1])}
    clock = _ThreadlessReactor()
    clock.advance(1_700_000_000)
    committer = GroupCommitter(journal, clock, _InlinePool())
    core = RaftCore(clock, 1, 1, storages, JournalPersister(committer),
                    settings=CoreSettings(**settings))
    core.start()
    for _ in range(5):
        clock.advance(0)
    assert core.groups[0].is_leader
    return journal, clock, core


def test_a_saved_snapshot_is_held_as_a_reader_of_its_file(tmp_path):
    # Once durable, the group's snapshot costs no memory: its Raft storage reads it from the
    # snapshot file (to send to a follower); on a restart too, after the machine is restored.
    journal, clock, core = _journal_core(tmp_path, snapshot_entries=1_000_000,
                                         snapshot_log_bytes=256 << 10, snapshot_keep=1)
    core.submit(C.CreateStream("_default", "s", "application/octet-stream"))
    for _ in range(5):
        clock.advance(0)
    for _ in range(40):
        _append(clock, core, b"z" * (32 << 10))
    snapshot = core.groups[0].storage.snapshot()
    assert snapshot.meta.index > 0
    assert isinstance(snapshot.data, SnapshotFileData)
    restored = StreamMachine.restore(bytes(snapshot.data))
    assert restored.head("_default", "s", 1_700_000_000_000).tail >= 256 << 10
    core.stop()
    journal.close()
    journal, clock, core = _journal_core(tmp_path)
    held = core.groups[0].storage.snapshot()
    assert held.meta == snapshot.meta and isinstance(held.data, SnapshotFileData)
    assert core.groups[0].machine.head("_default", "s", 1_700_000_000_000).tail == 40 * (32 << 10)
    core.stop()
    journal.close()


def test_a_small_snapshot_stays_in_memory(tmp_path):
    journal, clock, core = _journal_core(tmp_path, snapshot_entries=10,
                                         snapshot_log_bytes=1 << 30, snapshot_keep=1)
    core.submit(C.CreateStream("_default", "s", "application/octet-stream"))
    for _ in range(12):
        _append(clock, core, b"y")
    snapshot = core.groups[0].storage.snapshot()
    assert snapshot.meta.index >= 10 and isinstance(snapshot.data, bytes)
    core.stop()
    journal.close()


def test_the_node_journal_keeps_no_copy_of_what_it_recovered(tmp_path):
    from ursula.config import parse_config
    from ursula.supervisor import open_journal

    with Journal(tmp_path) as journal:
        journal.write_batch([EntriesRecord(0, (Entry(1, 1, b"e"),))])
        journal.save_snapshot(0, Snapshot(SnapshotMeta(1, 1, ConfState((1,))), b"x" * 1000))
    config = parse_config("")
    journal, storages = open_journal(config, str(tmp_path), lambda g: True, AssertionError)
    assert journal.recovery.groups == {}
    assert storages[0].snapshot().data == b"x" * 1000
    journal.close()
