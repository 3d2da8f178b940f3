"""The ``twistd ursula`` service maker: options, config loading, the node's services.

``twistd -n ursula [--config node.ini]`` builds one node: the core, the data plane on
``[node] listen`` (``ursula.http.dataplane``) and the admin plane on ``[node] admin_listen``
(``ursula.admin``, Klein). A bad config stops start-up with one line naming the key (no traceback).

May import: everything in ``ursula``, Twisted.
"""

from __future__ import annotations

import json
import os
import sys

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer
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
from ursula.loop import lean_poll
from ursula.process import tune_gc, tune_malloc

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


class CoreService(service.Service):
    """Starts the node's runtime (ticks, elections) and stops it cleanly."""

    def __init__(self, core, transport, committer, journal, peer_listen: str | None):
        self.core = core
        self.transport = transport
        self.committer = committer
        self.journal = journal
        self.peer_listen = peer_listen
        self._port = None

    def startService(self):
        super().startService()
        if self.transport is not None:
            d = self.transport.listen(self.peer_listen)
            d.addCallback(lambda port: setattr(self, "_port", port))
            d.addErrback(self.core.fatal, f"cannot listen for peers on {self.peer_listen}")
            self.transport.start()
        self.core.start()

    @defer.inlineCallbacks
    def stopService(self):
        yield self.core.hand_over()
        self.core.stop()
        if self.transport is not None:
            yield self.transport.stop()
        if self._port is not None:
            yield self._port.stopListening()
        yield self.committer.close()
        self.journal.close()
        yield super().stopService()


def check_cluster_identity(config: NodeConfig) -> None:
    """Groups and node id are fixed at cluster creation: refuse to start with others."""
    path = os.path.join(config.node.data_dir, "cluster.json")
    identity = {"node_id": config.cluster.node_id, "groups": config.cluster.groups,
                "cores": config.cores, "genesis": config.genesis,
                "replication": config.cluster.replication}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            stored = json.load(handle)
        stored.setdefault("cores", 1)  # written before [node] cores existed: one process
        # written before membership changes: the voters were the peers, and stayed them
        stored.setdefault("genesis", config.genesis)
        stored.setdefault("replication", 0)  # written before placement: every node
        for key, value in identity.items():
            if stored.get(key) != value:
                if key == "genesis":
                    raise ConfigError(f"[cluster] genesis: the cluster of {config.node.data_dir} "
                                      f"was created with the voters {stored['genesis']}, not "
                                      f"{value} (set genesis to them)")
                if key == "cores":
                    raise ConfigError(f"[node] cores: the data in {config.node.data_dir} was "
                                      f"created with cores = {stored['cores']}, not {value} "
                                      f"(each core keeps its own groups' journal)")
                raise ConfigError(f"[cluster] {key}: the data in {config.node.data_dir} was "
                                  f"created with {key} = {stored.get(key)}, not {value}")
        return
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(identity, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(path + ".tmp", path)


def with_backlog(listen: str, backlog: int) -> str:
    """Add ``backlog=`` to a tcp/ssl endpoint string that has none: Twisted's default of 50
    drops SYNs when many clients (say 1000 SSE readers) connect at once."""
    kind = listen.split(":", 1)[0]
    if kind in ("tcp", "ssl", "tcp6") and "backlog=" not in listen:
        return f"{listen}:backlog={backlog}"
    return listen


def peer_tls_options(config: NodeConfig):
    """Mutual TLS for the peer plane from ``[cluster] tls_cert/tls_key/tls_ca`` (PEM files), or
    None. Each node presents its certificate and accepts only peers signed by the cluster CA."""
    cluster = config.cluster
    if not cluster.tls_cert:
        return None
    from twisted.internet import ssl
    try:
        with open(cluster.tls_key, "rb") as key, open(cluster.tls_cert, "rb") as cert:
            own = ssl.PrivateCertificate.loadPEM(key.read() + b"\n" + cert.read())
        with open(cluster.tls_ca, "rb") as ca:
            authority = ssl.Certificate.loadPEM(ca.read())
    except Exception as error:  # OpenSSL raises its own error types for bad PEM data
        raise ConfigError(f"[cluster] tls_cert/tls_key/tls_ca: cannot load ({error})") from None
    return own.options(authority)


def core_settings(config: NodeConfig):
    from ursula.core.cluster import CoreSettings
    cluster = config.cluster
    return CoreSettings(
        tick_ms=cluster.tick_ms, election_ticks=cluster.election_ticks,
        request_timeout_s=cluster.request_timeout_ms / 1000,
        leader_wait_s=cluster.leader_wait_ms / 1000,
        snapshot_entries=cluster.snapshot_entries,
        snapshot_keep=cluster.log_keep_entries, snapshot_keep_bytes=cluster.log_keep_bytes,
        snapshot_log_bytes=cluster.snapshot_log_bytes,
        max_live_readers=config.limits.max_live_readers,
        parallel_write=cluster.parallel_write, hold_bytes=cluster.hold_bytes,
        inflight_entries=cluster.inflight_entries,
        leader_balance_s=cluster.leader_balance_ms / 1000,
        # the preferred-leader balancer, when switched on, decides alone (they would fight)
        leader_follow_load_s=(0.0 if cluster.leader_balance_ms
                              else cluster.leader_follow_load_ms / 1000),
        hot_bytes=config.group_hot_bytes, hot_max_bytes=config.storage.hot_max_bytes,
        chunk_bytes=config.cold.chunk_bytes, cold_cache_bytes=config.cold.cache_bytes,
        flush_depth=config.cold.flush_depth, sweep_interval_s=config.cold.sweep_interval_s,
        orphan_grace_s=config.cold.orphan_grace_s, pack_ranges=config.cold.pack_ranges,
        join=config.cluster.join, compute=config.compute.enabled,
        compute_module_cache=config.compute.module_cache)


def compute_registry(config: NodeConfig):
    """The node's compute module registry, or None when ``[compute] enabled`` is off."""
    if not config.compute.enabled:
        return None
    from ursula.http.compute import registry_for
    return registry_for(config)


def load_compute_modules(config: NodeConfig) -> None:
    """Check and register ``[compute] modules`` (a bad module stops the node, naming it)."""
    registry = compute_registry(config)
    if registry is None or not config.compute.modules.strip():
        return
    from ursula.compute import ModuleError, parse_module_list
    try:
        infos = registry.load_files(parse_module_list(config.compute.modules))
    except ModuleError as error:
        raise ConfigError(f"[compute] modules: {error}") from None
    for info in infos:
        log.info("compute: module {id} loaded ({digest})", id=info.module_id,
                 digest=info.digest)


def cold_store(config: NodeConfig, reactor):
    """The ``IColdStore`` of ``[cold]``, or None (``backend = none``: everything stays hot)."""
    if config.cold.backend == "none":
        return None
    from ursula.cold import open_store
    try:
        return open_store(config.cold, config.node.data_dir, reactor)
    except (OSError, ValueError) as error:
        raise ConfigError(f"[cold] backend: cannot open the {config.cold.backend} store "
                          f"({error})") from None


def placement_of(config: NodeConfig, owned, directory: str):
    """The ``ursula.core.placement.Placement`` of a core process whose journal is in
    ``directory`` (its hosted groups are listed in ``hosted.json`` beside it)."""
    from ursula.core.placement import Placement
    return Placement(config.genesis, config.cluster.replication, config.cluster.groups, owned,
                     os.path.join(os.path.dirname(directory), "hosted.json"))


def open_journal(config: NodeConfig, directory: str, owned, fail, placement=None):
    """The journal in ``directory`` and the ``MemoryStorage`` of every group this process
    hosts, rebuilt from it (every group it may hold without a ``placement``).

    ``owned(g)``: whether this process may hold group ``g`` (a journal holding any other group
    is refused); ``fail(what)`` raises the caller's error with a one-line reason."""
    from ursula.raft import MemoryStorage
    from ursula.storage.journal import Journal, JournalError, Recovery, memory_storage

    cluster = config.cluster
    voters = config.genesis  # every group starts from them; changes are in its log
    try:
        journal = Journal(directory, fsync=config.storage.fsync,
                          segment_bytes=config.storage.segment_bytes)
    except (JournalError, OSError) as error:
        fail(f"cannot open the journal ({error})")
    for line in journal.recovery.report.describe():
        log.warn("journal recovery: {line}", line=line)
    recovered = journal.recovery.groups
    foreign = sorted(g for g in recovered if g >= cluster.groups or not owned(g))
    if foreign:
        fail(f"the journal holds groups {foreign}, not of this process "
             f"([cluster] groups = {cluster.groups}, [node] cores = {config.cores})")
    if placement is None:
        hosted = range(cluster.groups)
    else:
        hosted = placement.load_hosted(cluster.node_id, recovered, cluster.join)
    initial = placement.initial if placement is not None else (lambda g: voters)
    storages = {g: memory_storage(recovered[g], initial(g)) if g in recovered
                else MemoryStorage(initial(g)) for g in hosted}
    # The storages hold what recovery read; the journal keeps only its report (the recovered
    # snapshots' bytes are released once each group is running: GroupReplica).
    journal.recovery = Recovery({}, journal.recovery.report)
    return journal, storages


def peers_file(config: NodeConfig) -> str:
    """``peers.json``: peer addresses learnt at run time (``ursula.core.joining``)."""
    return os.path.join(config.node.data_dir, "peers.json")


def wire_joining(core, config: NodeConfig, offset: int = 0) -> None:
    """Give a ``RaftCore`` what join tokens and address changes need."""
    if len(config.peers) > 1:
        core.join_secret = config.cluster_secret
    core.peers_file = peers_file(config)
    core.peer_port_offset = offset


def peer_transport(config: NodeConfig, reactor, core: int = 0):
    """``(PeerTransport, listen endpoint)`` of core ``core`` (peer ports + ``core``: core k
    talks to core k of every peer), or ``(None, None)`` for a node of its own."""
    peers = {pid: (peer.host, peer.port) for pid, peer in config.peers.items()}
    if len(peers) == 1:
        return None, None
    from ursula.core.joining import load_addresses
    from ursula.coreproc import shift_port
    from ursula.wire.transport import PeerTransport
    cluster = config.cluster
    # addresses registered since the config was written (ursula-admin node address) win
    peers.update(load_addresses(peers_file(config)))
    host, port = peers[cluster.node_id]
    listen = cluster.peer_listen or f"tcp:{port}:interface={host}"
    transport = PeerTransport(cluster.node_id,
                              {pid: f"tcp:host={h}:port={p + core}"
                               for pid, (h, p) in peers.items() if pid != cluster.node_id},
                              config.cluster_secret, reactor,
                              tls_options=peer_tls_options(config), backoff_max=1.0)
    return transport, shift_port(listen, core) if core else listen


def journal_committer(journal, reactor, metrics_of):
    """The journal's ``GroupCommitter``, its fsync and batch figures fed to ``metrics_of()``
    (the node's ``Metrics``, which exist only once the core does)."""
    from ursula.storage.committer import GroupCommitter

    def batch_seen(size, records):
        metrics = metrics_of()
        metrics.journal_bytes.inc(size)
        metrics.journal_batches.inc()
        metrics.journal_records.observe(records)

    from ursula.storage.worker import SerialWorker

    writer = SerialWorker().start()
    reactor.addSystemEventTrigger("after", "shutdown", writer.stop)
    return GroupCommitter(journal, reactor, reactor.getThreadPool(), writer=writer,
                          fsync_observer=lambda seconds: metrics_of().fsync_seconds.observe(
                              seconds),
                          batch_observer=batch_seen)


def build_node(config: NodeConfig, reactor=None, config_path: str | None = None
               ) -> service.MultiService:
    """The services of one node: journal, Raft groups, peer transport, HTTP (with
    ``cores`` > 1: the supervisor of the core processes, ``ursula.nodesup``)."""
    if reactor is None:
        from twisted.internet import reactor
    if config.cores > 1:
        check_cluster_identity(config)
        from ursula.nodesup import build_supervisor
        return build_supervisor(config, config_path, reactor)
    from ursula.admin import admin_site
    from ursula.core.cluster import RaftCore
    from ursula.core.persist import JournalPersister
    from ursula.http.dataplane import data_plane_factory
    from ursula.http.metrics import Metrics

    check_cluster_identity(config)
    load_compute_modules(config)
    cluster = config.cluster
    lean_poll(reactor)  # this process runs the core: no logging context per I/O event
    tune_malloc(config.node.malloc_mmap_threshold)  # big blocks back to the kernel when freed

    def fail(what):
        raise ConfigError(f"[node] data_dir: {what}") from None

    journal_dir = os.path.join(config.node.data_dir, "journal")
    placement = placement_of(config, None, journal_dir)
    journal, storages = open_journal(config, journal_dir, lambda g: True, fail, placement)
    settings = core_settings(config)
    transport, peer_listen = peer_transport(config, reactor)
    core_holder = []
    metrics_holder = []

    def fatal(failure, why):
        core_holder[0].fatal(failure, why)

    committer = journal_committer(journal, reactor, lambda: metrics_holder[0])
    core = RaftCore(reactor, cluster.node_id, cluster.groups, storages,
                    JournalPersister(committer, on_failure=fatal), transport, settings,
                    cold_store=cold_store(config, reactor), placement=placement)
    core_holder.append(core)
    reactor.addSystemEventTrigger("after", "shutdown", _exit_1_after_fatal, core)
    wire_joining(core, config)
    metrics = Metrics(core)
    metrics_holder.append(metrics)
    factory = data_plane_factory(core, config, reactor, metrics)
    top = service.MultiService()
    LoggingService(config).setServiceParent(top)
    CoreService(core, transport, committer, journal, peer_listen).setServiceParent(top)
    endpoint = serverFromString(reactor, with_backlog(config.node.listen, config.node.backlog))
    http_service = StreamServerEndpointService(endpoint, factory)
    http_service._raiseSynchronously = True
    http_service.setServiceParent(top)
    log.info("ursula serving the Durable Streams API on {listen}", listen=config.node.listen)
    if config.node.admin_listen != "none":
        admin_endpoint = serverFromString(reactor, config.node.admin_listen)
        admin_service = StreamServerEndpointService(admin_endpoint, admin_site(
            core, metrics, token=config.admin_token,
            drain_timeout_s=config.node.admin_drain_timeout_s,
            registry=compute_registry(config)))
        admin_service._raiseSynchronously = True
        admin_service.setServiceParent(top)
        log.info("ursula serving the admin plane on {listen}", listen=config.node.admin_listen)
    tune_gc(config.node.gc_threshold)  # ursula.process: after recovery, so that is frozen too
    return top


def _exit_1_after_fatal(core) -> None:
    """twistd exits 0 whatever stopped its reactor. After a fatal stop (a journal write that
    failed, a peer port that cannot be bound) this process exits 1 instead, with the reason on
    stderr, so that a service manager's ``Restart=on-failure`` restarts it: the last thing at
    exit (atexit runs it first of the handlers; twistd has removed its pid file already)."""
    if core.fatal_reason is None:
        return
    import atexit

    def exit_1():
        sys.stdout.flush()
        # file descriptor 2 itself: twistd's sys.stderr is a log redirect, closed by now
        os.write(2, f"ursula: stopped: {core.fatal_reason}\n".encode(errors="replace"))
        os._exit(1)
    atexit.register(exit_1)


def make_service(options) -> service.IService:
    try:
        config = load_config(options["config"])
        return build_node(config, config_path=options["config"])
    except ConfigError as error:
        sys.stderr.write(f"ursula: config error: {error}\n")
        raise SystemExit(2) from None
