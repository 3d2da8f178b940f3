"""Journal: replay semantics, torn and corrupt tails, rotation, snapshots, segment release."""

from __future__ import annotations

import os
import random
import shutil

import pytest

from tests.storage.util import er, hs, snap
from ursula.raft.log import MemoryStorage
from ursula.raft.messages import Entry, HardState
from ursula.raft.node import Config, RaftNode
from ursula.storage.journal import (
    FSYNC_NEVER,
    Journal,
    JournalCorrupt,
    JournalError,
    memory_storage,
    recover,
)
from ursula.storage.records import CheckpointRecord, encode_record, scan


def segs(directory) -> list[str]:
    return sorted(os.listdir(os.path.join(directory, "wal")))


def records_on_disk(directory) -> list:
    out = []
    for name in segs(directory):
        with open(os.path.join(directory, "wal", name), "rb") as f:
            out.extend(scan(f.read()).records)
    return [r for r in out if not isinstance(r, CheckpointRecord)]


def test_empty_directory(tmp_path):
    r = recover(tmp_path / "j")
    assert r.groups == {} and r.report.clean
    with Journal(tmp_path / "j") as j:
        assert j.recovery.groups == {}
        assert j.segments() == []
        assert j.write_batch([]) == 0


def test_fsync_policy_is_validated(tmp_path):
    with pytest.raises(ValueError):
        Journal(tmp_path, fsync="sometimes")


def test_round_trip_of_groups(tmp_path):
    with Journal(tmp_path) as j:
        n = j.write_batch([er(1, 1, 3), hs(1, 1, 1, 2), er(2, 1, 1, term=4), hs(2, 4)])
        assert n == os.path.getsize(j.segments()[0]) > 0
        j.write_batch([er(1, 4, 5), hs(1, 1, 1, 5)])
    r = recover(tmp_path)
    assert r.report.clean
    g1, g2 = r.groups[1], r.groups[2]
    assert g1.hard_state == HardState(1, 1, 5)
    assert [e.index for e in g1.entries] == [1, 2, 3, 4, 5]
    assert g1.base == Entry(0, 0) and g1.snapshot is None and g1.conf is None
    assert g2.entries == list(er(2, 1, 1, term=4).entries)
    assert g2.hard_state == HardState(4)


def test_overlapping_entries_truncate_like_memory_storage(tmp_path):
    batches = [
        [er(1, 1, 5, term=1)],
        [er(1, 4, 6, term=2, tag=b"b")],  # replaces 4, 5 and adds 6
        [er(1, 6, 8, term=3, tag=b"c")],  # replaces 6
        [er(1, 3, 3, term=4, tag=b"d")],  # cuts back to 3
        [er(1, 4, 4, term=4, tag=b"e")],
    ]
    model = MemoryStorage((1,))
    with Journal(tmp_path) as j:
        for b in batches:
            j.write_batch(b)
            model.append(list(b[0].entries))
    got = recover(tmp_path).groups[1].entries
    assert got == model.entries(1, model.last_index() + 1)
    assert [(e.index, e.term) for e in got] == [(1, 1), (2, 1), (3, 4), (4, 4)]


def test_newest_hard_state_wins(tmp_path):
    with Journal(tmp_path) as j:
        j.write_batch([hs(1, 1, 1, 0), hs(1, 2, 0, 0)])
        j.write_batch([hs(1, 3, 3, 0), hs(2, 9, 1, 0)])
    r = recover(tmp_path)
    assert r.groups[1].hard_state == HardState(3, 3, 0)
    assert r.groups[2].hard_state == HardState(9, 1, 0)


def _write_singles(directory, n):
    with Journal(directory, fsync=FSYNC_NEVER) as j:
        for i in range(1, n + 1):
            j.write_batch([er(1, i, i, tag=b"rec"), hs(1, 1, 0, i)])
        path = j.segments()[-1]
    return path


def test_torn_tail_at_every_byte_of_the_last_record(tmp_path):
    src = tmp_path / "src"
    path = _write_singles(src, 3)
    with Journal(src, fsync=FSYNC_NEVER) as j:
        last = [er(1, 4, 4, tag=b"the last one")]
        j.write_batch(last)
    full = os.path.getsize(path)
    last_len = len(encode_record(last[0]))
    good = full - last_len
    before = records_on_disk(src)[:-1]
    for cut in range(good + 1, full):
        d = tmp_path / f"cut{cut}"
        shutil.copytree(src, d)
        seg = os.path.join(d, "wal", os.path.basename(path))
        os.truncate(seg, cut)
        r = recover(d)
        assert [t.reason for t in r.report.truncations] == ["torn"]
        t = r.report.truncations[0]
        assert (t.offset, t.discarded_bytes) == (good, cut - good)
        assert os.path.getsize(seg) == good
        assert records_on_disk(d) == before
        assert [e.index for e in r.groups[1].entries] == [1, 2, 3]
        # a following write appends cleanly
        with Journal(d, fsync=FSYNC_NEVER) as j:
            assert j.recovery.report.clean
            j.write_batch([er(1, 4, 5, tag=b"again")])
        again = recover(d)
        assert again.report.clean
        assert [e.data for e in again.groups[1].entries][3:] == [b"againe4", b"againe5"]
        shutil.rmtree(d)


def test_corrupt_crc_in_the_middle_truncates_there(tmp_path):
    path = _write_singles(tmp_path, 6)
    with open(path, "rb") as f:
        data = bytearray(f.read())
    ends = scan(bytes(data)).batch_ends
    # flip a byte inside batch 3 (the checkpoint shares batch 1 with the first records)
    data[ends[2] + 12] ^= 0xFF
    with open(path, "wb") as f:
        f.write(data)
    r = recover(tmp_path)
    (t,) = r.report.truncations
    assert t.reason == "corrupt" and t.offset == ends[2]
    assert os.path.getsize(path) == ends[2]
    assert [e.index for e in r.groups[1].entries] == [1, 2, 3]
    assert r.groups[1].hard_state.commit == 3


def test_corrupt_segment_drops_later_segments(tmp_path):
    with Journal(tmp_path, segment_bytes=150) as j:
        for i in range(1, 20):
            j.write_batch([er(1, i, i), hs(1, 1, 0, i)])
        paths = j.segments()
    assert len(paths) >= 4
    victim = paths[1]
    with open(victim, "r+b") as f:
        size = os.path.getsize(victim)
        f.seek(size - 3)
        f.write(b"\xff\xff\xff")
    r = recover(tmp_path)
    reasons = [t.reason for t in r.report.truncations]
    assert reasons[0] == "corrupt"
    assert reasons[1:] == ["after a damaged segment"] * (len(paths) - 2)
    assert segs(tmp_path) == [os.path.basename(p) for p in paths[:2]]
    entries = r.groups[1].entries
    assert [e.index for e in entries] == list(range(1, len(entries) + 1))
    assert r.groups[1].hard_state.commit == len(entries)
    assert r.report.describe()[0].startswith("journal: truncated")


def test_headerless_last_segment_is_removed(tmp_path):
    with Journal(tmp_path) as j:
        j.write_batch([er(1, 1, 1)])
    with open(os.path.join(tmp_path, "wal", "00000000000000000002.seg"), "wb") as f:
        f.write(b"\x10\x00")
    r = recover(tmp_path)
    assert [(t.reason, t.deleted) for t in r.report.truncations] == [("torn", True)]
    assert segs(tmp_path) == ["00000000000000000001.seg"]


def test_missing_middle_segment_is_an_error(tmp_path):
    with Journal(tmp_path, segment_bytes=50) as j:
        for i in range(1, 6):
            j.write_batch([er(1, i, i)])
        paths = j.segments()
    os.unlink(paths[1])
    with pytest.raises(JournalCorrupt, match="missing"):
        recover(tmp_path)


def test_rotation_writes_a_checkpoint(tmp_path):
    with Journal(tmp_path, segment_bytes=200) as j:
        j.write_batch([er(1, 1, 1), hs(1, 5, 2, 1), hs(2, 7, 7, 0)])
        j.save_snapshot(2, snap(3, 7), replace=True)
        for i in range(2, 12):
            j.write_batch([er(1, i, i, term=5)])
        paths = j.segments()
    assert len(paths) > 1
    for k, p in enumerate(paths, start=1):
        with open(p, "rb") as f:
            first = scan(f.read()).records[0]
        assert isinstance(first, CheckpointRecord) and first.seq == k
    with open(paths[-1], "rb") as f:
        cp = scan(f.read()).records[0]
    by_group = {g.group: g for g in cp.groups}
    assert by_group[1].hard_state == HardState(5, 2, 1)
    assert by_group[2].hard_state == HardState(7, 7, 0)
    assert by_group[2].snapshot.meta.index == 3


def test_checkpoint_alone_restores_hard_state_and_snapshot(tmp_path):
    with Journal(tmp_path, segment_bytes=100) as j:
        j.write_batch([hs(2, 7, 7, 3)])
        j.save_snapshot(2, snap(3, 7), replace=True)
        for i in range(1, 8):
            j.write_batch([hs(1, i)])
        # no segment holds entries: all but the active one can go
        removed = j.release_segments()
        assert removed and j.segments() == [j.segments()[-1]]
        j.write_batch([er(1, 1, 1, term=7)])
    r = recover(tmp_path)
    g2 = r.groups[2]
    assert g2.hard_state == HardState(7, 7, 3)
    assert g2.snapshot == snap(3, 7)
    assert g2.base == Entry(7, 3) and g2.entries == []
    assert r.groups[1].hard_state == HardState(7) and len(r.groups[1].entries) == 1


def test_segments_released_only_after_every_group_snapshotted(tmp_path):
    with Journal(tmp_path, segment_bytes=120) as j:
        for i in range(1, 11):
            j.write_batch([er(1, i, i), er(2, i, i)])
        first_gen = j.segments()
        assert len(first_gen) >= 3
        assert j.release_segments() == []
        j.save_snapshot(1, snap(10))
        j.compact(1, 10)
        assert j.release_segments() == []  # group 2 still needs them
        j.save_snapshot(2, snap(5))
        j.compact(2, 5)
        released = j.release_segments()
        assert released and set(released) < set(first_gen)
        for p in released:
            assert not os.path.exists(p)
        # what is left still holds every entry of group 2 after its snapshot
        j.save_snapshot(2, snap(10))
        j.compact(2, 10)
        j.release_segments()
        assert j.segments() == [j.segments()[-1]]  # the active segment always stays
    r = recover(tmp_path)
    for g in (1, 2):
        assert r.groups[g].snapshot == snap(10)
        st = memory_storage(r.groups[g])
        assert st.snapshot().meta.index == 10 and st.last_index() == 10


def test_release_keeps_entries_above_compaction_point(tmp_path):
    with Journal(tmp_path, segment_bytes=100) as j:
        for i in range(1, 21):
            j.write_batch([er(1, i, i)])
        j.save_snapshot(1, snap(20))
        j.compact(1, 15)  # keep 16..20 for slow followers
        j.release_segments()
        with pytest.raises(ValueError):
            j.compact(1, 21)
    g = recover(tmp_path).groups[1]
    assert g.snapshot.meta.index == 20
    assert g.base.index <= 15
    assert [e.index for e in g.entries][-5:] == [16, 17, 18, 19, 20]
    st = memory_storage(g)
    assert st.term(20) == 1 and st.first_index() == g.base.index + 1


def test_an_idle_group_holding_the_oldest_segment_is_named(tmp_path):
    with Journal(tmp_path, segment_bytes=100) as j:
        j.write_batch([er(2, 1, 1)])  # group 2 writes once, then stays idle
        for i in range(1, 21):
            j.write_batch([er(1, i, i)])
        assert j.holding_back() == [1, 2]
        j.save_snapshot(1, snap(20))
        j.compact(1, 20)
        j.release_segments()
        assert len(j.segments()) > 2 and j.holding_back() == [2]  # group 2 holds them all
        j.save_snapshot(2, snap(1))
        j.compact(2, 1)
        j.release_segments()
        assert len(j.segments()) == 1 and j.holding_back() == []


def test_local_snapshot_keeps_later_entries(tmp_path):
    with Journal(tmp_path) as j:
        j.write_batch([er(1, 1, 10)])
        ref = j.save_snapshot(1, snap(6))
        assert ref.file in os.listdir(tmp_path / "snap")
        j.write_batch([er(1, 11, 12)])
    g = recover(tmp_path).groups[1]
    assert g.snapshot == snap(6)
    assert [e.index for e in g.entries][-1] == 12
    st = memory_storage(g)
    assert st.snapshot().meta.index == 6 and st.last_index() == 12


def test_installed_snapshot_replaces_the_log(tmp_path):
    with Journal(tmp_path) as j:
        j.write_batch([er(1, 1, 10, term=1)])
        j.save_snapshot(1, snap(7, term=3), replace=True)
    g = recover(tmp_path).groups[1]
    assert g.snapshot.meta.index == 7 and g.entries == [] and g.base == Entry(3, 7)
    with Journal(tmp_path) as j:
        j.write_batch([er(1, 8, 9, term=3)])
    g = recover(tmp_path).groups[1]
    assert [(e.index, e.term) for e in g.entries] == [(8, 3), (9, 3)]


def test_snapshot_files_are_replaced_and_cleaned(tmp_path):
    with Journal(tmp_path) as j:
        j.write_batch([er(1, 1, 10)])
        j.save_snapshot(1, snap(4))
        j.save_snapshot(1, snap(8))
        assert os.listdir(tmp_path / "snap") == ["1-00000000000000000008.snap"]
        with pytest.raises(ValueError):
            j.save_snapshot(1, snap(8))
    (tmp_path / "snap" / "1-00000000000000000009.snap.tmp").write_bytes(b"half")
    (tmp_path / "snap" / "1-00000000000000000009.snap").write_bytes(b"unreferenced")
    r = recover(tmp_path)
    assert len(r.report.removed_files) == 2
    assert os.listdir(tmp_path / "snap") == ["1-00000000000000000008.snap"]
    assert r.groups[1].snapshot == snap(8)


def test_damaged_snapshot_file_is_an_error(tmp_path):
    with Journal(tmp_path) as j:
        j.write_batch([er(1, 1, 3)])
        ref = j.save_snapshot(1, snap(2))
    path = tmp_path / "snap" / ref.file
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(JournalCorrupt):
        recover(tmp_path)


def test_one_process_per_directory(tmp_path):
    with Journal(tmp_path):
        with pytest.raises(JournalError, match="in use"):
            Journal(tmp_path)
    Journal(tmp_path).close()


def test_closed_journal_refuses_writes(tmp_path):
    j = Journal(tmp_path)
    j.close()
    with pytest.raises(JournalError):
        j.write_batch([er(1, 1, 1)])


def test_raft_node_starts_from_recovered_storage(tmp_path):
    with Journal(tmp_path) as j:
        j.write_batch([er(1, 1, 5, term=2), hs(1, 2, 1, 4)])
        j.save_snapshot(1, snap(3, term=2, voters=(1, 2, 3)))
    g = recover(tmp_path).groups[1]
    st = memory_storage(g, voters=(1, 2, 3))
    node = RaftNode(Config(id=1), st, random.Random(1))
    assert node.term == 2 and node.vote == 1
    assert node.log.committed == 4 and node.log.last_index() == 5


def test_snapshot_data_is_read_from_the_file_on_demand(tmp_path):
    big = snap(6, data=b"d" * 300_000)
    with Journal(tmp_path) as j:
        j.write_batch([er(1, 1, 10)])
        j.save_snapshot(1, big)
        assert j.snapshot_data(1, 5) is None  # not the group's current snapshot
        assert j.snapshot_data(2, 6) is None  # no snapshot at all
        data = j.snapshot_data(1, 6)
        assert len(data) == len(big.data)
        assert data[0:10] == big.data[:10] and data[299_990:] == big.data[299_990:]
        assert bytes(data) == big.data
        j.save_snapshot(1, snap(8))  # replaces (unlinks) the file
        assert j.snapshot_data(1, 6) is None
        assert data[100:120] == big.data[100:120]  # the open reader still has it
    with Journal(tmp_path) as j:
        assert bytes(j.snapshot_data(1, 8)) == snap(8).data  # after recovery too


def test_raft_storage_sends_a_snapshot_read_from_its_file(tmp_path):
    # A leader whose snapshot data is a file reader sends it in chunks like bytes.
    big = snap(6, data=bytes(range(256)) * 1000)
    with Journal(tmp_path) as j:
        j.write_batch([er(1, 1, 6)])
        j.save_snapshot(1, big)
        st = MemoryStorage([1, 2, 3])
        st.apply_snapshot(big)
        assert not st.swap_snapshot_data(5, j.snapshot_data(1, 6))  # not its snapshot index
        assert st.swap_snapshot_data(6, j.snapshot_data(1, 6))
        held = st.snapshot().data
        assert not isinstance(held, bytes)
        chunks = [held[off:off + 60 * 1024] for off in range(0, len(held), 60 * 1024)]
        assert b"".join(chunks) == big.data
