"""Membership changes in the Raft core: learners, promotion, removal, one change at a time,
the membership kept in snapshots and restored at restart."""

import pytest

from tests.raft.harness import Cluster
from ursula.raft import (
    ADD_LEARNER,
    ENTRY_CONF_CHANGE,
    PROMOTE,
    REMOVE,
    AppendEntries,
    ConfChange,
    ConfChangeRefused,
    ConfState,
    ProposalDropped,
)


def _grow(c: Cluster, new: int, promote: bool = True) -> None:
    c.join(new)
    c.change(1, ADD_LEARNER, new)
    c.tick_all(3)
    if promote:
        c.change(1, PROMOTE, new)
        c.tick_all(3)


def test_a_learner_gets_the_log_but_never_counts_towards_a_quorum():
    c = Cluster(3)
    c.elect(1)
    c.propose(1, b"before")
    _grow(c, 4, promote=False)
    assert c.node(1).voters == (1, 2, 3) and c.node(1).learners == (4,)
    assert c.applied[4] == [b"before"]  # caught up from the log
    c.propose(1, b"after")
    assert c.applied[4] == [b"before", b"after"]
    # the voters 2 and 3 are cut off: the learner's copy commits nothing
    c.cut(1, 2)
    c.cut(1, 3)
    committed = c.node(1).committed
    c.node(1).propose(b"stuck")
    c.deliver()
    assert c.node(1).committed == committed
    assert c.node(4).log.last_index() == c.node(1).log.last_index()  # it has the entry
    c.heal()
    c.tick_all(2)
    assert c.applied[2][-1] == b"stuck"


def test_the_broken_rule_learners_count_commits_on_a_learner_s_copy():
    c = Cluster(3, unsafe_learners_count=True)
    c.elect(1)
    _grow(c, 4, promote=False)
    c.cut(1, 2)
    c.cut(1, 3)
    committed = c.node(1).committed
    c.node(1).propose(b"unsafe")
    c.deliver()
    assert c.node(1).committed > committed  # only the leader and the learner hold it


def test_a_learner_never_campaigns_and_cannot_be_the_transfer_target():
    c = Cluster(3)
    c.elect(1)
    _grow(c, 4, promote=False)
    c.isolate(4)
    c.tick_all(50)
    assert c.node(4).role == "follower" and c.node(4).term == c.node(1).term
    c.heal()
    c.node(1).transfer_leadership(4)
    c.deliver()
    assert c.leaders() == [1]


def test_promotion_makes_a_voter_that_counts_and_can_lead():
    c = Cluster(3)
    c.elect(1)
    _grow(c, 4)
    assert c.node(1).voters == (1, 2, 3, 4) and c.node(4).voters == (1, 2, 3, 4)
    # 4 voters: a quorum is 3, so with 2 and 3 cut off nothing commits
    c.cut(1, 2)
    c.cut(1, 3)
    committed = c.node(1).committed
    c.node(1).propose(b"x")
    c.deliver()
    assert c.node(1).committed == committed
    c.heal()
    c.tick_all(2)
    c.node(1).transfer_leadership(4)
    c.deliver()
    assert c.leaders() == [4]
    c.propose(4, b"from 4")
    assert all(c.applied[i][-1] == b"from 4" for i in c.ids)


def test_removing_a_follower_shrinks_the_quorum():
    c = Cluster(3)
    c.elect(1)
    c.change(1, REMOVE, 3)
    assert c.node(1).voters == (1, 2) and c.node(2).voters == (1, 2)
    c.sent.clear()
    c.propose(1, b"two of two")
    assert not any(m.dst == 3 for m in c.sent)  # no longer replicated to
    assert c.applied[2][-1] == b"two of two"


def test_a_removed_leader_steps_down_once_the_change_applies_and_never_campaigns():
    c = Cluster(3)
    c.elect(1)
    c.propose(1, b"a")
    c.change(1, REMOVE, 1)
    assert c.node(1).role == "follower" and c.node(1).voters == (2, 3)
    c.tick_all(40)
    leaders = c.leaders()
    assert len(leaders) == 1 and leaders[0] in (2, 3)
    c.propose(leaders[0], b"b")
    assert c.applied[2][-1] == c.applied[3][-1] == b"b"
    assert c.node(1).role == "follower"


def test_one_change_at_a_time():
    c = Cluster(3)
    c.elect(1)
    c.join(4)
    c.join(5)
    c.node(1).propose_conf_change(ConfChange(ADD_LEARNER, 4))
    with pytest.raises(ProposalDropped):
        c.node(1).propose_conf_change(ConfChange(ADD_LEARNER, 5))
    c.deliver()  # the first applies: now the next may go
    c.node(1).propose_conf_change(ConfChange(ADD_LEARNER, 5))
    c.deliver()
    assert c.node(1).learners == (4, 5)


def test_the_broken_rule_changes_in_flight_takes_a_second_change():
    c = Cluster(3, unsafe_conf_changes_in_flight=True)
    c.elect(1)
    c.node(1).propose_conf_change(ConfChange(REMOVE, 3))
    c.node(1).propose_conf_change(ConfChange(REMOVE, 2))  # no error: the rule is broken
    c.deliver()
    assert c.node(1).voters == (1,)


def test_a_new_leader_commits_an_entry_of_its_term_before_a_change():
    c = Cluster(3)
    c.elect(1)
    c.propose(1, b"a")
    c.node(1).transfer_leadership(2)
    c.deliver(drop=lambda m: isinstance(m, AppendEntries) and m.src == 2)  # no-op held back
    leader = c.node(2)
    assert leader.role == "leader"
    assert leader.log.term(leader.committed) != leader.term
    with pytest.raises(ProposalDropped):
        leader.propose_conf_change(ConfChange(REMOVE, 3))
    c.tick_all(1)  # its heartbeats bring the followers' answers: the no-op goes out, commits
    assert leader.log.term(leader.committed) == leader.term
    c.change(2, REMOVE, 3)
    assert c.node(1).voters == (1, 2)


def test_changes_that_do_not_apply_are_refused():
    c = Cluster(3)
    c.elect(1)
    with pytest.raises(ConfChangeRefused):
        c.node(1).propose_conf_change(ConfChange(ADD_LEARNER, 2))  # already a voter
    with pytest.raises(ConfChangeRefused):
        c.node(1).propose_conf_change(ConfChange(PROMOTE, 9))  # not a learner
    with pytest.raises(ConfChangeRefused):
        c.node(1).propose_conf_change(ConfChange(REMOVE, 9))  # not a member
    single = Cluster(1)
    single.elect(1)
    with pytest.raises(ConfChangeRefused):
        single.node(1).propose_conf_change(ConfChange(REMOVE, 1))  # the last voter


def test_a_restart_replays_committed_changes_before_the_application_does():
    c = Cluster(3)
    c.elect(1)
    _grow(c, 4)
    c.crash(2)
    c.restart(2)
    assert c.node(2).voters == (1, 2, 3, 4)  # from the log, not from its bootstrap conf
    entries = c.storages[2].entries(1, c.storages[2].last_index() + 1)
    assert [e.kind for e in entries].count(ENTRY_CONF_CHANGE) == 2


def test_the_membership_goes_into_snapshots_and_a_joiner_learns_it_from_one():
    c = Cluster(3)
    c.elect(1)
    for k in range(5):
        c.propose(1, b"%d" % k)
    _grow(c, 4)
    c.propose(1, b"late")
    c.snapshot_and_compact(1)
    assert c.storages[1].snapshot().meta.conf == ConfState((1, 2, 3, 4))
    c.join(5)
    c.change(1, ADD_LEARNER, 5)
    c.tick_all(3)
    assert 5 in c.snap_installed  # it needed entries the leader compacted
    assert c.node(5).voters == (1, 2, 3, 4) and c.node(5).learners == (5,)
    assert c.applied[5] == c.applied[1]


def test_conf_at_answers_the_membership_as_of_an_index():
    c = Cluster(3)
    c.elect(1)
    before = c.node(1).log.last_index()
    c.join(4)
    at = c.change(1, ADD_LEARNER, 4)
    assert c.node(1).conf_at(before) == ConfState((1, 2, 3))
    assert c.node(1).conf_at(at) == ConfState((1, 2, 3), (4,))


def test_conf_state_wire_keeps_the_old_flat_form_without_learners():
    assert ConfState((1, 2, 3)).to_wire() == [1, 2, 3]
    assert ConfState.from_wire([1, 2, 3]) == ConfState((1, 2, 3))
    both = ConfState((1, 2), (3,))
    assert ConfState.from_wire(both.to_wire()) == both
    cc = ConfChange(PROMOTE, 7)
    assert ConfChange.decode(cc.encode()) == cc and str(cc) == "promote 7"


def test_a_wiped_node_never_votes_until_it_has_rejoined_and_been_promoted():
    # Node 3 is removed, its disk wiped, and it rejoins with the same id: it lost the votes it
    # cast, so until it has heard a leader and applied its own promotion it grants none (a
    # lagging node that still counts it as a voter could otherwise win with its second vote).
    from ursula.raft import VoteRequest
    c = Cluster(3)
    c.elect(1)
    c.change(1, REMOVE, 3)
    c.crash(3)
    node3 = c.join(3)  # the genesis membership, an empty disk
    assert node3.joining and 3 in node3.voters  # genesis says voter, but it may not vote
    c.sent.clear()
    node3.step(VoteRequest(c.node(1).term, 2, 3, 0, 0, False, False))
    c.process(3)
    assert [m.granted for m in c.sent if m.src == 3] == [False]
    c.tick(3, 50)
    assert node3.role == "follower"  # and it never campaigns
    c.change(1, ADD_LEARNER, 3)
    c.tick_all(3)
    assert node3.joining and node3.learners == (3,)
    c.change(1, PROMOTE, 3)
    c.tick_all(3)
    assert not node3.joining and node3.voters == (1, 2, 3)
    c.node(1).transfer_leadership(3)
    c.deliver()
    assert c.leaders() == [3]


def test_a_joining_node_takes_no_commit_index_from_heartbeats():
    # A leader that has not applied the node's removal still holds its progress from before
    # the wipe (match 5 here) and caps its heartbeat's commit by it: a wiped node must not
    # take it (its log is empty; the Raft core would stop on "commit past last index").
    from ursula.raft import Heartbeat, HeartbeatResponse
    c = Cluster(3)
    c.elect(1)
    for k in range(5):
        c.propose(1, b"%d" % k)
    c.crash(3)
    node3 = c.join(3)
    c.sent.clear()
    node3.step(Heartbeat(c.node(1).term, 1, 3, 6, b""))
    c.process(3)
    assert node3.committed == 0 and node3.log.last_index() == 0
    assert any(isinstance(m, HeartbeatResponse) and m.src == 3 for m in c.sent)
    # this leader thinks node 3 holds everything: only a removal and a new learner (the
    # runbook for a wiped disk) give it fresh progress; then AppendEntries, which prove the
    # prefix, catch it up and commit
    c.change(1, REMOVE, 3)
    c.change(1, ADD_LEARNER, 3)
    c.tick_all(3)
    assert node3.committed == c.node(1).committed and c.applied[3] == c.applied[1]


def test_the_planted_twin_takes_the_heartbeats_commit_and_trips():
    from ursula.raft import Heartbeat
    c = Cluster(3, unsafe_joining_heartbeat_commit=True)
    c.elect(1)
    for k in range(5):
        c.propose(1, b"%d" % k)
    c.crash(3)
    node3 = c.join(3)
    with pytest.raises(AssertionError):
        node3.step(Heartbeat(c.node(1).term, 1, 3, 6, b""))
