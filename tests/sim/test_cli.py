"""`python -m ursula.sim`: the summary line, exit status, replay command and --bench."""

import subprocess
import sys

from ursula.sim.__main__ import main, parse_range
from ursula.sim.bench import bench


def test_range_summary_and_exit_zero(capsys):
    assert main(["--seeds", "0..4", "--nodes", "3"]) == 0
    out = capsys.readouterr().out
    assert "sim: 5 seeds, 0 violations" in out


def test_failing_seed_prints_its_replay_command_and_exits_one(capsys):
    assert main(["--seeds", "11..14", "--nodes", "3", "--broken", "vote_twice"]) == 1
    out = capsys.readouterr().out
    assert "replay: python -m ursula.sim --seed 13 --nodes 3 --broken vote_twice" in out
    assert "sim: 4 seeds, 1 violations" in out


def test_module_entry_point_runs():
    p = subprocess.run(
        [sys.executable, "-m", "ursula.sim", "--seed", "3", "--nodes", "5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "sim: 1 seeds, 0 violations" in p.stdout


def test_parse_range():
    assert parse_range("0..299") == range(0, 300)
    assert parse_range("7") == range(7, 8)


def test_bench_measures_commits():
    assert bench(0.2, batch=1) > 500
    assert bench(0.2, batch=64) > bench(0.2, batch=1)


def test_bench_cli(capsys):
    assert main(["--bench", "--bench-seconds", "0.1"]) == 0
    assert "commits/s" in capsys.readouterr().out
