"""ursula.wire: the peer transport, AMP over TCP (or TLS) between the nodes of a cluster.

What lives here: `PeerTransport` (connections, Raft batches, forwarding, live-read
subscriptions, counters) and the AMP commands and argument types it speaks.  See
``docs/wire.md``.

May import: Twisted, zope.interface, cbor2 and the standard library.  Not ``ursula.stream`` or
``ursula.http`` (payloads are opaque bytes the node runtime encodes).
"""

from ursula.wire.arguments import RAFT_BATCH_CAP, BigBytes, RaftItems, split_items
from ursula.wire.commands import (
    ForwardFailed,
    ForwardTimeout,
    HandshakeRejected,
    PeerError,
    PeerUnavailable,
    SubscribeRejected,
)
from ursula.wire.transport import PeerStats, PeerTransport, Subscription

__all__ = [
    "RAFT_BATCH_CAP",
    "BigBytes",
    "ForwardFailed",
    "ForwardTimeout",
    "HandshakeRejected",
    "PeerError",
    "PeerStats",
    "PeerTransport",
    "PeerUnavailable",
    "RaftItems",
    "SubscribeRejected",
    "Subscription",
    "split_items",
]
