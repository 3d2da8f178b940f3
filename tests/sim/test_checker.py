"""The checker's own rules, each shown to fire on a crafted bad history."""

import pytest

from ursula.raft import Entry, MemoryStorage
from ursula.raft.log import RaftLog
from ursula.sim.checker import Checker, Violation


def log_of(terms):
    st = MemoryStorage((1, 2, 3))
    st.append([Entry(t, i + 1, b"%d" % t) for i, t in enumerate(terms)])
    return RaftLog(st)


def test_two_leaders_in_one_term():
    c = Checker()
    c.on_leader(1, 3)
    c.on_leader(1, 3)
    c.on_leader(2, 4)
    with pytest.raises(Violation, match="election safety"):
        c.on_leader(2, 3)


def test_log_matching_same_index_term_different_data():
    c = Checker()
    lg = log_of([1, 1])
    c.on_persist(1, [Entry(2, 3, b"a")], lg)
    c.on_persist(2, [Entry(2, 3, b"a")], lg)
    with pytest.raises(Violation, match="log matching"):
        c.on_persist(3, [Entry(2, 3, b"b")], lg)


def test_log_matching_different_previous_term():
    c = Checker()
    c.on_persist(1, [Entry(3, 3, b"a")], log_of([1, 1]))
    with pytest.raises(Violation, match="log matching"):
        c.on_persist(2, [Entry(3, 3, b"a")], log_of([1, 2]))


def test_state_machine_safety():
    c = Checker()
    c.on_apply(1, 5, 2, b"x", ())
    c.on_apply(2, 5, 2, b"x", ())
    with pytest.raises(Violation, match="state-machine safety"):
        c.on_apply(3, 5, 3, b"y", ())
    with pytest.raises(Violation, match="outcome"):
        c.on_apply(3, 5, 2, b"x", ((None, False, 0, 4),))


def test_leader_completeness():
    c = Checker()
    c.on_apply(1, 1, 1, b"1", ())
    c.on_apply(1, 2, 2, b"2", ())
    c.on_new_leader(2, 3, log_of([1, 2]))
    with pytest.raises(Violation, match="leader completeness"):
        c.on_new_leader(3, 3, log_of([1, 1]))
    with pytest.raises(Violation, match="leader completeness"):
        c.on_new_leader(3, 3, log_of([1]))


def test_ack_must_match_the_write_and_writes_happen_once():
    c = Checker()
    c.on_write("p", 0, "s", 0, 3, 7)
    c.on_write("p", 0, "s", 0, 3, 7)  # same write seen by another replica
    c.on_write("p", 0, "s", 0, 3, 8)  # a request id deduplicated at a later index
    c.on_ack("p", 0, "s", b"<a>", 0, 3, 1)
    with pytest.raises(Violation, match="exactly once"):
        c.on_write("p", 0, "s", 3, 6, 9)
    with pytest.raises(Violation, match="ack"):
        c.on_ack("p", 1, "s", b"<b>", 3, 6, 2)  # never written


def test_stream_data_check():
    c = Checker()
    c.on_write("p", 0, "s", 0, 3, 1)
    c.on_ack("p", 0, "s", b"<a>", 0, 3, 1)
    c.on_write("p", 1, "s", 3, 6, 2)
    c.on_ack("p", 1, "s", b"<b>", 3, 6, 2)
    c.check_stream_data("r", "s", b"<a><b>")
    c.check_stream_data("r", "s", b"<a>")  # a replica that has not applied that far
    with pytest.raises(Violation, match="holds"):
        c.check_stream_data("r", "s", b"<b><a>")
    with pytest.raises(Violation, match="times"):
        c.check_stream_data("r", "s", b"<a><b><a>")
    with pytest.raises(Violation, match="ends at"):
        c.check_stream_data("linearizable read", "s", b"<a>", upto=2)


def test_commitment_rule_a_leader_commits_only_entries_of_its_own_term():
    c = Checker()
    c.on_leader_commit(1, 4, 10, 3)  # elected with commit 10 (set by an earlier leader): fine
    c.on_leader_commit(1, 4, 12, 4)  # its own term's entry: fine
    c.on_leader_commit(2, 5, 12, 4)
    with pytest.raises(Violation, match="commitment rule"):
        c.on_leader_commit(2, 5, 13, 4)  # moved to a term-4 entry while leading term 5
