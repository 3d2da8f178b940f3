"""The local link: AMP over a unix socket between the core processes of one node (and from the
node supervisor to each core).

What lives here:

* `LocalCalls(payload, bulk) -> payload, bulk`: a batch of calls, ``cbor [[op, args], ...]``,
  answered with one item per call, in order (``[ok, value]`` or ``[err, kind, text]``: the
  handler's own encoding; this module never looks inside). Everything a core asks of another
  core in one reactor turn travels as one `LocalCalls` box. A large byte string that a caller
  or handler wraps in ``ursula.wire.bulk.Bulk`` (a read answer's bytes) travels in ``bulk``,
  beside the cbor rather than inside it (``ursula.wire.bulk``).
* `Changed(payload)`: fire-and-forget, ``cbor [key, ...]``: the streams that changed (live
  reads), coalesced per turn too.
* `LocalLink`: one connection (either side). ``call(op, args, coalesce=None)`` queues a call and
  returns a Deferred of its answer item; the queue is sent at the end of the turn. Calls with
  the same ``coalesce`` key in one turn share one call (identical reads of an SSE fan-out).
  ``changed(key)`` queues a change notification the same way.
* `LocalLinkFactory`: the server side (``<data_dir>/core-<k>.sock``) and `connect_local`, a
  reconnecting client (``ClientService`` with back-off).

A handler is an object with ``handle(link, op, args) -> item or Deferred[item]``,
``on_changed(link, keys)`` and optionally ``link_connected(link)`` and ``link_lost(link)``.

Boxes go straight to the socket (``ursula.loop.DirectWriter``); a turn's ``Changed`` and
``LocalCalls`` boxes leave in one write.

May import: Twisted (``twisted.protocols.amp``), cbor2, the standard library,
``ursula.wire.*`` and ``ursula.loop``.
"""

from __future__ import annotations

import cbor2
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.error import ConnectionLost
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols import amp

from ursula.loop import DirectWriter
from ursula.wire.arguments import BigBytes
from ursula.wire.bulk import pack, unpack
from ursula.wire.commands import PeerUnavailable

log = Logger()


class LocalCalls(amp.Command):
    """A batch of calls to the other core; the answer holds one item per call, in order."""

    arguments = [(b"payload", BigBytes()), (b"bulk", BigBytes(optional=True))]
    response = [(b"payload", BigBytes()), (b"bulk", BigBytes(optional=True))]


class Changed(amp.Command):
    """Streams that changed (keys the other side asked to watch)."""

    arguments = [(b"payload", BigBytes())]
    requiresAnswer = False


def _answer_box(items: list) -> dict:
    payload, bulk = pack(items)
    return {"payload": payload, "bulk": bulk or None}


def _failed_item(failure) -> list:
    return ["err", "error", failure.getErrorMessage()[:2000]]


class LocalLink(amp.AMP):
    """One local connection; either side may call and notify."""

    def __init__(self, handler, reactor):
        super().__init__()
        self.handler = handler
        self.reactor = reactor
        self.connected = False
        self._calls: list = []          # [(op, args, [deferreds])]
        self._coalesced: dict = {}      # coalesce key -> entry of self._calls
        self._changed: list = []
        self._changed_set: set = set()
        self._flush_call = None
        self._writer: DirectWriter | None = None
        self._corked: list[bytes] | None = None  # boxes held until the end of ``_flush``
        #: counters, for metrics and tests
        self.batches_sent = 0
        self.calls_sent = 0
        self.calls_coalesced = 0

    # -- connection ---------------------------------------------------------------------------

    def connectionMade(self):
        super().connectionMade()
        self._writer = DirectWriter(self.transport)
        self.connected = True

    def sendBox(self, box):
        if self.transport is None:
            raise ConnectionLost()
        data = box.serialize()
        if self._corked is not None:
            self._corked.append(data)
        else:
            self._write(data)

    def connectionLost(self, reason):
        self.connected = False
        calls, self._calls, self._coalesced = self._calls, [], {}
        for _op, _args, waiters in calls:
            for d in waiters:
                d.errback(PeerUnavailable("the local link was lost"))
        super().connectionLost(reason)
        lost = getattr(self.handler, "link_lost", None)
        if lost is not None:
            lost(self)

    # -- sending ----------------------------------------------------------------------------

    def _schedule(self):
        if self._flush_call is None:
            self._flush_call = self.reactor.callLater(0, self._flush)

    def call(self, op: str, args, coalesce=None):
        """Queue ``op(args)`` for the end of this turn; a Deferred of its answer item."""
        if not self.connected:
            return defer.fail(PeerUnavailable("the local link is not connected"))
        d = defer.Deferred()
        if coalesce is not None:
            entry = self._coalesced.get(coalesce)
            if entry is not None:
                entry[2].append(d)
                self.calls_coalesced += 1
                return d
        entry = (op, args, [d])
        self._calls.append(entry)
        if coalesce is not None:
            self._coalesced[coalesce] = entry
        self._schedule()
        return d

    def changed(self, key) -> None:
        """Tell the other side that ``key`` changed (sent once per key per turn)."""
        if not self.connected or key in self._changed_set:
            return
        self._changed_set.add(key)
        self._changed.append(key)
        self._schedule()

    def _flush(self):
        self._flush_call = None
        self._corked = []
        try:
            self._flush_boxes()
        finally:
            held, self._corked = self._corked, None
            if held and self.transport is not None and self.connected:
                self._write(b"".join(held))

    def _write(self, data: bytes) -> None:
        if self._writer is not None:
            self._writer.write(data)
        else:
            self.transport.write(data)

    def _flush_boxes(self):
        if self._changed:
            keys, self._changed, self._changed_set = self._changed, [], set()
            if self.connected:
                self.callRemote(Changed, payload=cbor2.dumps([list(k) for k in keys]))
        if not self._calls:
            return
        calls, self._calls, self._coalesced = self._calls, [], {}
        if not self.connected:
            for _op, _args, waiters in calls:
                for d in waiters:
                    d.errback(PeerUnavailable("the local link was lost"))
            return
        self.batches_sent += 1
        self.calls_sent += len(calls)
        payload, bulk = pack([[op, args] for op, args, _ in calls])
        d = self.callRemote(LocalCalls, payload=payload, bulk=bulk or None)

        def answered(box):
            items = unpack(box["payload"], box["bulk"])
            for (_op, _args, waiters), item in zip(calls, items, strict=True):
                for waiter in waiters:
                    waiter.callback(item)

        def failed(failure):
            for _op, _args, waiters in calls:
                for waiter in waiters:
                    if not waiter.called:
                        waiter.errback(PeerUnavailable(
                            f"the local link failed ({failure.getErrorMessage()})"))
        d.addCallbacks(answered, failed)

    # -- receiving ----------------------------------------------------------------------------

    @LocalCalls.responder
    def _calls_received(self, payload, bulk=None):
        calls = unpack(payload, bulk)
        answers = []
        for op, args in calls:
            d = defer.maybeDeferred(self.handler.handle, self, op, args)
            d.addErrback(_failed_item)
            answers.append(d)
        return defer.gatherResults(answers).addCallback(_answer_box)

    @Changed.responder
    def _changed_received(self, payload):
        keys = [tuple(k) for k in cbor2.loads(payload)]
        self.handler.on_changed(self, keys)
        return {}


class LocalLinkFactory(Factory):
    """Serves `LocalLink` connections with one handler (the core's)."""

    noisy = False

    def __init__(self, handler, reactor):
        self.handler = handler
        self.reactor = reactor

    def buildProtocol(self, addr):
        link = LocalLink(self.handler, self.reactor)
        link.factory = self
        return link


class LocalClient:
    """A reconnecting client link to one core's socket; ``link`` is the current connection
    (or None)."""

    def __init__(self, path: str, handler, reactor, backoff_max: float = 1.0):
        self.path = path
        self.link: LocalLink | None = None
        self._handler = handler
        self._reactor = reactor
        factory = LocalLinkFactory(self, reactor)
        self._service = ClientService(UNIXClientEndpoint(reactor, path, timeout=5), factory,
                                      retryPolicy=backoffPolicy(initialDelay=0.05,
                                                                maxDelay=backoff_max),
                                      clock=reactor,
                                      prepareConnection=self._connected)

    def _connected(self, link):
        self.link = link
        on_connect = getattr(self._handler, "link_connected", None)
        if on_connect is not None:
            on_connect(link)

    def start(self) -> None:
        self._service.startService()

    def stop(self):
        return self._service.stopService()

    @property
    def connected(self) -> bool:
        return self.link is not None and self.link.connected

    def call(self, op: str, args, coalesce=None):
        if self.link is None:
            return defer.fail(PeerUnavailable(f"the local link to {self.path} is not up"))
        return self.link.call(op, args, coalesce)

    def changed(self, key) -> None:
        if self.link is not None:
            self.link.changed(key)

    # the handler role for the client side's own links
    def handle(self, link, op, args):
        return self._handler.handle(link, op, args)

    def on_changed(self, link, keys) -> None:
        self._handler.on_changed(link, keys)

    def link_lost(self, link) -> None:
        if self.link is link:
            self.link = None
        lost = getattr(self._handler, "link_lost", None)
        if lost is not None:
            lost(link)
