"""SnapshotFileData: a window of a file, read with pread on demand."""

from __future__ import annotations

import os

import pytest

from ursula.storage.snapfile import SnapshotFileData


def test_a_window_reads_like_bytes(tmp_path):
    path = tmp_path / "f"
    content = bytes(range(256)) * 40
    path.write_bytes(b"HEAD" + content + b"TAIL")
    data = SnapshotFileData(str(path)).span(4, len(content))
    assert len(data) == len(content) and bytes(data) == content
    for a, b in ((0, 10), (100, 5000), (10_000, 20_000), (-5, None), (7, 3)):
        assert data[a:b] == content[a:b]
    os.unlink(path)
    assert data[1:4] == content[1:4]  # the descriptor outlives the name
    data.close()
    data.close()  # twice is harmless


def test_a_window_outside_the_file_or_a_stepped_slice_is_refused(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    data = SnapshotFileData(str(path))
    with pytest.raises(ValueError):
        data.span(5, 6)
    data.span(2, 8)
    with pytest.raises(ValueError):
        data[0:8:2]
    with pytest.raises(TypeError):
        data[3]


def test_a_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(OSError):
        SnapshotFileData(str(tmp_path / "absent"))
