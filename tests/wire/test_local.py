"""LocalLink over ``twisted.test.iosim``: a turn's boxes leave in one write, and arrive."""

from __future__ import annotations

from twisted.internet import task
from twisted.test import iosim

from ursula.wire.local import LocalLink


class Echo:
    def __init__(self):
        self.changed = []

    def handle(self, link, op, args):
        return ["ok", [op, args]]

    def on_changed(self, link, keys):
        self.changed.extend(keys)


def test_a_turns_changes_and_calls_leave_in_one_write():
    clock = task.Clock()
    server_side, client_side = Echo(), Echo()
    client = LocalLink(client_side, clock)
    server = LocalLink(server_side, clock)
    pump = iosim.connect(server, iosim.makeFakeServer(server),
                         client, iosim.makeFakeClient(client), greet=False)
    writes = []
    real = client.transport.write
    client.transport.write = lambda data: (writes.append(data), real(data))
    answers = []
    client.changed(("_default", "s"))
    client.call("read", [1]).addCallback(answers.append)
    client.call("read", [2]).addCallback(answers.append)
    clock.advance(0)  # the end of the turn
    assert len(writes) == 1
    for _ in range(5):
        pump.flush()
        clock.advance(0)
    assert server_side.changed == [("_default", "s")]
    assert answers == [["ok", ["read", [1]]], ["ok", ["read", [2]]]]
    assert client.batches_sent == 1


def _linked(server_side, client_side):
    clock = task.Clock()
    client = LocalLink(client_side, clock)
    server = LocalLink(server_side, clock)
    pump = iosim.connect(server, iosim.makeFakeServer(server),
                         client, iosim.makeFakeClient(client), greet=False)
    return clock, client, server, pump


def test_bulk_bytes_cross_beside_the_cbor_both_ways():
    """A handler's ``Bulk`` answer and a caller's ``Bulk`` argument arrive as the same bytes;
    on the wire they are raw, not a cbor byte string (the box's payload stays small)."""
    import os

    from ursula.wire.bulk import Bulk
    big = os.urandom(300_000)

    class Reader:
        def handle(self, link, op, args):
            return ["ok", [len(args[0]), Bulk(args[0][::-1])]]

        def on_changed(self, link, keys):
            pass
    clock, client, server, pump = _linked(Reader(), Echo())
    sent = []
    real = server.transport.write
    server.transport.write = lambda data: (sent.append(data), real(data))
    answers = []
    client.call("read", [Bulk(big)]).addCallback(answers.append)
    client.call("read", [b"small"]).addCallback(answers.append)
    for _ in range(10):
        clock.advance(0)
        pump.flush()
    assert answers == [["ok", [300_000, big[::-1]]], ["ok", [5, b"llams"]]]
    wire = b"".join(sent)
    assert wire.count(b"bulk") >= 1 and big[::-1][:60_000] in wire
