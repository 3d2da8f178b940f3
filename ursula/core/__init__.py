"""One node's runtime: the state machine wired to the reactor, and the live-reader registry.

``ICore`` (in ``ursula.core.interfaces``) is the seam the HTTP layer talks to. ``RaftCore``
(``ursula.core.cluster``) is the real one: G Raft groups with a journal and a peer transport.
``LocalCore`` is its unreplicated in-memory fake, for tests. ``RaftCore`` wires the runtime's
parts (scheduler, forwarder, fork coordinator, read path, persister, peer transport), each
behind an interface in ``ursula.core.interfaces`` with a fake in ``ursula.core.fakes``.

May import: Twisted, zope.interface, ``ursula.stream`` and ``ursula.protocol``.
"""

from ursula.core.interfaces import ICore, TooManyReaders, Unavailable
from ursula.core.local import LocalCore

__all__ = ["ICore", "LocalCore", "TooManyReaders", "Unavailable"]
