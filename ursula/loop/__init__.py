"""The event loop's edges, shared by the data plane and the core runtime: coarse timeouts
(``Timeouts``) and a leaner poll step for the epoll reactor (``lean_poll``).

May import: Twisted and the standard library.
"""

from ursula.loop.poll import lean_poll
from ursula.loop.timeouts import Timeout, Timeouts

__all__ = ["Timeout", "Timeouts", "lean_poll"]
