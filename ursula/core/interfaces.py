"""``ICore``: what the HTTP layer may ask of a node's runtime.

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

    def read(bucket: str, stream: str, offset: int, max_bytes: int) -> object:
        """A Deferred firing with ``ReadResult``, or failing with ``StreamError``."""

    def read_local(bucket: str, stream: str, offset: int, max_bytes: int) -> object:
        """``ReadResult`` from this node's applied state, synchronously (no read barrier).

        For live readers after a linearizable first read: they are woken by local applies.
        Raises ``StreamError``.
        """

    def list_streams(bucket: str, after: str, limit: int) -> object:
        """A Deferred firing with ``[(name, StreamInfo)]`` sorted by name."""

    def subscribe(bucket: str, stream: str, callback) -> object:
        """Call ``callback()`` once, the next time the stream changes.

        Returns an object with ``cancel()``. Raises ``TooManyReaders`` at the limit.
        """

    def stats() -> dict:
        """Gauges for metrics: streams, bytes, live readers."""

    def is_ready() -> bool:
        """True when every local group has a known leader (``/__ursula/ready``)."""
