"""Membership operations without processes: the next step ``ursula-admin node add/remove``
takes for a group, the core's change_membership on a one-node core, and the config keys."""

import json

import pytest
from twisted.internet import task

from ursula.admin.cli import node_step
from ursula.config import ConfigError, parse_config


def _row(leader=1, voters=(1, 2, 3), learners=(), commit=100, match=None):
    return {"leader": leader, "voters": list(voters), "learners": list(learners),
            "commit": commit, "match": {str(k): v for k, v in (match or {}).items()}}


def test_node_add_steps():
    assert node_step("add", 4, _row(), 64) == ("change", "add_learner")
    lagging = _row(learners=(4,), match={4: 10})
    assert node_step("add", 4, lagging, 64)[0] == "wait"
    caught_up = _row(learners=(4,), match={4: 90})
    assert node_step("add", 4, caught_up, 64) == ("change", "promote")
    assert node_step("add", 4, _row(voters=(1, 2, 3, 4)), 64) is None  # done: idempotent


def test_node_remove_steps():
    assert node_step("remove", 9, _row(), 0) is None  # not a member: done
    assert node_step("remove", 2, _row(), 0) == ("change", "remove")
    # the node leads the group: leadership goes first, to the voter furthest along
    assert node_step("remove", 1, _row(match={1: 100, 2: 50, 3: 99}), 0) == ("transfer", 3)
    assert node_step("remove", 4, _row(learners=(4,)), 0) == ("change", "remove")
    assert node_step("remove", 1, _row(voters=(1,)), 0)[0] == "wait"  # the last voter


def test_change_membership_on_a_core():
    from ursula.core.cluster import AdminError, RaftCore
    from ursula.core.persist import MemoryPersister
    from ursula.raft import MemoryStorage
    clock = task.Clock()
    core = RaftCore(clock, 1, 1, {0: MemoryStorage([1])}, MemoryPersister())
    core.start()
    for _ in range(30):
        clock.advance(0.1)
    results = []
    core.change_membership(0, "add_learner", 2).addBoth(results.append)
    for _ in range(10):
        clock.advance(0.1)
    assert results == [{"group": 0, "voters": [1], "learners": [2]}]
    stats = core.group_stats()[0]
    assert (stats["voters"], stats["learners"]) == ([1], [2]) and stats["match"]["2"] == 0
    for op, node, status in (("add_learner", 2, 400), ("promote", 7, 400), ("jump", 2, 400)):
        core.change_membership(0, op, node).addBoth(results.append)
        for _ in range(3):
            clock.advance(0.1)
        assert results[-1].check(AdminError) and results[-1].value.status == status
    core.change_membership(5, "add_learner", 3).addBoth(results.append)
    assert results[-1].value.status == 404
    core.stop()


def test_genesis_and_join_keys(tmp_path):
    peers = "peers =\n    1 = 127.0.0.1:7001\n    2 = 127.0.0.1:7002\n    3 = 127.0.0.1:7003\n"
    base = f"[cluster]\nnode_id = 3\nsecret = 0123456789abcdef\n{peers}"
    assert parse_config(base).genesis == [1, 2, 3]  # default: every peer
    config = parse_config(base + "genesis = 1, 2\njoin = true\n")
    assert config.genesis == [1, 2] and config.cluster.join is True
    with pytest.raises(ConfigError, match=r"\[cluster\] genesis: nodes \[9\]"):
        parse_config(base + "genesis = 1 9\n")
    with pytest.raises(ConfigError, match=r"\[cluster\] genesis: 'x'"):
        parse_config(base + "genesis = 1 x\n")


def test_the_genesis_is_kept_in_cluster_json(tmp_path):
    from ursula.supervisor import check_cluster_identity
    peers = "peers =\n    1 = 127.0.0.1:7001\n    2 = 127.0.0.1:7002\n"
    text = (f"[node]\ndata_dir = {tmp_path}\ncores = 1\n[cluster]\nnode_id = 1\n"
            f"secret = 0123456789abcdef\n{peers}")
    check_cluster_identity(parse_config(text))
    assert json.loads((tmp_path / "cluster.json").read_text())["genesis"] == [1, 2]
    check_cluster_identity(parse_config(text))  # the same: fine
    with pytest.raises(ConfigError, match=r"\[cluster\] genesis: .*created with the voters"):
        check_cluster_identity(parse_config(text + "genesis = 1\n"))
