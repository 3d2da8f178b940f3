"""ursula.wire: the peer transport, AMP over TCP (or TLS) between the nodes of a cluster.

What lives here: `PeerTransport` (connections, Raft batches, forwarding, counters), its
interface `IPeerTransport` and its fake (``ursula.wire.fake``: in-process peers on a clock),
and the AMP commands and argument types it speaks.  See
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
)
from ursula.wire.interfaces import IPeerTransport
from ursula.wire.transport import PeerStats, PeerTransport

__all__ = [
    "RAFT_BATCH_CAP",
    "BigBytes",
    "ForwardFailed",
    "ForwardTimeout",
    "HandshakeRejected",
    "IPeerTransport",
    "PeerError",
    "PeerStats",
    "PeerTransport",
    "PeerUnavailable",
    "RaftItems",
    "split_items",
]
