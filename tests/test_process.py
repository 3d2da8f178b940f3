"""``ursula.process.tune_malloc``: sets glibc's mmap threshold (where there is glibc), and
``[node] malloc_mmap_threshold = 0`` leaves malloc alone."""

import platform
import subprocess
import sys

import pytest

from ursula.config import parse_config
from ursula.process import tune_malloc


def test_zero_leaves_malloc_alone():
    assert tune_malloc(0) is False
    assert parse_config("").node.malloc_mmap_threshold == 0  # glibc's own by default
    assert parse_config("[node]\nmalloc_mmap_threshold = 131072\n"
                        ).node.malloc_mmap_threshold == 131072


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_the_threshold_is_set_on_glibc():
    # in a child, so this test process keeps its own malloc settings
    code = "from ursula.process import tune_malloc; print(tune_malloc(131072))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "True"


def test_tune_gc_sets_the_young_threshold_and_zero_leaves_the_collector_alone():
    import gc

    from ursula.process import tune_gc
    before = gc.get_threshold()
    try:
        assert parse_config("").node.gc_threshold == 20_000
        assert not tune_gc(0) and gc.get_threshold() == before
        assert tune_gc(12_345)
        assert gc.get_threshold() == (12_345, before[1], before[2])
        assert gc.get_freeze_count() > 0
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
