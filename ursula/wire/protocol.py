"""One authenticated AMP connection between two peers: `PeerProtocol`.

What lives here: the handshake (`Hello` / `Prove`, both directions, before anything else is
accepted), the gate that drops a connection on any other command before that, the handshake
deadline and the idle check (`Ping`), byte counters, and the responders for `RaftBatch`,
`ForwardBatch` and `ForwardAnswers`.  Everything that is about *peers* rather than one connection (which connection is
current, queues, handlers) is delegated to the owner, a
`ursula.wire.transport.PeerTransport`.

Boxes go straight to the socket (``ursula.loop.DirectWriter``); while the owner flushes a
turn's traffic the connection is corked (``cork`` / ``uncork``), so what a turn sends a peer
leaves in one write.

May import: Twisted, the standard library, ``ursula.wire.*`` and ``ursula.loop``.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer, task
from twisted.internet.error import ConnectionLost
from twisted.logger import Logger
from twisted.protocols import amp

from ursula.loop import DirectWriter
from ursula.wire.commands import (
    HANDSHAKE_COMMANDS,
    NONCE_SIZE,
    PROTOCOL_VERSION,
    ForwardAnswers,
    ForwardBatch,
    ForwardFailed,
    HandshakeRejected,
    Hello,
    Ping,
    Prove,
    RaftBatch,
    proofs_match,
)
from ursula.wire.commands import proof as make_proof

log = Logger()

#: An acceptor drops a connection that sends more than this before it is authenticated.
PREAUTH_BYTE_LIMIT = 16 * 1024



def no_delay(transport) -> None:
    """TCP_NODELAY: a Raft batch or a forwarded answer is one small write that must leave at
    once; Nagle's algorithm would hold it behind the peer's delayed ACK (up to 40 ms)."""
    for candidate in (transport, getattr(transport, "transport", None)):
        setter = getattr(candidate, "setTcpNoDelay", None)
        if setter is not None:
            try:
                setter(True)
            except OSError:  # not a TCP socket (a unix socket)
                pass
            return

class PeerProtocol(amp.AMP):
    """An AMP connection to one peer.  `dialer` is True on the side that connected."""

    def __init__(self, owner: Any, dialer: bool, expected_peer: int | None = None):
        super().__init__()
        self.owner = owner
        self.dialer = dialer
        self.peer_id: int | None = expected_peer
        self.authenticated = False
        self.closed = False
        self.lost = defer.Deferred()
        self.stats: Any = None
        self._pre_in = 0
        self._pre_out = 0
        self._my_nonce = b""
        self._their_nonce = b""
        self._rejected = False
        self._deadline = None
        self._pinger: task.LoopingCall | None = None
        self._last_in = 0.0
        self._last_out = 0.0
        #: True while the transport's write buffer is full (we are its streaming producer).
        self.write_paused = False
        self._writer: DirectWriter | None = None
        self._corked: list[bytes] | None = None  # boxes held until ``uncork``

    # -- plumbing -------------------------------------------------------------------------

    def _address(self) -> str:
        try:
            peer = self.transport.getPeer()
            return f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"
        except Exception:  # noqa: BLE001 - a closed transport has no address
            return "<unknown>"

    def drop(self, abort: bool = True) -> None:
        if self.transport is None or self.closed:
            return
        self.closed = True
        self._unregister()
        if abort:
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    def _unregister(self) -> None:
        # A registered producer keeps a TLS transport (and a paused TCP one) from closing:
        # unregister before every close.
        try:
            self.transport.unregisterProducer()
        except Exception:  # noqa: BLE001 - already gone
            pass

    def lengthLimitExceeded(self, length) -> None:
        self._unregister()
        super().lengthLimitExceeded(length)

    # IPushProducer: the transport tells us when its write buffer is full, so the owner can
    # shed big Raft batches instead of buffering without bound behind a slow peer.
    def pauseProducing(self) -> None:
        self.write_paused = True

    def resumeProducing(self) -> None:
        self.write_paused = False

    def stopProducing(self) -> None:
        self.write_paused = True

    def connectionMade(self) -> None:
        no_delay(self.transport)
        self._writer = DirectWriter(self.transport)
        self.transport.registerProducer(self, True)
        reactor = self.owner.reactor
        self._last_in = self._last_out = reactor.seconds()
        self._deadline = reactor.callLater(self.owner.handshake_timeout, self._handshake_expired)
        if self.dialer:
            self._start_handshake()

    def connectionLost(self, reason) -> None:
        self.closed = True
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        if self._pinger is not None and self._pinger.running:
            self._pinger.stop()
        super().connectionLost(reason)
        self.owner._connection_lost(self)
        self.lost.callback(None)

    def dataReceived(self, data: bytes) -> None:
        n = len(data)
        self._last_in = self.owner.reactor.seconds()
        if self.stats is not None:
            self.stats.bytes_received += n
        else:
            self._pre_in += n
            if not self.dialer and self._pre_in > PREAUTH_BYTE_LIMIT:
                self._reject(f"sent {self._pre_in} bytes before authenticating")
                return
        if self.closed:
            return
        super().dataReceived(data)

    def sendBox(self, box) -> None:
        if self.transport is None:
            raise ConnectionLost()
        data = box.serialize()
        if self.stats is not None:
            self.stats.bytes_sent += len(data)
        else:
            self._pre_out += len(data)
        self._last_out = self.owner.reactor.seconds()
        if self._corked is not None:
            self._corked.append(data)
        elif self._writer is not None:
            self._writer.write(data)
        else:
            self.transport.write(data)

    def cork(self) -> None:
        """Hold the boxes sent from now on until ``uncork``."""
        if self._corked is None:
            self._corked = []

    def uncork(self) -> None:
        """Send the boxes held since ``cork``, in one write."""
        held, self._corked = self._corked, None
        if held and self.transport is not None and not self.closed:
            data = held[0] if len(held) == 1 else b"".join(held)
            if self._writer is not None:
                self._writer.write(data)
            else:
                self.transport.write(data)

    # -- the gate ---------------------------------------------------------------------------

    def locateResponder(self, name):
        if not self.authenticated and (self.dialer or name not in HANDSHAKE_COMMANDS):
            self._reject(f"sent {name.decode('ascii', 'replace')!r} before authenticating")
            return None
        return super().locateResponder(name)

    def _reject(self, why: str) -> None:
        if not self._rejected:
            self._rejected = True
            log.warn("wire: dropping unauthenticated peer {address} (claims node {peer}): {why}",
                     address=self._address(), peer=self.peer_id, why=why)
        self.drop()

    def _handshake_expired(self) -> None:
        self._deadline = None
        if not self.authenticated:
            self._reject(f"no handshake within {self.owner.handshake_timeout} s")

    # -- handshake, dialer side -------------------------------------------------------------

    def _start_handshake(self) -> None:
        self._my_nonce = os.urandom(NONCE_SIZE)
        d = self.callRemote(Hello, version=PROTOCOL_VERSION, node_id=self.owner.node_id,
                            nonce=self._my_nonce)
        d.addCallback(self._hello_answered)
        d.addCallback(self._prove_answered)
        d.addErrback(self._handshake_error)

    def _hello_answered(self, answer):
        if answer["version"] != PROTOCOL_VERSION:
            raise HandshakeRejected(f"peer speaks version {answer['version']}")
        if answer["node_id"] != self.peer_id:
            raise HandshakeRejected(f"expected node {self.peer_id}, "
                                    f"the peer says it is node {answer['node_id']}")
        if len(answer["nonce"]) != NONCE_SIZE:
            raise HandshakeRejected("bad nonce size")
        self._their_nonce = answer["nonce"]
        mine = make_proof(self.owner.secret, True, self.owner.node_id, self.peer_id,
                     self._my_nonce, self._their_nonce)
        return self.callRemote(Prove, proof=mine)

    def _prove_answered(self, answer):
        expected = make_proof(self.owner.secret, False, self.owner.node_id, self.peer_id,
                         self._my_nonce, self._their_nonce)
        if not proofs_match(expected, answer["proof"]):
            raise HandshakeRejected("the peer's proof is wrong (different cluster secret?)")
        self._authenticated()

    def _handshake_error(self, failure) -> None:
        if self.closed:
            log.info("wire: handshake with node {peer} at {address} ended: {why}",
                     peer=self.peer_id, address=self._address(),
                     why=failure.getErrorMessage())
            return
        self._reject(f"handshake failed: {failure.getErrorMessage()}")

    # -- handshake, acceptor side -----------------------------------------------------------

    @Hello.responder
    def _hello(self, version, node_id, nonce):
        if self.dialer or self.authenticated or self._my_nonce:
            self._reject("Hello out of order")
            raise HandshakeRejected("Hello out of order")
        self.peer_id = node_id
        problem = None
        if version != PROTOCOL_VERSION:
            problem = f"speaks protocol version {version}, we speak {PROTOCOL_VERSION}"
        elif not self.owner._accepts(node_id):
            problem = f"node {node_id} may not dial node {self.owner.node_id}"
        elif len(nonce) != NONCE_SIZE:
            problem = "bad nonce size"
        if problem is not None:
            self._reject_after_answer(problem)
            raise HandshakeRejected(problem)
        self._their_nonce = nonce
        self._my_nonce = os.urandom(NONCE_SIZE)
        return {"version": PROTOCOL_VERSION, "node_id": self.owner.node_id,
                "nonce": self._my_nonce}

    @Prove.responder
    def _prove(self, proof):
        if self.dialer or self.authenticated or not self._their_nonce:
            self._reject("Prove out of order")
            raise HandshakeRejected("Prove out of order")
        expected = make_proof(self.owner.secret, True, self.peer_id, self.owner.node_id,
                           self._their_nonce, self._my_nonce)
        if not proofs_match(expected, proof):
            self._reject_after_answer("wrong HMAC proof (different cluster secret?)")
            raise HandshakeRejected("wrong proof")
        mine = make_proof(self.owner.secret, False, self.peer_id, self.owner.node_id,
                       self._their_nonce, self._my_nonce)
        self._mark_authenticated()
        # Register next turn: our answer must be on the wire before anything else we send.
        self.owner.reactor.callLater(0, self._registered)
        return {"proof": mine}

    def _reject_after_answer(self, why: str) -> None:
        if not self._rejected:
            self._rejected = True
            log.warn("wire: dropping unauthenticated peer {address} (claims node {peer}): {why}",
                     address=self._address(), peer=self.peer_id, why=why)
        # Let the error answer go out first; the handshake deadline aborts a lingering socket.
        self.owner.reactor.callLater(0, self.drop, False)

    def _mark_authenticated(self) -> None:
        self.authenticated = True
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None
        self.stats = self.owner._stats_for(self.peer_id)
        self.stats.bytes_received += self._pre_in
        self.stats.bytes_sent += self._pre_out

    def _registered(self) -> None:
        if not self.closed:
            self._authenticated()

    def _authenticated(self) -> None:
        if not self.authenticated:
            self._mark_authenticated()
        self._pinger = task.LoopingCall(self._check_alive)
        self._pinger.clock = self.owner.reactor
        self._pinger.start(self.owner.ping_interval, now=False)
        self.owner._peer_up(self)

    def _check_alive(self) -> None:
        now = self.owner.reactor.seconds()
        if now - self._last_in > self.owner.idle_timeout:
            log.warn("wire: nothing from node {peer} at {address} for {idle:.1f} s; dropping",
                     peer=self.peer_id, address=self._address(), idle=now - self._last_in)
            self.drop()
        elif now - self._last_out >= self.owner.ping_interval:
            self.callRemote(Ping)

    # -- authenticated commands -------------------------------------------------------------

    @Ping.responder
    def _ping(self):
        return {}

    @RaftBatch.responder
    def _raft_batch(self, node_id, items):
        if node_id != self.peer_id:
            log.warn("wire: node {peer} sent a RaftBatch labelled node {label}; using {peer}",
                     peer=self.peer_id, label=node_id)
        self.stats.raft_batches_received += 1
        self.stats.raft_messages_received += len(items)
        self.owner._raft_received(self.peer_id, items)
        return {}

    @ForwardBatch.responder
    def _forward_batch(self, items):
        self.stats.forwards_received += len(items)
        self.owner._forwards_received(self, items)
        return {}

    @ForwardAnswers.responder
    def _forward_answers(self, items):
        self.owner._answers_received(self, items)
        return {}


__all__ = ["PeerProtocol", "PREAUTH_BYTE_LIMIT", "ForwardFailed"]
