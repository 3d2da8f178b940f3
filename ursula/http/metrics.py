"""Prometheus metrics of one node (``/__ursula/metrics``), in its own registry.

May import: prometheus_client and ``ursula.core`` (for ``ICore.stats``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self, core):
        self.registry = CollectorRegistry()
        self.requests = Counter("ursula_http_requests", "HTTP requests answered, by status",
                                ["method", "status"], registry=self.registry)
        self._children: dict[tuple[bytes, int], object] = {}
        self.appended_bytes = Counter("ursula_appended_bytes", "Bytes appended to streams",
                                      registry=self.registry)
        Gauge("ursula_streams", "Streams held in memory", registry=self.registry) \
            .set_function(lambda: core.stats()["streams"])
        Gauge("ursula_stream_bytes", "Stream bytes held in memory", registry=self.registry) \
            .set_function(lambda: core.stats()["bytes"])
        Gauge("ursula_live_readers", "Registered long-poll and SSE waiters",
              registry=self.registry).set_function(lambda: core.stats()["live_readers"])
        self.sse_connections = Gauge("ursula_sse_connections", "Open SSE responses",
                                     registry=self.registry)

    def count_request(self, method: bytes, status: int) -> None:
        child = self._children.get((method, status))
        if child is None:
            child = self.requests.labels(method.decode("ascii", "replace"), str(status))
            self._children[(method, status)] = child
        child.inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
