"""The admin API over HTTP on a Raft node of one (in process): status, snapshots, the
refusals of transfer-leader and drain, backup images, the bearer token; and ``ursula-admin``
(``ursula.admin.cli.run``) against it."""

from __future__ import annotations

import hashlib
import io
import json

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor

from tests.conftest import Node, make_config
from ursula.admin import admin_site
from ursula.admin.cli import cluster_view, human_bytes, run
from ursula.stream import StreamMachine

TOKEN = "an-admin-token-0123456789"


@pytest.fixture
def raft_node(tmp_path):
    node = Node(make_config(tmp_path), "raft")
    yield node
    pytest_twisted.blockon(node.stop())


@pytest_twisted.inlineCallbacks
def _call(method, url, headers=None):
    response = yield treq.request(method, url, headers=headers or {})
    body = yield response.content()
    return response.code, response.headers, body


def _one_line(body: bytes) -> bool:
    return body.count(b"\n") == 1 and b"Traceback" not in body


@pytest_twisted.inlineCallbacks
def test_status_lists_the_node_and_its_groups(raft_node):
    code, _, body = yield _call("GET", raft_node.admin_url + "/__ursula/status")
    status = json.loads(body)
    assert code == 200 and status["node"] == 1 and status["draining"] is False
    assert status["group_count"] == 2
    assert [(g["group"], g["role"]) for g in status["groups"]] == [(0, "leader"), (1, "leader")]
    assert {"term", "commit", "applied", "hot_bytes", "cold_bytes"} <= set(status["groups"][0])


@pytest_twisted.inlineCallbacks
def test_snapshot_routes(raft_node):
    yield treq.put(raft_node.url + "/v1/stream/snap", headers={"Content-Type": "text/plain"})
    code, _, body = yield _call("POST", raft_node.admin_url + "/__ursula/snapshot")
    rows = json.loads(body)["snapshots"]
    assert code == 200 and [r["group"] for r in rows] == [0, 1]
    assert any(r["taken"] for r in rows) and all(r["index"] >= 1 for r in rows)
    code, _, body = yield _call("POST", raft_node.admin_url + "/__ursula/groups/0/snapshot")
    assert code == 200 and json.loads(body)["taken"] is False  # nothing new
    code, _, body = yield _call("POST", raft_node.admin_url + "/__ursula/groups/5/snapshot")
    assert code == 404 and _one_line(body) and b"group 5" in body


@pytest_twisted.inlineCallbacks
def test_refusals_are_one_line_with_the_right_status(raft_node):
    admin = raft_node.admin_url
    code, _, body = yield _call("POST", admin + "/__ursula/groups/0/transfer-leader?to=x")
    assert code == 400 and _one_line(body) and b"to:" in body
    code, _, body = yield _call("POST", admin + "/__ursula/groups/0/transfer-leader?to=2")
    assert code == 400 and b"not a voter" in body
    code, _, body = yield _call("POST", admin + "/__ursula/groups/0/transfer-leader?to=1")
    assert code == 200 and json.loads(body) == {"group": 0, "leader": 1}  # leads already
    code, _, body = yield _call("POST", admin + "/__ursula/drain")
    assert code == 409 and _one_line(body) and b"of its own" in body
    code, _, body = yield _call("GET", admin + "/__ursula/status/extra")
    assert code == 404 and _one_line(body)
    code, _, body = yield _call("GET", admin + "/__ursula/drain")
    assert code == 405


@pytest_twisted.inlineCallbacks
def test_backup_image_of_a_group(raft_node):
    yield treq.put(raft_node.url + "/v1/stream/kept", headers={"Content-Type": "text/plain"})
    yield treq.post(raft_node.url + "/v1/stream/kept", data=b"hello",
                    headers={"Content-Type": "text/plain"})
    from ursula.core.placement import group_of
    group = group_of("_default", "kept", 2)
    code, _, body = yield _call("GET", raft_node.admin_url + "/__ursula/backup/info")
    assert code == 200 and json.loads(body) == {"format_version": 1, "group_count": 2,
                                                "node": 1}
    code, headers, body = yield _call("GET",
                                      raft_node.admin_url + f"/__ursula/backup/group/{group}")
    assert code == 200
    assert headers.getRawHeaders("ursula-backup-sha256")[0] == hashlib.sha256(body).hexdigest()
    assert int(headers.getRawHeaders("ursula-backup-index")[0]) >= 2
    machine = StreamMachine.restore(body)
    assert bytes(machine.read("_default", "kept", 0, 100, 0).data) == b"hello"


@pytest_twisted.inlineCallbacks
def test_a_token_guards_every_route_but_health_and_ready(raft_node):
    port = reactor.listenTCP(0, admin_site(raft_node.core, raft_node.metrics, token=TOKEN),
                             interface="127.0.0.1")
    url = f"http://127.0.0.1:{port.getHost().port}"
    try:
        for path in ("/__ursula/status", "/__ursula/metrics", "/__ursula/groups", "/nope"):
            code, headers, body = yield _call("GET", url + path)
            assert code == 401 and _one_line(body), path
            assert headers.getRawHeaders("www-authenticate")[0].startswith("Bearer")
        code, _, body = yield _call("GET", url + "/__ursula/status",
                                    {"Authorization": "Bearer wrong-token-0123456789"})
        assert code == 401 and b"not valid" in body
        code, _, body = yield _call("GET", url + "/__ursula/status",
                                    {"Authorization": f"Bearer {TOKEN}"})
        assert code == 200 and json.loads(body)["node"] == 1
        for path in ("/__ursula/health", "/__ursula/ready"):
            code, _, _ = yield _call("GET", url + path)
            assert code == 200
        out, err = io.StringIO(), io.StringIO()
        status = yield run(reactor, ["--admin", url, "status"], out, err)
        assert status == 1 and "401" in err.getvalue() and err.getvalue().count("\n") == 1
        status = yield run(reactor, ["--admin", url, "--token", TOKEN, "status"], out, err)
        assert status == 0 and "leader" in out.getvalue()
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_cli_status_table_json_and_snapshot(raft_node):
    yield treq.put(raft_node.url + "/v1/stream/c", headers={"Content-Type": "text/plain"})
    out, err = io.StringIO(), io.StringIO()
    status = yield run(reactor, ["--admin", raft_node.admin_url, "status"], out, err)
    lines = out.getvalue().splitlines()
    assert status == 0, err.getvalue()
    assert lines[0].split() == ["NODE", "ADMIN", "CORES", "STATE", "LEADS", "HOT"]
    assert lines[1].split()[:5] == ["1", raft_node.admin_url, "1", "serving", "0,1"]
    assert [line.split()[:3] for line in lines[4:]] == [["0", "1", "leader"],
                                                        ["1", "1", "leader"]]
    out = io.StringIO()
    status = yield run(reactor, ["--admin", raft_node.admin_url, "status", "--json"], out, err)
    view = json.loads(out.getvalue())
    assert status == 0 and [g["leader"] for g in view["groups"]] == [1, 1]
    assert all(r["commit_lag"] == 0 and r["apply_lag"] == 0
               for g in view["groups"] for r in g["replicas"])
    out = io.StringIO()
    status = yield run(reactor, ["--admin", raft_node.admin_url, "snapshot", "--group", "1"],
                       out, err)
    assert status == 0 and "group 1:" in out.getvalue()


@pytest_twisted.inlineCallbacks
def test_cli_errors_are_one_line_with_an_exit_status(raft_node):
    out, err = io.StringIO(), io.StringIO()
    status = yield run(reactor, ["--admin", "http://127.0.0.1:1", "status"], out, err)
    assert status == 1 and "not reachable" in err.getvalue()
    err = io.StringIO()
    status = yield run(reactor, ["--admin", raft_node.admin_url, "drain"], out, err)
    assert status == 1 and "409" in err.getvalue() and err.getvalue().count("\n") == 1
    err = io.StringIO()
    status = yield run(reactor, ["--admin", f"{raft_node.admin_url},{raft_node.admin_url}",
                                 "drain"], out, err)
    assert status == 2 and "--node" in err.getvalue()
    err = io.StringIO()
    status = yield run(reactor, ["--config", "/nonexistent.ini", "status"], out, err)
    assert status == 2 and "config error" in err.getvalue()
    status = yield run(reactor, ["transfer-leader", "0"], out, io.StringIO())
    assert status == 2  # argparse: --to is required


def test_cluster_view_computes_the_lags():
    class C:
        def __init__(self, url):
            self.url = url
    rows = lambda commit, applied, role, leader: [  # noqa: E731
        {"group": 0, "term": 3, "leader": leader, "role": role, "commit": commit,
         "applied": applied, "snapshot": 0, "hot_bytes": 10, "cold_bytes": 5}]
    view = cluster_view([
        (C("a"), {"node": 1, "draining": False, "groups": rows(10, 10, "leader", 1)}, None),
        (C("b"), {"node": 2, "draining": True, "groups": rows(7, 4, "follower", 1)}, None),
        (C("c"), None, "not reachable")])
    group = view["groups"][0]
    assert group["leader"] == 1 and group["commit"] == 10
    assert [(r["node"], r["commit_lag"], r["apply_lag"]) for r in group["replicas"]] == [
        (1, 0, 0), (2, 3, 3)]
    assert view["nodes"][2] == {"url": "c", "error": "not reachable"}
    assert view["nodes"][1]["draining"] is True and view["nodes"][0]["leads"] == [0]
    assert human_bytes(512) == "512 B" and human_bytes(3 << 20) == "3.0 MiB"
