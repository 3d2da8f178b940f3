"""Storage and RaftLog rules: consistency check, truncation, commit term check, up-to-date."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ursula.raft import Entry, MemoryStorage, Snapshot, SnapshotMeta
from ursula.raft.log import Compacted, RaftLog, SnapshotOutOfDate, Unavailable


def E(term, index, data=b""):
    return Entry(term, index, data)


def log_with(terms, stable=True):
    st_ = MemoryStorage((1, 2, 3))
    ents = [E(t, i + 1) for i, t in enumerate(terms)]
    if stable:
        st_.append(ents)
        return RaftLog(st_)
    lg = RaftLog(st_)
    lg.append(ents)
    return lg


def test_storage_append_truncates_conflicting_suffix():
    s = MemoryStorage((1,))
    s.append([E(1, 1), E(1, 2), E(1, 3)])
    s.append([E(2, 2)])
    assert [e.term for e in s.entries(1, 3)] == [1, 2]
    assert s.last_index() == 2
    with pytest.raises(Unavailable):
        s.append([E(2, 5)])


def test_storage_compact_and_snapshot():
    s = MemoryStorage((1, 2, 3))
    s.append([E(1, i) for i in range(1, 11)])
    snap = s.create_snapshot(6, b"state")
    assert snap.meta.index == 6 and snap.meta.term == 1 and snap.meta.conf.voters == (1, 2, 3)
    s.compact(6)
    assert s.first_index() == 7 and s.last_index() == 10 and s.term(6) == 1
    with pytest.raises(Compacted):
        s.entries(6, 8)
    with pytest.raises(Compacted):
        s.term(5)
    with pytest.raises(SnapshotOutOfDate):
        s.apply_snapshot(Snapshot(SnapshotMeta(5, 1), b""))
    s.apply_snapshot(Snapshot(SnapshotMeta(20, 3), b"x"))
    assert s.first_index() == 21 and s.last_index() == 20


@pytest.mark.parametrize("stable", [True, False])
def test_consistency_check_rejects_missing_or_wrong_prev(stable):
    lg = log_with([1, 1, 2], stable)
    assert lg.maybe_append(3, 1, 0, (E(3, 4),)) is None  # wrong term at prev
    assert lg.maybe_append(4, 2, 0, (E(3, 5),)) is None  # prev past our end
    assert lg.last_index() == 3
    assert lg.maybe_append(3, 2, 0, (E(3, 4),)) == 4


@pytest.mark.parametrize("stable", [True, False])
def test_conflicting_entries_are_truncated_and_matching_ones_kept(stable):
    lg = log_with([1, 1, 2, 2, 2], stable)
    # Same entry 3, then a conflict at 4: 4 and 5 go, new 4 comes in.
    assert lg.maybe_append(2, 1, 0, (E(2, 3), E(3, 4))) == 4
    assert [lg.term(i) for i in range(1, 5)] == [1, 1, 2, 3]
    assert lg.last_index() == 4


def test_stale_append_does_not_truncate_newer_matching_entries():
    lg = log_with([1, 1, 1, 1])
    assert lg.maybe_append(0, 0, 0, (E(1, 1), E(1, 2))) == 2
    assert lg.last_index() == 4  # entries 3, 4 kept: no conflict


def test_commit_from_append_is_capped_at_last_new_entry():
    lg = log_with([1, 1, 1, 1, 1])
    lg.maybe_append(1, 1, 5, (E(1, 2),))
    assert lg.committed == 2


def test_truncating_a_committed_entry_is_refused():
    lg = log_with([1, 1, 1])
    lg.commit_to(2)
    with pytest.raises(AssertionError):
        lg.maybe_append(1, 1, 2, (E(2, 2),))


def test_commit_rule_only_counts_current_term():
    lg = log_with([1, 2, 2])
    assert not lg.maybe_commit(3, 3)  # entry 3 is from term 2; we are in term 3
    assert lg.committed == 0
    assert lg.maybe_commit(3, 2)
    assert lg.committed == 3
    assert not lg.maybe_commit(2, 2)  # never moves back


@pytest.mark.parametrize(
    "cand,expect",
    [((3, 2), True), ((2, 2), False), ((9, 1), False), ((1, 3), True), ((4, 2), True)],
)
def test_up_to_date_compares_last_term_then_length(cand, expect):
    lg = log_with([1, 2, 2])
    assert lg.is_up_to_date(*cand) is expect


def test_find_conflict_by_term():
    lg = log_with([1, 1, 2, 2, 4, 4, 4])
    assert lg.find_conflict_by_term(7, 3) == (4, 2)
    assert lg.find_conflict_by_term(7, 5) == (7, 4)
    assert lg.find_conflict_by_term(7, 0) == (0, 0)
    assert lg.find_conflict_by_term(3, 1) == (2, 1)


def test_slice_spans_stable_and_unstable_and_respects_size():
    st_ = MemoryStorage((1,))
    st_.append([E(1, i, b"x" * 10) for i in range(1, 4)])
    lg = RaftLog(st_)
    lg.append([E(1, i, b"y" * 10) for i in range(4, 7)])
    assert [e.index for e in lg.slice(2, 6)] == [2, 3, 4, 5]
    assert len(lg.slice(1, 7, max_size=60)) == 2
    assert len(lg.slice(1, 7, max_size=1)) == 1  # at least one
    st_.create_snapshot(2, b"")
    st_.compact(2)
    assert lg.slice(1, 3) is None
    assert lg.term(2) == 1 and lg.term(1) is None


def test_stable_to_ignores_a_replaced_entry():
    lg = log_with([1, 1], stable=False)
    lg.append([E(2, 2)])
    lg.stable_to(2, 1)  # the ready carried (2, term 1) which was replaced
    assert lg.unstable.offset == 1
    lg.stable_to(2, 2)
    assert lg.unstable.offset == 3 and not lg.unstable.entries


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 4), min_size=0, max_size=12),
    st.lists(
        st.tuples(st.integers(0, 12), st.lists(st.integers(1, 6), max_size=5), st.booleans()),
        max_size=12,
    ),
)
def test_log_matches_a_list_model(initial, ops):
    """After any sequence of appends (accepted or not), RaftLog equals a plain-list model,
    whether or not the entries were persisted in between."""
    st_ = MemoryStorage((1,))
    model = [E(t, i + 1) for i, t in enumerate(initial)]
    st_.append(model)
    lg = RaftLog(st_)
    for prev, new_terms, persist in ops:
        prev_term = model[prev - 1].term if 0 < prev <= len(model) else (0 if prev == 0 else 99)
        # terms in a real log never decrease
        base = prev_term if prev_term != 99 else 0
        terms = sorted(max(base, t) for t in new_terms)
        ents = tuple(E(t, prev + 1 + k) for k, t in enumerate(terms))
        ok = prev <= len(model) and (prev == 0 or model[prev - 1].term == prev_term)
        res = lg.maybe_append(prev, prev_term, 0, ents)
        if not ok:
            assert res is None
            continue
        assert res == prev + len(ents)
        for e in ents:
            if e.index <= len(model):
                if model[e.index - 1].term != e.term:
                    del model[e.index - 1 :]
                    model.append(e)
            else:
                model.append(e)
        if persist and lg.unstable.entries:
            ue = list(lg.unstable.entries)
            st_.append(ue)
            lg.stable_to(ue[-1].index, ue[-1].term)
        assert lg.last_index() == len(model)
        assert [lg.term(i) for i in range(1, len(model) + 1)] == [e.term for e in model]
