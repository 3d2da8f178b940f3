"""One node's runtime: the state machine wired to the reactor, and the live-reader registry.

``ICore`` (in ``ursula.core.interfaces``) is the seam the HTTP layer talks to. ``LocalCore`` is
the single-node implementation: it applies commands to one ``StreamMachine`` in the reactor
thread. The Raft issues put consensus behind the same interface.

May import: Twisted, zope.interface, ``ursula.stream`` and ``ursula.protocol``.
"""

from ursula.core.interfaces import ICore, TooManyReaders, Unavailable
from ursula.core.local import LocalCore

__all__ = ["ICore", "LocalCore", "TooManyReaders", "Unavailable"]
