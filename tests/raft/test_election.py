"""Term handling, vote granting, randomized timeouts, pre-vote and check-quorum."""

import pytest

from tests.raft.harness import Cluster
from tests.raft.util import drain, make_node
from ursula.raft import (
    AppendEntries,
    AppendResponse,
    Heartbeat,
    VoteRequest,
    VoteResponse,
)


def votes(msgs):
    return [m for m in msgs if isinstance(m, VoteResponse)]


# -- term handling ----------------------------------------------------------------------------
def test_higher_term_append_makes_candidate_follow_the_sender():
    n = make_node(1, term=1, pre_vote=False)
    n.campaign()
    assert n.role == "candidate" and n.term == 2
    n.step(AppendEntries(5, 3, 1, 0, 0, (), 0))
    assert n.role == "follower" and n.term == 5 and n.leader == 3 and n.vote == 0


def test_lower_term_append_is_rejected_with_our_term():
    n = make_node(1, term=4)
    drain(n)
    n.step(AppendEntries(2, 3, 1, 0, 0, (), 0))
    out = drain(n).messages
    assert n.term == 4 and n.leader == 0
    assert len(out) == 1 and isinstance(out[0], AppendResponse) and out[0].term == 4


def test_leader_steps_down_on_higher_term_response():
    c = Cluster(3)
    c.elect(1)
    c.node(1).step(AppendResponse(9, 2, 1, 0))
    assert c.node(1).role == "follower" and c.node(1).term == 9


def test_stale_leader_steps_down_after_rejoining():
    c = Cluster(3)
    c.elect(1)
    c.isolate(1)
    # 2 and 3 elect a new leader once their lease from 1 has run out
    c.tick_all(25)
    assert c.node(1).role == "follower"  # check-quorum: isolated leader stepped down
    new = [i for i in c.leaders() if i != 1]
    assert len(new) == 1
    c.heal()
    c.tick_all(5)
    assert c.leaders() == new and c.node(1).term == c.node(new[0]).term


# -- vote granting ----------------------------------------------------------------------------
def test_one_vote_per_term():
    n = make_node(1, terms=[1], term=1, pre_vote=False, check_quorum=False)
    drain(n)
    n.step(VoteRequest(2, 2, 1, 1, 1))
    n.step(VoteRequest(2, 3, 1, 1, 1))
    n.step(VoteRequest(2, 2, 1, 1, 1))  # repeat from the same candidate: granted again
    rs = votes(drain(n).messages)
    assert [(r.dst, r.granted) for r in rs] == [(2, True), (3, False), (2, True)]
    assert n.vote == 2 and n.term == 2
    assert n.storage.hard_state.vote == 2  # persisted in the same Ready


def test_vote_denied_to_candidate_with_stale_log():
    n = make_node(1, terms=[1, 2, 2], term=2, pre_vote=False, check_quorum=False)
    drain(n)
    n.step(VoteRequest(3, 2, 1, 5, 1))  # longer but older last term
    n.step(VoteRequest(4, 3, 1, 2, 2))  # same last term but shorter
    rs = votes(drain(n).messages)
    assert [r.granted for r in rs] == [False, False]
    assert n.vote == 0 and n.term == 4  # term adopted even though the vote was denied
    n.step(VoteRequest(4, 2, 1, 3, 2))
    assert votes(drain(n).messages)[0].granted


def test_candidate_votes_for_itself_and_wins_with_majority():
    n = make_node(1, voters=(1, 2, 3, 4, 5), pre_vote=False)
    n.campaign()
    assert n.vote == 1 and n.term == 1
    reqs = drain(n).messages
    assert sorted(m.dst for m in reqs) == [2, 3, 4, 5]
    n.step(VoteResponse(1, 2, 1, True))
    assert n.role == "candidate"
    n.step(VoteResponse(1, 2, 1, True))  # duplicate does not count twice
    assert n.role == "candidate"
    n.step(VoteResponse(1, 3, 1, True))
    assert n.role == "leader"


def test_candidate_loses_with_majority_of_rejections():
    n = make_node(1, pre_vote=False)
    n.campaign()
    n.step(VoteResponse(1, 2, 1, False))
    n.step(VoteResponse(1, 3, 1, False))
    assert n.role == "follower" and n.term == 1


def test_randomized_election_timeout_in_range_and_varies():
    seen = set()
    for seed in range(40):
        n = make_node(1, seed=seed, election_tick=10)
        assert 10 <= n.randomized_election_timeout < 20
        seen.add(n.randomized_election_timeout)
    assert len(seen) > 3


def test_follower_campaigns_after_its_timeout():
    n = make_node(1, election_tick=10)
    t = n.randomized_election_timeout
    for _ in range(t - 1):
        n.tick()
    assert n.role == "follower"
    n.tick()
    assert n.role == "pre-candidate"


def test_single_node_elects_itself_and_commits():
    c = Cluster(1)
    c.tick_all(25)
    assert c.leaders() == [1]
    c.propose(1, b"a")
    assert c.applied[1] == [b"a"]


# -- pre-vote ---------------------------------------------------------------------------------
def test_pre_vote_does_not_bump_terms():
    n = make_node(1, term=3)
    n.campaign()
    assert n.role == "pre-candidate" and n.term == 3 and n.vote == 0
    reqs = drain(n).messages
    assert all(isinstance(m, VoteRequest) and m.pre and m.term == 4 for m in reqs)
    n.step(VoteResponse(4, 2, 1, True, True))
    assert n.role == "candidate" and n.term == 4


def test_voter_does_not_adopt_pre_vote_term():
    n = make_node(2, term=3)
    drain(n)
    n.step(VoteRequest(4, 1, 2, 0, 0, pre=True))
    r = votes(drain(n).messages)[0]
    assert r.granted and r.pre and r.term == 4
    assert n.term == 3 and n.vote == 0


@pytest.mark.parametrize("pre_vote", [True, False])
def test_partitioned_node_rejoining_does_not_disrupt_leader(pre_vote):
    c = Cluster(3, pre_vote=pre_vote, check_quorum=False)
    c.elect(1)
    term = c.node(1).term
    c.isolate(3)
    c.tick_all(60)
    c.heal()
    c.tick_all(25)
    if pre_vote:
        assert c.node(3).term == term
        assert c.leaders() == [1] and c.node(1).term == term
    else:
        # without pre-vote the rejoining node's inflated term deposes the leader
        assert c.node(1).term > term


# -- check-quorum -----------------------------------------------------------------------------
@pytest.mark.parametrize("check_quorum", [True, False])
def test_isolated_leader_steps_down_with_check_quorum(check_quorum):
    c = Cluster(3, check_quorum=check_quorum)
    c.elect(1)
    c.isolate(1)
    for _ in range(2 * 10 + 1):
        c.node(1).tick()
        c.process(1)
    assert (c.node(1).role == "leader") is (not check_quorum)


def test_follower_in_lease_ignores_vote_requests():
    c = Cluster(3)
    c.elect(1)
    c.tick_all(1)
    n3 = c.node(3)
    term = n3.term
    n3.step(VoteRequest(term + 5, 2, 3, 100, term + 4))
    assert n3.term == term
    assert not votes(n3.ready().messages)
    # a leadership-transfer campaign may override the lease
    n3.step(VoteRequest(term + 5, 2, 3, 100, term + 4, transfer=True))
    assert n3.term == term + 5


def test_leader_without_quorum_keeps_heartbeating_until_timeout():
    c = Cluster(5)
    c.elect(1)
    c.cut(1, 4)
    c.cut(1, 5)
    c.tick_all(40)
    assert c.leaders() == [1]  # 3 of 5 reachable is still a quorum
    c.cut(1, 3)
    c.tick_all(25)
    assert 1 not in c.leaders()


def test_heartbeat_commit_is_capped_at_follower_match():
    c = Cluster(3)
    c.elect(1)
    c.cut(1, 3)
    c.propose(1, b"a")
    c.heal()
    c.node(1).tick()
    hbs = [m for m in c.node(1).ready().messages if isinstance(m, Heartbeat)]
    by = {m.dst: m.commit for m in hbs}
    assert by[2] == c.node(1).committed and by[3] < c.node(1).committed
