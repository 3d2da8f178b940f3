"""The AMP commands peers exchange, their errors, and the HMAC handshake arithmetic.

What lives here:

* Handshake: `Hello` (dialer -> acceptor: version, node id, nonce; answered with the same three)
  and `Prove` (dialer's HMAC proof; answered with the acceptor's proof).  `proof()` computes
  ``HMAC-SHA256(secret, label | dialer id | acceptor id | dialer nonce | acceptor nonce)`` with
  a different label per direction, so one side's proof can never be replayed as the other's.
  `proofs_match()` compares in constant time.
* Raft: `RaftBatch(node_id, items)` -- fire-and-forget (``requiresAnswer = False``).
* Forwarding: `ForwardBatch(items)` and `ForwardAnswers(items)`, both fire-and-forget: every
  request forwarded to a peer in one reactor turn travels in one box, ``items = [(forward id,
  4-byte group + payload), ...]``, and the answers of one turn go back in one box, ``items =
  [(forward id, b"\x00" + payload or b"\x01" + error text), ...]``. The payloads are opaque
  bytes (the node runtime encodes commands, outcomes, read requests and results with cbor2).
* `Ping`: keeps an idle connection observably alive.
* Exceptions: `PeerError` and its subclasses, some of which travel over AMP as error codes.

May import: Twisted (``twisted.protocols.amp``), the standard library, and
``ursula.wire.arguments``.  No other ursula package.
"""

from __future__ import annotations

import hashlib
import hmac

from twisted.protocols import amp

from ursula.wire.arguments import RaftItems

#: Bumped on any incompatible change of the commands below (2: batched forwarding).
PROTOCOL_VERSION = 2
#: Bytes of randomness each side contributes to the handshake.
NONCE_SIZE = 32

_DIALER_LABEL = b"ursula-wire-v1 dialer proof\x00"
_ACCEPTOR_LABEL = b"ursula-wire-v1 acceptor proof\x00"


class PeerError(Exception):
    """Base class of every error `ursula.wire` raises to its users."""


class PeerUnavailable(PeerError):
    """The peer is not connected (or the connection was lost before the answer came)."""


class ForwardTimeout(PeerError):
    """A forwarded request got no answer within its timeout."""


class ForwardFailed(PeerError):
    """The remote forward handler raised; the message says what (sent as FORWARD_FAILED)."""


class HandshakeRejected(PeerError):
    """The handshake failed: wrong secret, unknown node id, wrong version or order."""


def proof(secret: bytes, dialer: bool, dialer_id: int, acceptor_id: int,
          dialer_nonce: bytes, acceptor_nonce: bytes) -> bytes:
    """The HMAC-SHA256 one side sends to prove it knows `secret`."""
    label = _DIALER_LABEL if dialer else _ACCEPTOR_LABEL
    message = b"".join([label, b"%d\x00%d\x00" % (dialer_id, acceptor_id),
                        dialer_nonce, acceptor_nonce])
    return hmac.new(secret, message, hashlib.sha256).digest()


def proofs_match(expected: bytes, received: bytes) -> bool:
    """Constant-time comparison of two proofs."""
    return hmac.compare_digest(expected, received)


class Hello(amp.Command):
    """Dialer -> acceptor, first box on a connection."""

    arguments = [(b"version", amp.Integer()), (b"node_id", amp.Integer()),
                 (b"nonce", amp.String())]
    response = [(b"version", amp.Integer()), (b"node_id", amp.Integer()),
                (b"nonce", amp.String())]
    errors = {HandshakeRejected: b"HANDSHAKE_REJECTED"}


class Prove(amp.Command):
    """Dialer -> acceptor, second box: the dialer's proof; the answer is the acceptor's."""

    arguments = [(b"proof", amp.String())]
    response = [(b"proof", amp.String())]
    errors = {HandshakeRejected: b"HANDSHAKE_REJECTED"}


class RaftBatch(amp.Command):
    """Raft messages for many groups, ``items = [(group, encoded message), ...]``."""

    arguments = [(b"node_id", amp.Integer()), (b"items", RaftItems())]
    requiresAnswer = False


class ForwardBatch(amp.Command):
    """Requests for the peer's forward handler, ``items = [(forward id, group + payload)]``
    (the group as 4 bytes, big endian); each is answered in a later `ForwardAnswers`."""

    arguments = [(b"items", RaftItems())]
    requiresAnswer = False


class ForwardAnswers(amp.Command):
    """Answers to `ForwardBatch` items: ``[(forward id, b"\x00" + payload)]``, or
    ``b"\x01" + error text`` when the handler failed."""

    arguments = [(b"items", RaftItems())]
    requiresAnswer = False


def pack_forward(group: int, payload: bytes) -> bytes:
    return group.to_bytes(4, "big") + payload


def unpack_forward(data: bytes) -> tuple[int, bytes]:
    if len(data) < 4:
        raise ValueError("a forward item is shorter than its group")
    return int.from_bytes(data[:4], "big"), data[4:]


class Ping(amp.Command):
    """Sent on an otherwise idle connection so the other side sees it alive."""

    arguments: list = []
    requiresAnswer = False


#: The only commands an acceptor answers before the handshake completes.
HANDSHAKE_COMMANDS = frozenset({Hello.commandName, Prove.commandName})
