"""Serve the data plane on a loopback port, for the conformance suite and wrk probes.

    python tests/http/serve.py [--port 4437] [--core local|raft]

prints ``listening on http://127.0.0.1:PORT`` once it answers (``--port 0``: a free port).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--core", choices=["local", "raft"], default="local")
    options = parser.parse_args(argv)

    from twisted.internet import reactor

    from ursula.config import NodeConfig
    from ursula.core import LocalCore
    from ursula.http.metrics import Metrics

    config = NodeConfig()
    config = dataclasses.replace(config, http=dataclasses.replace(config.http,
                                                                  long_poll_timeout_ms=500))
    if options.core == "raft":
        from ursula.core.cluster import CoreSettings, MemoryPersister, RaftCore
        from ursula.raft import MemoryStorage
        core = RaftCore(reactor, 1, 4, {g: MemoryStorage([1]) for g in range(4)},
                        MemoryPersister(), settings=CoreSettings())
        core.start()
    else:
        core = LocalCore(reactor)
    metrics = Metrics(core)
    from ursula.http.dataplane import data_plane_factory
    factory = data_plane_factory(core, config, reactor, metrics)
    port = reactor.listenTCP(options.port, factory, interface="127.0.0.1", backlog=1024)
    print(f"listening on http://127.0.0.1:{port.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    sys.exit(main())
