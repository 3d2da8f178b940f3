"""The checker must bite: with one deliberately broken rule switched on, the simulator finds a
violation within the seeds CI runs (and without it, the same seeds pass: see test_seeds).

FIRST_SEED records, for each planted rule and cluster size, the first seed that found it when
the table was last made (runs are deterministic, also across processes; a change of the
simulated traffic, such as a new snapshot encoding, answering
committed entries before the next write or the If-Match writers, moves them): the test asserts the rule is
found within those seeds, and that a replay is exact."""

import pytest

from ursula.sim import BROKEN_RULES, run_seed

# (rule, nodes) -> first seed that finds it, and words one of which the violation names
FIRST_SEED = {
    ("vote_twice", 3): 13,
    ("vote_twice", 5): 31,
    ("commit_any_term", 3): 10,
    ("commit_any_term", 5): 4,
    ("vote_stale_log", 3): 0,
    ("vote_stale_log", 5): 0,
    ("no_prev_check", 3): 4,
    ("no_prev_check", 5): 1,
    ("no_truncate", 3): 0,
    ("no_truncate", 5): 0,
    ("commit_not_capped", 3): 0,
    ("commit_not_capped", 5): 2,
    ("read_no_quorum", 3): 99,
    ("read_no_quorum", 5): 93,
    ("read_without_index", 5): 15,
    ("read_before_apply", 3): 1,
    ("read_before_apply", 5): 0,
    ("ack_before_commit", 3): 0,
    ("ack_before_commit", 5): 0,
    ("no_request_dedup", 3): 3,
    ("no_request_dedup", 5): 2,
    ("send_before_persist", 3): 38,
    ("send_before_persist", 5): 31,
    ("reuse_stale_proposal", 3): 0,
    ("reuse_stale_proposal", 5): 0,
    ("lazy_fsync", 3): 8,
    ("lazy_fsync", 5): 1,
    ("unsynced_vote", 3): 96,
    ("flush_before_upload", 3): 0,
    ("flush_before_upload", 5): 0,
    ("chunk_key_per_stream", 3): 1,
    ("chunk_key_per_stream", 5): 0,
    ("pack_refs_at_zero", 3): 2,
    ("pack_refs_at_zero", 5): 1,
    ("torn_tail_kept", 3): 13,
    ("torn_tail_kept", 5): 8,
    ("ifmatch_at_submit", 3): 0,
    ("ifmatch_at_submit", 5): 0,
}


def first_violation(nodes: int, broken: str, limit: int = 300):
    for seed in range(limit):
        r = run_seed(seed, nodes, broken)
        if not r.ok:
            return r
    return None


def test_every_planted_rule_has_a_bite_test():
    assert {rule for rule, _ in FIRST_SEED} == set(BROKEN_RULES)


@pytest.mark.parametrize(("rule", "nodes"), sorted(FIRST_SEED))
def test_planted_rule_is_found(rule, nodes):
    expected = FIRST_SEED[(rule, nodes)]
    r = first_violation(nodes, rule, limit=expected + 1)
    assert r is not None, f"{rule} went unnoticed for {expected + 1} seeds of {nodes} nodes"
    assert r.replay_command().endswith(f"--nodes {nodes} --broken {rule}")


def test_the_replay_reproduces_a_violation_exactly():
    r = run_seed(13, 3, "vote_twice")
    assert "election safety" in r.violation
    assert run_seed(13, 3, "vote_twice").violation == r.violation
