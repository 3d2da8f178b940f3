"""PeerProtocol logic over ``twisted.test.iosim`` on a ``task.Clock``: no sockets, no sleeps.

The handshake, the coalescing of a turn's Raft items into one batch, forwarding (answers,
remote errors, timeouts on the clock), liveness pings and the idle drop of a silent peer.
Real-socket behaviour (reconnect, TLS, raw clients) stays in test_transport.py / test_tls.py.
"""

from __future__ import annotations

import pytest
from twisted.internet import defer, task
from twisted.test import iosim

from tests.wire.helpers import SECRET
from ursula.raft.messages import Heartbeat, decode_message, encode_message
from ursula.wire import ForwardFailed, ForwardTimeout, PeerTransport, PeerUnavailable
from ursula.wire.transport import _AcceptFactory, _DialFactory


class Pair:
    """Transports 1 (dials) and 2 (accepts) on one Clock, joined by an iosim pump."""

    def __init__(self, secret_2: bytes = SECRET, **options):
        self.clock = task.Clock()
        self.clock.advance(1000)
        self.one = PeerTransport(1, {2: "unused"}, SECRET, self.clock, **options)
        self.two = PeerTransport(2, {1: "unused"}, secret_2, self.clock, **options)
        self.received = {1: [], 2: []}
        self.one.on_raft(lambda peer, items: self.received[1].append((peer, items)))
        self.two.on_raft(lambda peer, items: self.received[2].append((peer, items)))
        client = _DialFactory(self.one, 2).buildProtocol(None)
        server = _AcceptFactory(self.two).buildProtocol(None)
        self.pump = iosim.connect(server, iosim.makeFakeServer(server),
                                  client, iosim.makeFakeClient(client), greet=False)
        self.client, self.server = client, server
        self.settle()

    def settle(self, rounds: int = 20) -> None:
        """Deliver everything in flight, and run the clock's zero-delay calls."""
        for _ in range(rounds):
            self.clock.advance(0)
            self.pump.pump()

    def advance(self, seconds: float, step: float = 0.1, pump: bool = True) -> None:
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end:
            self.clock.advance(step)
            if pump:
                self.settle(2)


def _heartbeat(g: int) -> tuple[int, bytes]:
    return (g, encode_message(Heartbeat(term=2, src=1, dst=2, commit=g)))


def test_handshake_then_one_batch_per_turn():
    p = Pair()
    assert p.one.connected(2) and p.two.connected(1)
    assert p.client.authenticated and p.server.authenticated
    for g in range(500):
        p.one.send_raft(2, [_heartbeat(g)])
    p.settle()
    [(peer, items)] = p.received[2]
    assert peer == 1 and [g for g, _ in items] == list(range(500))
    assert decode_message(items[3][1]).commit == 3
    assert p.one.stats[2].raft_batches_sent == 1


def test_a_turns_forwards_answers_and_raft_batch_to_a_peer_leave_in_one_write():
    p = Pair()
    def handler(group, payload):
        p.two.send_raft(1, [_heartbeat(group)])  # node 2 has Raft traffic in that turn too
        return payload.upper()

    p.two.on_forward(handler)
    writes = {1: [], 2: []}
    for node, proto in ((1, p.client), (2, p.server)):
        real = proto.transport.write
        proto.transport.write = lambda data, real=real, node=node: (
            writes[node].append(data), real(data))
    answers = []
    p.one.forward(2, 7, b"abc").addCallback(answers.append)
    p.one.forward(2, 7, b"def").addCallback(answers.append)
    p.one.send_raft(2, [_heartbeat(1)])
    p.clock.advance(0)  # node 1's turn ends: one flush
    assert len(writes[1]) == 1
    p.settle()
    assert answers == [b"ABC", b"DEF"] and p.received[2] and p.received[1]
    # node 2 answered both forwards and sent its own Raft batch in the same turn: one write
    assert len(writes[2]) == 1
    assert p.one.stats[2].raft_batches_sent == 1 and p.two.stats[1].raft_batches_sent == 1


def test_wrong_secret_never_connects():
    p = Pair(secret_2=b"another-secret-of-32-bytes-long!")
    assert not p.one.connected(2) and not p.two.connected(1)
    assert p.client.closed or p.server.closed


def test_forward_answers_and_remote_errors():
    p = Pair()
    p.two.on_forward(lambda group, payload: payload[::-1] if payload != b"boom"
                     else 1 / 0)
    answers = []
    p.one.forward(2, 7, b"abc").addBoth(answers.append)
    p.one.forward(2, 7, b"boom").addBoth(answers.append)
    p.settle()
    assert answers[0] == b"cba"
    assert answers[1].check(ForwardFailed) and "ZeroDivisionError" in str(answers[1].value)
    assert p.two.stats[1].forwards_received == 2


def test_a_turns_forwards_travel_in_one_box_and_their_answers_in_another():
    p = Pair()
    later = {}

    def handler(group, payload):
        if payload.startswith(b"slow"):
            later[payload] = defer.Deferred()
            return later[payload]
        return b"%d:" % group + payload

    p.two.on_forward(handler)
    boxes = {"sent": 0, "answered": 0}
    send, answer = p.client.callRemote, p.server.callRemote

    def counting(real, key):
        def call(command, **kw):
            boxes[key] += 1
            return real(command, **kw)
        return call
    p.client.callRemote = counting(send, "sent")
    p.server.callRemote = counting(answer, "answered")
    answers = {}
    for i in range(50):
        p.one.forward(2, i % 4, b"q%d" % i).addBoth(lambda r, i=i: answers.__setitem__(i, r))
    p.one.forward(2, 9, b"slow").addBoth(lambda r: answers.__setitem__("slow", r))
    p.settle()
    assert boxes == {"sent": 1, "answered": 1}  # 51 requests, 50 answers: one box each way
    assert answers == {i: b"%d:q%d" % (i % 4, i) for i in range(50)}
    later[b"slow"].callback(b"done")
    p.settle()
    assert answers["slow"] == b"done" and boxes["answered"] == 2
    assert p.two.stats[1].forwards_received == 51


def test_forward_times_out_on_the_clock():
    p = Pair()
    p.two.on_forward(lambda group, payload: defer.Deferred())  # never answers
    answers = []
    p.one.forward(2, 1, b"x", timeout=0.3).addBoth(answers.append)
    p.advance(0.2, step=0.05)
    assert answers == []
    p.advance(0.15, step=0.05)
    assert answers[0].check(ForwardTimeout)
    assert p.one.connected(2)


def test_forward_fails_when_the_connection_is_lost():
    p = Pair()
    p.two.on_forward(lambda group, payload: defer.Deferred())
    answers = []
    p.one.forward(2, 1, b"x").addBoth(answers.append)
    p.settle()
    p.server.drop()
    p.settle()
    assert answers[0].check(PeerUnavailable)
    assert not p.one.connected(2)


@pytest.mark.parametrize("pump", [True, False])
def test_pings_keep_a_connection_up_and_a_silent_peer_is_dropped(pump):
    p = Pair(ping_interval=1.0, idle_timeout=10.0)
    p.advance(12, step=0.5, pump=pump)
    # pumped: pings flow both ways and the connection stays up; not pumped (a frozen peer:
    # nothing arrives), the idle check drops it after idle_timeout
    assert p.client.closed is not pump
    p.settle()  # the abort is carried out
    assert p.one.connected(2) is pump
