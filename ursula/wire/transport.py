"""`PeerTransport`: every peer connection of one node (one core), over AMP on TCP or TLS.

What lives here: which connection is current for each peer, dialing with reconnect and
exponential back-off (`ClientService` + `backoffPolicy`), the deterministic rule that makes
exactly one connection per pair (the node with the lower id dials, the other only accepts),
the per-peer Raft queue that coalesces everything sent in one reactor turn into as few
`RaftBatch` calls as possible (each capped near 1 MiB), request forwarding (the requests of a
turn in one `ForwardBatch`, their answers in `ForwardAnswers`) with fail-fast and timeouts, handler registration and counters. It provides ``IPeerTransport``
(``ursula.wire.interfaces``); ``ursula.wire.fake.FakePeerTransport`` is its fake.

The payloads are opaque bytes; the node runtime (``ursula.core``) encodes them.

May import: Twisted, zope.interface, the standard library, ``ursula.loop`` and
``ursula.wire.*``.  Not ``ursula.stream`` or ``ursula.http``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.internet.endpoints import clientFromString, serverFromString, wrapClientTLS
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import implementer

from ursula.loop import Timeouts
from ursula.wire.arguments import RAFT_BATCH_CAP, item_size, split_items
from ursula.wire.commands import (
    ForwardAnswers,
    ForwardBatch,
    ForwardFailed,
    ForwardTimeout,
    PeerUnavailable,
    RaftBatch,
    pack_forward,
    unpack_forward,
)
from ursula.wire.interfaces import IPeerTransport
from ursula.wire.protocol import PeerProtocol

log = Logger()

RaftItem = tuple[int, bytes]
#: While a peer's socket buffer is full, Raft messages bigger than this are dropped, not queued.
SHED_ABOVE = 64 * 1024
#: Longest error text sent back in a FORWARD_FAILED answer.
_MAX_ERROR_TEXT = 2000


@dataclass
class PeerStats:
    """Counters for one peer, for metrics.  Bytes are AMP bytes (after TLS is removed)."""

    bytes_sent: int = 0
    bytes_received: int = 0
    raft_messages_sent: int = 0
    raft_messages_received: int = 0
    raft_batches_sent: int = 0
    raft_batches_received: int = 0
    raft_messages_dropped: int = 0
    forwards_sent: int = 0
    forwards_received: int = 0
    forwards_failed: int = 0
    connects: int = 0
    handshake_failures: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class _Pending:
    """A forwarded request waiting for its answer (on the connection it was sent on)."""

    __slots__ = ("proto", "result", "timer")

    def __init__(self, proto, result: defer.Deferred):
        self.proto = proto
        self.result = result
        self.timer = None


class _AcceptFactory(Factory):
    def __init__(self, owner: PeerTransport):
        self.owner = owner

    def buildProtocol(self, addr):
        proto = PeerProtocol(self.owner, dialer=False)
        self.owner._all.add(proto)
        return proto


class _DialFactory(Factory):
    def __init__(self, owner: PeerTransport, peer_id: int):
        self.owner = owner
        self.peer_id = peer_id

    def buildProtocol(self, addr):
        proto = PeerProtocol(self.owner, dialer=True, expected_peer=self.peer_id)
        self.owner._all.add(proto)
        return proto


@implementer(IPeerTransport)
class PeerTransport:
    """All peer connections of node `node_id`.

    `peers` maps node id -> client endpoint string (``tcp:host=10.0.0.2:port=4438``, or
    ``ssl:...`` for TLS configured in the string); an entry for `node_id` itself is ignored.
    `secret` is the shared cluster secret (at least 16 bytes; use 32 random bytes).
    `tls_options`, if given, is a `twisted.internet.ssl.CertificateOptions` (or any
    ``IOpenSSLContextFactory``) used for both dialing and accepting; then give ``tcp:``
    strings, not ``ssl:`` ones.  The HMAC handshake runs in every case.

    Lifecycle: `listen()` (accept), `start()` (dial peers with a higher id), `stop()`.
    """

    def __init__(self, node_id: int, peers: Mapping[int, str], secret: bytes, reactor,
                 tls_options=None, *, forward_timeout: float = 5.0,
                 handshake_timeout: float = 10.0, ping_interval: float = 1.0,
                 idle_timeout: float = 10.0, backoff_initial: float = 0.1,
                 backoff_max: float = 10.0, backoff_factor: float = 2.0,
                 batch_cap: int = RAFT_BATCH_CAP):
        if not isinstance(secret, bytes) or len(secret) < 16:
            raise ValueError("the cluster secret must be at least 16 bytes")
        if node_id <= 0:
            raise ValueError("node ids are positive integers")
        self.node_id = node_id
        self.peers = {int(p): endpoint for p, endpoint in peers.items() if int(p) != node_id}
        self.secret = secret
        self.reactor = reactor
        self.timeouts = Timeouts(reactor)  # forward timeouts: one reactor timer for all
        self._forward_ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}  # forward id -> waiting request
        self._forward_out: dict[PeerProtocol, list[RaftItem]] = {}  # requests of this turn
        self._answer_out: dict[PeerProtocol, list[RaftItem]] = {}  # answers of this turn
        self.tls_options = tls_options
        self.forward_timeout = forward_timeout
        self.handshake_timeout = handshake_timeout
        self.ping_interval = ping_interval
        self.idle_timeout = idle_timeout
        self.batch_cap = batch_cap
        self._backoff = backoffPolicy(backoff_initial, backoff_max, backoff_factor,
                                      jitter=lambda: 0.0)
        self._backoff_initial = backoff_initial
        self.stats: dict[int, PeerStats] = {p: PeerStats() for p in self.peers}
        self._conns: dict[int, PeerProtocol] = {}
        self._all: set[PeerProtocol] = set()
        self._services: dict[int, ClientService] = {}
        self._auth_failures: dict[int, int] = dict.fromkeys(self.peers, 0)
        self._ports: list = []
        self._outbox: dict[int, list[RaftItem]] = {}
        self._flush_call = None
        self._waiters: dict[int, list[defer.Deferred]] = {}
        self._raft_handler: Callable[[int, list[RaftItem]], Any] | None = None
        self._forward_handler: Callable[[int, bytes], Any] | None = None
        self._stopped = False
        self._started = False

    # -- handler registration ---------------------------------------------------------------

    def on_raft(self, callback: Callable[[int, list[RaftItem]], Any]) -> None:
        """`callback(peer_id, [(group, message bytes), ...])` for every received batch."""
        self._raft_handler = callback

    def on_forward(self, callback: Callable[[int, bytes], Any]) -> None:
        """`callback(group, payload) -> bytes | Deferred[bytes]` answers a forwarded request.

        Raising (or failing) sends FORWARD_FAILED with the error text to the caller; encode
        expected errors (not leader, bad request...) inside the answer payload instead.
        """
        self._forward_handler = callback

    # -- lifecycle --------------------------------------------------------------------------

    def listen(self, endpoint_string: str) -> defer.Deferred:
        """Accept peer connections on `endpoint_string` (e.g. ``tcp:4438:interface=10.0.0.1``)."""
        factory: Any = _AcceptFactory(self)
        if self.tls_options is not None:
            from twisted.protocols.tls import TLSMemoryBIOFactory

            factory = TLSMemoryBIOFactory(self.tls_options, False, factory)
        d = serverFromString(self.reactor, endpoint_string).listen(factory)
        d.addCallback(self._listening)
        return d

    def _listening(self, port):
        self._ports.append(port)
        return port

    def start(self) -> None:
        """Dial every peer with a higher node id, reconnecting with back-off (idempotent)."""
        self._stopped = False
        self._started = True
        for peer_id, endpoint_string in sorted(self.peers.items()):
            if peer_id <= self.node_id or peer_id in self._services:
                continue
            endpoint = clientFromString(self.reactor, endpoint_string)
            if self.tls_options is not None:
                endpoint = wrapClientTLS(self.tls_options, endpoint)
            service = ClientService(endpoint, _DialFactory(self, peer_id),
                                    retryPolicy=self._policy_for(peer_id), clock=self.reactor)
            self._services[peer_id] = service
            service.startService()

    def set_peer(self, peer_id: int, endpoint_string: str) -> None:
        """Add a peer, or change where it is (a node that joined, or moved to a new address):
        its dialing restarts at the new endpoint and an open connection to the old one is
        dropped; from now on it may dial us too (``_accepts``)."""
        peer_id = int(peer_id)
        if peer_id == self.node_id:
            return
        if self.peers.get(peer_id) == endpoint_string:
            return
        self.peers[peer_id] = endpoint_string
        self.stats.setdefault(peer_id, PeerStats())
        self._auth_failures.setdefault(peer_id, 0)
        service = self._services.pop(peer_id, None)
        if service is not None:
            service.stopService()
        proto = self._conns.get(peer_id)
        if proto is not None and proto.dialer:
            proto.drop()
        if self._started and not self._stopped:
            self.start()

    def _policy_for(self, peer_id: int) -> Callable[[int], float]:
        # ClientService counts failed TCP connects; a connection that is made but fails the
        # handshake resets its count, so add our own count of handshake failures.
        def policy(attempt: int) -> float:
            return self._backoff(attempt - 1 + self._auth_failures.get(peer_id, 0))
        return policy

    def stop(self, grace: float = 5.0) -> defer.Deferred:
        """Stop dialing and listening and close every connection; fires when all are closed.

        Connections still open after `grace` seconds (a peer not reading) are aborted.
        """
        self._stopped = True
        self.timeouts.stop()
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        self._outbox.clear()
        # Close our connections ourselves first (PeerProtocol.drop unregisters its producer,
        # which ClientService.stopService would not do), then stop dialing and listening.
        waits = []
        for proto in list(self._all):
            if not proto.lost.called:
                waits.append(proto.lost)
                proto.drop(abort=False)
        waits += [defer.maybeDeferred(s.stopService) for s in self._services.values()]
        self._services.clear()
        waits += [defer.maybeDeferred(port.stopListening) for port in self._ports]
        self._ports.clear()
        for waiters in self._waiters.values():
            for w in waiters:
                w.errback(PeerUnavailable("transport stopped"))
        self._waiters.clear()
        lingering = [p for p in self._all if not p.lost.called]

        def abort_lingering():
            for proto in lingering:
                if not proto.lost.called and proto.transport is not None:
                    proto.transport.abortConnection()

        deadline = self.reactor.callLater(grace, abort_lingering)
        done = defer.DeferredList(waits, consumeErrors=True)

        def finished(_):
            if deadline.active():
                deadline.cancel()

        return done.addCallback(finished)

    # -- state ------------------------------------------------------------------------------

    def connected(self, peer_id: int) -> bool:
        """True while an authenticated connection to `peer_id` is up."""
        return peer_id in self._conns

    def connected_peers(self) -> list[int]:
        return sorted(self._conns)

    def when_connected(self, peer_id: int) -> defer.Deferred:
        """Fires (with None) when `peer_id` is connected; immediately if it already is."""
        if peer_id in self._conns:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._waiters.setdefault(peer_id, []).append(d)
        return d

    def peer_address(self, peer_id: int):
        proto = self._conns.get(peer_id)
        return None if proto is None else proto.transport.getPeer()

    # -- Raft -------------------------------------------------------------------------------

    def send_raft(self, peer_id: int, items: Sequence[RaftItem]) -> None:
        """Queue ``(group, encoded message)`` items for `peer_id`; never blocks or raises for
        a down peer.  Everything queued in one reactor turn leaves in as few `RaftBatch` calls
        as the 1 MiB cap allows.  Items for a disconnected peer are dropped (Raft retries)."""
        if peer_id not in self.peers:
            raise ValueError(f"unknown peer {peer_id}")
        if not items:
            return
        if peer_id not in self._conns or self._stopped:
            self.stats[peer_id].raft_messages_dropped += len(items)
            return
        self._outbox.setdefault(peer_id, []).extend(items)
        self._schedule_flush()

    def flush(self) -> None:
        """Send what `send_raft` queued now (normally called by the reactor once per turn)."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        corked = list(self._all)
        for proto in corked:
            proto.cork()  # what this turn sends one peer leaves in one write
        try:
            self._flush_boxes()
        finally:
            for proto in corked:
                proto.uncork()

    def _flush_boxes(self) -> None:
        self._flush_forwards()
        outbox, self._outbox = self._outbox, {}
        for peer_id, items in outbox.items():
            stats = self.stats[peer_id]
            proto = self._conns.get(peer_id)
            if proto is None or proto.closed:
                stats.raft_messages_dropped += len(items)
                continue
            if proto.write_paused:
                # Still backed up from an earlier turn: the peer is not keeping up.  Shed big
                # messages (Raft resends them), keep heartbeats and votes flowing.  What one
                # turn produces otherwise goes out, so the buffer holds about a turn's worth.
                kept = [item for item in items if item_size(item[1]) <= SHED_ABOVE]
                stats.raft_messages_dropped += len(items) - len(kept)
                items = kept
            for batch in split_items(items, self.batch_cap):
                try:
                    proto.callRemote(RaftBatch, node_id=self.node_id, items=batch)
                except Exception:  # noqa: BLE001 - connection went away mid-flush
                    stats.raft_messages_dropped += len(batch)
                    continue
                stats.raft_batches_sent += 1
                stats.raft_messages_sent += len(batch)

    def _raft_received(self, peer_id: int, items: list[RaftItem]) -> None:
        if self._raft_handler is None:
            return
        try:
            self._raft_handler(peer_id, items)
        except Exception:  # noqa: BLE001 - a handler bug must not kill the connection
            log.failure("wire: raft handler raised for a batch from node {peer}", peer=peer_id)

    # -- forwarding -------------------------------------------------------------------------

    def forward(self, peer_id: int, group: int, payload: bytes,
                timeout: float | None = None) -> defer.Deferred:
        """Send `payload` to the forward handler of `peer_id`; fires with its answer bytes.

        Everything forwarded to one peer in a reactor turn leaves in one `ForwardBatch` box,
        and the peer sends the answers of each of its turns in one `ForwardAnswers` box.
        Fails with `PeerUnavailable` at once if the peer is not connected (or when the
        connection is lost before the answer), `ForwardTimeout` after `timeout` seconds
        (default `forward_timeout`), `ForwardFailed` if the remote handler raised.
        """
        proto = self._conns.get(peer_id)
        if proto is None or proto.closed:
            if peer_id in self.stats:
                self.stats[peer_id].forwards_failed += 1
            return defer.fail(PeerUnavailable(f"peer {peer_id} is not connected"))
        self.stats[peer_id].forwards_sent += 1
        limit = self.forward_timeout if timeout is None else timeout
        fid = next(self._forward_ids)
        pending = _Pending(proto, defer.Deferred())
        pending.timer = self.timeouts.call_later(limit, self._forward_timed_out, fid, limit)
        self._pending[fid] = pending
        self._forward_out.setdefault(proto, []).append((fid, pack_forward(group, payload)))
        self._schedule_flush()
        return pending.result

    def _schedule_flush(self) -> None:
        if self._flush_call is None and not self._stopped:
            self._flush_call = self.reactor.callLater(0, self.flush)

    def _fail_forward(self, fid: int, error: Exception) -> None:
        pending = self._pending.pop(fid, None)
        if pending is None:
            return
        pending.timer.cancel()
        self.stats[pending.proto.peer_id].forwards_failed += 1
        pending.result.errback(error)

    def _forward_timed_out(self, fid: int, limit: float) -> None:
        pending = self._pending.get(fid)
        if pending is not None:
            self._fail_forward(fid, ForwardTimeout(
                f"no answer from peer {pending.proto.peer_id} within {limit} s"))

    def _answers_received(self, proto: PeerProtocol, items: list[RaftItem]) -> None:
        for fid, data in items:
            pending = self._pending.get(fid)
            if pending is None or pending.proto is not proto:
                continue  # timed out already (or a stray id): the answer is late
            del self._pending[fid]
            pending.timer.cancel()
            if data[:1] == b"\x00":
                pending.result.callback(data[1:])
            else:
                self.stats[proto.peer_id].forwards_failed += 1
                pending.result.errback(ForwardFailed(data[1:].decode("utf-8", "replace")))

    def _forwards_received(self, proto: PeerProtocol, items: list[RaftItem]) -> None:
        handler = self._forward_handler
        for fid, data in items:
            try:
                group, payload = unpack_forward(data)
            except ValueError as error:
                self._answer(proto, fid, b"\x01" + str(error).encode())
                continue
            if handler is None:
                self._answer(proto, fid, b"\x01no forward handler on this node")
                continue
            # the handler called directly, its Deferred (if any) given one callback pair: a
            # forwarded request is every write that reaches a follower
            try:
                result = handler(group, payload)
            except Exception:  # noqa: BLE001 - answered as a failure, logged
                self._forward_failed(Failure(), proto, fid, group)
                continue
            if isinstance(result, defer.Deferred):
                result.addCallbacks(self._forward_done, self._forward_failed,
                                    callbackArgs=(proto, fid, group),
                                    errbackArgs=(proto, fid, group))
            else:
                self._forward_done(result, proto, fid, group)

    def _forward_done(self, result, proto: PeerProtocol, fid: int, group: int) -> None:
        if isinstance(result, bytes):
            self._answer(proto, fid, b"\x00" + result)
        else:
            self._forward_failed(Failure(TypeError(
                f"forward handler returned {type(result).__name__}, not bytes")), proto, fid,
                group)

    def _forward_failed(self, failure, proto: PeerProtocol, fid: int, group: int) -> None:
        if not failure.check(ForwardFailed):
            log.failure("wire: forward handler failed (group {group}, from node {peer})",
                        failure=failure, group=group, peer=proto.peer_id)
        self._answer(proto, fid, b"\x01" + _error_text(failure).encode())

    def _answer(self, proto: PeerProtocol, fid: int, data: bytes) -> None:
        if proto.closed or self._stopped:
            return  # the asker fails its request when it sees the connection go
        self._answer_out.setdefault(proto, []).append((fid, data))
        self._schedule_flush()

    def _flush_forwards(self) -> None:
        for outbox, command in ((self._forward_out, ForwardBatch),
                                (self._answer_out, ForwardAnswers)):
            if not outbox:
                continue
            queued = dict(outbox)
            outbox.clear()
            for proto, items in queued.items():
                if proto.closed:
                    if command is ForwardBatch:
                        for fid, _ in items:
                            self._fail_forward(fid, PeerUnavailable(
                                f"connection to peer {proto.peer_id} lost before the answer"))
                    continue
                for batch in split_items(items, self.batch_cap):
                    try:
                        proto.callRemote(command, items=batch)
                    except Exception:  # noqa: BLE001 - connection went away mid-flush
                        if command is ForwardBatch:
                            for fid, _ in batch:
                                self._fail_forward(fid, PeerUnavailable(
                                    f"connection to peer {proto.peer_id} lost"))

    # -- connection bookkeeping (called by PeerProtocol) ------------------------------------

    def _accepts(self, peer_id: int) -> bool:
        return peer_id in self.peers and peer_id < self.node_id and not self._stopped

    def _stats_for(self, peer_id: int) -> PeerStats:
        return self.stats[peer_id]

    def _peer_up(self, proto: PeerProtocol) -> None:
        peer_id = proto.peer_id
        assert peer_id is not None
        if self._stopped:
            proto.drop(abort=False)
            return
        self._auth_failures[peer_id] = 0
        old = self._conns.get(peer_id)
        if old is not None and old is not proto:
            log.info("wire: node {peer} reconnected; closing its previous connection",
                     peer=peer_id)
            old.drop()
        self._conns[peer_id] = proto
        self.stats[peer_id].connects += 1
        log.info("wire: node {me} connected to node {peer} ({role})", me=self.node_id,
                 peer=peer_id, role="dialed" if proto.dialer else "accepted")
        for waiter in self._waiters.pop(peer_id, []):
            waiter.callback(None)

    def _connection_lost(self, proto: PeerProtocol) -> None:
        self._all.discard(proto)
        self._answer_out.pop(proto, None)
        for fid in [f for f, p in self._pending.items() if p.proto is proto]:
            self._fail_forward(fid, PeerUnavailable(
                f"connection to peer {proto.peer_id} lost before the answer"))
        if self._conns.get(proto.peer_id) is proto:
            del self._conns[proto.peer_id]
            log.info("wire: node {me} lost its connection to node {peer}", me=self.node_id,
                     peer=proto.peer_id)
        elif proto.dialer and not proto.authenticated and proto.peer_id in self._auth_failures:
            self._auth_failures[proto.peer_id] += 1
            self.stats[proto.peer_id].handshake_failures += 1


def _error_text(failure) -> str:
    value = failure.value
    if isinstance(value, ForwardFailed | amp.RemoteAmpError):
        text = str(value)
    else:
        text = f"{type(value).__name__}: {value}"
    return text[:_MAX_ERROR_TEXT]
