"""Leadership transfer with TimeoutNow."""

import pytest

from tests.raft.harness import Cluster
from ursula.raft import NotLeader, ProposalDropped, TimeoutNow


def test_transfer_to_up_to_date_follower():
    c = Cluster(3)
    c.elect(1)
    c.propose(1, b"a")
    term = c.node(1).term
    c.sent.clear()
    c.node(1).transfer_leadership(2)
    c.deliver()
    assert any(isinstance(m, TimeoutNow) and m.dst == 2 for m in c.sent)
    assert c.leaders() == [2] and c.node(2).term == term + 1
    c.propose(2, b"b")
    assert all(c.applied[i] == [b"a", b"b"] for i in c.ids)


def test_transfer_catches_up_a_lagging_target_first():
    c = Cluster(3)
    c.elect(1)
    c.cut(1, 3)
    for k in range(5):
        c.propose(1, b"%d" % k)
    c.heal()
    c.node(1).transfer_leadership(3)
    with pytest.raises(ProposalDropped):
        c.node(1).propose(b"no")
    c.deliver()
    assert c.leaders() == [3]
    assert c.applied[3][:5] == [b"%d" % k for k in range(5)]


def test_transfer_times_out_if_target_unreachable():
    c = Cluster(3)
    c.elect(1)
    c.cut(1, 3)
    c.propose(1, b"x")
    c.node(1).transfer_leadership(3)
    c.tick_all(12)
    assert c.leaders() == [1]
    c.propose(1, b"y")  # proposals accepted again after the transfer gave up


def test_timeout_now_skips_pre_vote_and_lease():
    c = Cluster(3)
    c.elect(1)
    c.node(2).step(TimeoutNow(c.node(1).term, 1, 2))
    assert c.node(2).role == "candidate"


def test_transfer_needs_leadership():
    c = Cluster(3)
    c.elect(1)
    with pytest.raises(NotLeader):
        c.node(2).transfer_leadership(3)
    with pytest.raises(NotLeader) as ei:
        c.node(2).propose(b"x")
    assert ei.value.leader == 1
