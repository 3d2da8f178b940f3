"""Progress (per-follower replication state) and the in-flight window."""

from hypothesis import given
from hypothesis import strategies as st

from tests.raft.harness import Cluster
from ursula.raft import AppendResponse, HeartbeatResponse, Snapshot, SnapshotMeta
from ursula.raft.progress import PROBE, REPLICATE, SNAPSHOT, Inflights, Progress


def test_inflights_window():
    w = Inflights(3)
    for i in (5, 7, 9):
        w.add(i)
    assert w.full()
    w.free_le(7)
    assert w.count() == 1 and not w.full()
    w.free_first()
    assert w.count() == 0


def test_probe_pauses_after_one_message_and_resumes_on_ack():
    p = Progress(10, 8)
    assert not p.is_paused()
    p.probe_sent = True
    assert p.is_paused()
    assert p.maybe_update(9)
    assert not p.is_paused() and p.next == 10


@given(st.integers(0, 50), st.integers(0, 100), st.integers(0, 100))
def test_rejection_never_moves_next_below_match_plus_one(match, rejected, hint):
    p = Progress(rejected + 1, 8)
    p.match = min(match, rejected)
    p.maybe_decr_to(rejected, hint)
    assert p.next >= p.match + 1 and p.next >= 1


def test_stale_rejection_in_replicate_is_ignored():
    p = Progress(1, 8)
    p.maybe_update(10)
    p.become_replicate()
    assert not p.maybe_decr_to(9, 0)
    assert p.state == REPLICATE and p.next == 11


def test_snapshot_state_ends_when_follower_reports_it_has_enough():
    c = Cluster(3)
    c.elect(1)
    for k in range(5):
        c.propose(1, b"%d" % k)
    ldr = c.node(1)
    pr = ldr.tracker.progress[2]
    match = pr.match
    pr.become_snapshot(Snapshot(SnapshotMeta(match, ldr.term), b""))
    assert pr.state == SNAPSHOT
    # the follower answers with what it already has (e.g. a snapshot it did not need)
    ldr.step(AppendResponse(ldr.term, 2, 1, match))
    assert pr.state == REPLICATE


def test_full_window_is_freed_by_heartbeat_response_after_loss():
    c = Cluster(3, max_inflight=2)
    c.elect(1)
    c.tick_all(1)
    for k in range(4):
        c.node(1).propose(b"%d" % k)
        c.process(1)
    c.queue = [m for m in c.queue if m.dst != 2]  # the whole window to 2 is lost
    c.deliver()
    pr = c.node(1).tracker.progress[2]
    assert pr.is_paused()
    c.node(1).step(HeartbeatResponse(c.node(1).term, 2, 1))
    c.deliver()
    c.tick_all(3)
    assert c.applied[2] == c.applied[1] and len(c.applied[2]) == 4
    assert pr.state in (PROBE, REPLICATE)
