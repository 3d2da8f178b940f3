"""The ``twistd ursula`` service maker: options, config loading, the node's services.

``twistd -n ursula [--config node.ini]`` builds one node: the core, the Klein app and a listening
endpoint. A bad config stops start-up with one line naming the key (no traceback).

May import: everything in ``ursula``, Twisted.
"""

from __future__ import annotations

import sys

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import serverFromString
from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
    jsonFileLogObserver,
)
from twisted.python import usage

from ursula.config import ConfigError, NodeConfig, load_config

log = Logger()


class Options(usage.Options):
    synopsis = "[--config node.ini]"
    longdesc = ("Run an ursula Durable Streams node. Without --config it serves on "
                "127.0.0.1:4437 with data in ./ursula-data.")
    optParameters = [["config", "c", None, "Path to the node's INI configuration file."]]


class LoggingService(service.Service):
    """Applies ``[log]``: the level filter, and an optional JSON-lines log file."""

    def __init__(self, config: NodeConfig):
        self.config = config
        self._observers = []

    def startService(self):
        super().startService()
        section = self.config.log
        if section.format == "json":
            path = section.file or "ursula-log.json"
            handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 (kept open while running)
            level = LogLevel.levelWithName(section.level)
            observer = FilteringLogObserver(jsonFileLogObserver(handle),
                                            [LogLevelFilterPredicate(level)])
            globalLogPublisher.addObserver(observer)
            self._observers.append((observer, handle))

    def stopService(self):
        for observer, handle in self._observers:
            globalLogPublisher.removeObserver(observer)
            handle.close()
        self._observers = []
        return super().stopService()


def build_node(config: NodeConfig, reactor=None) -> service.MultiService:
    """The services of one single-process node."""
    if reactor is None:
        from twisted.internet import reactor
    from ursula.core import LocalCore
    from ursula.http.app import UrsulaApp
    from ursula.http.site import UrsulaSite

    core = LocalCore(reactor, max_live_readers=config.limits.max_live_readers)
    app = UrsulaApp(core, config, reactor)
    site = UrsulaSite(app.resource(), config, app.metrics, access_log=config.http.access_log)
    top = service.MultiService()
    LoggingService(config).setServiceParent(top)
    endpoint = serverFromString(reactor, config.node.listen)
    http_service = StreamServerEndpointService(endpoint, site)
    http_service._raiseSynchronously = True
    http_service.setServiceParent(top)
    log.info("ursula serving the Durable Streams API on {listen}", listen=config.node.listen)
    return top


def make_service(options) -> service.IService:
    try:
        config = load_config(options["config"])
    except ConfigError as error:
        sys.stderr.write(f"ursula: config error: {error}\n")
        raise SystemExit(2) from None
    return build_node(config)
