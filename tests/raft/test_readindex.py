"""ReadIndex: linearizable reads confirmed by a heartbeat round, no log write."""

from tests.raft.harness import Cluster
from ursula.raft import Heartbeat, ReadState


def test_leader_read_needs_a_quorum_heartbeat_round():
    c = Cluster(3)
    c.elect(1)
    c.propose(1, b"a")
    last = c.node(1).log.last_index()
    c.sent.clear()
    c.node(1).read_index(b"r1")
    c.process(1)
    hbs = [m for m in c.sent if isinstance(m, Heartbeat)]
    assert {m.ctx for m in hbs} == {b"r1"} and len(hbs) == 2
    assert c.read_states[1] == []  # not before the acks
    c.deliver()
    assert c.read_states[1] == [ReadState(c.node(1).committed, b"r1")]
    assert c.node(1).log.last_index() == last  # nothing written to the log


def test_isolated_leader_cannot_serve_a_read():
    c = Cluster(3, check_quorum=False)
    c.elect(1)
    c.isolate(1)
    c.node(1).read_index(b"r")
    c.tick_all(30)
    assert c.read_states[1] == []
    assert c.node(1).role == "leader"  # still thinks it leads: a lease-free read stays safe


def test_read_released_by_later_heartbeat_if_first_round_lost():
    c = Cluster(3)
    c.elect(1)
    c.node(1).read_index(b"r")
    c.deliver(drop=lambda m: isinstance(m, Heartbeat))
    assert c.read_states[1] == []
    c.tick_all(1)  # next heartbeat carries the pending ctx again
    assert [r.ctx for r in c.read_states[1]] == [b"r"]


def test_follower_read_is_forwarded_to_leader():
    c = Cluster(3)
    c.elect(1)
    c.propose(1, b"a")
    assert c.node(2).read_index(b"f")
    c.deliver()
    assert c.read_states[2] == [ReadState(c.node(1).committed, b"f")]


def test_read_without_known_leader_is_dropped():
    c = Cluster(3)
    assert c.node(2).read_index(b"x") is False


def test_new_leader_defers_reads_until_it_commits_in_its_term():
    c = Cluster(3)
    c.elect(1)
    c.propose(1, b"a")
    c.node(1).transfer_leadership(2)
    c.deliver(drop=lambda m: m.src == 2 and m.__class__.__name__ == "AppendEntries")
    n2 = c.node(2)
    assert n2.role == "leader" and n2.log.term(n2.committed) != n2.term
    n2.read_index(b"late")
    c.process(2)
    assert c.read_states[2] == []
    c.tick_all(2)  # appends flow again, the no-op commits, the read is answered
    assert [r.ctx for r in c.read_states[2]] == [b"late"]
    assert n2.log.term(c.read_states[2][0].index) == n2.term


def test_reads_queued_together_are_released_together():
    c = Cluster(5)
    c.elect(1)
    for k in range(3):
        c.node(1).read_index(b"q%d" % k)
    c.deliver()
    assert [r.ctx for r in c.read_states[1]] == [b"q0", b"q1", b"q2"]
