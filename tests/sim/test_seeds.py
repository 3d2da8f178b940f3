"""The simulator over many seeds with every fault on: no violations, and faults really happen."""

import pytest

from ursula.sim import run_seed


def _run_range(nodes: int, seeds: range):
    failures = []
    totals = dict(acks=0, crashes=0, snapshots=0, leaders=0, reads=0)
    for seed in seeds:
        r = run_seed(seed, nodes)
        if not r.ok:
            failures.append(f"{r.violation}\n  replay: {r.replay_command()}")
        for k in totals:
            totals[k] += getattr(r, k)
    return failures, totals


@pytest.mark.slow
@pytest.mark.parametrize("nodes", [3, 5])
def test_150_seeds_all_faults_no_violation(nodes):
    failures, totals = _run_range(nodes, range(150))
    assert not failures, "\n".join(failures)
    # the faults and features the run is meant to exercise did happen
    assert totals["crashes"] > 150
    assert totals["snapshots"] > 20
    assert totals["leaders"] > 300
    assert totals["reads"] > 1000
    assert totals["acks"] > 150 * 50


def test_same_seed_same_run():
    from ursula.sim.run import Simulation

    a = Simulation(11, 5)
    ra = a.run()
    b = Simulation(11, 5)
    rb = b.run()
    assert ra == rb
    assert a.checker.applied == b.checker.applied
    assert a.checker.acked == b.checker.acked
    assert ra.events > 1000


def test_different_seeds_differ():
    assert run_seed(1, 3).events != run_seed(2, 3).events


@pytest.mark.parametrize("nodes", [3, 5])
def test_cold_tier_seeds_no_violation_and_the_flush_path_is_hit(nodes):
    # The leader moves bytes to a simulated cold tier (pipelined uploads, store outages,
    # ColdFlushed through Raft) under every fault; every read stitches chunks to hot bytes.
    from ursula.sim.run import Simulation

    failures, uploads, abandoned, store_failures, acks = [], 0, 0, 0, 0
    for seed in range(40):
        sim = Simulation(seed, nodes, cold=True)
        r = sim.run()
        if not r.ok:
            failures.append(f"{r.violation}\n  replay: {r.replay_command()} --cold")
        uploads += sim.cold_store.uploads
        abandoned += sim.cold_store.abandoned
        store_failures += sim.cold_store.failures
        acks += r.acks
    assert not failures, "\n".join(failures)
    assert uploads > 300 and store_failures > 20 and abandoned > 20 and acks > 40 * 50


def test_a_run_without_the_cold_tier_is_unchanged_by_it():
    from ursula.sim.run import Simulation

    assert Simulation(3, 3).cold_store is None
    assert run_seed(3, 3) == run_seed(3, 3, cold=False)


@pytest.mark.parametrize("nodes", [3, 5])
def test_compute_seeds_every_replica_reduces_the_same_state(nodes):
    # The clients bind the WASM byte counter (the real wasmtime reducer) to their streams:
    # under every fault (crashes, snapshot installs, re-routed requests) each replica's state
    # is the reduction of its own stream at every audit, and all replicas agree at the end.
    from ursula.sim.run import Simulation

    failures, checks, snapshots, crashes = [], 0, 0, 0
    for seed in range(20):
        sim = Simulation(seed, nodes, compute=True)
        r = sim.run()
        if not r.ok:
            failures.append(f"{r.violation}\n  replay: {r.replay_command()} --compute")
        checks += sim.compute.checks
        snapshots += r.snapshots
        crashes += r.crashes
    assert not failures, "\n".join(failures)
    assert checks > 20 * 20 and snapshots > 0 and crashes > 20


def test_a_run_without_compute_is_unchanged_by_it():
    assert run_seed(4, 3) == run_seed(4, 3, compute=False)


def test_the_simulators_counter_is_the_example_module():
    import pathlib

    from ursula.sim.compute import COUNTER_WAT
    example = pathlib.Path(__file__).resolve().parents[2] / "examples/wasm/byte_counter.wat"
    assert COUNTER_WAT == example.read_text()
