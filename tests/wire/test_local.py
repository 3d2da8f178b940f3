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
