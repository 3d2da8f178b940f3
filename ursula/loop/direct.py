"""``DirectWriter``: write to a TCP (or unix) connection's socket at once, Twisted's buffer
only for what the socket does not take.

``transport.write`` never writes right away: it buffers, registers the socket for
``EPOLLOUT`` (an ``epoll_ctl``), writes in the next poll's ``doWrite`` and de-registers (another
``epoll_ctl``). For a connection that sends one small message per reactor turn (an HTTP
answer, a batch of Raft messages) that is three system calls and a poll wake-up where one
``send`` does. ``DirectWriter.write`` sends at once when nothing is buffered already (so the
bytes keep their order); the rest, or everything on a transport that is not a plain socket
connection (TLS, the test fakes), goes through ``transport.write``, whose producer pause and
error handling stay in force.

May import: Twisted and the standard library.
"""

from __future__ import annotations

from twisted.internet import tcp


def direct_socket(transport):
    """The socket of a plain (not TLS) ``twisted.internet.tcp`` connection (unix ones are
    that class too), which may be written to directly; None for anything else."""
    if not isinstance(transport, tcp.Connection) or getattr(transport, "TLS", True):
        return None
    if not all(hasattr(transport, name)
               for name in ("socket", "dataBuffer", "_tempDataBuffer", "disconnecting")):
        return None
    return transport.socket


class DirectWriter:
    """Writes to ``transport``: directly to its socket when it has one and nothing is
    buffered, else through ``transport.write``."""

    __slots__ = ("transport", "socket")

    def __init__(self, transport):
        self.transport = transport
        self.socket = direct_socket(transport)

    def write(self, data: bytes) -> None:
        sock = self.socket
        transport = self.transport
        if (sock is not None and transport.connected and not transport.disconnecting
                and not transport.dataBuffer and not transport._tempDataBuffer):
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                sent = 0  # let the transport meet (and report) the error on its own write
            if sent == len(data):
                return
            data = data[sent:]
        transport.write(data)


__all__ = ["DirectWriter", "direct_socket"]
