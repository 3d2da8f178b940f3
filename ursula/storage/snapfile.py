"""``SnapshotFileData``: the data of a stored snapshot, read from its file when asked for.

A group's latest snapshot is kept by its Raft storage for one reason: a follower that fell
behind the log is sent it, in chunks (``data[off:off + chunk]``). Holding its bytes in memory
for that costs as much RAM as the group's hot bytes; once the image is durable in ``snap/``,
the storage holds one of these instead (``len`` and slicing, each slice one ``pread``).

The file is opened when the object is made and stays open until it is collected, so a slice
still reads the image after a newer snapshot replaced (unlinked) the file.

May import: the standard library.
"""

from __future__ import annotations

import os


class SnapshotFileData:
    """Bytes of the file at ``path`` (opened now): ``len``, slices (bytes), ``bytes()``.
    `span` narrows it to the data inside the file. Read-only; equality is identity."""

    __slots__ = ("path", "size", "_fd", "_offset", "_length")

    def __init__(self, path: str):
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self.size = os.fstat(self._fd).st_size
        self._offset = 0
        self._length = self.size

    def span(self, offset: int, length: int) -> SnapshotFileData:
        """Only ``[offset, offset + length)`` of the file from now on; returns self."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(f"{self.path}: [{offset}, +{length}) is outside its {self.size} bytes")
        self._offset, self._length = offset, length
        return self

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, key) -> bytes:
        if not isinstance(key, slice):
            raise TypeError("SnapshotFileData supports slices only")
        start, stop, step = key.indices(self._length)
        if step != 1:
            raise ValueError("SnapshotFileData supports contiguous slices only")
        return self._read(start, max(0, stop - start))

    def __bytes__(self) -> bytes:
        return self._read(0, self._length)

    def _read(self, start: int, size: int) -> bytes:
        parts = []
        position = self._offset + start
        while size > 0:
            part = os.pread(self._fd, size, position)
            if not part:
                raise OSError(f"{self.path}: snapshot file shorter than recorded")
            parts.append(part)
            position += len(part)
            size -= len(part)
        return b"".join(parts)

    def close(self) -> None:
        fd = getattr(self, "_fd", -1)  # unset if the open in __init__ failed
        if fd >= 0:
            self._fd = -1
            os.close(fd)

    def __del__(self):
        try:
            self.close()
        except OSError:
            pass

    def __repr__(self) -> str:
        return f"SnapshotFileData({self.path!r}, {self._offset}, {self._length})"
