"""Run the public Durable Streams conformance suite against a real ``twistd ursula`` node.

Installs the pinned npm packages (package.json beside this file) into a cache directory, starts
``twistd -n ursula`` on a free loopback port with the default configuration, runs the suite
with vitest, stops the server, and prints ``conformance: N passed, M failed, K skipped``.
Exits non-zero if any test failed or fewer than ``--expect`` tests passed.

Usage: python tests/conformance/run_conformance.py [--expect 332] [--url URL] [--cores C]
       [--hot-bytes N] [--subscriptions]
       (--subscriptions, or URSULA_SUBSCRIPTIONS=1, also runs the suite's opt-in group
       "Reserved subscription APIs": 338 tests in all)
       (--url runs against an already running server instead of starting one; --cores sets
       ``[node] cores``: with 2 the suite's connections are spread over both core processes
       by SO_REUSEPORT, so many requests reach a core that does not own their stream)
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

from procs import free_port, start_foreground, stop, wait_until_serving, write_config  # noqa: E402


def install(cache: pathlib.Path) -> pathlib.Path:
    manifest = (HERE / "package.json").read_text()
    target = cache / "suite"
    stamp = target / ".installed"
    if stamp.exists() and stamp.read_text() == manifest:
        return target
    target.mkdir(parents=True, exist_ok=True)
    (target / "package.json").write_text(manifest)
    print(f"run_conformance: npm install into {target}", file=sys.stderr, flush=True)
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
                   cwd=target, check=True)
    stamp.write_text(manifest)
    return target


def run_suite(suite: pathlib.Path, url: str, subscriptions: bool = False) -> dict:
    for name in ("conformance.test.mjs", "vitest.config.mjs"):
        shutil.copy(HERE / name, suite / name)
    report = pathlib.Path(tempfile.mkstemp(suffix=".json")[1])
    env = {**os.environ, "CONFORMANCE_TEST_URL": url, "NO_COLOR": "1"}
    if subscriptions:
        env["URSULA_SUBSCRIPTIONS"] = "1"
    subprocess.run([str(suite / "node_modules" / ".bin" / "vitest"), "run", "--config",
                    "vitest.config.mjs", "--reporter=dot", "--reporter=json",
                    f"--outputFile.json={report}"], cwd=suite, env=env)
    try:
        return json.loads(report.read_text())
    finally:
        report.unlink()


def summarise(raw: dict) -> tuple[int, int, int, list[str]]:
    passed = failed = skipped = 0
    failures = []
    for file in raw.get("testResults", []):
        results = file.get("assertionResults", [])
        if not results and file.get("status") == "failed":
            failed += 1
            failures.append(f"(file) {file.get('message', '')[:200]}")
        for test in results:
            if test["status"] == "passed":
                passed += 1
            elif test["status"] == "failed":
                failed += 1
                failures.append(" > ".join(test.get("ancestorTitles", []) + [test["title"]]))
            else:
                skipped += 1
    return passed, failed, skipped, failures


def cold_config(args) -> str:
    if not args.hot_bytes:
        return ""
    return (f"[storage]\nhot_bytes = {args.hot_bytes}\nhot_max_bytes = {64 << 20}\n"
            f"[cold]\nchunk_bytes = 1024\n")


def cold_counts(config: pathlib.Path) -> dict:
    """Uploads and chunk-cache misses of the node, from its admin plane's metrics."""
    import re
    import urllib.request
    admin = re.search(r"admin_listen = tcp:(\d+)", config.read_text()).group(1)
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/__ursula/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for key, name in (("uploads", "ursula_cold_uploads_total"),
                      ("misses", "ursula_cold_cache_misses_total")):
        # one sample per core process with cores > 1 (labelled core="k"): their sum
        found = re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
        out[key] = sum(float(value) for value in found)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expect", type=int, default=332, help="tests that must pass")
    parser.add_argument("--url", help="test an already running server")
    parser.add_argument("--cores", type=int, default=1, help="[node] cores of the node started")
    parser.add_argument("--hot-bytes", type=int, default=0,
                        help="[storage] hot_bytes per group (small: reads cross into the cold "
                             "tier)")
    parser.add_argument("--subscriptions", action="store_true",
                        default=os.environ.get("URSULA_SUBSCRIPTIONS") == "1",
                        help="also run the opt-in subscription group (6 more tests)")
    parser.add_argument("--cache", default=os.environ.get(
        "URSULA_CONFORMANCE_CACHE", str(pathlib.Path.home() / ".cache" / "ursula-conformance")))
    args = parser.parse_args()
    suite = install(pathlib.Path(args.cache))
    process = None
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="ursula-conformance-"))
    try:
        url = args.url
        if url is None:
            port = free_port()
            process = start_foreground(
                write_config(workdir, port, f"cores = {args.cores}\n" + cold_config(args)),
                workdir)
            url = f"http://127.0.0.1:{port}"
            wait_until_serving(url, process)
        raw = run_suite(suite, url, args.subscriptions)
        if process is not None and args.hot_bytes:
            cold = cold_counts(workdir / "node.ini")
            print(f"cold tier: {cold.get('uploads', 0):.0f} chunks uploaded, "
                  f"{cold.get('misses', 0):.0f} reads fetched a chunk from it")
            if not cold.get("uploads"):
                print("run_conformance: nothing was flushed to the cold tier", file=sys.stderr)
                return 1
    finally:
        if process is not None:
            stop(process)
            err = process.stderr.read().decode(errors="replace")
            if "Traceback" in err:
                print(err, file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)
    passed, failed, skipped, failures = summarise(raw)
    for name in failures:
        print(f"  FAILED {name}")
    print(f"conformance: {passed} passed, {failed} failed, {skipped} skipped")
    if failed or passed < args.expect:
        print(f"run_conformance: expected {args.expect} passing tests", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
