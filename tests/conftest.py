"""Shared fixtures: an in-process ursula node on a free loopback port, and its config."""

from __future__ import annotations

import dataclasses
import os

import pytest
import pytest_twisted
from hypothesis import settings
from twisted.internet import defer

from ursula.config import NodeConfig

# CI machines are slow and shared: no per-example deadlines there (speed is not asserted).
settings.register_profile("ci", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def make_config(tmp_path, **sections) -> NodeConfig:
    """The default config with overrides, e.g. ``limits={"max_body_bytes": 10}``."""
    config = NodeConfig()
    replaced = {}
    for name, overrides in sections.items():
        replaced[name] = dataclasses.replace(getattr(config, name), **overrides)
    node = dataclasses.replace(config.node, data_dir=str(tmp_path / "data"),
                               listen="tcp:0:interface=127.0.0.1")
    return dataclasses.replace(config, node=node, **replaced)


class Node:
    """A running in-process node: ``url`` (the data plane), ``admin_url`` (the admin plane),
    ``core``, ``metrics``, ``factory`` and ``stop()``."""

    def __init__(self, config, core_kind: str = "local"):
        from twisted.internet import reactor

        from ursula.admin import admin_site
        from ursula.core import LocalCore
        from ursula.http.dataplane import data_plane_factory
        from ursula.http.metrics import Metrics

        self.config = config
        if core_kind == "raft":
            from ursula.core.cluster import CoreSettings, MemoryPersister, RaftCore
            from ursula.raft import MemoryStorage
            self.core = RaftCore(reactor, 1, 2, {g: MemoryStorage([1]) for g in range(2)},
                                 MemoryPersister(), settings=CoreSettings(
                                     max_live_readers=config.limits.max_live_readers))
            self.core.start()
        else:
            self.core = LocalCore(reactor, max_live_readers=config.limits.max_live_readers)
        self.metrics = Metrics(self.core)
        self.factory = data_plane_factory(self.core, config, reactor, self.metrics)
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"
        from ursula.http.compute import registry_for
        self.registry = registry_for(config)  # the compute module registry (admin plane)
        self.admin_port = reactor.listenTCP(0, admin_site(self.core, self.metrics,
                                                          registry=self.registry),
                                            interface="127.0.0.1")
        self.admin_url = f"http://127.0.0.1:{self.admin_port.getHost().port}"

    def stop(self):
        if hasattr(self.core, "stop"):
            self.core.stop()
        return defer.gatherResults([defer.maybeDeferred(self.port.stopListening),
                                    defer.maybeDeferred(self.admin_port.stopListening)])


@pytest.fixture(params=["local", "raft"])
def node_factory(request, tmp_path):
    """Nodes on the single-process core and on a Raft cluster of one (in memory)."""
    nodes = []

    def start(**sections) -> Node:
        node = Node(make_config(tmp_path, **sections), request.param)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        pytest_twisted.blockon(node.stop())


@pytest.fixture
def node(node_factory):
    return node_factory(http={"long_poll_timeout_ms": 300})
