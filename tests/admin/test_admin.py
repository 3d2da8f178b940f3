"""The admin plane (Klein on its own listener) and what moved off the public port."""

from __future__ import annotations

import json

import pytest_twisted
import treq
from twisted.internet import defer

from tests.conftest import Node, make_config


@pytest_twisted.inlineCallbacks
def _get(url):
    response = yield treq.get(url)
    body = yield response.content()
    return response.code, response.headers, body


@pytest_twisted.inlineCallbacks
def test_metrics_are_on_the_admin_port_not_the_public_one(node):
    code, headers, body = yield _get(node.admin_url + "/__ursula/metrics")
    assert code == 200 and b"ursula_streams" in body
    assert headers.getRawHeaders("content-type")[0].startswith("text/plain")
    code, _, body = yield _get(node.url + "/__ursula/metrics")
    assert code == 404


@pytest_twisted.inlineCallbacks
def test_health_and_ready_answer_on_both_ports(node):
    for url in (node.url, node.admin_url):
        code, _, body = yield _get(url + "/__ursula/health")
        assert code == 200 and json.loads(body) == {"status": "ok"}
        code, _, body = yield _get(url + "/__ursula/ready")
        assert code == 200 and json.loads(body) == {"ready": True}


@pytest_twisted.inlineCallbacks
def test_groups_lists_the_local_groups(node_factory):
    node = node_factory()
    code, _, body = yield _get(node.admin_url + "/__ursula/groups")
    assert code == 200
    groups = json.loads(body)["groups"]
    if hasattr(node.core, "group_stats"):
        assert [g["group"] for g in groups] == [0, 1]
        assert all(g["role"] == "leader" and g["leader"] == 1 for g in groups)
    else:
        assert groups == []


@pytest_twisted.inlineCallbacks
def test_unknown_admin_route_is_a_one_line_404(node):
    code, _, body = yield _get(node.admin_url + "/__ursula/nope")
    assert code == 404 and body.count(b"\n") == 1 and b"Traceback" not in body


@pytest_twisted.inlineCallbacks
def test_ready_is_503_without_a_leader(node):
    node.core.is_ready = lambda: False
    code, _, body = yield _get(node.admin_url + "/__ursula/ready")
    assert code == 503 and json.loads(body)["ready"] is False


@pytest_twisted.inlineCallbacks
def test_batch_sizes_are_measured(tmp_path):
    """On a Raft node (the in-memory core has no log, so no batches to measure)."""
    node = Node(make_config(tmp_path), "raft")
    url = node.url + "/v1/stream/batched"
    yield treq.put(url, headers={"Content-Type": "text/plain"})
    responses = yield defer.gatherResults(
        [treq.post(url, data=b"x", headers={"Content-Type": "text/plain"}) for _ in range(8)])
    assert all(r.code == 204 for r in responses)
    _, _, body = yield _get(node.admin_url + "/__ursula/metrics")
    text = body.decode()
    assert "ursula_proposal_batch_commands_bucket" in text
    count = float(text.split("ursula_proposal_batch_commands_count ")[1].split()[0])
    total = float(text.split("ursula_proposal_batch_commands_sum ")[1].split()[0])
    assert total == 9 and 1 <= count <= 9  # every command counted, in at most 9 entries
    yield node.stop()
