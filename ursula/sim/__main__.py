"""Command line of the simulator.

    python -m ursula.sim --seeds 0..299 --nodes 3      # a range; exit 1 on any violation
    python -m ursula.sim --seed 17 --nodes 5 --trace   # replay one seed, with a fault trace
    python -m ursula.sim --seeds 0..199 --cold         # with the cold tier (ursula.sim.cold)
    python -m ursula.sim --seeds 0..199 --membership   # membership changes (ursula.sim.membership)
    python -m ursula.sim --seeds 0..99 --compute       # a WASM reducer bound (ursula.sim.compute)
    python -m ursula.sim --seeds 0..99 --cas-clients 0 # without the If-Match writers
    python -m ursula.sim --bench                       # no-fault throughput of the core

May import: the standard library and ursula.sim.
"""

from __future__ import annotations

import argparse
import sys
import time

from ursula.sim.run import BROKEN_RULES, run_seed


def parse_range(text: str) -> range:
    if ".." in text:
        a, b = text.split("..", 1)
        return range(int(a), int(b) + 1)
    return range(int(text), int(text) + 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ursula.sim", description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=parse_range, help="inclusive range A..B")
    p.add_argument("--seed", type=int, help="one seed (replay)")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--fault-ms", type=int, default=3000, help="simulated time with faults on")
    p.add_argument("--broken", choices=sorted(BROKEN_RULES), help="switch on a broken rule")
    p.add_argument("--trace", action="store_true", help="print faults as they happen")
    p.add_argument("--cold", action="store_true",
                   help="the leader flushes to a simulated cold tier (with outages)")
    p.add_argument("--moves", action="store_true",
                   help="membership changes with group moves (learner, promote, leadership "
                        "transfer, remove: ursula.sim.membership)")
    p.add_argument("--membership", action="store_true",
                   help="two spare nodes; learners added, promoted, members removed, disks wiped")
    p.add_argument("--compute", action="store_true",
                   help="the clients bind a WASM module; every replica's state is checked")
    p.add_argument("--cas-clients", type=int, default=2,
                   help="If-Match writers (0: the workload before If-Match existed)")
    p.add_argument("--hold-bytes", type=int, default=0,
                   help="the leader holds proposals while a write is in flight, up to this many "
                        "bytes (the node does, with 1048576; 0: off)")
    p.add_argument("--bench", action="store_true", help="no-fault throughput of the core")
    p.add_argument("--bench-seconds", type=float, default=2.0)
    p.add_argument("-v", "--verbose", action="store_true", help="one line per seed")
    args = p.parse_args(argv)

    if args.bench:
        from ursula.sim.bench import main as bench_main

        bench_main(args.bench_seconds)
        return 0
    if args.seed is not None:
        seeds = range(args.seed, args.seed + 1)
    elif args.seeds is not None:
        seeds = args.seeds
    else:
        seeds = range(0, 100)
    options = {}
    if args.fault_ms != 3000:
        options["fault_ms"] = args.fault_ms
    if args.cold:
        options["cold"] = True
    if args.membership:
        options["membership"] = True
    if args.compute:
        options["compute"] = True
    if args.moves:
        options["membership"] = True
        options["moves"] = True
    if args.hold_bytes:
        options["hold_bytes"] = args.hold_bytes
    if args.cas_clients != 2:
        options["cas_clients"] = args.cas_clients
    started = time.perf_counter()
    violations = 0
    totals = dict(acks=0, commits=0, crashes=0, sim_ms=0, events=0, reads=0, cold_uploads=0,
                  refused=0, conf_changes=0, moves=0, transfers=0)
    for seed in seeds:
        r = run_seed(seed, args.nodes, args.broken, trace=args.trace, **options)
        r.options = options
        for k in totals:
            totals[k] += getattr(r, k)
        if args.verbose or args.trace or len(seeds) == 1:
            print(
                f"seed {seed}: {'ok' if r.ok else 'VIOLATION'}  sim {r.sim_ms} ms, "
                f"{r.events} events, {r.commits} commits, {r.acks} acks, {r.reads} reads, "
                f"{r.crashes} crashes, {r.leaders} leaders"
            )
        if not r.ok:
            violations += 1
            print(f"VIOLATION seed {seed} nodes {args.nodes}: {r.violation}")
            print(f"  replay: {r.replay_command()}")
    wall = time.perf_counter() - started
    print(
        f"sim: {len(seeds)} seeds, {violations} violations  "
        f"({args.nodes} nodes, {totals['acks']} acked appends, {totals['refused']} If-Match "
        f"412s, {totals['reads']} reads, "
        f"{totals['crashes']} crashes, "
        + (f"{totals['cold_uploads']} cold chunks, " if args.cold else "")
        + (f"{totals['conf_changes']} membership changes, {totals['moves']} group moves "
           f"({totals['transfers']} leadership transfers), " if options.get("membership") else "")
        + f"{totals['sim_ms'] / 1000:.0f} s simulated "
        f"in {wall:.1f} s)"
    )
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
