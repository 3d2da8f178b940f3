"""ursula.sim: deterministic simulation of N replicas of the node's own group driver
(ursula.replica.GroupDriver: the real Raft core driving the real stream state machine), over
a simulated network, disk and clock, all from one seed.

Modules: world (clock, event queue, faulty network), disk (the fake disk: crashes, planted
storage faults), replica (a GroupDriver over the disk, the network and the clock; freezes,
slow disks), client (idempotent producers, linearizable readers), checker (invariants),
run (one seeded run), bench (no-fault throughput of the core), __main__ (the CLI).

    python -m ursula.sim --seeds 0..299 --nodes 3
    python -m ursula.sim --seed 17 --nodes 5 --trace
    python -m ursula.sim --bench

May import: the standard library, cbor2, ursula.raft, ursula.stream, ursula.replica.
Never Twisted, never a clock.
"""

from ursula.sim.checker import Checker, Violation
from ursula.sim.run import BROKEN_RULES, Result, Simulation, run_seed

__all__ = ["BROKEN_RULES", "Checker", "Result", "Simulation", "Violation", "run_seed"]
