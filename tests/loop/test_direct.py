"""DirectWriter: straight to the socket when nothing is buffered, Twisted's buffer for the rest."""

from __future__ import annotations

from twisted.internet import tcp
from twisted.internet.testing import StringTransport

from ursula.loop import DirectWriter, direct_socket


class FakeSocket:
    def __init__(self, takes=None, raises=None):
        self.takes, self.raises, self.sent = takes, raises, []

    def send(self, data):
        if self.raises is not None:
            raise self.raises
        n = len(data) if self.takes is None else min(self.takes, len(data))
        self.sent.append(bytes(data[:n]))
        return n


class FakeConnection(tcp.Connection):
    """A ``tcp.Connection`` that never touched a reactor: its socket is a FakeSocket and
    ``write`` records what went through Twisted's buffer."""

    def __init__(self, sock):  # noqa: D107 - tcp.Connection.__init__ wants a reactor
        self.socket, self.connected, self.disconnecting, self.TLS = sock, 1, False, False
        self.dataBuffer, self._tempDataBuffer, self.written = b"", [], []

    def write(self, data):
        self.written.append(bytes(data))


def test_everything_the_socket_takes_skips_twisteds_buffer():
    sock = FakeSocket()
    conn = FakeConnection(sock)
    DirectWriter(conn).write(b"answer")
    assert sock.sent == [b"answer"] and conn.written == []


def test_what_the_socket_does_not_take_is_buffered_in_order():
    sock = FakeSocket(takes=3)
    conn = FakeConnection(sock)
    DirectWriter(conn).write(b"abcdefgh")
    assert sock.sent == [b"abc"] and conn.written == [b"defgh"]


def test_bytes_already_buffered_keep_their_place():
    for buffered in ({"dataBuffer": b"older"}, {"_tempDataBuffer": [b"older"]}):
        sock = FakeSocket()
        conn = FakeConnection(sock)
        for name, value in buffered.items():
            setattr(conn, name, value)
        DirectWriter(conn).write(b"newer")
        assert sock.sent == [] and conn.written == [b"newer"]


def test_a_full_or_broken_socket_leaves_it_to_the_transport():
    for error in (BlockingIOError(), ConnectionResetError()):
        conn = FakeConnection(FakeSocket(raises=error))
        DirectWriter(conn).write(b"data")
        assert conn.written == [b"data"]


def test_a_closing_connection_is_written_through_the_transport():
    sock = FakeSocket()
    conn = FakeConnection(sock)
    conn.disconnecting = True
    DirectWriter(conn).write(b"late")
    assert sock.sent == [] and conn.written == [b"late"]


def test_tls_and_fakes_have_no_direct_socket():
    tls = FakeConnection(FakeSocket())
    tls.TLS = True
    assert direct_socket(tls) is None
    fake = StringTransport()
    assert direct_socket(fake) is None
    DirectWriter(fake).write(b"via the transport")
    assert fake.value() == b"via the transport"
