"""``IColdStore``: where cold chunks live (put, ranged get, delete, list; Deferreds out), and the
errors of the cold tier.

May import: zope.interface.
"""

from __future__ import annotations

from zope.interface import Interface


class ColdError(Exception):
    """The cold tier could not answer (store down, object missing or damaged)."""


class ChunkMissing(ColdError):
    """No object under that key."""


class ChunkCorrupt(ColdError):
    """An object whose header or checksum does not match: never served."""


class IColdStore(Interface):
    """An object store of immutable chunks. Keys are ``/``-separated relative names."""

    def put(key: str, data: bytes) -> object:
        """A Deferred firing once ``data`` is durably stored under ``key`` (overwrites)."""

    def get(key: str, start: int = 0, end: int | None = None) -> object:
        """A Deferred of the bytes ``[start, end)`` of the object (``end`` None: to its end);
        fails with ``ChunkMissing`` when there is no such object."""

    def delete(key: str) -> object:
        """A Deferred firing once the object is gone (no error if it was not there)."""

    def list(prefix: str) -> object:
        """A Deferred of ``[(key, modified)]`` for every object whose key starts with
        ``prefix`` (``modified``: when it was last written, seconds since the epoch)."""
