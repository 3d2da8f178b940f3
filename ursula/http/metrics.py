"""Prometheus metrics of one node (``/__ursula/metrics``), in its own registry.

May import: prometheus_client and ``ursula.core`` (for ``ICore.stats``).
"""

from __future__ import annotations

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

prometheus_client.disable_created_metrics()  # no *_created series: they only add noise here


class Metrics:
    def __init__(self, core):
        self.registry = CollectorRegistry()
        self._request_counts: dict[tuple[bytes, int], int] = {}
        self.appended = [0]  # bytes received in appends (a list: shared with the collector)
        self.registry.register(_RequestCollector(self._request_counts, self.appended))
        Gauge("ursula_streams", "Streams held in memory", registry=self.registry) \
            .set_function(lambda: core.stats()["streams"])
        Gauge("ursula_stream_bytes", "Stream bytes held in memory", registry=self.registry) \
            .set_function(lambda: core.stats()["bytes"])
        Gauge("ursula_live_readers", "Registered long-poll and SSE waiters",
              registry=self.registry).set_function(lambda: core.stats()["live_readers"])
        self.sse_connections = Gauge("ursula_sse_connections", "Open SSE responses",
                                     registry=self.registry)
        self.journal_bytes = Counter("ursula_journal_bytes", "Bytes written to the journal",
                                     registry=self.registry)
        self.journal_batches = Counter("ursula_journal_batches",
                                       "Journal group-commit batches", registry=self.registry)
        self.fsync_seconds = Histogram(
            "ursula_fsync_seconds", "Latency of one journal write + fsync",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry)
        self.journal_records = Histogram(
            "ursula_journal_batch_records", "Records (one per group with work) per journal write",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry)
        if hasattr(core, "group_stats"):
            self.registry.register(_GroupCollector(core))
        if hasattr(core, "batches"):
            self.registry.register(_BatchCollector(core.batches))
        if getattr(core, "flusher", None) is not None:
            self.registry.register(_ColdCollector(core))
        self.registry.register(_ComputeCollector(core))
        if getattr(core, "forwarder", None) is not None:
            self.registry.register(_ForwarderCollector(core))
        if getattr(getattr(core, "transport", None), "stats", None) is not None:
            self.registry.register(_PeerCollector(core.transport))

    def watch_subscriptions(self, service) -> None:
        """Export the subscription service's counters (``ursula.core.subscriptions``)."""
        self.registry.register(_SubscriptionCollector(service))

    def count_append(self, size: int) -> None:
        self.appended[0] += size

    def count_request(self, method: bytes, status: int) -> None:
        """Count an answer: a plain dict on the hot path, exported by ``_RequestCollector``."""
        key = (method, status)
        self._request_counts[key] = self._request_counts.get(key, 0) + 1

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _GroupCollector:
    """Per-group Raft gauges: term, leader, commit and applied index, leadership."""

    def __init__(self, core):
        self.core = core

    def collect(self):
        families = {
            "term": GaugeMetricFamily("ursula_raft_term", "Current Raft term", labels=["group"]),
            "leader": GaugeMetricFamily("ursula_raft_leader", "Known leader id (0: none)",
                                        labels=["group"]),
            "commit": GaugeMetricFamily("ursula_raft_commit_index", "Commit index",
                                        labels=["group"]),
            "applied": GaugeMetricFamily("ursula_raft_applied_index", "Applied index",
                                         labels=["group"]),
            "snapshot": GaugeMetricFamily("ursula_raft_snapshot_index",
                                          "Index of the latest state-machine snapshot",
                                          labels=["group"]),
            "snapshots_installed": GaugeMetricFamily(
                "ursula_raft_snapshots_installed", "Snapshots received from a leader since start",
                labels=["group"]),
        }
        cold = {
            "hot_bytes": GaugeMetricFamily("ursula_hot_bytes", "Stream bytes held in memory",
                                           labels=["group"]),
            "cold_bytes": GaugeMetricFamily("ursula_cold_bytes",
                                            "Stream bytes in the cold tier", labels=["group"]),
            "flush_lag_bytes": GaugeMetricFamily(
                "ursula_flush_lag_bytes", "Hot bytes above the flush threshold (waiting for the "
                "cold tier)", labels=["group"]),
        }
        is_leader = GaugeMetricFamily("ursula_raft_is_leader", "1 if this node leads the group",
                                      labels=["group"])
        for stats in self.core.group_stats():
            label = [str(stats["group"])]
            for key, family in families.items():
                family.add_metric(label, stats[key])
            is_leader.add_metric(label, 1 if stats["role"] == "leader" else 0)
            for key, family in cold.items():
                family.add_metric(label, stats.get(key, 0))
        yield from families.values()
        yield from cold.values()
        yield is_leader


class _ComputeCollector:
    """The compute extension's reducer calls and failed calls by kind (this process's)."""

    KINDS = ("trap", "fuel", "memory", "output", "abi", "rejected")

    def __init__(self, core):
        self.core = core

    def collect(self):
        stats = self.core.stats()
        yield CounterMetricFamily("ursula_compute_calls", "WASM reducer calls (reduce, render)",
                                  value=stats.get("compute_calls", 0))
        errors = CounterMetricFamily("ursula_compute_errors",
                                     "WASM reducer calls that failed (the record is skipped)",
                                     labels=["kind"])
        counts = stats.get("compute_errors", {})
        for kind in self.KINDS:
            errors.add_metric([kind], counts.get(kind, 0))
        yield errors


class _ColdCollector:
    """The cold tier's counters: uploads, upload errors, chunk cache hits and misses."""

    def __init__(self, core):
        self.core = core

    def collect(self):
        counts = self.core.flusher.stats()
        cache = self.core.cache
        for name, key, text in (
                ("ursula_cold_uploads", "uploads", "Chunks uploaded to the cold tier"),
                ("ursula_cold_uploaded_bytes", "uploaded_bytes", "Bytes uploaded to the cold tier"),
                ("ursula_cold_upload_errors", "upload_errors",
                 "Failed uploads and deletes of cold chunks (retried)"),
                ("ursula_cold_collected", "collected", "Cold chunks of dropped streams deleted"),
                ("ursula_cold_orphans_deleted", "orphans_deleted",
                 "Cold objects no stream referenced, deleted by the orphan sweep")):
            yield CounterMetricFamily(name, text, value=counts[key])
        yield CounterMetricFamily("ursula_cold_cache_hits", "Chunk cache hits", value=cache.hits)
        yield CounterMetricFamily("ursula_cold_cache_misses", "Chunk cache misses",
                                  value=cache.misses)
        yield CounterMetricFamily("ursula_cold_corrupt_chunks",
                                  "Cold chunks whose checksum failed (not served)",
                                  value=cache.corrupt)
        yield GaugeMetricFamily("ursula_cold_cache_bytes", "Bytes in the chunk cache",
                                value=cache.bytes)


class _SubscriptionCollector:
    """Webhook deliveries and failures, wake events written, and the retry queue, active leases
    and subscriptions of the groups this core leads."""

    def __init__(self, service):
        self.service = service

    def collect(self):
        stats = self.service.stats()
        yield CounterMetricFamily("ursula_subscription_deliveries",
                                  "Webhook deliveries answered 2xx", value=stats["deliveries"])
        yield CounterMetricFamily("ursula_subscription_delivery_failures",
                                  "Webhook deliveries (and wake-event appends) that failed "
                                  "(retried with back-off)", value=stats["failures"])
        yield CounterMetricFamily("ursula_subscription_wake_events",
                                  "Pull-wake events appended to wake streams",
                                  value=stats["wake_events"])
        yield GaugeMetricFamily("ursula_subscription_retry_queue",
                                "Led subscriptions whose wake waits for a delivery retry",
                                value=stats["retry_queue"])
        yield GaugeMetricFamily("ursula_subscription_active_leases",
                                "Led subscriptions with a lease running", value=stats["active_leases"])
        yield GaugeMetricFamily("ursula_subscriptions", "Subscriptions of the groups led here",
                                value=stats["subscriptions"])


class _ForwarderCollector:
    """How often requests met a leader that moved: the forwarder's retries and re-routes
    (``ursula.core.forwarder``) and the leaderships handed to the node the writes entered."""

    def __init__(self, core):
        self.core = core

    def collect(self):
        forwarder = self.core.forwarder
        yield CounterMetricFamily(
            "ursula_forward_retries", "Requests sent again after a failed attempt (not the "
            "leader, leader could not apply, connection lost)", value=forwarder.retries)
        yield CounterMetricFamily(
            "ursula_forward_reroutes", "Requests sent again at once because their group's "
            "leader changed", value=forwarder.reroutes)
        yield CounterMetricFamily(
            "ursula_leader_load_moves", "Leaderships handed to the node most of the group's "
            "writes entered ([cluster] leader_follow_load_ms)",
            value=getattr(self.core, "load_moves", 0))


class _PeerCollector:
    """``ursula_peer_*_total{peer}``: the peer transport's counters for each peer (AMP bytes,
    Raft messages and the batches that carried them, forwarded requests, connects)."""

    HELP = {
        "bytes_sent": "AMP bytes sent to the peer",
        "bytes_received": "AMP bytes received from the peer",
        "raft_messages_sent": "Raft messages sent to the peer",
        "raft_messages_received": "Raft messages received from the peer",
        "raft_batches_sent": "RaftBatch calls (the messages of one reactor turn) sent",
        "raft_batches_received": "RaftBatch calls received",
        "raft_messages_dropped": "Raft messages dropped (peer down or backed up; Raft resends)",
        "forwards_sent": "Requests forwarded to the peer (its groups' leader)",
        "forwards_received": "Requests the peer forwarded here",
        "forwards_failed": "Forwarded requests that failed (connection, timeout, handler)",
        "connects": "Connections made with the peer",
        "handshake_failures": "Handshakes with the peer that failed",
    }

    def __init__(self, transport):
        self.transport = transport

    def collect(self):
        families = {name: CounterMetricFamily(f"ursula_peer_{name}", text, labels=["peer"])
                    for name, text in self.HELP.items()}
        for peer, stats in sorted(self.transport.stats.items()):
            for name, value in stats.as_dict().items():
                family = families.get(name)
                if family is not None:
                    family.add_metric([str(peer)], value)
        yield from families.values()


class _BatchCollector:
    """``ursula_proposal_batch_commands``: commands per Raft entry proposed by this node (every
    command that reached a group's leader in one reactor turn shares one entry)."""

    def __init__(self, batches):
        self.batches = batches

    def collect(self):
        b = self.batches
        yield HistogramMetricFamily("ursula_proposal_batch_commands",
                                    "Commands per proposed Raft entry (one entry per group per "
                                    "reactor turn)", buckets=b.cumulative(), sum_value=b.total)


class _RequestCollector:
    """``ursula_http_requests_total{method,status}`` from the plain counts."""

    def __init__(self, counts: dict, appended: list):
        self.counts = counts
        self.appended = appended

    def collect(self):
        family = CounterMetricFamily("ursula_http_requests", "HTTP requests answered, by status",
                                     labels=["method", "status"])
        for (method, status), count in sorted(self.counts.items()):
            family.add_metric([method.decode("ascii", "replace"), str(status)], count)
        yield family
        yield CounterMetricFamily("ursula_appended_bytes", "Bytes received in appends",
                                  value=self.appended[0])
