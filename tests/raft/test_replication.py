"""Log replication: consistency check, truncation, fast back-off, pipelining, batching,
and the commit rule of Figure 2 / §5.4.2."""

from tests.raft.harness import Cluster
from tests.raft.util import drain, make_node
from ursula.raft import AppendEntries, AppendResponse, Entry, HardState, VoteResponse


def appends(msgs, dst=None):
    return [m for m in msgs if isinstance(m, AppendEntries) and (dst is None or m.dst == dst)]


def test_replicates_and_applies_in_order_everywhere():
    c = Cluster(5)
    c.elect(1)
    for k in range(20):
        c.propose(1, b"v%d" % k)
    c.tick_all(2)
    want = [b"v%d" % k for k in range(20)]
    assert all(c.applied[i] == want for i in c.ids)


def test_follower_rejects_when_prev_entry_missing_and_hints():
    n = make_node(2, terms=[1, 1, 2], term=3)
    drain(n)
    n.step(AppendEntries(3, 1, 2, 5, 3, (Entry(3, 6, b"x"),), 0))
    r = drain(n).messages[0]
    assert isinstance(r, AppendResponse) and r.reject and r.index == 5
    assert (r.hint_index, r.hint_term) == (3, 2)
    assert n.log.last_index() == 3


def test_follower_truncates_uncommitted_conflicting_suffix():
    # node 3 holds two entries of term 2 that never committed; 1 and 2 moved on in term 3
    c = Cluster(3)
    for i, terms in {1: [1, 3], 2: [1, 3], 3: [1, 2, 2]}.items():
        c.storages[i].append([Entry(t, k + 1, b"%d-%d" % (t, k + 1)) for k, t in enumerate(terms)])
        c.storages[i].set_hard_state(HardState(3, 0, 1))
        c.restart(i)
    c.elect(1)
    c.tick_all(2)
    terms3 = [c.node(3).log.term(k) for k in range(1, c.node(3).log.last_index() + 1)]
    assert terms3 == [1, 3, 4]
    assert c.storages[3].last_index() == 3 and c.storages[3].term(2) == 3


def test_fast_backoff_skips_a_whole_divergent_term():
    c = Cluster(3)
    leader_log = [1] + [3] * 50
    follower_log = [1] + [2] * 100
    for i, terms in {1: leader_log, 2: leader_log, 3: follower_log}.items():
        c.storages[i].append([Entry(t, k + 1, b"d") for k, t in enumerate(terms)])
        c.storages[i].set_hard_state(HardState(3, 0, 1))
        c.restart(i)
    c.sent.clear()
    c.elect(1)
    c.tick_all(2)
    rejects = [m for m in c.sent if isinstance(m, AppendResponse) and m.reject and m.src == 3]
    assert 1 <= len(rejects) <= 3  # linear back-off would need ~100
    assert c.node(3).log.last_index() == c.node(1).log.last_index()
    assert c.node(3).log.term(2) == 3


def test_pipelining_window_limits_inflight_appends():
    c = Cluster(3, max_inflight=3)
    c.elect(1)
    c.tick_all(1)
    c.sent.clear()
    for k in range(10):
        c.node(1).propose(b"p%d" % k)
        c.process(1)  # one Ready per proposal, no delivery in between
    sent = appends(c.sent, dst=2)
    assert len(sent) == 3  # optimistic pipelining, capped by the window
    assert c.node(1).tracker.progress[2].state == "replicate"
    c.deliver()
    c.tick_all(2)
    assert c.applied[2] == [b"p%d" % k for k in range(10)]


def test_proposals_between_readies_are_batched_into_one_append():
    c = Cluster(3)
    c.elect(1)
    c.tick_all(1)
    c.sent.clear()
    for k in range(25):
        c.node(1).propose(b"b%d" % k)
    c.process(1)
    sent = appends(c.sent, dst=2)
    assert len(sent) == 1 and len(sent[0].entries) == 25


def test_max_size_per_msg_splits_catch_up():
    c = Cluster(3, max_size_per_msg=1000)
    c.elect(1)
    c.crash(3)
    for _ in range(30):
        c.propose(1, b"z" * 200)
    c.sent.clear()
    c.restart(3)
    c.tick_all(3)
    to3 = [m for m in appends(c.sent, dst=3) if m.entries]
    assert len(to3) >= 5 and all(sum(e.size() for e in m.entries) <= 1000 for m in to3)
    assert c.applied[3] == c.applied[1]


def _figure8_leader(**cfg):
    """Node 1 becomes leader of term 3 holding an entry of term 2 at index 2 (never committed).
    Returns the node after its no-op (index 3, term 3) has been persisted locally."""
    n = make_node(1, terms=[1, 2], term=2, commit=1, pre_vote=False, **cfg)
    drain(n)
    n.campaign()
    drain(n)
    n.step(VoteResponse(3, 2, 1, True))
    assert n.role == "leader" and n.term == 3
    drain(n)
    return n


def test_leader_does_not_commit_previous_term_entry_by_counting():
    n = _figure8_leader()
    n.step(AppendResponse(3, 2, 1, 2))  # a majority (1, 2) now holds index 2, of term 2
    assert n.committed == 1
    n.step(AppendResponse(3, 2, 1, 3))  # the term-3 no-op reaches a majority
    assert n.committed == 3  # ...which commits index 2 indirectly


def test_unsafe_flag_commits_previous_term_entry_by_counting():
    n = _figure8_leader(unsafe_commit_any_term=True)
    n.step(AppendResponse(3, 2, 1, 2))
    assert n.committed == 2


def test_leader_counts_itself_only_after_persisting():
    c = Cluster(3)
    c.elect(1)
    c.tick_all(1)
    n = c.node(1)
    idx = n.propose(b"x")
    rd = n.ready()
    # followers ack before the leader's advance(): one ack + unpersisted leader is enough only
    # if the follower acks; the leader itself is not counted yet
    assert n.tracker.progress[1].match < idx
    c.storages[1].append(rd.entries)
    n.advance(rd)
    assert n.tracker.progress[1].match == idx
    assert n.committed < idx  # no follower has it yet


def _replicating_leader():
    """Node 1 leads term 3 of (1, 2, 3); both followers hold its no-op (index 3), committed,
    and are replicating."""
    n = _figure8_leader()
    n.step(AppendResponse(3, 2, 1, 3))
    n.step(AppendResponse(3, 3, 1, 3))
    drain(n)
    assert n.committed == 3
    return n


def test_a_commit_rides_on_the_entries_proposed_before_the_next_ready():
    n = _replicating_leader()
    n.propose(b"a")
    rd = drain(n)
    assert [len(m.entries) for m in appends(rd.messages)] == [1, 1]
    n.step(AppendResponse(3, 2, 1, 4))  # index 4 commits: a majority (1, 2) holds it
    assert n.committed == 4
    n.propose(b"b")  # proposed in the same turn, before the Ready goes out
    rd = drain(n)
    sent = appends(rd.messages)
    # one AppendEntries per follower, carrying both the entry and the new commit (before,
    # an empty one with the commit went first, and each follower answered both)
    assert sorted(m.dst for m in sent) == [2, 3]
    assert all(m.commit == 4 and [e.data for e in m.entries] == [b"b"] for m in sent)


def test_a_lone_commit_still_reaches_the_followers_in_the_next_ready():
    n = _replicating_leader()
    n.propose(b"a")
    drain(n)
    n.step(AppendResponse(3, 2, 1, 4))
    rd = drain(n)
    sent = appends(rd.messages)
    assert sorted(m.dst for m in sent) == [2, 3]
    assert all(m.commit == 4 and not m.entries for m in sent)
    # a follower that has been sent the current commit gets no second empty append
    n.step(AppendResponse(3, 3, 1, 4))
    assert appends(drain(n).messages) == []

