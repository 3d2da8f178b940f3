"""The examples in ``examples/client_*.py`` run against a real node and print what they say."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
EXPECTED = {
    "client_quickstart.py": "bob: hi",
    "client_producer_asyncio.py": "followed 2000 records to the end of the stream",
    "client_twisted_follow.py": "followed 100 lines, last b'line 99'",
    "client_pull_wake.py": "ack: AckResult(ok=True, next_wake=False)",
}


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs(node, script):
    extra = ["-n", "2000"] if script == "client_producer_asyncio.py" else []
    result = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--url", node.url,
                             *extra], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert EXPECTED[script] in result.stdout
