"""``examples/systemd/ursula.service``: what operators deploy. Checked by ``systemd-analyze
verify`` where that command exists (with ExecStart pointed at this environment's twistd, since
verify wants the binary to exist), and read for the settings the runbook relies on."""

from __future__ import annotations

import configparser
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
UNIT = ROOT / "examples" / "systemd" / "ursula.service"
TWISTD = str(pathlib.Path(sys.executable).parent / "twistd")


def _service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def test_the_unit_runs_twistd_in_the_foreground_and_drains_on_sigterm():
    service = _service()
    argv = service["ExecStart"].split()
    assert argv[0].endswith("/twistd") and "--nodaemon" in argv
    assert argv[argv.index("ursula") + 1:] == ["--config", "/etc/ursula/node.ini"]
    assert service["KillSignal"] == "SIGTERM" and service["KillMode"] == "mixed"
    assert int(service["TimeoutStopSec"]) > 30  # the supervisor's own drain timeout
    assert service["Restart"] == "on-failure"
    assert service["User"] == "ursula" and service["StateDirectory"] == "ursula"
    assert service["WorkingDirectory"] == "/var/lib/ursula"
    assert "143" in service["SuccessExitStatus"].split()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed here")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    text = UNIT.read_text().replace("/opt/ursula/venv/bin/twistd", TWISTD)
    assert text != UNIT.read_text()
    unit = tmp_path / "ursula.service"
    unit.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "ursula.service" in line]
    assert result.returncode == 0 and problems == [], result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed here")
def test_systemd_analyze_verify_bites(tmp_path):
    unit = tmp_path / "ursula.service"
    unit.write_text(UNIT.read_text().replace("/opt/ursula/venv/bin/twistd", "/nonexistent/twistd")
                    .replace("KillMode=mixed", "KillMode=mixed\nKilMode=typo"))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0 and "KilMode" in result.stdout + result.stderr
