"""The event loop's edges, shared by the data plane and the core runtime: coarse timeouts
(``Timeouts``), a leaner poll step for the epoll reactor (``lean_poll``) and writes that go
straight to a connection's socket (``DirectWriter``).

May import: Twisted and the standard library.
"""

from ursula.loop.direct import DirectWriter, direct_socket
from ursula.loop.poll import lean_poll
from ursula.loop.timeouts import Timeout, Timeouts

__all__ = ["DirectWriter", "Timeout", "Timeouts", "direct_socket", "lean_poll"]
