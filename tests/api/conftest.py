"""The API tests run against both fronts: the data plane (``ursula.http.dataplane``, the public
port) and the Klein app (which still serves the same routes for the control plane), each on the
single-process core and on a Raft cluster of one."""

from __future__ import annotations

import pytest
import pytest_twisted

from tests.conftest import Node, make_config


class DataPlaneNode(Node):
    """A running in-process node whose public port is the data plane."""

    def __init__(self, config, core_kind: str = "local"):
        from twisted.internet import reactor

        from ursula.http.dataplane import data_plane_factory

        super().__init__(config, core_kind)
        self.port.stopListening()
        self.factory = data_plane_factory(self.core, config, reactor, self.app.metrics)
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"


@pytest.fixture(params=["dataplane-local", "dataplane-raft", "klein-local", "klein-raft"])
def node_factory(request, tmp_path):
    front, core_kind = request.param.split("-")
    kind = DataPlaneNode if front == "dataplane" else Node
    nodes = []

    def start(**sections):
        node = kind(make_config(tmp_path, **sections), core_kind)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        pytest_twisted.blockon(node.stop())
