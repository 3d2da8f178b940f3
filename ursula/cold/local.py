"""``LocalColdStore``: an ``IColdStore`` in a local directory (the embedded default,
``<data_dir>/cold``). Writes are atomic (a temporary file, fsync, rename, fsync of the
directory); all file I/O runs in the reactor's thread pool.

May import: Twisted, zope.interface.
"""

from __future__ import annotations

import os

from zope.interface import implementer

from ursula.cold.interfaces import ChunkMissing, ColdError, IColdStore
from ursula.cold.threaded import ThreadedStore


@implementer(IColdStore)
class LocalColdStore(ThreadedStore):
    def __init__(self, reactor, root: str, pool=None):
        self.reactor = reactor
        self.root = os.path.abspath(root)
        self.pool = pool
        os.makedirs(self.root, exist_ok=True)

    def path(self, key: str) -> str:
        parts = key.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise ColdError(f"cold key {key!r}: not a relative name")
        return os.path.join(self.root, *parts)

    # -- in the thread pool -------------------------------------------------------------------

    def _put(self, key: str, data: bytes) -> None:
        path = self.path(key)
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _get(self, key: str, start: int, end: int | None) -> bytes:
        try:
            with open(self.path(key), "rb") as handle:
                if start:
                    handle.seek(start)
                return handle.read() if end is None else handle.read(end - start)
        except FileNotFoundError:
            raise ChunkMissing(f"cold chunk {key}: no such object") from None

    def _delete(self, key: str) -> None:
        try:
            os.unlink(self.path(key))
        except FileNotFoundError:
            pass

    def _list(self, prefix: str) -> list[tuple[str, float]]:
        out = []
        for directory, _, files in os.walk(self.root):
            relative = os.path.relpath(directory, self.root)
            base = "" if relative == "." else relative.replace(os.sep, "/") + "/"
            for name in files:
                key = base + name
                if ".tmp" in name or not key.startswith(prefix):
                    continue
                try:
                    out.append((key, os.stat(os.path.join(directory, name)).st_mtime))
                except FileNotFoundError:
                    pass
        return sorted(out)
