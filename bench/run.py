"""Benchmark ursula against the Node reference server: one command, numbers from a real run.

    python bench/run.py                    # full run, rewrites the results section of
                                           # docs/benchmarks.md and docs/bench-*.png
    python bench/run.py --smoke            # tiny scale, ~10 s per server, docs untouched
    python bench/run.py --servers ursula,ref-mem --workloads append --duration 5

For each round, each case (workload x parameter) and each server in turn (A B A B ...), it
starts the server fresh, runs the case while sampling the server's process tree (peak RSS,
CPU), and stops it. It writes a JSON file with every run and a Markdown table of the
medians over rounds with ursula / reference ratios (see report.py), and exits non-zero if
any workload failed outright (crashed, or nothing succeeded).
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import report  # noqa: E402
import servers  # noqa: E402
import workloads  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOADS = ("append", "producer", "sse", "catchup")
FULL = {"duration": 8, "rounds": 2, "streams": "1,100,500", "conns": 64, "subscribers": 1000,
        "catchup_mb": 100}
SMOKE = {"duration": 1, "rounds": 1, "streams": "1,10", "conns": 8, "subscribers": 20,
         "catchup_mb": 4}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny scale; never touches docs/")
    p.add_argument("--duration", type=float, help="seconds per measured run (full: 8)")
    p.add_argument("--rounds", type=int, help="rounds of every case on every server (full: 2)")
    names = [s["name"] for s in servers.SERVERS]
    p.add_argument("--servers", default="all", help=f"comma list of {','.join(names)} or all")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="comma list")
    p.add_argument("--streams", help="stream counts for append/producer (full: 1,100,500)")
    p.add_argument("--conns", type=int, help="connections for append/producer (full: 64)")
    p.add_argument("--payload", type=int, default=256, help="append payload bytes")
    p.add_argument("--subscribers", type=int, help="SSE subscribers (full: 1000)")
    p.add_argument("--rate", type=float, default=30, help="SSE writer appends/s")
    p.add_argument("--catchup-mb", type=int, help="catch-up stream size in MiB (full: 100)")
    p.add_argument("--shared", default=os.path.join(REPO, "..", "shared"),
                   help="the shared/ folder holding tools/refserver.sh")
    p.add_argument("--out", help="results JSON path (default bench/results/latest.json, "
                   "or bench/results/tmp/smoke.json with --smoke)")
    p.add_argument("--docs", default=os.path.join(REPO, "docs"),
                   help="folder of benchmarks.md and the PNGs")
    p.add_argument("--no-docs", action="store_true", help="do not rewrite docs/")
    p.add_argument("--quiet-below", type=float, default=40,
                   help="before each case, wait until other work uses less than this %% of one "
                   "core (0 = do not wait; --smoke does not wait)")
    p.add_argument("--quiet-wait", type=float, default=60, help="max wait per case (s)")
    p.add_argument("--quiet-budget", type=float, default=120, help="max wait per run (s)")
    p.add_argument("--start-timeout", type=float, default=300,
                   help="seconds to wait for a server (the first refserver.sh run installs it)")
    a = p.parse_args(argv)
    for k, v in (SMOKE if a.smoke else FULL).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.streams = [int(x) for x in a.streams.split(",")]
    a.workloads = [w for w in a.workloads.split(",") if w]
    bad = set(a.workloads) - set(WORKLOADS)
    if bad:
        p.error(f"unknown workloads {sorted(bad)}")
    wanted = ([s["name"] for s in servers.SERVERS if s.get("default", True)]
              if a.servers == "all" else a.servers.split(","))
    if set(wanted) - set(names):
        p.error(f"unknown servers {sorted(set(wanted) - set(names))}")
    a.servers = wanted
    if a.out is None:
        a.out = os.path.join(REPO, "bench", "results", "tmp/smoke.json" if a.smoke
                             else "latest.json")
    a.refserver = os.path.join(os.path.abspath(a.shared), "tools", "refserver.sh")
    return a


def cases(a):
    """(case id, workload, parameter) in run order."""
    out = []
    for w in a.workloads:
        if w in ("append", "producer"):
            out += [(f"{w}-{n}", w, n) for n in a.streams]
        elif w == "sse":
            out.append((f"sse-{a.subscribers}", w, a.subscribers))
        else:
            out.append((f"catchup-{a.catchup_mb}MiB", w, a.catchup_mb))
    return out


def wait_quiet(a, budget):
    """Wait (up to --quiet-wait s per case, --quiet-budget s per run) until the machine's busy
    CPU over one second is below --quiet-below % of one core; return (waited s, busy %)."""
    t0 = time.monotonic()
    while True:
        b0 = servers.machine_busy()
        time.sleep(1)
        busy = 100.0 * (servers.machine_busy() - b0) / servers.HZ
        waited = time.monotonic() - t0
        if busy < a.quiet_below or waited >= min(a.quiet_wait, budget):
            return waited, busy


def run_case(a, base, tag, workload, param):
    if workload in ("append", "producer"):
        return workloads.append(base, tag, param, a.duration, a.conns, a.payload,
                                producer=workload == "producer")
    if workload == "sse":
        return workloads.sse(base, tag, param, a.rate, a.duration)
    return workloads.catchup(base, tag, param, a.duration)


def run_one(a, spec, run, workdir):
    """Start the server, run one case under the monitor, stop it; fill in run."""
    srv = servers.Server(spec, workdir, a.refserver)
    try:
        srv.start(a.start_timeout)
        with servers.Monitor(srv.pids()) as mon:
            fig = run_case(a, srv.base, f"r{run['round']}-{run['case']}", run["workload"],
                           run["param"])
        fig.update(peak_rss_mb=mon.peak_rss_mb, server_cpu=mon.cpu_pct)
        # CPU used by everything else on the machine (the bench's own setup and sampler
        # included): other work there disturbs a run
        loadgen = fig["loadgen_cpu"] * fig["loadgen_wall"] / mon.wall
        fig["other_cpu"] = max(0.0, mon.machine_pct - mon.cpu_pct - loadgen)
        run["figures"] = fig
        run["ok"] = fig.get("ok", 0) > 0
        if not run["ok"]:
            why = fig.get("first_errors") or [fig.get("error_codes", "")]
            run["error"] = "nothing succeeded: " + "; ".join(why[:2])
    except Exception as e:  # a failed run is recorded, and the exit code says so
        run.update(ok=False, error=f"{type(e).__name__}: {e}")
        dead = [p.returncode for p in srv.procs if p.poll() is not None]
        if dead and "server exited" not in run["error"]:
            run["error"] += f" (server exited with {dead[0]})"
        run["server_log_tail"] = srv.log_tail(1500)
    finally:
        srv.stop()


def describe(fig):
    keys = [("appends_s", "appends/s", "{:.0f}"), ("p50_ms", "p50", "{:.2f} ms"),
            ("p99_ms", "p99", "{:.2f} ms"), ("max_ms", "max", "{:.1f} ms"),
            ("delivered_ratio", "delivered", "{:.4f}"), ("read_mb_s", "read", "{:.0f} MB/s"),
            ("fill_mb_s", "fill", "{:.1f} MB/s"), ("errors", "errors", "{}"),
            ("peak_rss_mb", "peak RSS", "{:.0f} MB"), ("server_cpu", "server CPU", "{:.0f}%"),
            ("loadgen_cpu", "loadgen CPU", "{:.0f}%"), ("other_cpu", "other CPU", "{:.0f}%")]
    return "  ".join(f"{label} {fmt.format(fig[k])}" for k, label, fmt in keys
                     if fig.get(k) is not None)


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine():
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                if ln.startswith("model name")), platform.processor())
    mem = next(int(ln.split()[1]) for ln in open("/proc/meminfo") if ln.startswith("MemTotal"))
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "mem_gib": round(mem / 2**20, 1),
        "kernel": platform.release(), "python": platform.python_version(),
        "node": sh(["node", "--version"]), "wrk": " ".join(sh(["sh", "-c", "wrk -v 2>&1 | head -1"]).split()[:2]),
        "git": sh(["git", "-C", REPO, "describe", "--always", "--dirty"]),
    }


def main(argv=None):
    a = parse_args(argv)
    specs = {s["name"]: s for s in servers.SERVERS}
    active = [specs[n] for n in a.servers if not specs[n].get("pending")]
    result = {
        "command": " ".join(["python", "bench/run.py"]
                            + (sys.argv[1:] if argv is None else argv)),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "config": {k: getattr(a, k) for k in (
            "smoke", "duration", "rounds", "streams", "conns", "payload", "subscribers", "rate",
            "catchup_mb", "quiet_below", "quiet_wait", "quiet_budget")},
        "servers": [dict(s, selected=s["name"] in a.servers) for s in servers.SERVERS],
        "runs": [],
    }
    for s in result["servers"]:
        if s.get("pending") and s["selected"]:
            print(f"not run: {s['label']}: {s['pending']}", flush=True)
    t_start, budget = time.monotonic(), a.quiet_budget
    tmp = tempfile.mkdtemp(prefix="ursula-bench-")
    for rnd in range(a.rounds):
        for case_id, workload, param in cases(a):
            for spec in active:
                run = {"round": rnd, "case": case_id, "workload": workload, "param": param,
                       "server": spec["name"]}
                if a.quiet_below > 0 and not a.smoke:
                    waited, busy = wait_quiet(a, budget)
                    budget -= waited
                    run.update(quiet_wait_s=round(waited, 1), busy_before=round(busy))
                run_one(a, spec, run, os.path.join(tmp, f"{spec['name']}-r{rnd}-{case_id}"))
                result["runs"].append(run)
                status = describe(run["figures"]) if run["ok"] else "FAILED " + run["error"]
                print(f"[round {rnd + 1}/{a.rounds}] {case_id:<16} {spec['name']:<10} {status}",
                      flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    result["elapsed_s"] = round(time.monotonic() - t_start, 1)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    md = report.markdown(result)
    with open(os.path.splitext(a.out)[0] + ".md", "w") as f:
        f.write(md)
    print("\n" + md)
    if not a.smoke and not a.no_docs:
        report.update_docs(result, a.docs)
    failed = [r for r in result["runs"] if not r["ok"]]
    print(f"wrote {a.out}; {len(result['runs'])} runs, {len(failed)} failed, "
          f"{result['elapsed_s']:.0f} s", flush=True)
    return 1 if failed or not result["runs"] else 0


if __name__ == "__main__":
    sys.exit(main())
