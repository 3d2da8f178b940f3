"""The runtime's glue, deterministically: three RaftCores on one Clock, a fake network.

Forwarding from a follower, re-routing away from a frozen leader (acknowledged once, applied
once), retrying after a lost connection with the same request id, the cross-group fork saga,
leadership hand-over and leader waits.
"""

from __future__ import annotations

import cbor2
import pytest

from tests.core.harness import BUCKET, OCTETS, Harness
from ursula.core.interfaces import Unavailable
from ursula.stream import commands as C


@pytest.fixture
def cluster():
    h = Harness(nodes=3, groups=2).start()
    h.elect()
    yield h
    h.stop()


def _follower(h: Harness, group: int, but=()) -> int:
    leader = h.leader(group)
    return next(i for i in sorted(h.cores) if i != leader and i not in but)


def _ok(results):
    assert len(results) == 1, results
    outcome = results[0]
    assert not hasattr(outcome, "raiseException"), outcome
    assert outcome.error is None, outcome
    return outcome


def _create(h: Harness, node: int, stream: str):
    done = h.submit(node, C.CreateStream(BUCKET, stream, OCTETS))
    h.run_until(lambda: done)
    return _ok(done)


def test_a_follower_forwards_to_the_leader(cluster):
    h = cluster
    stream = h.stream_in(0)
    follower = _follower(h, 0)
    assert _create(h, follower, stream).created
    done = h.submit(follower, C.Append(BUCKET, stream, OCTETS, b"hello"))
    h.run_until(lambda: done)
    assert _ok(done).next_offset == 5
    h.run(0.2)
    assert {h.tail(i, stream) for i in h.cores} == {5}
    sent = h.net.transports[follower].forwards
    assert sent and all(peer == h.leader(0) for peer, _, _ in sent)
    kind, _, request_id = cbor2.loads(sent[-1][2])
    assert kind == "submit" and request_id.startswith(f"{follower}:")


def test_a_frozen_leader_costs_one_election_not_a_request_timeout(cluster):
    """The leader has the request in its log and on the followers, then freezes before it
    commits. A new leader is elected; the follower re-sends the same request id to it. The
    new leader commits the old entry and deduplicates the re-sent one: applied once."""
    h = cluster
    stream = h.stream_in(0)
    old = h.leader(0)
    follower = _follower(h, 0)
    _create(h, follower, stream)
    h.run(0.2)
    target = h.cores[old].groups[0].node.log.last_index() + 1
    started = h.now
    done = h.submit(follower, C.Append(BUCKET, stream, OCTETS, b"x" * 7))
    h.run_until(lambda: all(h.cores[i].groups[0].node.log.last_index() >= target
                            for i in h.cores), step=0.0001)
    assert not done
    h.net.freeze(old)
    h.run_until(lambda: done, timeout=10)
    waited = h.now - started
    outcome = _ok(done)
    assert outcome.next_offset == 7
    # election timeout: 10-20 ticks of 100 ms, twice if the first vote splits (it does with
    # this seed: nodes 2 and 3 time out in the same tick); the request timeout is 5 s
    assert waited < 4.1, waited
    assert h.cores[follower].forwarder.reroutes >= 1
    new = h.leader(0)
    assert new != old
    h.net.thaw(old)
    h.run(1.0)
    assert {h.tail(i, stream) for i in h.cores} == {7}  # applied once, everywhere
    assert len(done) == 1


def test_a_request_sent_to_a_frozen_leader_is_re_sent_to_the_new_one(cluster):
    """The forward never reached the leader: it is re-sent once a new leader is known."""
    h = cluster
    stream = h.stream_in(1)
    old = h.leader(1)
    follower = _follower(h, 1)
    _create(h, follower, stream)
    h.run(0.2)
    h.net.freeze(old)
    started = h.now
    done = h.submit(follower, C.Append(BUCKET, stream, OCTETS, b"abc"))
    h.run_until(lambda: done, timeout=10)
    assert _ok(done).next_offset == 3
    assert h.now - started < 2.5
    h.net.thaw(old)
    h.run(1.0)
    assert {h.tail(i, stream) for i in h.cores} == {3}


def test_a_lost_connection_is_retried_with_the_same_request_id(cluster):
    """The leader applied the request but the connection went before the answer: the
    follower retries once it is back, and the leader answers from its dedup memory."""
    h = cluster
    stream = h.stream_in(0)
    leader = h.leader(0)
    follower = _follower(h, 0)
    _create(h, follower, stream)
    h.run(0.2)
    done = h.submit(follower, C.Append(BUCKET, stream, OCTETS, b"12345"))
    h.run_until(lambda: h.tail(leader, stream) == 5, step=0.0001)
    h.net.disconnect(follower, leader)
    h.run(0.3)
    assert not done  # still retrying: nothing failed yet
    h.net.reconnect(follower, leader)
    h.run_until(lambda: done)
    assert _ok(done).next_offset == 5
    h.run(0.3)
    assert {h.tail(i, stream) for i in h.cores} == {5}
    ids = {cbor2.loads(p)[2] for _, _, p in h.net.transports[follower].forwards[-2:]}
    assert len(ids) == 1 and len(h.net.transports[follower].forwards) >= 3


def test_fork_across_groups(cluster):
    h = cluster
    source = h.stream_in(0, "src")
    fork = h.stream_in(1, "fork")
    node = _follower(h, 0)
    _create(h, node, source)
    appended = h.submit(node, C.Append(BUCKET, source, OCTETS, b"0123456789"))
    h.run_until(lambda: appended)
    _ok(appended)
    done = h.submit(node, C.CreateStream(BUCKET, fork, None, fork_bucket=BUCKET,
                                         fork_stream=source, fork_offset=4))
    h.run_until(lambda: done)
    assert _ok(done).created
    h.run(0.2)
    for i in h.cores:
        assert h.tail(i, fork) == 4
        group = h.cores[i].groups[h.group_of(fork)]
        read = group.machine.read(BUCKET, fork, 0, 100, int(h.now * 1000))
        assert bytes(read.data) == b"0123"
    # the source holds a live-fork reference: deleting it soft-deletes it; deleting the
    # fork then delivers a release to the source's group
    deleted = h.submit(node, C.DeleteStream(BUCKET, fork))
    h.run_until(lambda: deleted)
    _ok(deleted)
    h.run(0.5)
    leader = h.cores[h.leader(1)].groups[1]
    assert not leader.machine.pending_releases


def test_hand_over_moves_leadership_without_an_election_timeout(cluster):
    h = cluster
    old = h.leader(0)
    led = [g for g in range(h.group_count) if h.leader(g) == old]
    done = []
    started = h.now
    h.cores[old].hand_over().addBoth(done.append)
    h.run_until(lambda: done, timeout=5)
    assert h.now - started < 0.5  # a TimeoutNow, not an election timeout (>= 1 s)
    for g in led:
        assert h.leader(g) not in (None, old)
    assert not any(group.is_leader for group in h.cores[old].groups.values())


def test_no_leader_fails_with_unavailable_after_the_leader_wait():
    h = Harness(nodes=3, groups=1, leader_wait_s=3.0)
    h.net.freeze(2)
    h.net.freeze(3)
    h.start()
    started = h.now
    done = h.submit(1, C.CreateStream(BUCKET, "s", OCTETS))
    h.run_until(lambda: done, timeout=10)
    assert done[0].check(Unavailable)
    assert "no leader" in done[0].getErrorMessage()
    assert 2.9 <= h.now - started <= 3.1
    h.stop()


def test_a_leader_elected_within_the_wait_serves_the_request():
    h = Harness(nodes=3, groups=1, leader_wait_s=3.0)
    h.net.freeze(3)
    h.net.freeze(2)
    h.start()
    done = h.submit(1, C.CreateStream(BUCKET, "s", OCTETS))
    h.run(0.5)
    h.net.thaw(2)
    h.run_until(lambda: done, timeout=5)
    assert _ok(done).created
    h.stop()


def test_a_proposal_on_the_leader_that_cannot_commit_fails_after_the_request_timeout():
    h = Harness(nodes=3, groups=1, request_timeout_s=0.3).start()
    h.elect()
    leader = h.leader(0)
    assert _create(h, leader, "s").created
    for peer in h.cores:
        if peer != leader:
            h.net.disconnect(leader, peer)
    started = h.now
    done = h.submit(leader, C.Append(BUCKET, "s", OCTETS, b"x"))
    h.run_until(lambda: done, timeout=5)
    assert done[0].check(Unavailable), done
    assert "timed out waiting for the cluster" in done[0].getErrorMessage()
    assert 0.3 <= h.now - started <= 0.55  # the deadline, checked every forwarder.SWEEP_S
    h.stop()


def test_answered_proposals_leave_the_deadline_queue(cluster):
    h = cluster
    leader = h.leader(0)
    stream = h.stream_in(0)
    assert _create(h, leader, stream).created
    results = [h.submit(leader, C.Append(BUCKET, stream, OCTETS, b"x")) for _ in range(50)]
    h.run_until(lambda: all(results))
    assert all(_ok(r) for r in results)
    h.run(0.3)  # a sweep or two
    forwarder = h.cores[leader].forwarder
    assert not any(forwarder._local.values()) and forwarder._sweeper is None
