"""``IPeerTransport``: what the node runtime asks of its peer transport.

``ursula.wire.transport.PeerTransport`` is the real one (AMP over TCP or TLS);
``ursula.wire.fake.FakePeerTransport`` connects in-process nodes through a ``FakeNetwork``
driven by a clock, for deterministic tests of the runtime.

May import: zope.interface.
"""

from __future__ import annotations

from zope.interface import Interface


class IPeerTransport(Interface):
    """Every peer connection of one node: Raft batches (fire and forget) and forwarding."""

    def on_raft(callback) -> None:
        """``callback(peer_id, [(group, message bytes), ...])`` for every received batch."""

    def on_forward(callback) -> None:
        """``callback(group, payload) -> bytes | Deferred[bytes]`` answers a forwarded request."""

    def send_raft(peer_id: int, items) -> None:
        """Queue ``(group, encoded message)`` items for ``peer_id``; everything queued in one
        reactor turn leaves together (the transport's own ``callLater(0)``). Never raises for
        a down peer: the items are dropped (Raft retries)."""

    def forward(peer_id: int, group: int, payload: bytes, timeout=None) -> object:
        """A Deferred firing with the peer's answer bytes; fails with ``PeerUnavailable``
        (not connected, or the connection was lost), ``ForwardTimeout``, ``ForwardFailed``."""

    def connected(peer_id: int) -> bool:
        """True while a connection to ``peer_id`` is up."""

    def connected_peers() -> list:
        """The ids of the connected peers, sorted."""

    def listen(endpoint_string: str) -> object:
        """Accept peer connections; a Deferred firing with the listening port."""

    def start() -> None:
        """Dial the peers (with reconnect)."""

    def stop() -> object:
        """Close everything; a Deferred firing when closed."""
