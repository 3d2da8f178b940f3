"""``ursula.loop.lean_poll`` on a real epoll reactor: a loopback echo still works, an error
in one connection's ``dataReceived`` is logged and disconnects only that connection, and any
other reactor is left alone."""

import sys

import pytest
from twisted.internet import defer, protocol
from twisted.internet.testing import MemoryReactor

from ursula.loop import lean_poll

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="epoll is Linux")


def test_other_reactors_are_left_alone():
    r = MemoryReactor()
    assert lean_poll(r) is False
    assert "doIteration" not in vars(r)


def test_lean_poll_serves_connections_and_contains_errors():
    from twisted.internet.epollreactor import EPollReactor

    reactor = EPollReactor()
    assert lean_poll(reactor) is True
    errors = []

    class Server(protocol.Protocol):
        def dataReceived(self, data):
            if data.startswith(b"boom"):
                raise RuntimeError("a handler bug")
            self.transport.write(data.upper())

    class Client(protocol.Protocol):
        def __init__(self, payload, done):
            self.payload, self.done, self.got = payload, done, b""

        def connectionMade(self):
            self.transport.write(self.payload)

        def dataReceived(self, data):
            self.got += data
            if len(self.got) >= len(self.payload):
                self.transport.loseConnection()

        def connectionLost(self, reason):
            self.done.callback(self.got)

    factory = protocol.Factory.forProtocol(Server)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    results = []

    def connect(payload):
        done = defer.Deferred()
        done.addCallback(results.append)
        cf = protocol.ClientFactory()
        cf.buildProtocol = lambda addr: Client(payload, done)
        reactor.connectTCP("127.0.0.1", port.getHost().port, cf)
        return done

    from twisted.python import log

    def observe(event):
        if event.get("failure") is not None:
            errors.append(event["failure"])
    log.addObserver(observe)
    try:
        d = defer.gatherResults([connect(b"boom!"), connect(b"hello")])
        d.addBoth(lambda _: reactor.stop())
        reactor.callLater(5, reactor.stop)
        reactor.run(installSignalHandlers=False)
    finally:
        log.removeObserver(observe)
        port.stopListening()
    assert sorted(results) == [b"", b"HELLO"]  # the broken one was dropped, the other served
    assert any(f.check(RuntimeError) for f in errors)
