"""PeerTransport over real TCP on 127.0.0.1: batches, forwarding, auth, reconnect.

Logic that needs no socket (batching per turn, forward timeouts, pings) is tested on a Clock
in test_protocol_iosim.py."""

from __future__ import annotations

import hashlib
import os

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.protocols import amp

from tests.wire.helpers import eventually, reactor, sleep
from ursula.raft.messages import AppendEntries, Entry, Heartbeat, decode_message, encode_message
from ursula.wire import (
    RAFT_BATCH_CAP,
    ForwardFailed,
    HandshakeRejected,
    PeerTransport,
    PeerUnavailable,
)
from ursula.wire.commands import PROTOCOL_VERSION, ForwardBatch, Hello, Prove, RaftBatch


def _heartbeats(src: int, dst: int, groups: range) -> list[tuple[int, bytes]]:
    return [(g, encode_message(Heartbeat(term=3, src=src, dst=dst, commit=g))) for g in groups]


def _pair(a: PeerTransport, b: PeerTransport):
    """The two ends (a's protocol, b's protocol) of the connection between a and b."""
    return a._conns[b.node_id], b._conns[a.node_id]


def _same_connection(a: PeerTransport, b: PeerTransport) -> bool:
    pa, pb = _pair(a, b)
    ha, pa_ = pa.transport.getHost(), pa.transport.getPeer()
    hb, pb_ = pb.transport.getHost(), pb.transport.getPeer()
    return (ha.port, pa_.port) == (pb_.port, hb.port)


# -- Raft batches ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_two_nodes_exchange_raft_batches_over_one_connection(clusters):
    c = await clusters(2)
    await c.all_connected()
    one, two = c.nodes[1], c.nodes[2]
    assert _same_connection(one, two)
    assert _pair(one, two)[0].dialer and not _pair(one, two)[1].dialer  # lower id dials
    one.send_raft(2, _heartbeats(1, 2, range(300)))
    two.send_raft(1, _heartbeats(2, 1, range(300, 600)))
    await eventually(lambda: c.received[1] and c.received[2])
    [(peer, items)] = c.received[2]
    assert peer == 1 and [g for g, _ in items] == list(range(300))
    assert decode_message(items[7][1]) == Heartbeat(term=3, src=1, dst=2, commit=7)
    [(peer, items)] = c.received[1]
    assert peer == 2 and [g for g, _ in items] == list(range(300, 600))
    assert one.stats[2].connects == 1 and two.stats[1].connects == 1
    assert one.stats[2].raft_batches_sent == 1 and one.stats[2].raft_messages_sent == 300
    assert two.stats[1].raft_messages_received == 300
    assert one.stats[2].bytes_sent > 0 and two.stats[1].bytes_received > 0


@pytest_twisted.ensureDeferred
async def test_three_nodes_one_connection_per_pair(clusters):
    c = await clusters(3)
    await c.all_connected()
    await sleep(0.2)  # give any stray duplicate connection the chance to appear
    ends = sum(len(t._all) for t in c.nodes.values())
    assert ends == 6  # 3 pairs, 2 ends each
    for a, b in [(1, 2), (1, 3), (2, 3)]:
        assert _same_connection(c.nodes[a], c.nodes[b])
        assert c.nodes[a].stats[b].connects == 1
    for t in c.nodes.values():
        for peer in t.peers:
            t.send_raft(peer, _heartbeats(t.node_id, peer, range(100 * peer, 100 * peer + 50)))
    await eventually(lambda: all(len(r) == 2 for r in c.received.values()))
    for i, received in c.received.items():
        assert sorted(peer for peer, _ in received) == sorted(set(c.nodes) - {i})
        for _, items in received:
            assert [g for g, _ in items] == list(range(100 * i, 100 * i + 50))


@pytest_twisted.ensureDeferred
async def test_big_burst_is_split_into_capped_batches(clusters):
    c = await clusters(2)
    await c.all_connected()
    entries = tuple(Entry(term=1, index=i, data=os.urandom(100_000)) for i in range(1, 6))
    items = [(g, encode_message(AppendEntries(term=1, src=1, dst=2, prev_index=0, prev_term=0,
                                              entries=entries, commit=0)))
             for g in range(11)]  # ~5.5 MB
    items.append((99, b"\x00" * (3 * RAFT_BATCH_CAP)))  # one item bigger than the cap
    c.nodes[1].send_raft(2, items)
    await eventually(lambda: sum(len(b) for _, b in c.received[2]) == len(items))
    batches = [b for _, b in c.received[2]]
    assert [i for b in batches for i in b] == items
    assert len(batches) >= 6
    assert decode_message(batches[0][0][1]).entries == entries


@pytest_twisted.ensureDeferred
async def test_raft_to_disconnected_peer_is_dropped(clusters):
    c = await clusters(2)
    await c.all_connected()
    await c.nodes[2].stop()
    await eventually(lambda: not c.nodes[1].connected(2))
    c.nodes[1].send_raft(2, _heartbeats(1, 2, range(10)))
    assert c.nodes[1].stats[2].raft_messages_dropped == 10
    with pytest.raises(ValueError):
        c.nodes[1].send_raft(7, [(0, b"x")])


# -- forwarding -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_forward_3_mib_both_directions(clusters):
    c = await clusters(2)
    await c.all_connected()
    seen = []

    def handler(group, payload):
        seen.append((group, len(payload)))
        return hashlib.sha256(payload).digest() + payload[::-1]

    c.nodes[1].on_forward(handler)
    c.nodes[2].on_forward(lambda group, payload: defer.succeed(payload + b"!"))
    payload = os.urandom(3 * 2**20)
    answer = await c.nodes[2].forward(1, 17, payload)
    assert answer == hashlib.sha256(payload).digest() + payload[::-1]
    assert seen == [(17, len(payload))]
    assert await c.nodes[1].forward(2, 5, payload) == payload + b"!"
    assert await c.nodes[1].forward(2, 5, b"") == b"!"
    assert c.nodes[1].stats[2].forwards_sent == 2 and c.nodes[2].stats[1].forwards_received == 2


@pytest_twisted.ensureDeferred
async def test_forward_handler_errors_come_back_as_forward_failed(clusters):
    c = await clusters(2)
    await c.all_connected()

    def handler(group, payload):
        if payload == b"boom":
            raise ValueError("bad op")
        if payload == b"typed":
            raise ForwardFailed("not the leader any more")
        return "not bytes"

    c.nodes[2].on_forward(handler)
    with pytest.raises(ForwardFailed, match="ValueError: bad op"):
        await c.nodes[1].forward(2, 1, b"boom")
    with pytest.raises(ForwardFailed, match="not the leader any more"):
        await c.nodes[1].forward(2, 1, b"typed")
    with pytest.raises(ForwardFailed, match="TypeError"):
        await c.nodes[1].forward(2, 1, b"other")
    with pytest.raises(ForwardFailed, match="no forward handler"):
        await c.nodes[2].forward(1, 1, b"x")
    assert c.nodes[1].connected(2)  # errors do not cost the connection
    assert c.nodes[1].stats[2].forwards_failed == 3


@pytest_twisted.ensureDeferred
async def test_forward_to_dead_peer_fails_fast(clusters):
    c = await clusters(3, forward_timeout=1.0)
    await c.all_connected()
    await c.nodes[3].stop()
    await eventually(lambda: not c.nodes[1].connected(3))
    started = reactor().seconds()
    with pytest.raises(PeerUnavailable):
        await c.nodes[1].forward(3, 1, b"x")
    assert reactor().seconds() - started < 0.1


@pytest_twisted.ensureDeferred
async def test_forward_fails_when_the_peer_dies_before_answering(clusters):
    c = await clusters(2)
    await c.all_connected()
    c.nodes[2].on_forward(lambda group, payload: defer.Deferred())
    pending = defer.ensureDeferred(c.nodes[1].forward(2, 1, b"x", timeout=5))
    await sleep(0.05)
    started = reactor().seconds()
    await c.nodes[2].stop()
    with pytest.raises(PeerUnavailable):
        await pending
    assert reactor().seconds() - started < 1.0


# -- authentication -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_wrong_secret_is_dropped_logged_and_retried_with_backoff(clusters, wire_logs):
    c = await clusters(2, secrets={1: b"another-secret-of-32-bytes-long!"})
    forwarded = []
    c.nodes[2].on_forward(lambda group, payload: forwarded.append(payload) or b"")
    await sleep(0.6)
    one, two = c.nodes[1], c.nodes[2]
    assert not one.connected(2) and not two.connected(1)
    one.send_raft(2, [(1, b"x")])
    with pytest.raises(PeerUnavailable):
        await one.forward(2, 1, b"x")
    assert c.received[2] == [] and forwarded == []
    warnings = wire_logs.warnings()
    assert any("127.0.0.1" in w and "wrong HMAC proof" in w for w in warnings), warnings
    # back-off grows: 0.05, 0.1, 0.2, 0.4 ... so only a handful of attempts in 0.6 s
    assert 2 <= one.stats[2].handshake_failures <= 5


class _Raw(amp.AMP):
    """A hand-driven AMP client that does not follow the handshake."""

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.gone = True


async def _raw_client(port: int) -> _Raw:
    proto = _Raw()
    proto.gone = False
    return await connectProtocol(TCP4ClientEndpoint(reactor(), "127.0.0.1", port), proto)


@pytest_twisted.ensureDeferred
async def test_commands_before_the_handshake_are_not_delivered(clusters, wire_logs):
    c = await clusters(2)
    await c.all_connected()
    forwarded = []
    c.nodes[2].on_forward(lambda group, payload: forwarded.append(payload) or b"")
    raw = await _raw_client(c.ports[2])
    raw.callRemote(RaftBatch, node_id=1, items=[(1, b"evil")])
    raw.callRemote(ForwardBatch, items=[(1, b"\x00\x00\x00\x01evil")])
    await eventually(lambda: raw.gone)
    # pipelined after a Hello and a wrong Prove, without waiting for answers
    raw = await _raw_client(c.ports[2])
    for d in (raw.callRemote(Hello, version=PROTOCOL_VERSION, node_id=1, nonce=os.urandom(32)),
              raw.callRemote(Prove, proof=os.urandom(32))):
        d.addErrback(lambda f: None)
    raw.callRemote(ForwardBatch, items=[(1, b"\x00\x00\x00\x01evil")])
    raw.callRemote(RaftBatch, node_id=1, items=[(1, b"evil")])
    await eventually(lambda: raw.gone)
    await sleep(0.05)
    assert forwarded == [] and c.received[2] == []
    assert c.nodes[2].connected(1)  # the real peer is not disturbed
    assert sum("dropping unauthenticated peer 127.0.0.1" in w for w in wire_logs.warnings()) >= 2


@pytest.mark.parametrize("node_id,version,why", [
    (7, PROTOCOL_VERSION, "node 7 may not dial node 2"),   # not a member
    (3, PROTOCOL_VERSION, "node 3 may not dial node 2"),   # a member, but the lower id dials
    (2, PROTOCOL_VERSION, "node 2 may not dial node 2"),   # itself
    (1, 99, "protocol version 99"),
    (1, 1, "speaks protocol version 1"),                   # before batched forwarding
])
@pytest_twisted.ensureDeferred
async def test_hello_from_a_node_that_may_not_dial_is_rejected(clusters, wire_logs, node_id,
                                                                version, why):
    c = await clusters(3)
    await c.all_connected()
    raw = await _raw_client(c.ports[2])
    with pytest.raises(HandshakeRejected):
        await raw.callRemote(Hello, version=version, node_id=node_id, nonce=os.urandom(32))
    await eventually(lambda: raw.gone)
    assert any(why in w for w in wire_logs.warnings()), wire_logs.warnings()
    assert c.nodes[2].connected(1) and c.nodes[2].connected(3)


@pytest_twisted.ensureDeferred
async def test_silent_connection_is_dropped_after_the_handshake_deadline(clusters, wire_logs):
    c = await clusters(2, handshake_timeout=0.2)
    proto = Protocol()
    proto.connectionLost = lambda reason: setattr(proto, "gone", True)
    proto.gone = False
    await connectProtocol(TCP4ClientEndpoint(reactor(), "127.0.0.1", c.ports[2]), proto)
    await eventually(lambda: proto.gone, timeout=2)
    assert any("no handshake within" in w for w in wire_logs.warnings())


@pytest_twisted.ensureDeferred
async def test_flood_before_authentication_is_dropped(clusters, wire_logs):
    c = await clusters(2)
    proto = Protocol()
    proto.connectionLost = lambda reason: setattr(proto, "gone", True)
    proto.gone = False
    await connectProtocol(TCP4ClientEndpoint(reactor(), "127.0.0.1", c.ports[2]), proto)
    proto.transport.write((b"\x00\x03key" + b"\xff\xff" + b"v" * 65535) * 10)
    await eventually(lambda: proto.gone, timeout=2)
    assert any("before authenticating" in w for w in wire_logs.warnings())


def test_short_secret_refused():
    with pytest.raises(ValueError):
        PeerTransport(1, {}, b"short", reactor())


# -- reconnect ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_reconnect_after_the_listening_side_restarts(clusters):
    c = await clusters(2)
    await c.all_connected()
    await c.restart(2)
    await eventually(lambda: c.nodes[1].connected(2) and c.nodes[2].connected(1))
    assert c.nodes[1].stats[2].connects == 2
    c.nodes[1].send_raft(2, _heartbeats(1, 2, range(5)))
    await eventually(lambda: c.received[2])
    assert [g for g, _ in c.received[2][0][1]] == list(range(5))


@pytest_twisted.ensureDeferred
async def test_reconnect_after_the_dialing_side_restarts(clusters):
    c = await clusters(2)
    await c.all_connected()
    await c.restart(1)
    await eventually(lambda: c.nodes[1].connected(2) and c.nodes[2].connected(1))
    assert c.nodes[2].stats[1].connects == 2 and len(c.nodes[2]._all) == 1
    c.nodes[2].send_raft(1, _heartbeats(2, 1, range(3)))
    await eventually(lambda: c.received[1])


@pytest_twisted.ensureDeferred
async def test_when_connected(clusters):
    c = await clusters(2)
    await c.nodes[1].when_connected(2)
    await c.nodes[2].when_connected(1)
    assert c.nodes[1].connected_peers() == [2]


# -- back-pressure ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_big_batches_are_shed_while_the_peer_is_not_reading(clusters):
    c = await clusters(2)
    await c.all_connected()
    proto = c.nodes[1]._conns[2]
    proto.pauseProducing()  # what the TCP transport does when its write buffer is full
    big = [(1, b"e" * 200_000)]
    c.nodes[1].send_raft(2, big + _heartbeats(1, 2, range(3)))
    c.nodes[1].flush()
    proto.resumeProducing()
    await eventually(lambda: c.received[2])
    await sleep(0.05)
    assert [g for g, _ in c.received[2][0][1]] == [0, 1, 2]  # heartbeats went, the big one not
    assert c.nodes[1].stats[2].raft_messages_dropped == 1


# -- addresses that change ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_set_peer_dials_a_node_at_its_new_address(clusters):
    c = await clusters(2)
    await c.all_connected()
    # node 2 moves: a fresh transport listening on another port
    await c.nodes[2].stop()
    moved = PeerTransport(2, dict(c.nodes[2].peers), c.nodes[2].secret, reactor(),
                          backoff_initial=0.05, backoff_max=0.5)
    port = await moved.listen("tcp:0:interface=127.0.0.1")
    moved.start()
    await sleep(0.3)
    assert not c.nodes[1].connected(2)  # still dialing the old address
    c.nodes[1].set_peer(2, f"tcp:host=127.0.0.1:port={port.getHost().port}")
    await eventually(lambda: c.nodes[1].connected(2) and moved.connected(1))
    await moved.stop()


@pytest_twisted.ensureDeferred
async def test_set_peer_adds_a_node_that_was_not_configured(clusters):
    c = await clusters(1)
    newcomer = PeerTransport(5, {1: f"tcp:host=127.0.0.1:port={c.ports[1]}"},
                             c.nodes[1].secret, reactor(), backoff_initial=0.05,
                             backoff_max=0.5)
    port = await newcomer.listen("tcp:0:interface=127.0.0.1")
    newcomer.start()
    assert 5 not in c.nodes[1].peers
    c.nodes[1].set_peer(5, f"tcp:host=127.0.0.1:port={port.getHost().port}")
    await eventually(lambda: c.nodes[1].connected(5) and newcomer.connected(1))
    c.nodes[1].send_raft(5, _heartbeats(1, 5, range(2)))
    await newcomer.stop()
