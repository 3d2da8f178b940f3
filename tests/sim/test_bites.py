"""The checker must bite: with a deliberately broken rule the simulator finds a violation
within a few hundred seeds (and without it, the same seeds pass: see test_seeds)."""

import pytest

from ursula.sim import run_seed


def first_violation(nodes: int, broken: str, limit: int = 300):
    for seed in range(limit):
        r = run_seed(seed, nodes, broken)
        if not r.ok:
            return r
    return None


@pytest.mark.parametrize("nodes", [3, 5])
def test_granting_two_votes_in_a_term_is_caught(nodes):
    r = first_violation(nodes, "vote_twice")
    assert r is not None, "a node voting twice per term went unnoticed for 300 seeds"
    assert "election safety" in r.violation
    assert r.replay_command().endswith(f"--nodes {nodes} --broken vote_twice")
    # the replay reproduces it exactly
    again = run_seed(r.seed, nodes, "vote_twice")
    assert again.violation == r.violation


@pytest.mark.parametrize("nodes", [3, 5])
def test_sending_before_persisting_is_caught(nodes):
    """Acks and votes sent before the write is durable: a crash loses what a quorum
    promised.  Found as lost committed entries, a leader missing a committed entry, or two
    leaders in one term (a forgotten vote)."""
    r = first_violation(nodes, "lazy_fsync")
    assert r is not None, "send-before-persist went unnoticed for 300 seeds"
    assert any(
        k in r.violation
        for k in ("leader completeness", "election safety", "commit", "state-machine", "ack")
    ), r.violation
