"""``node.ini`` parsing: every key, its default, and a clear one-line error for a bad value.

``load_config(path)`` returns a ``NodeConfig``; ``ConfigError`` names the section and key. With no
file, the embedded defaults are used (127.0.0.1:4437, data in ./ursula-data).

May import: the standard library and Twisted's endpoint parser (to validate ``listen``).
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import re
from dataclasses import dataclass, field, fields

MiB = 1024 * 1024


class ConfigError(Exception):
    """A configuration problem; ``str()`` is one line naming the key."""


@dataclass(frozen=True)
class NodeSection:
    listen: str = "tcp:4437:interface=127.0.0.1"
    admin_listen: str = "tcp:4438:interface=127.0.0.1"  # "none": no admin listener
    data_dir: str = "./ursula-data"
    backlog: int = 1024
    cores: int = 0  # 0: the machine's CPU count (at most [cluster] groups); 1: one process
    malloc_mmap_threshold: int = 0  # glibc: fix its mmap threshold (0: glibc's dynamic one)
    gc_threshold: int = 20_000  # allocations between young-generation GCs (0: Python's 700)
    admin_token: str = ""  # bearer token of the admin plane (required off loopback)
    admin_token_file: str = ""  # or read it from this file
    admin_drain_timeout_s: int = 30  # how long POST /__ursula/drain waits for leadership to move


@dataclass(frozen=True)
class HttpSection:
    long_poll_timeout_ms: int = 1000
    sse_max_duration_ms: int = 60_000
    sse_heartbeat_ms: int = 15_000
    cursor_interval_ms: int = 20_000
    access_log: bool = False


@dataclass(frozen=True)
class LimitsSection:
    max_body_bytes: int = 16 * MiB
    max_header_bytes: int = 16384
    max_headers: int = 100
    max_stream_name_bytes: int = 512
    max_live_readers: int = 10_000
    max_read_bytes: int = 4 * MiB
    max_batch_frames: int = 512
    max_list_streams: int = 1000
    idle_timeout_s: int = 120
    request_timeout_s: int = 60
    max_pipelined_requests: int = 16
    max_attrs_bytes: int = 16384


@dataclass(frozen=True)
class ClusterSection:
    node_id: int = 1
    groups: int = 4
    peers: str = ""
    genesis: str = ""  # the voters the cluster was created with (default: every peer)
    join: bool = False  # a new (or wiped) data_dir in a cluster that exists: join it
    replication: int = 0  # voters per group (0: every node up to 5 nodes, else 3)
    peer_listen: str = ""
    secret: str = ""
    secret_file: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    tick_ms: int = 100
    election_ticks: int = 10
    request_timeout_ms: int = 5000
    leader_wait_ms: int = 3000
    snapshot_entries: int = 5000
    log_keep_entries: int = 1000
    log_keep_bytes: int = 4 * MiB
    snapshot_log_bytes: int = 16 * MiB
    parallel_write: bool = True
    hold_bytes: int = 1 << 20  # proposals held while a group's write is in flight (0: off)
    inflight_entries: int = 1  # a leader's entries proposed and not committed yet (0: any)
    leader_balance_ms: int = 0  # how often leaders go back to their preferred node (0: off)
    leader_follow_load_ms: int = 2000  # how often a leader moves to the node its writes come from (0: off)


@dataclass(frozen=True)
class StorageSection:
    fsync: str = "always"
    segment_bytes: int = 64 * MiB
    hot_bytes: int = 16 * MiB  # per group: older bytes go to the cold tier above this
    hot_max_bytes: int = 0  # per group: appends answer 503 here (0: 4 x hot_bytes)
    node_hot_bytes: int = 0  # all groups together (0: groups x hot_bytes); lowers hot_bytes


@dataclass(frozen=True)
class ColdSection:
    # auto: local for a node of its own, none for a cluster (its nodes must share the tier);
    # local (<data_dir>/cold), s3, memory, none (everything stays hot)
    backend: str = "auto"
    directory: str = ""  # backend = local: the directory (default <data_dir>/cold)
    bucket: str = ""
    prefix: str = ""
    endpoint_url: str = ""
    region: str = ""
    chunk_bytes: int = 4 * MiB
    cache_bytes: int = 64 * MiB
    flush_depth: int = 4  # chunks of a group in flight at once (uploading or proposed)
    pack_ranges: int = 256  # stream ranges in one pack at most
    sweep_interval_s: int = 600  # how often a group's leader looks for orphaned objects
    orphan_grace_s: int = 600  # an unreferenced object younger than this is not an orphan yet


@dataclass(frozen=True)
class SubscriptionsSection:
    """The subscription APIs (``{stream-url}/__ds/...``; docs/configuration.md)."""

    enabled: bool = True
    allow_loopback_webhooks: bool = True  # 127.0.0.0/8, ::1, localhost (development)
    allow_http_webhooks: bool = False  # plain http to non-loopback hosts
    max_subscriptions: int = 10_000  # per Raft group
    max_streams: int = 1000  # explicit streams per subscription (and per request)
    max_body_bytes: int = 65536  # request bodies of the subscription routes
    max_id_bytes: int = 256
    min_lease_ttl_ms: int = 1000
    max_lease_ttl_ms: int = 600_000
    default_lease_ttl_ms: int = 30_000
    webhook_timeout_ms: int = 10_000
    max_webhook_answer_bytes: int = 65536
    retry_initial_ms: int = 1000
    retry_max_ms: int = 60_000
    reconcile_ms: int = 5000
    tick_ms: int = 200
    token_ttl_ms: int = 3_600_000


@dataclass(frozen=True)
class ComputeSection:
    """The WASM compute extension (docs/wasm.md). The limits and the default policy are put in
    a binding when it is made (``PUT {stream}/compute``): every replica then uses the same."""

    enabled: bool = True
    modules: str = ""  # "id = path" entries (newlines or commas): loaded when the node starts
    directory: str = ""  # the module registry (default <data_dir>/compute/modules)
    fuel: int = 5_000_000  # wasmtime fuel per reducer call (about 6 ms of a busy loop here)
    memory_pages: int = 256  # 64 KiB pages per call (16 MiB)
    max_output_bytes: int = 1 * MiB  # the state (and a rendered snapshot) at most
    max_module_bytes: int = 4 * MiB
    every_records: int = 1000  # default compaction policy of a binding (0: off)
    every_bytes: int = 0
    module_cache: int = 64  # compiled modules kept per core process (by digest)


@dataclass(frozen=True)
class Peer:
    node_id: int
    host: str
    port: int
    client_url: str = ""

    @property
    def endpoint(self) -> str:
        return f"tcp:host={self.host}:port={self.port}"


@dataclass(frozen=True)
class LogSection:
    level: str = "info"
    format: str = "text"
    file: str = ""


@dataclass(frozen=True)
class NodeConfig:
    node: NodeSection = field(default_factory=NodeSection)
    http: HttpSection = field(default_factory=HttpSection)
    limits: LimitsSection = field(default_factory=LimitsSection)
    log: LogSection = field(default_factory=LogSection)
    cluster: ClusterSection = field(default_factory=ClusterSection)
    storage: StorageSection = field(default_factory=StorageSection)
    cold: ColdSection = field(default_factory=ColdSection)
    subscriptions: SubscriptionsSection = field(default_factory=SubscriptionsSection)
    compute: ComputeSection = field(default_factory=ComputeSection)

    @property
    def peers(self) -> dict[int, Peer]:
        """Every voter of the cluster by id (a cluster of one when ``peers`` is empty)."""
        return parse_peers(self.cluster.peers) or {self.cluster.node_id: Peer(
            self.cluster.node_id, "127.0.0.1", 0)}

    @property
    def genesis(self) -> list[int]:
        """The voters every group was created with: ``[cluster] genesis``, else every peer.
        Membership changes (``ursula-admin node add/remove``) start from it."""
        if self.cluster.genesis.strip():
            return sorted(parse_node_ids(self.cluster.genesis))
        return sorted(self.peers)

    @property
    def cores(self) -> int:
        """Core processes of the node: ``[node] cores``, or the CPU count (at most groups)."""
        if self.node.cores:
            return self.node.cores
        return max(1, min(os.cpu_count() or 1, self.cluster.groups))

    @property
    def group_hot_bytes(self) -> int:
        """Each group's flush threshold: ``[storage] hot_bytes``, lowered to an even share of
        ``node_hot_bytes`` when that is set."""
        storage = self.storage
        if storage.node_hot_bytes:
            return min(storage.hot_bytes, storage.node_hot_bytes // self.cluster.groups)
        return storage.hot_bytes

    @property
    def compute_directory(self) -> str:
        """The module registry's directory (``[compute] directory`` or under ``data_dir``)."""
        return self.compute.directory or os.path.join(self.node.data_dir, "compute", "modules")

    @property
    def admin_token(self) -> str:
        """The admin plane's bearer token (``[node] admin_token`` or the first line of
        ``admin_token_file``), or "" for none."""
        if self.node.admin_token_file:
            with open(self.node.admin_token_file, encoding="utf-8") as handle:
                return handle.read().strip()
        return self.node.admin_token

    @property
    def cluster_secret(self) -> bytes:
        if self.cluster.secret_file:
            with open(self.cluster.secret_file, "rb") as handle:
                return handle.read().strip()
        return self.cluster.secret.encode()


_SECTIONS = {"node": NodeSection, "http": HttpSection, "limits": LimitsSection, "log": LogSection,
             "cluster": ClusterSection, "storage": StorageSection, "cold": ColdSection,
             "subscriptions": SubscriptionsSection, "compute": ComputeSection}
_CHOICES = {("log", "level"): ("debug", "info", "warn", "error"),
            ("log", "format"): ("text", "json"),
            ("storage", "fsync"): ("always", "never"),
            ("cold", "backend"): ("auto", "local", "s3", "memory", "none")}
_MINIMUM = {("node", "backlog"): 1, ("node", "admin_drain_timeout_s"): 1, ("http", "long_poll_timeout_ms"): 1, ("http", "sse_max_duration_ms"): 1000,
            ("http", "sse_heartbeat_ms"): 100, ("http", "cursor_interval_ms"): 1000,
            ("limits", "max_body_bytes"): 1, ("limits", "max_header_bytes"): 1024,
            ("limits", "max_headers"): 10, ("limits", "max_stream_name_bytes"): 1,
            ("limits", "max_live_readers"): 0, ("limits", "max_read_bytes"): 1024,
            ("limits", "max_batch_frames"): 1, ("limits", "max_list_streams"): 1,
            ("limits", "idle_timeout_s"): 1, ("limits", "request_timeout_s"): 1,
            ("limits", "max_pipelined_requests"): 1, ("cluster", "node_id"): 1, ("cluster", "groups"): 1,
            ("cluster", "tick_ms"): 10, ("cluster", "election_ticks"): 3,
            ("cluster", "request_timeout_ms"): 100, ("cluster", "leader_wait_ms"): 0,
            ("cluster", "leader_balance_ms"): 0, ("cluster", "leader_follow_load_ms"): 0,
            ("cluster", "snapshot_entries"): 10, ("cluster", "log_keep_entries"): 0,
            ("cluster", "snapshot_log_bytes"): 4096, ("storage", "segment_bytes"): 4096,
            ("storage", "hot_bytes"): 1024, ("cold", "chunk_bytes"): 1024,
            ("cold", "cache_bytes"): 0, ("cold", "flush_depth"): 1,
            ("cold", "pack_ranges"): 1,
            ("cold", "sweep_interval_s"): 1, ("cold", "orphan_grace_s"): 60,
            ("subscriptions", "max_subscriptions"): 1, ("subscriptions", "max_streams"): 1,
            ("subscriptions", "max_body_bytes"): 1024, ("subscriptions", "max_id_bytes"): 8,
            ("subscriptions", "min_lease_ttl_ms"): 100, ("subscriptions", "max_lease_ttl_ms"): 100,
            ("subscriptions", "default_lease_ttl_ms"): 100,
            ("subscriptions", "webhook_timeout_ms"): 100,
            ("subscriptions", "max_webhook_answer_bytes"): 64,
            ("subscriptions", "retry_initial_ms"): 10, ("subscriptions", "retry_max_ms"): 10,
            ("subscriptions", "reconcile_ms"): 100, ("subscriptions", "tick_ms"): 10,
            ("subscriptions", "token_ttl_ms"): 1000,
            ("compute", "fuel"): 1000, ("compute", "memory_pages"): 1,
            ("compute", "max_output_bytes"): 64, ("compute", "max_module_bytes"): 1024,
            ("compute", "module_cache"): 1}


def _convert(section: str, key: str, raw: str, kind: type):
    where = f"[{section}] {key}"
    raw = raw.strip()
    if kind is bool:
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true or false, got {raw!r}")
    if kind is int:
        try:
            value = int(raw.replace("_", ""))
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {raw!r}") from None
        minimum = _MINIMUM.get((section, key), 0)
        if value < minimum:
            raise ConfigError(f"{where}: must be at least {minimum}, got {value}")
        return value
    choices = _CHOICES.get((section, key))
    if choices and raw not in choices:
        raise ConfigError(f"{where}: expected one of {', '.join(choices)}, got {raw!r}")
    return raw


def _check_endpoint(where: str, listen: str) -> None:
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString
    try:
        serverFromString(reactor, listen)
    except (ValueError, TypeError, KeyError) as error:
        raise ConfigError(f"{where}: {listen!r} is not a Twisted endpoint ({error})") from None


def parse_node_ids(text: str) -> set[int]:
    ids = set()
    for item in text.replace(",", " ").split():
        if not item.isdigit() or int(item) < 1:
            raise ConfigError(f"[cluster] genesis: {item!r} is not a node id")
        ids.add(int(item))
    return ids


def parse_peers(text: str) -> dict[int, Peer]:
    """``1 = host:port [client-url]`` entries, separated by newlines or commas."""
    peers: dict[int, Peer] = {}
    for item in text.replace(",", "\n").splitlines():
        item = item.strip()
        if not item:
            continue
        node_text, sep, rest = item.partition("=")
        parts = rest.split()
        if not sep or not node_text.strip().isdigit() or not parts or ":" not in parts[0]:
            raise ConfigError(f"[cluster] peers: expected 'id = host:port [client-url]', got "
                              f"{item!r}")
        host, _, port = parts[0].rpartition(":")
        if not port.isdigit() or not host:
            raise ConfigError(f"[cluster] peers: bad address {parts[0]!r} in {item!r}")
        node_id = int(node_text)
        if node_id in peers:
            raise ConfigError(f"[cluster] peers: node {node_id} is listed twice")
        peers[node_id] = Peer(node_id, host.strip("[]"), int(port),
                              parts[1] if len(parts) > 1 else "")
    return peers


#: The shortest admin token accepted (bytes).
MIN_ADMIN_TOKEN = 16
_LOOPBACK = ("127.", "::1", "localhost", "0:0:0:0:0:0:0:1")


def _endpoint_parts(rest: str) -> list[str]:
    return re.split(r"(?<!\\):", rest)


def endpoint_interface(listen: str) -> str | None:
    """The ``interface=`` of a tcp/ssl endpoint string ("" when it listens on every
    interface), or None for an endpoint that is not TCP (a unix socket)."""
    kind, _, rest = listen.partition(":")
    if kind not in ("tcp", "tcp6", "ssl"):
        return None
    for part in _endpoint_parts(rest):
        key, sep, value = part.partition("=")
        if sep and key == "interface":
            return value.replace("\\:", ":").strip("[]")
    return ""


def endpoint_port(listen: str) -> int | None:
    """The port of a tcp/ssl endpoint string, or None."""
    kind, _, rest = listen.partition(":")
    if kind not in ("tcp", "tcp6", "ssl"):
        return None
    for i, part in enumerate(_endpoint_parts(rest)):
        key, sep, value = part.partition("=")
        if not sep and i == 0 and key.isdigit():
            return int(key)
        if sep and key == "port" and value.isdigit():
            return int(value)
    return None


def is_loopback(interface: str | None) -> bool:
    """Whether an endpoint's interface is loopback only (a unix socket counts as local)."""
    return interface is None or interface.startswith(_LOOPBACK)


def _check_admin(config: NodeConfig) -> None:
    """The admin plane: never on the public port; off loopback only with a bearer token."""
    node = config.node
    if node.admin_token_file:
        try:
            with open(node.admin_token_file, encoding="utf-8") as handle:
                token = handle.read().strip()
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or "not UTF-8 text"
            raise ConfigError(f"[node] admin_token_file: cannot read {node.admin_token_file!r} "
                              f"({reason})") from None
        if node.admin_token:
            raise ConfigError("[node] admin_token_file: set admin_token or admin_token_file, "
                              "not both")
        where = "[node] admin_token_file"
    else:
        token = node.admin_token.strip()
        where = "[node] admin_token"
    if token and len(token.encode()) < MIN_ADMIN_TOKEN:
        raise ConfigError(f"{where}: must be at least {MIN_ADMIN_TOKEN} bytes")
    if node.admin_listen == "none":
        return
    port = endpoint_port(node.admin_listen)
    if port and port == endpoint_port(node.listen):
        raise ConfigError(f"[node] admin_listen: port {port} is the public port ([node] "
                          "listen); the admin plane needs a port of its own")
    interface = endpoint_interface(node.admin_listen)
    if not is_loopback(interface) and not token:
        shown = interface or "every interface"
        raise ConfigError(f"[node] admin_token: required when admin_listen is not on loopback "
                          f"({node.admin_listen!r} listens on {shown}); set admin_token or "
                          "admin_token_file")


def _check_cluster(config: NodeConfig) -> None:
    cluster = config.cluster
    peers = parse_peers(cluster.peers)
    if peers:
        if cluster.node_id not in peers:
            raise ConfigError(f"[cluster] node_id: {cluster.node_id} is not in [cluster] peers "
                              f"({', '.join(map(str, sorted(peers)))})")
        if len(peers) > 1 and not (cluster.secret or cluster.secret_file):
            raise ConfigError("[cluster] secret: required when the cluster has several nodes "
                              "(or set secret_file)")
        if len(peers) > 1 and cluster.secret and len(cluster.secret.encode()) < 16:
            raise ConfigError("[cluster] secret: must be at least 16 bytes")
    if cluster.genesis.strip():
        genesis = parse_node_ids(cluster.genesis)
        unknown = sorted(genesis - set(peers or {cluster.node_id: None}))
        if unknown:
            raise ConfigError(f"[cluster] genesis: nodes {unknown} are not in [cluster] peers")
    voters = len(parse_node_ids(cluster.genesis)) if cluster.genesis.strip() else len(
        peers or {cluster.node_id: None})
    if cluster.replication < 0 or cluster.replication > voters:
        raise ConfigError(f"[cluster] replication: {cluster.replication} voters per group; "
                          f"0 (the default) or 1 to {voters} (the genesis nodes)")
    if cluster.secret_file:
        try:
            open(cluster.secret_file, "rb").close()
        except OSError as error:
            raise ConfigError(f"[cluster] secret_file: cannot read {cluster.secret_file!r} "
                              f"({error.strerror})") from None
    if cluster.peer_listen:
        _check_endpoint("[cluster] peer_listen", cluster.peer_listen)
    tls = {"tls_cert": cluster.tls_cert, "tls_key": cluster.tls_key, "tls_ca": cluster.tls_ca}
    if any(tls.values()):
        for key, path in tls.items():
            if not path:
                raise ConfigError(f"[cluster] {key}: tls_cert, tls_key and tls_ca go together")
        for key, path in tls.items():
            try:
                open(path, "rb").close()
            except OSError as error:
                raise ConfigError(f"[cluster] {key}: cannot read {path!r} ({error.strerror})") \
                    from None


def parse_config(text: str, source: str = "<config>") -> NodeConfig:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=source)
    except configparser.Error as error:
        first = str(error).splitlines()[0]
        raise ConfigError(f"{source}: {first}") from None
    sections = {}
    for name in parser.sections():
        if name not in _SECTIONS:
            raise ConfigError(f"[{name}]: unknown section (known: {', '.join(_SECTIONS)})")
    for name, cls in _SECTIONS.items():
        known = {f.name for f in fields(cls)}
        defaults = cls()
        values = {}
        if parser.has_section(name):
            for key, raw in parser.items(name):
                if key not in known:
                    raise ConfigError(f"[{name}] {key}: unknown key (known: {', '.join(known)})")
                values[key] = _convert(name, key, raw, type(getattr(defaults, key)))
        sections[name] = cls(**values)
    config = NodeConfig(**sections)
    _check_endpoint("[node] listen", config.node.listen)
    if config.node.admin_listen != "none":
        _check_endpoint("[node] admin_listen", config.node.admin_listen)
    _check_admin(config)
    _check_cluster(config)
    config = _resolve_cold(config)
    if config.cold.backend == "s3" and not config.cold.bucket:
        raise ConfigError("[cold] bucket: required with backend = s3")
    share = config.storage.node_hot_bytes // config.cluster.groups
    if config.storage.node_hot_bytes and share < 1024:
        raise ConfigError(f"[storage] node_hot_bytes: {config.storage.node_hot_bytes} gives each "
                          f"of the {config.cluster.groups} groups {share} bytes; at least 1024 "
                          "each")
    subs = config.subscriptions
    if not subs.min_lease_ttl_ms <= subs.default_lease_ttl_ms <= subs.max_lease_ttl_ms:
        raise ConfigError("[subscriptions] default_lease_ttl_ms: must lie within "
                          f"min_lease_ttl_ms ({subs.min_lease_ttl_ms}) and max_lease_ttl_ms "
                          f"({subs.max_lease_ttl_ms})")
    if subs.retry_max_ms < subs.retry_initial_ms:
        raise ConfigError("[subscriptions] retry_max_ms: must be at least retry_initial_ms")
    if config.compute.memory_pages > 65536:
        raise ConfigError(f"[compute] memory_pages: at most 65536 (4 GiB), got "
                          f"{config.compute.memory_pages}")
    _check_compute_modules(config.compute.modules)
    if config.node.cores > config.cluster.groups:
        raise ConfigError(f"[node] cores: {config.node.cores} cores need at least as many groups "
                          f"([cluster] groups = {config.cluster.groups})")
    if config.cores > 1 and not config.node.listen.startswith("tcp:"):
        raise ConfigError(f"[node] listen: with cores > 1 it must be a tcp: endpoint, got "
                          f"{config.node.listen!r}")
    return config


_MODULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _check_compute_modules(text: str) -> None:
    """``[compute] modules``: ``id = path`` entries whose files exist (checked as WebAssembly
    when the node loads them)."""
    for item in text.replace(",", "\n").splitlines():
        item = item.strip()
        if not item:
            continue
        module_id, sep, path = item.partition("=")
        module_id, path = module_id.strip(), path.strip()
        if not sep or not path or not _MODULE_ID.match(module_id):
            raise ConfigError(f"[compute] modules: expected 'id = path' (an id of A-Z a-z 0-9 "
                              f". _ -), got {item!r}")
        if not os.path.isfile(path):
            raise ConfigError(f"[compute] modules: {module_id}: no file {path!r}")


def _resolve_cold(config: NodeConfig) -> NodeConfig:
    """Every replica reads the chunks its group's leader uploaded, so a cluster's nodes must
    share the cold tier: a directory of one node's own (or a process's memory) cannot be it."""
    cold = config.cold
    clustered = len(config.peers) > 1
    backend = cold.backend
    if backend == "auto":
        backend = "none" if clustered else "local"
    elif clustered and backend == "memory":
        raise ConfigError("[cold] backend: memory is one process's own; the nodes of a cluster "
                          "must share the cold tier (use s3, or none)")
    elif clustered and backend == "local" and not cold.directory:
        raise ConfigError("[cold] directory: the nodes of a cluster must share the cold tier; "
                          "set it to a directory every node mounts, or use backend = s3")
    if backend == cold.backend:
        return config
    return dataclasses.replace(config, cold=dataclasses.replace(cold, backend=backend))


def load_config(path: str | None) -> NodeConfig:
    """Read ``path`` (or use the embedded defaults when None) and make the data directory."""
    if path is None:
        config = _resolve_cold(NodeConfig())
    else:
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as error:
            raise ConfigError(f"{path}: cannot read config file ({error.strerror})") from None
        config = parse_config(text, source=path)
    data_dir = config.node.data_dir
    try:
        os.makedirs(data_dir, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"[node] data_dir: cannot create {data_dir!r} ({error.strerror})") \
            from None
    if not os.access(data_dir, os.W_OK):
        raise ConfigError(f"[node] data_dir: {data_dir!r} is not writable")
    return config
