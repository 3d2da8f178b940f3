"""``RoutedCore``: the ``ICore`` of one core process when a node runs C > 1 cores.

Group g belongs to core ``g mod C`` (``ursula.core.placement``). A ``RoutedCore`` sends each call
for a group this core owns to its own ``RaftCore`` (which holds only those groups) and every
other call to a ``RemoteCoreProxy``: the owning core over the local link
(``ursula.wire.local``, AMP on a unix socket), batched per reactor turn.

* ``submit``: the command (``encode_command``) -> ``Outcome`` (``outcome_to_wire``). Bucket
  commands go to every core (each submits them to all its groups); a fork whose source is on
  another core runs the fork saga here with ``CrossCoreForks`` (its steps for the other core's
  groups go over the link).
* ``head`` (the linearizable barrier, on the owning core), ``read_applied`` (the owning core's
  applied state; identical reads issued in one turn share one call), ``list_streams`` (every
  core, merged and cut to ``limit``).
* ``subscribe``: the subscription is held here (the live-reader limit counts on the core that
  holds the HTTP connection). The owning core keeps a *watch* on each stream this core read,
  registered while it answers the read, and sends ``changed`` over the same connection when the
  stream changes; since the link keeps order, a change after a read always arrives after that
  read's answer, so a reader that subscribes when its read comes back misses no change.
* ``is_ready``: this core's groups, and every other core's last answer to ``ready`` (polled);
  ``stats``: this core's (the supervisor merges the cores' metrics with a ``core`` label).

``CoreServer`` answers the calls other cores (and the supervisor: ``ready``, ``metrics``,
``group_stats``) send to this core.

May import: Twisted, zope.interface, cbor2, ``ursula.stream``, ``ursula.wire``, ``ursula.loop``,
``ursula.core``.
"""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ursula.core.cluster import _combine_bucket_outcomes, merge_listings
from ursula.core.forks import ForkCoordinator
from ursula.core.interfaces import ICore, TooManyReaders, Unavailable
from ursula.core.placement import group_of
from ursula.core.watchers import Subscription, WatcherRegistry
from ursula.loop import Timeouts
from ursula.stream import commands as C
from ursula.stream import decode_command, encode_command
from ursula.stream.machine import (
    ReadResult,
    StreamError,
    StreamInfo,
    info_wire,
    outcome_from_wire,
    outcome_to_wire,
    view_from_wire,
    view_to_wire,
)
from ursula.wire.bulk import Bulk
from ursula.wire.commands import PeerError

log = Logger()

READY_POLL_S = 0.25


# -- wire forms --------------------------------------------------------------------------------

def info_to_wire(info: StreamInfo) -> list:
    return info_wire(info)


def info_from_wire(data: list) -> StreamInfo:
    return StreamInfo(*data)


#: Byte strings from this size up cross the local link beside the cbor (``ursula.wire.bulk``).
BULK_MIN_BYTES = 16 << 10


def _bulk(data):
    """``data`` (bytes-like) as it should travel over the local link."""
    return Bulk(data) if len(data) >= BULK_MIN_BYTES else bytes(data)


def read_to_wire(result: ReadResult) -> list:
    """A read answer; its cold spans, if any, named (the asking core fetches them itself)."""
    return [info_to_wire(result.info), result.start, result.next_offset, _bulk(result.data),
            [list(span) for span in result.cold]]


def view_to_link(view) -> list:
    """``view_to_wire``, its updates' bytes marked as bulk."""
    wire = view_to_wire(view)
    if wire[4] is not None:
        wire[4][2] = _bulk(wire[4][2])
    return wire


def read_from_wire(data: list) -> ReadResult:
    info, start, next_offset, payload, *rest = data
    cold = tuple(tuple(span) for span in rest[0]) if rest and rest[0] else ()
    return ReadResult(info_from_wire(info), start, next_offset, payload, cold)


def error_item(failure: Failure) -> list:
    """A failure as an answer item: StreamError, Unavailable and TooManyReaders survive."""
    if failure.check(StreamError):
        if failure.value.next_offset is not None:
            return ["err", "stream", failure.value.code, failure.value.next_offset]
        return ["err", "stream", failure.value.code]
    if failure.check(TooManyReaders):
        return ["err", "readers", ""]
    if failure.check(Unavailable):
        return ["err", "unavailable", str(failure.value)]
    log.failure("a call from another core failed", failure)
    return ["err", "error", failure.getErrorMessage()[:500]]


def unwrap(item: list):
    """An answer item's value, or its error raised again."""
    if item[0] == "ok":
        return item[1]
    kind, text = item[1], item[2]
    if kind == "stream":
        raise StreamError(text, item[3] if len(item) > 3 else None)
    if kind == "readers":
        raise TooManyReaders()
    raise Unavailable(f"the owning core could not answer ({text})")


def _link_failed(failure: Failure):
    if failure.check(PeerError, defer.TimeoutError, defer.CancelledError):
        raise Unavailable(f"the owning core is not reachable ({failure.getErrorMessage()})")
    return failure


# -- watchers that other cores hold --------------------------------------------------------------

class CoreWatchers(WatcherRegistry):
    """The ``RaftCore``'s live-reader registry, plus the watches other cores hold (persistent,
    not counted: their readers count on the core that holds the connection). ``total()`` is
    the live-reader count the limit applies to (this core's local and forwarded readers)."""

    def __init__(self, limit: int, total=None):
        super().__init__(limit)
        self.total = total or (lambda: self.count)
        self.remote: dict[tuple[str, str], set] = {}
        self.everything: set = set()  # links told of every change (sub_watch_all)

    def add(self, key, callback):
        if self.total() >= self.limit:
            raise TooManyReaders()
        return super().add(key, callback)

    def watch(self, key, link) -> None:
        self.remote.setdefault(key, set()).add(link)

    def unwatch(self, key, link) -> None:
        links = self.remote.get(key)
        if links is not None:
            links.discard(link)
            if not links:
                del self.remote[key]

    def drop_link(self, link) -> None:
        self.everything.discard(link)
        for key in [k for k, links in self.remote.items() if link in links]:
            self.unwatch(key, link)

    def notify(self, key) -> None:
        super().notify(key)
        for link in self.remote.get(key, ()):
            link.changed(key)
        for link in self.everything:
            link.changed(key)

    def notify_all(self) -> None:
        super().notify_all()
        for key, links in list(self.remote.items()):
            for link in links:
                link.changed(key)


# -- forks across cores -------------------------------------------------------------------------

class _RemoteGroup:
    __slots__ = ("group_id",)

    def __init__(self, group_id: int):
        self.group_id = group_id


class CrossCoreForks(ForkCoordinator):
    """The fork saga when the source and the fork live on different cores: steps for a group of
    another core go through the ``RoutedCore`` (and so over the link)."""

    def __init__(self, routed: RoutedCore, raft):
        super().__init__(raft.reactor, raft.node_id, raft.forwarder, routed.group_or_remote,
                         raft.settings.leader_wait_s)
        self.routed = routed

    def _submit(self, group, command):
        if isinstance(group, _RemoteGroup):
            return self.routed.submit(command)
        return super()._submit(group, command)


# -- the proxy of another core ------------------------------------------------------------------

class RemoteCoreProxy:
    """Another core of this node, seen through its local link (a ``LocalClient`` or any object
    with ``call(op, args, coalesce)`` and ``connected``)."""

    def __init__(self, index: int, reactor, timeout_s: float = 5.0):
        self.index = index
        self.reactor = reactor
        self.timeout_s = timeout_s
        self.timeouts = Timeouts(reactor)  # one reactor timer for every call's timeout
        self.client = None
        self.ready = False
        self.count = 0
        self._subscribers: dict[tuple[str, str], set[Subscription]] = {}
        self._interest: set[tuple[str, str]] = set()
        self._inflight: dict[tuple[str, str], int] = {}
        self._poller = None
        self._connect_waiters: list = []
        self.change_listeners: list = []  # told of every key the owning core sends

    def attach(self, client) -> None:
        self.client = client

    def _call(self, op, args, coalesce=None):
        if self.client is None or not self.client.connected:
            # the core is starting or restarting: wait for its link (up to the timeout)
            waiter = defer.Deferred()
            self._connect_waiters.append(waiter)
            self.timeouts.deadline(waiter, self.timeout_s)
            waiter.addCallback(lambda _: self.client.call(op, args, coalesce))
            return waiter.addErrback(_link_failed).addCallback(unwrap)
        d = self.client.call(op, args, coalesce)
        self.timeouts.deadline(d, self.timeout_s)
        return d.addErrback(_link_failed).addCallback(unwrap)

    def link_connected(self, link) -> None:
        waiters, self._connect_waiters = self._connect_waiters, []
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(None)

    # -- calls ----------------------------------------------------------------------------

    def submit(self, command):
        return self._call("submit", _bulk(encode_command(command))).addCallback(
            outcome_from_wire)

    def head(self, bucket, stream):
        return self._call("head", [bucket, stream]).addCallback(info_from_wire)

    def read_applied(self, bucket, stream, offset, max_bytes, spans: bool = False):
        """The owning core's applied state of a stream; with ``spans`` its cold part comes
        back named, not fetched (``ReadResult.cold``), for the caller to fetch."""
        key = (bucket, stream)
        self._interest.add(key)  # the owning core watches what it answers a read for
        self._inflight[key] = self._inflight.get(key, 0) + 1

        def done(result):
            left = self._inflight[key] - 1
            if left:
                self._inflight[key] = left
            else:
                del self._inflight[key]
            return result
        args = [bucket, stream, offset, max_bytes] + ([True] if spans else [])
        d = self._call("read", args, coalesce=("read", bucket, stream, offset, max_bytes, spans))
        return d.addBoth(done).addCallback(read_from_wire)

    def list_streams(self, bucket, after, limit):
        d = self._call("list", [bucket, after, limit])
        return d.addCallback(lambda items: [(name, info_from_wire(info))
                                            for name, info in items])

    def view(self, bucket, stream, kind, max_bytes):
        d = self._call("view", [bucket, stream, kind, max_bytes])
        return d.addCallback(view_from_wire)

    def call(self, op, args=None):
        return self._call(op, args)

    # -- live reads -----------------------------------------------------------------------

    def subscribe(self, bucket, stream, callback):
        key = (bucket, stream)
        if key not in self._interest:
            # no read registered a watch: ask for one; the owner answers with a "changed" at
            # once (a spurious wake-up: the reader reads again, which is then watched)
            self._interest.add(key)
            self._call("watch", [bucket, stream]).addErrback(lambda _: None)
        subscription = Subscription(self, key, callback)  # cancel() calls our _remove
        self._subscribers.setdefault(key, set()).add(subscription)
        self.count += 1
        return subscription

    def _remove(self, subscription) -> None:
        subs = self._subscribers.get(subscription.key)
        if subs is not None and subscription in subs:
            subs.discard(subscription)
            self.count -= 1
            if not subs:
                del self._subscribers[subscription.key]

    def on_changed(self, link, keys) -> None:
        for listener in self.change_listeners:
            listener(keys)
        for key in keys:
            self._wake(key)
            if key not in self._subscribers and not self._inflight.get(key):
                if key in self._interest:
                    self._interest.discard(key)
                    self._call("unwatch", list(key)).addErrback(lambda _: None)

    def _wake(self, key) -> None:
        subs = self._subscribers.pop(key, None)
        if not subs:
            return
        self.count -= len(subs)
        for subscription in subs:
            subscription.active = False
        for subscription in subs:
            subscription.callback()

    def link_lost(self, link) -> None:
        """The owning core went away: its watches are gone; wake every reader (they read again
        and see the core back, or Unavailable)."""
        self.ready = False
        self._interest.clear()
        for key in list(self._subscribers):
            self._wake(key)

    def handle(self, link, op, args):
        return ["err", "error", f"core {self.index}'s link takes no calls"]

    # -- readiness ------------------------------------------------------------------------

    def start_polling(self, interval: float = READY_POLL_S) -> None:
        def poll():
            def got(ready):
                self.ready = bool(ready)

            def failed(_):
                self.ready = False
            self._call("ready", None).addCallbacks(got, failed)
        self._poller = task.LoopingCall(poll)
        self._poller.clock = self.reactor
        self._poller.start(interval, now=True)

    def stop(self) -> None:
        if self._poller is not None and self._poller.running:
            self._poller.stop()


# -- the routed core ----------------------------------------------------------------------------

@implementer(ICore)
class RoutedCore:
    """``ICore`` of core ``index`` of ``cores``: its own ``RaftCore`` (holding only the groups
    ``g mod cores == index``) and a ``RemoteCoreProxy`` for each other core."""

    def __init__(self, raft, index: int, cores: int, proxies: dict):
        self.raft = raft
        self.index = index
        self.cores = cores
        self.group_count = raft.group_count
        self.proxies = proxies  # core index -> RemoteCoreProxy
        self.reactor = raft.reactor
        limit = raft.settings.max_live_readers
        self.max_live_readers = limit
        watchers = CoreWatchers(limit, lambda: self.live_readers)
        raft.watchers = watchers
        raft.forks = CrossCoreForks(self, raft)
        self.batches = raft.batches
        # this core's cold-tier writer and chunk cache (for its metrics), or None
        self.flusher = raft.flusher
        self.cache = raft.cache
        # this core's peer transport (core k to core k of every node) and forwarder, for the
        # metrics page (``ursula_peer_*``, ``ursula_forward_*``)
        self.transport = raft.transport
        self.forwarder = raft.forwarder

    @property
    def load_moves(self) -> int:
        return self.raft.load_moves

    # -- placement --------------------------------------------------------------------------

    def core_of(self, bucket: str, stream: str) -> int:
        return group_of(bucket, stream, self.group_count) % self.cores

    def group_or_remote(self, bucket: str, stream: str):
        g = group_of(bucket, stream, self.group_count)
        if g % self.cores == self.index:
            return self.raft.groups[g]
        return _RemoteGroup(g)

    def _proxy(self, core: int) -> RemoteCoreProxy | None:
        return None if core == self.index else self.proxies[core]

    # -- ICore --------------------------------------------------------------------------------

    @property
    def live_readers(self) -> int:
        return self.raft.watchers.count + sum(p.count for p in self.proxies.values())

    def now_ms(self) -> int:
        return self.raft.now_ms()

    def submit(self, command):
        if isinstance(command, (C.CreateBucket, C.DeleteBucket)):
            parts = [self.submit_here(command)]
            parts += [proxy.submit(command) for proxy in self.proxies.values()]
            d = defer.gatherResults(parts, consumeErrors=True)
            d.addErrback(lambda failure: failure.value.subFailure.raiseException())
            return d.addCallback(_combine_bucket_outcomes)
        proxy = self._proxy(self.core_of(command.bucket, command.stream))
        if proxy is not None:
            return proxy.submit(command)
        return self.submit_here(command)

    def submit_here(self, command):
        """A command for this core's groups (or a bucket command for all of them)."""
        if (isinstance(command, C.CreateStream) and command.fork_stream is not None
                and command.inherited is None
                and self.core_of(command.fork_bucket, command.fork_stream) != self.index):
            return self.raft.forks.create_fork(command)
        return defer.maybeDeferred(self.raft.submit, command)

    def head(self, bucket, stream):
        proxy = self._proxy(self.core_of(bucket, stream))
        if proxy is not None:
            return proxy.head(bucket, stream)
        return self.raft.head(bucket, stream)

    def read_applied(self, bucket, stream, offset, max_bytes):
        proxy = self._proxy(self.core_of(bucket, stream))
        if proxy is None:
            return self.read_here(bucket, stream, offset, max_bytes)
        # The cold part of the answer is fetched here, from the cold store every core of the
        # node shares: a catch-up read's MiBs do not cross the local link.
        d = proxy.read_applied(bucket, stream, offset, max_bytes, spans=True)
        return d.addCallback(lambda result: self.raft.stitch(result) if result.cold else result)

    def read_here(self, bucket, stream, offset, max_bytes):
        read = getattr(self.raft, "read_applied", None)
        if read is not None:
            return read(bucket, stream, offset, max_bytes)
        return defer.maybeDeferred(self.raft.read_local, bucket, stream, offset, max_bytes)

    def read_local(self, bucket, stream, offset, max_bytes):
        """The old synchronous read, for this core's groups only."""
        if self.core_of(bucket, stream) != self.index:
            raise Unavailable("the stream belongs to another core of this node")
        return self.raft.read_local(bucket, stream, offset, max_bytes)

    def list_streams(self, bucket, after, limit):
        parts = [self.raft.list_streams(bucket, after, limit)]
        parts += [proxy.list_streams(bucket, after, limit) for proxy in self.proxies.values()]
        return merge_listings(parts, limit)

    def view(self, bucket, stream, kind, max_bytes):
        proxy = self._proxy(self.core_of(bucket, stream))
        if proxy is not None:
            return proxy.view(bucket, stream, kind, max_bytes)
        return self.raft.view(bucket, stream, kind, max_bytes)

    def subscribe(self, bucket, stream, callback):
        proxy = self._proxy(self.core_of(bucket, stream))
        if proxy is None:
            return self.raft.subscribe(bucket, stream, callback)
        if self.live_readers >= self.max_live_readers:
            raise TooManyReaders()
        return proxy.subscribe(bucket, stream, callback)

    def is_ready(self) -> bool:
        return self.raft.is_ready() and all(p.ready for p in self.proxies.values())

    def stats(self) -> dict:
        stats = dict(self.raft.stats())
        stats["live_readers"] = self.live_readers
        return stats

    def group_stats(self) -> list[dict]:
        return self.raft.group_stats()


class CoreServer:
    """Answers the calls that reach this core over the local link."""

    def __init__(self, routed: RoutedCore, metrics=None):
        self.routed = routed
        self.raft = routed.raft
        self.metrics = metrics

    def handle(self, link, op, args):
        try:
            d = self._dispatch(link, op, args)
        except Exception:  # noqa: BLE001 - every error becomes an answer item
            return error_item(Failure())
        if isinstance(d, defer.Deferred):
            return d.addCallbacks(lambda value: ["ok", value], error_item)
        return ["ok", d]

    def _dispatch(self, link, op, args):
        routed = self.routed
        if op == "submit":
            return routed.submit_here(decode_command(args)).addCallback(outcome_to_wire)
        if op == "head":
            return self.raft.head(*args).addCallback(info_to_wire)
        if op == "read":
            bucket, stream, offset, max_bytes, *spans = args
            self.raft.watchers.watch((bucket, stream), link)
            read = self.raft.read_spans if spans and spans[0] else routed.read_here
            return read(bucket, stream, offset, max_bytes).addCallback(read_to_wire)
        if op == "view":
            return self.raft.view(*args).addCallback(view_to_link)
        if op == "list":
            return self.raft.list_streams(*args).addCallback(
                lambda items: [[name, info_to_wire(info)] for name, info in items])
        if op == "watch":
            key = tuple(args)
            self.raft.watchers.watch(key, link)
            link.changed(key)
            return None
        if op == "unwatch":
            self.raft.watchers.unwatch(tuple(args), link)
            return None
        if op == "sub_watch_all":  # ursula.core.subscriptions: every change, to that core
            self.raft.watchers.everything.add(link)
            return None
        if op == "sub_unwatch_all":
            self.raft.watchers.everything.discard(link)
            return None
        if op == "ready":
            return self.raft.is_ready()
        if op == "stats":
            return routed.stats()
        if op == "group_stats":
            return self.raft.group_stats()
        if op == "metrics":
            return self.metrics.render()[0] if self.metrics is not None else b""
        raise Unavailable(f"unknown local call {op!r}")

    def on_changed(self, link, keys) -> None:
        pass

    def link_lost(self, link) -> None:
        self.raft.watchers.drop_link(link)


def keep_groups(raft, index: int, cores: int) -> None:
    """Drop from a fresh ``RaftCore`` the groups another core owns (before ``start``)."""
    for g in [g for g in raft.groups if g % cores != index]:
        del raft.groups[g]
