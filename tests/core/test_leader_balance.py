"""Leaders go back to their preferred node (``RaftCore._balance_leaders``), on a FakeNetwork."""

from __future__ import annotations

from twisted.python.failure import Failure

from tests.core.harness import Harness


def _leaders(h: Harness) -> dict[int, int | None]:
    return {g: h.leader(g) for g in range(h.group_count)}


def _preferred(h: Harness) -> dict[int, int]:
    core = next(iter(h.cores.values()))
    return {g: core.preferred_leader(core.groups[g]) for g in range(h.group_count)}


def test_a_new_cluster_elects_its_preferred_leaders():
    h = Harness(nodes=3, groups=4).start()
    h.elect()
    assert _leaders(h) == _preferred(h) == {0: 1, 1: 2, 2: 3, 3: 1}
    h.stop()


def test_leaders_moved_away_come_back_within_a_period():
    h = Harness(nodes=3, groups=3, leader_balance_s=1.0).start()
    h.elect()
    for g in range(3):  # everything onto node 3, as a restart of nodes 1 and 2 would leave it
        leader = h.leader(g)
        if leader != 3:
            h.cores[leader].groups[g].node.transfer_leadership(3)
            h.cores[leader].schedule(h.cores[leader].groups[g])
    h.run_until(lambda: all(h.leader(g) == 3 for g in range(3)), timeout=5)
    h.run_until(lambda: _leaders(h) == _preferred(h), timeout=3)
    assert _leaders(h) == {0: 1, 1: 2, 2: 3}
    h.stop()


def test_no_balancing_when_off():
    h = Harness(nodes=3, groups=3, leader_balance_s=0).start()
    h.elect()
    leader = h.leader(0)
    other = 2 if leader != 2 else 3
    h.cores[leader].groups[0].node.transfer_leadership(other)
    h.cores[leader].schedule(h.cores[leader].groups[0])
    h.run_until(lambda: h.leader(0) == other, timeout=5)
    h.run(5.0)
    assert h.leader(0) == other
    h.stop()


def test_a_draining_preferred_node_is_retried_less_and_less():
    """Node 1 drains: it hands its groups away and bounces back what the others give it; their
    balancers back off (1, 2, 4 ... periods), so the bouncing becomes rare."""
    h = Harness(nodes=3, groups=3, leader_balance_s=1.0).start()
    h.elect()
    h.cores[1].drain(timeout_s=5)
    h.run_until(lambda: h.leader(0) not in (None, 1), timeout=5)
    transfers = []
    for core in h.cores.values():
        original = core.groups[0].node.transfer_leadership

        def spy(to, original=original):
            transfers.append(to)
            original(to)
        core.groups[0].node.transfer_leadership = spy
    h.run(20.0)
    early = transfers.count(1)
    h.run(40.0)
    late = transfers.count(1) - early
    # each of the two other nodes retries after 1, 2, 4, 8, 16, 32 periods: about 4 tries
    # each in the first 20 s, at most 1 each in the next 40 s
    assert 2 <= early <= 10 and late <= 2 * 2
    h.stop()


def test_a_behind_preferred_node_is_not_handed_leadership():
    h = Harness(nodes=3, groups=1, leader_balance_s=1.0).start()
    h.elect()
    assert h.leader(0) == 1
    h.cores[1].groups[0].node.transfer_leadership(2)
    h.cores[1].schedule(h.cores[1].groups[0])
    h.run_until(lambda: h.leader(0) == 2, timeout=5)
    h.net.freeze(1)  # connected but silent: it falls behind while nodes 2 and 3 commit
    transfers = []
    node = h.cores[2].groups[0].node
    original = node.transfer_leadership
    node.transfer_leadership = lambda to: (transfers.append(to), original(to))
    done = h.submit(2, _append("behind"))
    h.run(3.0)  # three balance periods
    assert done and not isinstance(done[0], Exception) and transfers == [] and h.leader(0) == 2
    h.net.thaw(1)
    h.run_until(lambda: h.leader(0) == 1, timeout=10)  # caught up again: it goes back
    assert transfers == [1]
    h.stop()


def _append(name):
    from ursula.stream import commands as C
    return C.Append(bucket="_default", stream=name, content_type="text/plain", body=b"x")


# == leaders follow the load (RaftCore._follow_load) ============================================

def _write_through(h: Harness, nodes: list[int], count: int) -> list:
    """``count`` appends to streams of every group, entering ``nodes`` in turn."""
    from ursula.stream import commands as C
    streams = [h.stream_in(g, prefix=f"load{g}-") for g in range(h.group_count)]
    created = [h.submit(1, C.CreateStream("_default", s, "text/plain")) for s in streams]
    h.run_until(lambda: all(created), timeout=5)
    results = []
    for k in range(count):
        for s in streams:
            results.append(h.submit(nodes[k % len(nodes)], _append(s)))
        h.run(0.002)
    return results


def test_leaders_move_to_the_node_the_writes_enter():
    h = Harness(nodes=3, groups=3, leader_follow_load_s=1.0).start()
    h.elect()
    assert sorted(_leaders(h).values()) == [1, 2, 3]
    results = _write_through(h, [1], 600)  # 1.2 s of writes, all through node 1
    h.run_until(lambda: all(h.leader(g) == 1 for g in range(3)), timeout=5)
    h.run_until(lambda: all(results), timeout=10)
    # the writes caught in a move were retried, not failed
    assert not [r for r in results if isinstance(r[0], Exception | Failure)]
    assert sum(core.load_moves for core in h.cores.values()) == 2  # the two not on node 1
    h.stop()


def test_writes_spread_over_the_nodes_move_no_leader():
    h = Harness(nodes=3, groups=3, leader_follow_load_s=1.0).start()
    h.elect()
    before = _leaders(h)
    _write_through(h, [1, 2, 3], 900)
    h.run(2.0)
    assert _leaders(h) == before
    h.stop()


def test_no_load_following_when_off():
    h = Harness(nodes=3, groups=3, leader_follow_load_s=0).start()
    h.elect()
    before = _leaders(h)
    _write_through(h, [1], 600)
    h.run(2.0)
    assert _leaders(h) == before
    h.stop()


def test_the_target_needs_a_clear_majority_of_enough_writes():
    from ursula.core.cluster import FOLLOW_LOAD_MIN_WRITES, follow_load_target
    assert follow_load_target({2: 90, 1: 10}, me=1) == 2
    assert follow_load_target({2: 9, 1: 1}, me=1) is None  # too few to judge
    assert FOLLOW_LOAD_MIN_WRITES <= 100
    assert follow_load_target({2: 50, 3: 50, 1: 0}, me=1) is None  # no node has over half
    assert follow_load_target({2: 60, 1: 40}, me=1) is None  # not twice the leader's own
    assert follow_load_target({1: 100}, me=1) is None  # all local already


def test_no_leader_follows_the_load_onto_a_draining_node():
    h = Harness(nodes=3, groups=3, leader_follow_load_s=1.0).start()
    h.elect()
    h.cores[1].drain(timeout_s=5)
    h.run_until(lambda: all(h.leader(g) not in (None, 1) for g in range(3)), timeout=5)
    transfers = []
    for core in h.cores.values():
        for group in core.groups.values():
            def spy(to, original=group.node.transfer_leadership):
                transfers.append(to)
                original(to)
            group.node.transfer_leadership = spy
    results = _write_through(h, [1], 600)
    h.run_until(lambda: all(results), timeout=10)
    h.run(3.0)
    assert 1 not in transfers and all(h.leader(g) not in (None, 1) for g in range(3))
    h.cores[1].undrain()
    _write_through(h, [1], 600)  # no longer draining: they come to it
    h.run_until(lambda: all(h.leader(g) == 1 for g in range(3)), timeout=5)
    h.stop()


def test_writes_caught_in_a_leadership_transfer_go_to_the_new_leader_at_once():
    """A transfer refuses proposals until the new leader is elected (a few ms here): the writes
    it caught, entering every node, are sent to the new leader when it is known instead of
    waiting out the retry delay."""
    from ursula.core.forwarder import RETRY_DELAY_S
    from ursula.stream import commands as C
    h = Harness(nodes=3, groups=1, leader_balance_s=0).start()
    h.elect()
    old = h.leader(0)
    new = 1 if old != 1 else 2
    stream = h.stream_in(0)
    created = h.submit(1, C.CreateStream("_default", stream, "text/plain"))
    h.run_until(lambda: created, timeout=5)
    latencies = []

    def write(node):
        started = h.now
        d = h.cores[node].submit(_append(stream))
        d.addBoth(lambda result: latencies.append((h.now - started, result)))
    core = h.cores[old]
    core.groups[0].node.transfer_leadership(new)
    core.schedule(core.groups[0])
    for _ in range(40):  # 40 ms of writes through every node, across the transfer
        for node in (1, 2, 3):
            write(node)
        h.run(0.001)
    h.run_until(lambda: len(latencies) == 3 * 40, timeout=5)
    assert h.leader(0) == new
    assert not [r for _, r in latencies if isinstance(r, Exception | Failure)]
    assert sum(core.forwarder.retries for core in h.cores.values()) > 0  # some were caught
    assert max(t for t, _ in latencies) < RETRY_DELAY_S
    h.stop()
