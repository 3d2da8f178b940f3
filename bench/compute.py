"""Appends/s on a stream bound to a WASM module vs an unbound one (docs/wasm.md).

    python bench/compute.py [--duration 5] [--conns 16] [--keys 300] [--fsync never]

Starts one ``twistd -n ursula`` node (one core process), and for each case drives POSTs of
one State Protocol change message each (``bench/compute.lua``, wrk) at one JSON stream:
unbound; bound to ``examples/wasm/state_protocol.wat`` without compaction; bound with
compaction every 1000 records. Prints one line per case and a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from procs import (  # noqa: E402
    free_port,
    request,
    start_foreground,
    stop,
    wait_until_serving,
    write_config,
)

CASES = [("unbound", None), ("bound", 0), ("bound+compaction", 1000)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=int, default=5)
    p.add_argument("--conns", type=int, default=16)
    p.add_argument("--keys", type=int, default=300)
    p.add_argument("--fsync", default="never", choices=("never", "always"))
    args = p.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = pathlib.Path(tmp)
        port = free_port()
        module = ROOT / "examples" / "wasm" / "state_protocol.wat"
        config = write_config(directory, port, f"cores = 1\n[storage]\nfsync = {args.fsync}\n"
                                               f"[compute]\nmodules = state = {module}\n")
        server = start_foreground(config, directory)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_serving(url, server)
            for name, every in CASES:
                path = f"/v1/stream/bench-{name.replace('+', '-')}"
                assert request("PUT", url + path, None,
                               {"Content-Type": "application/json"})[0] == 201
                if every is not None:
                    status, _, body = request("PUT", url + path + "/compute", json.dumps(
                        {"module": "state", "every_records": every}).encode(),
                        {"Content-Type": "application/json"})
                    assert status == 201, body
                done = subprocess.run(
                    ["wrk", "-t", "2", "-c", str(args.conns), "-d", f"{args.duration}s",
                     "-s", str(HERE / "compute.lua"), url, "--", path, str(args.keys)],
                    capture_output=True, text=True, timeout=args.duration + 60)
                line = [x for x in done.stdout.splitlines() if x.startswith("{")][-1]
                result = {"case": name, **json.loads(line)}
                result["appends_per_s"] = round(result["ok"] / result["seconds"])
                if every is not None:
                    described = json.loads(request("GET", url + path + "/compute")[2])
                    result["records"] = described["records"]
                    result["snapshots"] = described["snapshots"]
                    result["state_bytes"] = described["state_bytes"]
                results.append(result)
                print(f"{name:>18}: {result['appends_per_s']:>6} appends/s  p50 "
                      f"{result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms  "
                      f"errors {result['errors']}", flush=True)
                time.sleep(1)
        finally:
            stop(server)
    base = results[0]["appends_per_s"]
    summary = {"conns": args.conns, "duration_s": args.duration, "fsync": args.fsync,
               "keys": args.keys, "cpus": os.cpu_count(), "results": results,
               "ratios": {r["case"]: round(r["appends_per_s"] / base, 2) for r in results}}
    print(json.dumps(summary))
    return 0 if all(r["errors"] == 0 and r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
