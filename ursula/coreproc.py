"""One core process of a node that runs ``[node] cores`` = C > 1 (started by the supervisor):
``python -m ursula.coreproc --config node.ini --core k``.

Core k owns the groups ``g mod C == k``: its own reactor, its journal in
``<data_dir>/core-<k>/journal``, its peer transport (listening on the node's peer port + k and
dialing port + k of every peer: Raft traffic goes core k to core k), the local link
(``<data_dir>/core-<k>.sock``, served here; the other cores' sockets dialed, see
``ursula.core.routed``), and the public port, bound with SO_REUSEPORT so the kernel spreads
connections over the cores. SIGTERM hands this core's groups' leadership over, then exits.
The supervisor's admin plane reaches this core's ``RaftCore`` over the local link (op
``admin``: ``AdminCalls``).
``ps`` shows ``ursula node <id> core <k>/<C>``.

May import: everything in ``ursula``, Twisted, setproctitle.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys

from twisted.logger import Logger

from ursula.loop import lean_poll
from ursula.process import tune_gc, tune_malloc

log = Logger()


def parse_tcp(listen: str) -> tuple[str, int]:
    """(interface, port) of a ``tcp:`` endpoint string."""
    host, port = "0.0.0.0", None
    for i, part in enumerate(listen.split(":")[1:]):
        key, sep, value = part.partition("=")
        if not sep:
            if i == 0:
                port = int(key)
            continue
        if key == "port":
            port = int(value)
        elif key == "interface":
            host = value
    if port is None:
        raise ValueError(f"no port in {listen!r}")
    return host, port


def shift_port(listen: str, k: int) -> str:
    """A ``tcp:`` endpoint string with its port moved up by ``k``."""
    def bump(match):
        return f"{match.group(1)}{int(match.group(2)) + k}"
    shifted, count = re.subn(r"^(tcp6?:(?:port=)?)(\d+)", bump, listen)
    if not count:
        shifted, count = re.subn(r"(:port=)(\d+)", bump, listen)
    if not count:
        raise ValueError(f"no port in {listen!r}")
    return shifted


def socket_path(data_dir: str, k: int) -> str:
    return os.path.join(data_dir, f"core-{k}.sock")


def reuseport_socket(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


class AdminCalls:
    """This core's local-link handler: the admin plane's operations (op ``admin``, args
    ``[name, params]``, asked by the node supervisor: ``ursula.nodesup.NodeView``) go to the
    core's ``RaftCore``; every other call to its ``CoreServer``. A refused operation answers
    ``["err", "admin", [status, reason, leader]]``."""

    OPERATIONS = {
        "status": lambda raft: raft.node_status(),
        "transfer_leader": lambda raft, group, to: raft.transfer_leader(group, to),
        "change_membership": lambda raft, group, op, node: raft.change_membership(group, op,
                                                                                  node),
        "snapshot_group": lambda raft, group: raft.snapshot_group(group),
        "drain": lambda raft, timeout_s: raft.drain(timeout_s),
        "undrain": lambda raft: raft.undrain(),
        "backup_group": lambda raft, group: raft.backup_group(group),
        "host_group": lambda raft, group: raft.host_group(group),
        "drop_group": lambda raft, group: raft.drop_group(group),
        "join_token": lambda raft, node: raft.join_token(node),
        "set_peer_address": lambda raft, node, address, token: raft.set_peer_address(
            node, address, token),
    }

    def __init__(self, server, raft):
        self.server = server
        self.raft = raft

    def handle(self, link, op, args):
        if op != "admin":
            return self.server.handle(link, op, args)
        from twisted.internet import defer

        from ursula.core.cluster import AdminError

        def refused(failure):
            if failure.check(AdminError):
                error = failure.value
                return ["err", "admin", [error.status, str(error), error.leader]]
            return ["err", "admin", [503, failure.getErrorMessage()[:2000], None]]
        name, params = args
        operation = self.OPERATIONS.get(name)
        if operation is None:
            return ["err", "admin", [404, f"no admin operation {name!r}", None]]
        d = defer.maybeDeferred(operation, self.raft, *params)
        return d.addCallbacks(lambda value: ["ok", value], refused)

    def __getattr__(self, name):  # on_changed, link_connected, link_lost
        return getattr(self.server, name)


def _die_with_parent() -> None:
    """Linux: the kernel kills this core if the supervisor dies (kill -9 of the node)."""
    try:
        import ctypes
        import signal
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def build_core(config, k: int, reactor):
    """Start core ``k`` of ``config.cores`` on ``reactor``; returns ``(stop, raft)``: the
    function that stops it and its ``RaftCore`` (whose ``fatal_reason`` gives the exit code)."""
    from ursula.core.cluster import RaftCore
    from ursula.core.persist import JournalPersister
    from ursula.core.routed import CoreServer, RemoteCoreProxy, RoutedCore, keep_groups
    from ursula.http.dataplane import data_plane_factory
    from ursula.http.metrics import Metrics
    from ursula.supervisor import (
        CoreService,
        cold_store,
        core_settings,
        journal_committer,
        open_journal,
        peer_transport,
        placement_of,
        wire_joining,
    )
    from ursula.wire.local import LocalClient, LocalLinkFactory

    cores = config.cores
    cluster = config.cluster
    data_dir = config.node.data_dir

    def fail(what):
        raise SystemExit(f"ursula core {k}: {what}")

    journal_dir = os.path.join(data_dir, f"core-{k}", "journal")
    placement = placement_of(config, lambda g: g % cores == k, journal_dir)
    journal, storages = open_journal(config, journal_dir, lambda g: g % cores == k, fail,
                                     placement)
    transport, peer_listen = peer_transport(config, reactor, core=k)
    holder = {}

    def fatal(failure, why):
        holder["raft"].fatal(failure, why)

    committer = journal_committer(journal, reactor, lambda: holder["metrics"])
    raft = RaftCore(reactor, cluster.node_id, cluster.groups, storages,
                    JournalPersister(committer, on_failure=fatal), transport,
                    core_settings(config), cold_store=cold_store(config, reactor),
                    placement=placement)
    holder["raft"] = raft
    wire_joining(raft, config, k)
    keep_groups(raft, k, cores)
    proxies = {j: RemoteCoreProxy(j, reactor, cluster.request_timeout_ms / 1000)
               for j in range(cores) if j != k}
    routed = RoutedCore(raft, k, cores, proxies)
    metrics = Metrics(routed)
    holder["metrics"] = metrics

    path = socket_path(data_dir, k)
    if os.path.exists(path):
        os.unlink(path)
    handler = AdminCalls(CoreServer(routed, metrics), raft)
    reactor.listenUNIX(path, LocalLinkFactory(handler, reactor), mode=0o600)
    for j, proxy in proxies.items():
        client = LocalClient(socket_path(data_dir, j), proxy, reactor)
        proxy.attach(client)
        client.start()
        proxy.start_polling()

    core_service = CoreService(raft, transport, committer, journal, peer_listen)
    core_service.startService()
    host, port = parse_tcp(config.node.listen)
    sock = reuseport_socket(host, port, config.node.backlog)
    factory = data_plane_factory(routed, config, reactor, metrics)
    http_port = reactor.adoptStreamPort(sock.fileno(), sock.family, factory)
    sock.close()

    def stop():
        for proxy in proxies.values():
            proxy.stop()
        d = http_port.stopListening()
        d.addBoth(lambda _: core_service.stopService())
        return d
    log.info("ursula core {k}/{cores} serving on {listen} (groups {groups})", k=k, cores=cores,
             listen=config.node.listen, groups=sorted(raft.groups))
    return stop, raft


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="one core process of an ursula node")
    parser.add_argument("--config", default=None)
    parser.add_argument("--core", type=int, required=True)
    args = parser.parse_args(argv)
    _die_with_parent()
    from ursula.config import ConfigError, load_config
    try:
        config = load_config(args.config)
    except ConfigError as error:
        sys.stderr.write(f"ursula: config error: {error}\n")
        return 2
    try:
        import setproctitle
        setproctitle.setproctitle(
            f"ursula node {config.cluster.node_id} core {args.core}/{config.cores}")
    except ImportError:  # pragma: no cover - declared in install_requires
        pass
    from twisted.internet import reactor
    from twisted.logger import (
        FileLogObserver,
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        formatEvent,
        globalLogBeginner,
    )
    level = LogLevel.levelWithName(config.log.level)
    prefix = f"[core {args.core}] "

    def line(event):
        text = formatEvent(event)
        if event.get("log_failure") is not None:
            text += "\n" + event["log_failure"].getTraceback()
        return prefix + text.replace("\n", "\n" + prefix) + "\n"
    # plain lines on stdout: the supervisor relays them into its own log (with time stamps)
    observers = [FilteringLogObserver(FileLogObserver(sys.stdout, line),
                                      [LogLevelFilterPredicate(level)])]
    if config.log.format == "json":
        from twisted.logger import jsonFileLogObserver
        handle = open(config.log.file or "ursula-log.json", "a", encoding="utf-8")  # noqa: SIM115
        observers.append(FilteringLogObserver(jsonFileLogObserver(handle),
                                              [LogLevelFilterPredicate(level)]))
    globalLogBeginner.beginLoggingTo(observers, redirectStandardIO=False)
    lean_poll(reactor)  # no logging context per I/O event (ursula.loop.poll)
    tune_malloc(config.node.malloc_mmap_threshold)  # ursula.process
    stop, raft = build_core(config, args.core, reactor)
    tune_gc(config.node.gc_threshold)  # ursula.process: after recovery, so that is frozen too
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.run()
    if raft.fatal_reason is not None:
        # a fatal stop (a port that cannot be bound, a journal write that failed): the
        # supervisor logs a non-zero exit and restarts this core with back-off
        sys.stderr.write(f"ursula core {args.core}: stopped: {raft.fatal_reason}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
