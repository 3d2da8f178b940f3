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
