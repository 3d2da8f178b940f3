"""Hypothesis properties of the journal: any cut recovers whole batches only, and replay agrees
with MemoryStorage."""

from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ursula.raft.log import MemoryStorage
from ursula.raft.messages import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from ursula.storage.journal import FSYNC_NEVER, Journal, memory_storage, recover
from ursula.storage.records import CheckpointRecord, EntriesRecord, HardStateRecord, scan

GROUPS = 3


@st.composite
def batches(draw):
    """Batches of valid records for a few groups: entries append at or below last+1."""
    last = [0] * GROUPS
    term = [1] * GROUPS
    out = []
    for _ in range(draw(st.integers(1, 12))):
        batch = []
        for _ in range(draw(st.integers(1, 4))):
            g = draw(st.integers(0, GROUPS - 1))
            if draw(st.booleans()):
                first = draw(st.integers(1, last[g] + 1))
                n = draw(st.integers(1, 4))
                if draw(st.integers(0, 3)) == 0:
                    term[g] += 1
                data = draw(st.binary(max_size=40))
                batch.append(EntriesRecord(
                    g, tuple(Entry(term[g], i, data) for i in range(first, first + n))))
                last[g] = first + n - 1
            else:
                hs = HardState(term[g], draw(st.integers(0, 3)), draw(st.integers(0, last[g])))
                batch.append(HardStateRecord(g, hs))
        out.append(batch)
    return out


def replay_model(records):
    stores = {}
    for r in records:
        m = stores.setdefault(r.group, MemoryStorage((1,)))
        if isinstance(r, EntriesRecord):
            m.append(list(r.entries))
        else:
            m.set_hard_state(r.hard_state)
    return stores


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(), st.integers(60, 600), st.data())
def test_a_cut_anywhere_recovers_a_prefix_of_whole_batches(bs, segment_bytes, data):
    with tempfile.TemporaryDirectory() as d:
        ends = []  # (segment index, size after the batch)
        with Journal(d, fsync=FSYNC_NEVER, segment_bytes=segment_bytes) as j:
            for b in bs:
                j.write_batch(b)
                paths = j.segments()
                ends.append((len(paths) - 1, os.path.getsize(paths[-1])))
        k = data.draw(st.integers(0, len(paths) - 1), label="segment")
        cut = data.draw(st.integers(0, os.path.getsize(paths[k])), label="offset")
        os.truncate(paths[k], cut)
        for p in paths[k + 1 :]:
            os.unlink(p)
        kept = sum(1 for seg, end in ends if seg < k or (seg == k and end <= cut))

        r = recover(d)
        on_disk = []
        for name in sorted(os.listdir(os.path.join(d, "wal"))):
            with open(os.path.join(d, "wal", name), "rb") as f:
                s = scan(f.read())
            assert s.problem is None  # the tail was cut back to a batch boundary
            on_disk.extend(x for x in s.records if not isinstance(x, CheckpointRecord))
        expected = [rec for b in bs[:kept] for rec in b]
        assert on_disk == expected

        model = replay_model(expected)
        assert set(r.groups) >= set(model)
        for g, m in model.items():
            got = r.groups[g]
            assert got.hard_state == m.hard_state
            assert got.entries == m.entries(1, m.last_index() + 1)

        # and the journal keeps working after the cut
        with Journal(d, fsync=FSYNC_NEVER, segment_bytes=segment_bytes) as j:
            j.write_batch([HardStateRecord(0, HardState(99, 1, 0))])
        assert recover(d).groups[0].hard_state == HardState(99, 1, 0)


@st.composite
def operations(draw):
    return draw(st.lists(st.tuples(st.integers(0, 5), st.integers(0, GROUPS - 1),
                                   st.integers(0, 1000)), min_size=1, max_size=60))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations(), st.integers(80, 400))
def test_replay_matches_memory_storage(ops, segment_bytes):
    """Appends, truncating appends, hard states, local and installed snapshots, compaction and
    segment release, then a clean restart: each group's recovered log equals MemoryStorage's
    (entries above the recovered compaction point; the snapshot and hard state exactly)."""
    models = {g: MemoryStorage((1, 2, 3)) for g in range(GROUPS)}
    terms = [1] * GROUPS
    with tempfile.TemporaryDirectory() as d:
        with Journal(d, fsync=FSYNC_NEVER, segment_bytes=segment_bytes) as j:
            for op, g, x in ops:
                m = models[g]
                first, last = m.first_index(), m.last_index()
                snap_index = m.snapshot().meta.index
                if op <= 1:  # append (op 1: may overwrite an uncompacted suffix)
                    lo = max(first, snap_index + 1)  # entries under a snapshot are committed
                    start = last + 1 if op == 0 else lo + x % (last - lo + 2)
                    if op == 1:
                        terms[g] += 1
                    es = [Entry(terms[g], i, b"%d" % x) for i in range(start, start + 1 + x % 3)]
                    m.append(es)
                    j.write_batch([EntriesRecord(g, tuple(es))])
                elif op == 2:
                    hs = HardState(terms[g], x % 4, 0)
                    m.set_hard_state(hs)
                    j.write_batch([HardStateRecord(g, hs)])
                elif op == 3 and last > snap_index:  # local snapshot, keep a few entries
                    idx = snap_index + 1 + x % (last - snap_index)
                    s = m.create_snapshot(idx, b"img%d" % x)
                    j.save_snapshot(g, s)
                    upto = idx - x % 3
                    if upto >= first:
                        m.compact(upto)
                        j.compact(g, upto)
                elif op == 4:  # a snapshot installed from the leader
                    terms[g] += 1
                    idx = snap_index + 1 + x % (last - snap_index + 5)  # may cut our log short
                    s = Snapshot(SnapshotMeta(idx, terms[g], ConfState((1, 2, 3))), b"l%d" % x)
                    m.apply_snapshot(s)
                    j.save_snapshot(g, s, replace=True)
                elif op == 5:
                    j.release_segments()
        r = recover(d)
        assert r.report.clean
        for g, m in models.items():
            got = r.groups.get(g)
            if got is None:
                assert m.last_index() == 0 and m.hard_state == HardState()
                continue
            st_ = memory_storage(got, voters=(1, 2, 3))
            assert st_.hard_state == m.hard_state
            assert st_.snapshot() == m.snapshot()
            assert st_.last_index() == m.last_index()
            # never less than the model kept in memory, except below the snapshot
            lo = max(st_.first_index(), m.first_index())
            assert lo <= m.snapshot().meta.index + 1
            assert st_.entries(lo, st_.last_index() + 1) == m.entries(lo, m.last_index() + 1)
            assert st_.term(st_.last_index()) == m.term(m.last_index())
