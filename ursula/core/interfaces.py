"""``ICore``: what the HTTP layer may ask of a node's runtime; and the interfaces of the
runtime's parts (``IPersister``, ``IScheduler``, ``IForwarder``, ``IForkCoordinator``,
``IReadPath``), each with a real implementation and a fake (``ursula.core.fakes``).

May import: zope.interface.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class TooManyReaders(Exception):
    """The live-reader limit (long-poll + SSE waiters) is reached."""


class Unavailable(Exception):
    """The request cannot be served right now (no leader, leader unreachable, timed out).

    The HTTP layer answers 503 with ``Retry-After``. ``str()`` is a one-line reason.
    """


class ICore(Interface):
    """A node's runtime: commands go in, outcomes and reads come out (as Deferreds)."""

    live_readers = Attribute("number of registered live readers (long-poll and SSE)")

    def now_ms() -> int:
        """The node's clock in milliseconds since the epoch (the only clock read)."""

    def submit(command) -> object:
        """Apply a state-machine command; a Deferred firing with its ``Outcome``."""

    def head(bucket: str, stream: str) -> object:
        """A Deferred firing with ``StreamInfo``, or failing with ``StreamError``."""

    def read_applied(bucket: str, stream: str, offset: int, max_bytes: int) -> object:
        """A Deferred firing with the ``ReadResult`` of the owning replica's applied state (no
        new read barrier), or failing with ``StreamError``.

        For a read after ``head`` (the linearizable barrier) and for live readers, which are
        woken by applies. Fires at once (synchronously) when this process holds the group; a
        group of another core process answers over the local link.
        """

    def list_streams(bucket: str, after: str, limit: int) -> object:
        """A Deferred firing with ``[(name, StreamInfo)]`` sorted by name."""

    def view(bucket: str, stream: str, kind: str, max_bytes: int) -> object:
        """A Deferred firing with the ``StreamView`` of ``kind`` (snapshot, bootstrap, attrs,
        compute) after the linearizable barrier, cold parts fetched; or failing with
        ``StreamError``."""

    def subscribe(bucket: str, stream: str, callback) -> object:
        """Call ``callback()`` once, the next time the stream changes.

        Returns an object with ``cancel()``. Raises ``TooManyReaders`` at the limit.
        """

    def stats() -> dict:
        """Gauges for metrics: streams, bytes, live readers."""

    def is_ready() -> bool:
        """True when every local group has a known leader (``/__ursula/ready``)."""


class IPersister(Interface):
    """Where a group's Work becomes durable (the journal; ``MemoryPersister`` keeps nothing)."""

    def persist(group_id: int, work) -> object:
        """A Deferred firing once the Work's snapshot, entries and hard state are durable."""

    def save_snapshot(group_id: int, snapshot) -> object:
        """A Deferred firing once a state-machine snapshot is durable."""

    def compacted(group_id: int, index: int) -> None:
        """The group's log up to ``index`` is no longer needed."""


class IScheduler(Interface):
    """The per-turn batcher of a node's groups: which groups run this turn, and the ticks."""

    def schedule(group) -> None:
        """Run ``group.process()`` in the next turn (once, however often it is called)."""

    def start(groups) -> None:
        """Tick every group each tick interval, and schedule each once now."""

    def stop() -> None:
        """No more turns or ticks."""


class IForwarder(Interface):
    """Submit a command to its group's leader, wherever it is: propose here if this node leads,
    else forward to the leader (with a request id), wait for a leader, retry and re-route."""

    draining = Attribute("True while this node drains (``RaftCore.draining`` is kept here): "
                         "the leaders then do not count its writes as load to follow")
    load = Attribute("group -> {node id: writes proposed here that entered that node}, "
                     "counted while not None (``RaftCore._follow_load`` takes it each period)")

    def submit(group, command, deadline: float) -> object:
        """A Deferred firing with the ``Outcome``; fails with ``Unavailable`` when no leader is
        known by ``deadline`` (reactor seconds) or the request timed out."""

    def leader_changed(group) -> None:
        """``group``'s known leader changed: re-send its outstanding forwarded requests."""

    def answer(group, payload: bytes, decoded=None) -> object:
        """Serve a request another node forwarded here for ``group`` (None: not a group of
        this node): bytes, or a Deferred of bytes. ``decoded``: ``payload`` already decoded
        (cbor), if the caller has done it."""

    def stop() -> None:
        """Fail every outstanding request (the node is shutting down)."""


class IForkCoordinator(Interface):
    """Forks whose source lives in another group: the create saga and release delivery."""

    def create_fork(command) -> object:
        """Acquire the source, create the fork, release the reference if that failed; a
        Deferred firing with the ``Outcome`` of the create."""

    def after_apply(group) -> None:
        """``group`` applied entries: deliver its pending releases if it leads."""


class IReadPath(Interface):
    """Linearizable reads: a ReadIndex barrier, then the local replica's applied state."""

    def barrier(group, deadline: float | None = None) -> object:
        """Fires once ``group`` may serve a linearizable read here."""

    def head(bucket: str, stream: str) -> object:
        """A Deferred firing with ``StreamInfo``."""

    def read_applied(bucket: str, stream: str, offset: int, max_bytes: int) -> object:
        """A Deferred of the ``ReadResult`` of this node's applied state (already fired)."""

    def list_streams(bucket: str, after: str, limit: int) -> object:
        """A Deferred firing with ``[(name, StreamInfo)]`` sorted by name."""


class IFlusher(Interface):
    """The cold tier's writer: on each group this node leads, carries the oldest hot bytes of
    the largest streams to the cold store (upload, then ``ColdFlushed`` through Raft) while the
    group holds more than its flush threshold, and deletes the chunks of dropped streams."""

    def start() -> None:
        """Begin polling the groups."""

    def stop() -> None:
        """No more uploads or deletes."""

    def kick(group) -> None:
        """``group`` applied entries: flush now if it is over the threshold."""

    def admit(group) -> object:
        """None if ``group`` may take more bytes, else a one-line reason (its hot bytes are at
        the hot cap because the cold tier is behind): the write is refused as Unavailable."""

    def stats() -> dict:
        """Counters: uploads, uploaded_bytes, upload_errors, collected."""
