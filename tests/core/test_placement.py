"""Groups placed on 3 of 5 nodes (``[cluster] replication = 3``), deterministically on fakes:
the initial voter sets spread replicas and preferred leaders evenly, a node hosts only its
groups, and requests through a node that does not host a stream's group (writes, reads, live
reads, listings, bucket commands) are carried to a host, also after the group moved."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.core.harness import BUCKET, OCTETS, Harness
from ursula.core.placement import (
    Placement,
    initial_voters,
    preferred_leader,
    resolve_replication,
)
from ursula.core.remote import RemoteGroup
from ursula.stream import commands as C
from ursula.stream.machine import StreamError


def test_replication_default_is_every_node_up_to_five():
    assert [resolve_replication(0, n) for n in (1, 3, 5, 6, 9)] == [1, 3, 5, 3, 3]
    assert resolve_replication(5, 9) == 5 and resolve_replication(7, 3) == 3


@pytest.mark.parametrize(("nodes", "r", "groups"), [(5, 3, 10), (6, 3, 12), (9, 5, 27),
                                                    (4, 3, 7), (30, 3, 1000)])
def test_initial_voters_spread_replicas_and_leaders_within_one(nodes, r, groups):
    genesis = list(range(1, nodes + 1))
    sets = [initial_voters(genesis, r, g) for g in range(groups)]
    assert all(len(s) == r == len(set(s)) and set(s) <= set(genesis) for s in sets)
    replicas = Counter(n for s in sets for n in s)
    assert max(replicas[n] for n in genesis) - min(replicas[n] for n in genesis) <= 1
    leaders = Counter(preferred_leader(genesis, r, g) for g in range(groups))
    assert max(leaders[n] for n in genesis) - min(leaders[n] for n in genesis) <= 1
    assert all(preferred_leader(genesis, r, g) in sets[g] for g in range(groups))
    # the same on every node, whatever order the ids were given in
    assert sets == [initial_voters(list(reversed(genesis)), r, g) for g in range(groups)]


def test_every_node_hosts_every_group_when_replication_covers_them():
    p = Placement([1, 2, 3], 0, 4)
    assert Placement([1, 2, 3], 3, 4).placed_on(4) == []  # explicit: groups move to it
    assert p.placed_on(1) == [0, 1, 2, 3] and p.placed_on(4) == [0, 1, 2, 3]
    p = Placement([1, 2, 3, 4, 5], 3, 5)
    assert p.placed_on(1) == [g for g in range(5) if 1 in initial_voters([1, 2, 3, 4, 5], 3, g)]
    assert len(p.placed_on(1)) == 3 and p.placed_on(6) == []


def test_hosted_groups_are_kept_in_a_file(tmp_path):
    path = str(tmp_path / "hosted.json")
    p = Placement([1, 2, 3, 4, 5], 3, 5, hosted_file=path)
    assert p.load_hosted(1) == p.placed_on(1)
    p.save_hosted([0, 4])
    assert Placement([1, 2, 3, 4, 5], 3, 5, hosted_file=path).load_hosted(1) == [0, 4]


@pytest.fixture
def placed():
    h = Harness(nodes=5, groups=5, replication=3).start()
    h.elect()
    yield h
    h.stop()


def _done(h, d, timeout=10.0):
    out = []
    d.addBoth(out.append)
    h.run_until(lambda: out, timeout)
    value = out[0]
    if hasattr(value, "raiseException"):
        value.raiseException()
    return value


def _outsider(h, group):
    return next(i for i in sorted(h.cores) if group not in h.cores[i].groups)


def test_a_node_hosts_only_its_groups_and_leaders_spread(placed):
    h = placed
    for i, core in h.cores.items():
        assert sorted(core.groups) == h.placements[i].placed_on(i)
        assert len(core.groups) == 3
    leaders = Counter(h.leader(g) for g in range(5))
    assert sorted(leaders.values()) == [1, 1, 1, 1, 1]  # each group's preferred leader won


def test_requests_through_a_node_that_does_not_host_the_group(placed):
    h = placed
    stream = h.stream_in(2)
    outsider = _outsider(h, 2)
    core = h.cores[outsider]
    assert _done(h, core.submit(C.CreateStream(BUCKET, stream, OCTETS))).created
    for k in range(3):
        outcome = _done(h, core.submit(C.Append(BUCKET, stream, OCTETS, b"abc")))
        assert outcome.error is None and outcome.next_offset == 3 * (k + 1)
    assert isinstance(core._group_for(BUCKET, stream), RemoteGroup)
    assert _done(h, core.head(BUCKET, stream)).tail == 9
    read = _done(h, core.read_applied(BUCKET, stream, 3, 100))
    assert bytes(read.data) == b"abcabc" and read.next_offset == 9
    with pytest.raises(StreamError):
        _done(h, core.head(BUCKET, "nope" + stream))
    h.run(0.3)
    hosts = [i for i in h.cores if 2 in h.cores[i].groups]
    assert len(hosts) == 3 and outsider not in hosts
    for i in hosts:
        assert h.tail(i, stream) == 9  # applied once on every replica


def test_a_live_reader_on_a_node_that_does_not_host_the_group_is_woken(placed):
    h = placed
    stream = h.stream_in(1)
    core = h.cores[_outsider(h, 1)]
    _done(h, core.submit(C.CreateStream(BUCKET, stream, OCTETS)))
    _done(h, core.head(BUCKET, stream))
    woken = []
    core.subscribe(BUCKET, stream, lambda: woken.append(h.now))
    h.run(0.5)
    assert not woken  # nothing changed: the host holds the wait
    leader = h.leader(1)
    _done(h, h.cores[leader].submit(C.Append(BUCKET, stream, OCTETS, b"x")))
    h.run_until(lambda: woken, 2.0)


def test_listing_and_bucket_commands_cover_every_group(placed):
    h = placed
    core = h.cores[1]
    names = [h.stream_in(g, prefix=f"l{g}-") for g in range(5)]
    for name in names:
        _done(h, core.submit(C.CreateStream(BUCKET, name, OCTETS)))
    listed = _done(h, core.list_streams(BUCKET, "", 100))
    assert sorted(n for n, _ in listed) == sorted(names)
    assert _done(h, core.submit(C.CreateBucket("b2"))).created
    for i in h.cores:
        for g in h.cores[i].groups.values():
            h.run_until(lambda g=g: "b2" in g.machine.buckets, 2.0)


def _move(h, group, source, dest):
    """What ``ursula-admin group move`` does, step by step, on the fakes."""
    _done(h, h.cores[dest].host_group(group))
    leader = h.leader(group)
    _done(h, h.cores[leader].change_membership(group, "add_learner", dest))
    h.run_until(lambda: h.cores[dest].groups[group].applied
                >= h.cores[leader].groups[group].node.committed, 5.0)
    _done(h, h.cores[h.leader(group)].change_membership(group, "promote", dest))
    if h.leader(group) == source:
        _done(h, h.cores[source].transfer_leader(group, dest))
        h.elect()
    _done(h, h.cores[h.leader(group)].change_membership(group, "remove", source))
    _done(h, h.cores[source].drop_group(group))


def test_requests_follow_a_group_that_moved(placed):
    h = placed
    group = 3
    stream = h.stream_in(group)
    outsider = _outsider(h, group)
    core = h.cores[outsider]
    _done(h, core.submit(C.CreateStream(BUCKET, stream, OCTETS)))
    _done(h, core.submit(C.Append(BUCKET, stream, OCTETS, b"12345")))
    source = h.leader(group)
    dest = next(i for i in sorted(h.cores) if group not in h.cores[i].groups and i != outsider)
    _move(h, group, source, dest)
    assert group not in h.cores[source].groups and group in h.cores[dest].groups
    h.elect()
    # the source no longer hosts it: a request there is carried to a host
    outcome = _done(h, h.cores[source].submit(C.Append(BUCKET, stream, OCTETS, b"678")))
    assert outcome.error is None and outcome.next_offset == 8
    # the outsider's hint pointed at the old leader: it learns where the group is now
    outcome = _done(h, core.submit(C.Append(BUCKET, stream, OCTETS, b"9")))
    assert outcome.next_offset == 9
    assert bytes(_done(h, core.read_applied(BUCKET, stream, 0, 100)).data) == b"123456789"
    h.run(0.3)
    assert h.tail(dest, stream) == 9
    conf = h.cores[h.leader(group)].groups[group].node
    assert dest in conf.voters and source not in conf.voters and len(conf.voters) == 3


def test_a_peer_address_is_registered_with_the_nodes_join_token(tmp_path):
    from ursula.core.joining import join_token, load_addresses
    h = Harness(nodes=3, groups=2)
    core = h.cores[1]
    core.join_secret = b"0123456789abcdef0123456789abcdef"
    core.peers_file = str(tmp_path / "peers.json")
    core.peer_port_offset = 2
    token = _done(h, core.join_token(6))["token"]
    assert token == join_token(core.join_secret, 6) and token != join_token(core.join_secret, 5)
    for address, tok, status in [("127.0.0.1:7000", join_token(core.join_secret, 5), 403),
                                 ("127.0.0.1:7000", "", 403), ("nope", token, 400),
                                 ("127.0.0.1:0", token, 400)]:
        with pytest.raises(Exception) as caught:
            _done(h, core.set_peer_address(6, address, tok))
        assert caught.value.status == status
    assert _done(h, core.set_peer_address(6, "10.0.0.6:7000", token))["address"] == (
        "10.0.0.6:7000")
    assert h.net.transports[1].addresses == {6: "tcp:host=10.0.0.6:port=7002"}  # + core 2
    assert load_addresses(core.peers_file) == {6: ("10.0.0.6", 7000)}
