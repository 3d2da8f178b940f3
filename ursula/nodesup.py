"""The node supervisor (``twistd -n ursula`` when ``[node] cores`` = C > 1).

It spawns C core processes (``python -m ursula.coreproc --config PATH --core k``), restarts a
core that dies (back-off from 0.2 s doubling to 10 s, reset once a core ran 30 s; the core's
groups recover from its own journal while the other cores keep serving), and on SIGTERM sends
SIGTERM to every core (each hands its groups' leadership over, then exits) and waits for them
(SIGKILL after 30 s). It serves the admin plane (``[node] admin_listen``, Klein,
``ursula.admin``): health (this process runs), ready (every core says ready over the local
link), metrics (every core's Prometheus text, fetched over the local link, each sample with a
``core`` label, plus ``ursula_core_restarts_total``), groups and status (every core's groups), and
the admin operations, each sent to the core that owns the group (transfer-leader, snapshot,
backup images) or to every core (drain, undrain).
``ps`` shows ``ursula node <id> supervisor`` and ``ursula node <id> core <k>/<C>``.

May import: everything in ``ursula``, Twisted, prometheus_client, setproctitle.
"""

from __future__ import annotations

import os
import sys

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer, protocol
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

log = Logger()

BACKOFF_START_S = 0.2
BACKOFF_MAX_S = 10.0
HEALTHY_AFTER_S = 30.0
DRAIN_TIMEOUT_S = 30.0


class _CoreProtocol(protocol.ProcessProtocol):
    def __init__(self, supervisor, k: int):
        self.supervisor = supervisor
        self.k = k
        self.started = supervisor.reactor.seconds()
        self._buffer = b""

    def outReceived(self, data: bytes) -> None:
        """The core's log lines, relayed into the supervisor's log (a daemonised twistd has
        no terminal: the cores' output goes where the supervisor's log goes)."""
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line:
                log.info("{line}", line=line.decode(errors="replace"))

    errReceived = outReceived

    def processEnded(self, reason):
        self.supervisor._ended(self.k, self, reason)


class CoreSupervisor(service.Service):
    """Starts, restarts and drains the core processes."""

    def __init__(self, config, config_path: str | None, reactor):
        self.config = config
        self.config_path = config_path
        self.reactor = reactor
        self.cores = config.cores
        self.processes: dict[int, _CoreProtocol] = {}
        self.restarts = dict.fromkeys(range(self.cores), 0)
        self._failures = dict.fromkeys(range(self.cores), 0)
        self._pending: dict[int, object] = {}
        self._ended_waiters: dict[int, list] = {}
        self.stopping = False

    def argv(self, k: int) -> list[str]:
        args = [sys.executable, "-m", "ursula.coreproc", "--core", str(k)]
        if self.config_path:
            args += ["--config", os.path.abspath(self.config_path)]
        return args

    def _spawn(self, k: int) -> None:
        self._pending.pop(k, None)
        if self.stopping:
            return
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [here] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env.setdefault("PYTHONUNBUFFERED", "1")
        proto = _CoreProtocol(self, k)
        self.reactor.spawnProcess(proto, sys.executable, self.argv(k), env=env,
                                  path=os.getcwd(), childFDs={0: "w", 1: "r", 2: "r"})
        self.processes[k] = proto
        log.info("core {k} started (pid {pid})", k=k, pid=proto.transport.pid)

    def startService(self):
        super().startService()
        for k in range(self.cores):
            self._spawn(k)

    def _ended(self, k: int, proto, reason) -> None:
        if self.processes.get(k) is proto:
            del self.processes[k]
        for d in self._ended_waiters.pop(k, []):
            d.callback(None)
        if self.stopping:
            log.info("core {k} stopped ({why})", k=k, why=reason.getErrorMessage())
            return
        ran = self.reactor.seconds() - proto.started
        if ran >= HEALTHY_AFTER_S:
            self._failures[k] = 0
        delay = min(BACKOFF_MAX_S, BACKOFF_START_S * (2 ** self._failures[k]))
        self._failures[k] += 1
        self.restarts[k] += 1
        log.warn("core {k} exited ({why}) after {ran:.1f} s; restarting in {delay:.1f} s",
                 k=k, why=reason.getErrorMessage(), ran=ran, delay=delay)
        self._pending[k] = self.reactor.callLater(delay, self._spawn, k)

    def pid(self, k: int) -> int | None:
        proto = self.processes.get(k)
        return proto.transport.pid if proto is not None else None

    def stopService(self):
        """SIGTERM every core, wait for all of them (SIGKILL after DRAIN_TIMEOUT_S)."""
        self.stopping = True
        for call in self._pending.values():
            if call.active():
                call.cancel()
        self._pending.clear()
        waits = []
        for k, proto in list(self.processes.items()):
            d = defer.Deferred()
            self._ended_waiters.setdefault(k, []).append(d)
            waits.append(d)
            try:
                proto.transport.signalProcess("TERM")
            except Exception:  # noqa: BLE001 - already gone
                pass

        def kill_left():
            for proto in list(self.processes.values()):
                try:
                    proto.transport.signalProcess("KILL")
                except Exception:  # noqa: BLE001 - already gone
                    pass
        timer = self.reactor.callLater(DRAIN_TIMEOUT_S, kill_left)
        d = defer.gatherResults(waits)

        def done(result):
            if timer.active():
                timer.cancel()
            super(CoreSupervisor, self).stopService()
            return result
        return d.addBoth(done)


class _Quiet:
    """A local-link handler for the supervisor's links (it serves nothing)."""

    def handle(self, link, op, args):
        return ["err", "error", "the supervisor takes no calls"]

    def on_changed(self, link, keys):
        pass


class NodeView:
    """What the admin plane asks, answered from every core over the local link."""

    def __init__(self, config, supervisor: CoreSupervisor, reactor):
        from ursula.coreproc import socket_path
        from ursula.wire.local import LocalClient
        self.supervisor = supervisor
        self.reactor = reactor
        self.node_id = config.cluster.node_id
        self.group_count = config.cluster.groups
        self.cores = config.cores
        self.drain_timeout_s = float(config.node.admin_drain_timeout_s)
        self.call_timeout_s = config.cluster.request_timeout_ms / 1000 + 5.0
        self.clients = {k: LocalClient(socket_path(config.node.data_dir, k), _Quiet(), reactor)
                        for k in range(config.cores)}

    def start(self):
        for client in self.clients.values():
            client.start()

    def stop(self):
        return defer.gatherResults([c.stop() for c in self.clients.values()])

    def _ask(self, op):
        from ursula.core.routed import unwrap

        def one(k, client):
            d = client.call(op, None)
            d.addTimeout(2.0, self.reactor)
            return d.addCallback(unwrap).addErrback(lambda failure: None)  # no answer
        return defer.gatherResults([one(k, c) for k, c in sorted(self.clients.items())])

    def _values(self, answers):
        return answers

    def is_ready(self):
        return self._ask("ready").addCallback(
            lambda answers: all(a is True for a in self._values(answers)))

    def group_stats(self):
        def merge(answers):
            out = []
            for k, stats in enumerate(self._values(answers)):
                for row in stats or []:
                    out.append({**row, "core": k})
            return sorted(out, key=lambda row: row["group"])
        return self._ask("group_stats").addCallback(merge)

    # -- the admin operations (ursula.coreproc.AdminCalls answers them) ----------------------

    def _admin(self, k: int, name: str, *params, timeout_s: float | None = None):
        from ursula.core.cluster import AdminError
        from ursula.core.interfaces import Unavailable

        def answer(item):
            if item[0] == "ok":
                return item[1]
            if item[1] == "admin":
                status, reason, leader = item[2]
                raise AdminError(status, reason, leader)
            raise Unavailable(f"core {k} could not answer ({item[2]})")

        def lost(failure):
            failure.trap(Exception)
            if failure.check(AdminError):
                return failure
            raise Unavailable(f"core {k} is not reachable ({failure.getErrorMessage()})")
        d = self.clients[k].call("admin", [name, list(params)])
        d.addTimeout(timeout_s or self.call_timeout_s, self.reactor)
        return d.addCallback(answer).addErrback(lost)

    def _core_of(self, group: int) -> int:
        from ursula.core.cluster import AdminError
        if not 0 <= group < self.group_count:
            raise AdminError(404, f"group {group} is not held here (groups: 0-"
                                  f"{self.group_count - 1})")
        return group % self.cores

    def node_status(self):
        d = defer.gatherResults([self._admin(k, "status") for k in sorted(self.clients)],
                                consumeErrors=True)
        d.addErrback(lambda failure: failure.value.subFailure)

        def merge(answers):
            groups = sorted(({**row, "core": k} for k, answer in enumerate(answers)
                             for row in answer["groups"]), key=lambda row: row["group"])
            return {"node": self.node_id, "cores": self.cores, "group_count": self.group_count,
                    "draining": any(a["draining"] for a in answers), "groups": groups,
                    "hosted": sorted(g for a in answers for g in a.get("hosted", [])),
                    "replication": answers[0].get("replication", 0) if answers else 0,
                    "genesis": answers[0].get("genesis", []) if answers else [],
                    "core_restarts": sum(self.supervisor.restarts.values())}
        return d.addCallback(merge)

    def transfer_leader(self, group: int, to: int):
        return defer.maybeDeferred(self._core_of, group).addCallback(
            lambda k: self._admin(k, "transfer_leader", group, to))

    def change_membership(self, group: int, op: str, node: int):
        return defer.maybeDeferred(self._core_of, group).addCallback(
            lambda k: self._admin(k, "change_membership", group, op, node))

    def join_token(self, node: int):
        return self._admin(0, "join_token", node)

    def set_peer_address(self, node: int, address: str, token: str):
        d = defer.gatherResults([self._admin(k, "set_peer_address", node, address, token)
                                 for k in sorted(self.clients)], consumeErrors=True)
        d.addErrback(lambda failure: failure.value.subFailure)
        return d.addCallback(lambda answers: answers[0])

    def host_group(self, group: int):
        return defer.maybeDeferred(self._core_of, group).addCallback(
            lambda k: self._admin(k, "host_group", group))

    def drop_group(self, group: int):
        return defer.maybeDeferred(self._core_of, group).addCallback(
            lambda k: self._admin(k, "drop_group", group))

    def snapshot_group(self, group: int):
        return defer.maybeDeferred(self._core_of, group).addCallback(
            lambda k: self._admin(k, "snapshot_group", group))

    def backup_group(self, group: int):
        return defer.maybeDeferred(self._core_of, group).addCallback(
            lambda k: self._admin(k, "backup_group", group))

    def drain(self, timeout_s: float):
        d = defer.gatherResults([self._admin(k, "drain", timeout_s, timeout_s=timeout_s + 5)
                                 for k in sorted(self.clients)], consumeErrors=True)
        d.addErrback(lambda failure: failure.value.subFailure)
        return d.addCallback(lambda answers: sorted(g for led in answers for g in led))

    def undrain(self):
        d = defer.gatherResults([self._admin(k, "undrain") for k in sorted(self.clients)],
                                consumeErrors=True)
        return d.addErrback(lambda failure: failure.value.subFailure).addCallback(
            lambda _: None)

    def render(self):
        from prometheus_client.exposition import CONTENT_TYPE_LATEST
        return self._ask("metrics").addCallback(
            lambda answers: (merge_metrics(self._values(answers), self.supervisor.restarts),
                             CONTENT_TYPE_LATEST))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if value != int(value) else f"{int(value)}.0"


def merge_metrics(texts: list, restarts: dict) -> bytes:
    """Every core's Prometheus text as one, each sample with a ``core`` label."""
    from prometheus_client.parser import text_string_to_metric_families
    families: dict[str, tuple] = {}
    order = []
    for k, text in enumerate(texts):
        if not text:
            continue
        for family in text_string_to_metric_families(text.decode()):
            key = family.name
            if key not in families:
                families[key] = (family.type, family.documentation, [])
                order.append(key)
            for sample in family.samples:
                labels = {**sample.labels, "core": str(k)}
                families[key][2].append((sample.name, labels, sample.value))
    lines = []
    for key in order:
        kind, doc, samples = families[key]
        shown = key + "_total" if kind == "counter" else key
        lines.append(f"# HELP {shown} {doc}")
        lines.append(f"# TYPE {shown} {kind}")
        for name, labels, value in samples:
            text = ",".join(f'{n}="{_escape(v)}"' for n, v in labels.items())
            lines.append(f"{name}{{{text}}} {_number(value)}")
    lines.append("# HELP ursula_core_restarts_total Core processes restarted by the supervisor")
    lines.append("# TYPE ursula_core_restarts_total counter")
    for k, count in sorted(restarts.items()):
        lines.append(f'ursula_core_restarts_total{{core="{k}"}} {count}.0')
    return ("\n".join(lines) + "\n").encode()


class _ViewService(service.Service):
    def __init__(self, view):
        self.view = view

    def startService(self):
        super().startService()
        self.view.start()

    def stopService(self):
        super().stopService()
        return self.view.stop()


def build_supervisor(config, config_path, reactor) -> service.MultiService:
    from ursula.admin import admin_site
    from ursula.supervisor import LoggingService, compute_registry, load_compute_modules
    load_compute_modules(config)
    try:
        import setproctitle
        setproctitle.setproctitle(f"ursula node {config.cluster.node_id} supervisor "
                                  f"({config.cores} cores)")
    except ImportError:  # pragma: no cover - declared in install_requires
        pass
    top = service.MultiService()
    LoggingService(config).setServiceParent(top)
    supervisor = CoreSupervisor(config, config_path, reactor)
    supervisor.setServiceParent(top)
    view = NodeView(config, supervisor, reactor)
    _ViewService(view).setServiceParent(top)
    top.supervisor = supervisor
    log.info("ursula serving the Durable Streams API on {listen} with {cores} core processes",
             cores=config.cores, listen=config.node.listen)
    if config.node.admin_listen != "none":
        endpoint = serverFromString(reactor, config.node.admin_listen)
        admin_service = StreamServerEndpointService(endpoint, admin_site(
            view, view, token=config.admin_token,
            drain_timeout_s=config.node.admin_drain_timeout_s,
            registry=compute_registry(config)))
        admin_service._raiseSynchronously = True
        admin_service.setServiceParent(top)
        log.info("ursula serving the admin plane on {listen}", listen=config.node.admin_listen)
    return top
