"""``FakeNetwork`` and ``FakePeerTransport``: in-process peers on a clock, for tests.

Several nodes' runtimes, each with a ``FakePeerTransport`` on one ``FakeNetwork``, talk as if
over the real transport: Raft items queued in one turn leave together (a ``callLater(0)``, as
``PeerTransport`` coalesces), every delivery and every forwarded request's answer goes through
the clock (``latency`` seconds), and forwards time out like the real ones. Faults:

* ``freeze(n)``: nothing reaches node ``n`` and nothing it sends arrives (a SIGSTOPped process:
  its connections stay up, so ``connected`` stays True and forwards to it just go unanswered);
* ``disconnect(a, b)`` / ``reconnect(a, b)``: the connection is down (forwards fail at once,
  outstanding ones with ``PeerUnavailable``).

May import: Twisted, zope.interface and ``ursula.wire``.
"""

from __future__ import annotations

from twisted.internet import defer
from zope.interface import implementer

from ursula.wire.commands import ForwardFailed, ForwardTimeout, PeerUnavailable
from ursula.wire.interfaces import IPeerTransport


class FakeNetwork:
    def __init__(self, clock, latency: float = 0.0):
        self.clock = clock
        self.latency = latency
        self.transports: dict[int, FakePeerTransport] = {}
        self.frozen: set[int] = set()
        self.cut: set[frozenset] = set()

    def transport(self, node_id: int, forward_timeout: float = 5.0) -> FakePeerTransport:
        t = FakePeerTransport(self, node_id, forward_timeout)
        self.transports[node_id] = t
        return t

    # -- faults --------------------------------------------------------------------------------

    def freeze(self, node_id: int) -> None:
        self.frozen.add(node_id)

    def thaw(self, node_id: int) -> None:
        self.frozen.discard(node_id)

    def disconnect(self, a: int, b: int) -> None:
        self.cut.add(frozenset((a, b)))
        for src, dst in ((a, b), (b, a)):
            self.transports[src]._lost(dst)

    def reconnect(self, a: int, b: int) -> None:
        self.cut.discard(frozenset((a, b)))

    # -- delivery ------------------------------------------------------------------------------

    def connected(self, a: int, b: int) -> bool:
        return (a != b and b in self.transports and frozenset((a, b)) not in self.cut
                and not self.transports[b].stopped)

    def passes(self, src: int, dst: int) -> bool:
        return (self.connected(src, dst) and src not in self.frozen
                and dst not in self.frozen)

    def later(self, fn, *args) -> None:
        self.clock.callLater(self.latency, fn, *args)


@implementer(IPeerTransport)
class FakePeerTransport:
    def __init__(self, network: FakeNetwork, node_id: int, forward_timeout: float = 5.0):
        self.network = network
        self.node_id = node_id
        self.forward_timeout = forward_timeout
        self.stopped = False
        self.forwards: list[tuple[int, int, bytes]] = []  # (peer, group, payload) sent
        self._raft_handler = None
        self._forward_handler = None
        self._outbox: dict[int, list] = {}
        self._flush_call = None
        self._outstanding: dict[int, set[defer.Deferred]] = {}

    def set_peer(self, peer_id: int, endpoint_string: str) -> None:
        self.addresses = {**getattr(self, "addresses", {}), peer_id: endpoint_string}

    def on_raft(self, callback) -> None:
        self._raft_handler = callback

    def on_forward(self, callback) -> None:
        self._forward_handler = callback

    def listen(self, endpoint_string: str):
        return defer.succeed(None)

    def start(self) -> None:
        self.stopped = False

    def stop(self):
        self.stopped = True
        for peer in list(self._outstanding):
            self._lost(peer)
        return defer.succeed(None)

    def connected(self, peer_id: int) -> bool:
        return not self.stopped and self.network.connected(self.node_id, peer_id)

    def connected_peers(self) -> list:
        return sorted(p for p in self.network.transports if self.connected(p))

    # -- Raft ------------------------------------------------------------------------------------

    def send_raft(self, peer_id: int, items) -> None:
        if not items or not self.connected(peer_id):
            return
        self._outbox.setdefault(peer_id, []).extend(items)
        if self._flush_call is None:
            self._flush_call = self.network.clock.callLater(0, self.flush)

    def flush(self) -> None:
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        outbox, self._outbox = self._outbox, {}
        for peer_id, items in outbox.items():
            if self.network.passes(self.node_id, peer_id):
                self.network.later(self.network.transports[peer_id]._raft_arrived,
                                   self.node_id, items)

    def _raft_arrived(self, src: int, items) -> None:
        if self.network.passes(src, self.node_id) and self._raft_handler is not None:
            self._raft_handler(src, list(items))

    # -- forwarding ------------------------------------------------------------------------------

    def forward(self, peer_id: int, group: int, payload: bytes, timeout=None):
        if not self.connected(peer_id):
            return defer.fail(PeerUnavailable(f"peer {peer_id} is not connected"))
        self.forwards.append((peer_id, group, payload))
        d = defer.Deferred()
        self._outstanding.setdefault(peer_id, set()).add(d)
        limit = self.forward_timeout if timeout is None else timeout
        network = self.network
        if network.passes(self.node_id, peer_id):
            network.later(network.transports[peer_id]._forward_arrived, self.node_id, group,
                          payload, d)

        def done(result):
            self._outstanding.get(peer_id, set()).discard(d)
            return result

        def timed_out(failure):
            failure.trap(defer.TimeoutError)
            raise ForwardTimeout(f"no answer from peer {peer_id} within {limit} s")

        return d.addBoth(done).addTimeout(limit, network.clock).addErrback(timed_out)

    def _forward_arrived(self, src: int, group: int, payload: bytes, answer: defer.Deferred):
        if not self.network.passes(src, self.node_id):
            return
        if self._forward_handler is None:
            d = defer.fail(ForwardFailed("no forward handler on this node"))
        else:
            d = defer.maybeDeferred(self._forward_handler, group, payload)

        def reply(result):
            if self.network.passes(self.node_id, src) and not answer.called:
                self.network.later(_fire, answer, result)
        d.addBoth(lambda result: reply(result if isinstance(result, bytes) else
                                       ForwardFailed(str(getattr(result, "value", result)))))

    def _lost(self, peer_id: int) -> None:
        for d in list(self._outstanding.pop(peer_id, ())):
            if not d.called:
                d.errback(PeerUnavailable(f"connection to peer {peer_id} lost before the answer"))


def _fire(d: defer.Deferred, result) -> None:
    if d.called:
        return
    if isinstance(result, Exception):
        d.errback(result)
    else:
        d.callback(result)
