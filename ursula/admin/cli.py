"""``ursula-admin``: the operator's command line for the admin plane (argparse; HTTP with treq
through ``ursula.admin.client``).

::

    ursula-admin [--admin URL[,URL...]] [--token T | --token-file F] [--config node.ini] CMD
      status [--json]                  nodes, groups, leaders, terms, commit/apply lag, bytes
      transfer-leader GROUP --to NODE  move a group's leadership (asked of its leader)
      snapshot [--group G]             snapshot (and compact) the groups of every node given
      drain / undrain [--node ID]      move every leadership off a node and keep it off / stop
      backup create DEST               DEST: a directory, or cold:NAME (the cold store)
      backup verify SOURCE             the images and every referenced cold chunk
      backup restore SOURCE            into this fresh node (--config), before it starts
      node add ID                      in every group: a learner, promoted once caught up
      node remove ID                   in every group: leadership moved off it, then removed
      node replace OLD NEW             NEW takes OLD's place
      group move G --from A --to B     B a learner, caught up, promoted; A's lead moved; A out
      rebalance                        moves until replicas and leaders per node are even
      join-token ID                    the token with which node ID registers its address
      node address ID HOST:PORT --token T   every node given dials node ID there from now on

With ``[cluster] replication`` below the node count (groups placed on some nodes), ``node
add`` / ``remove`` / ``replace`` move groups (``ursula.admin.moves``) instead of changing
every group: the new node takes its share, a removed node's groups move to the others.

The nodes are the ``--admin`` URLs (repeat the option or separate them with commas), else
``$URSULA_ADMIN``, else the ``admin_listen`` of ``--config``, else ``http://127.0.0.1:4438``.
The bearer token is ``--token``, ``--token-file``, ``$URSULA_ADMIN_TOKEN`` or the config's
``[node] admin_token(_file)``. Exit status: 0 done, 1 refused or failed (one line on stderr
saying why), 2 a usage or config error.

May import: Twisted, treq, the standard library, ``ursula.config``, ``ursula.backup``,
``ursula.admin``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from twisted.internet import defer, task

from ursula.admin import moves
from ursula.admin.client import AdminClient, AdminRefused, AdminUnreachable

DEFAULT_ADMIN = "http://127.0.0.1:4438"


class UsageError(Exception):
    """A bad command line or config (exit status 2)."""


class Failed(Exception):
    """The operation was refused or failed (exit status 1)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ursula-admin", allow_abbrev=False,
        description="Operate an ursula cluster through its admin plane.")
    parser.add_argument("--admin", action="append", metavar="URL",
                        help="a node's admin plane (repeat, or comma-separated); default: "
                             "$URSULA_ADMIN, the --config node's admin_listen, "
                             f"{DEFAULT_ADMIN}")
    parser.add_argument("--token", help="the admin bearer token (or $URSULA_ADMIN_TOKEN)")
    parser.add_argument("--token-file", help="read the bearer token from this file")
    parser.add_argument("--config", help="a node's node.ini: its admin plane and token, its "
                                         "[cold] store (backups in cold:NAME), its data_dir "
                                         "(restore)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for a node's answer (default 60)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    status = commands.add_parser("status", allow_abbrev=False, help="nodes, groups, leaders, lag, hot/cold bytes")
    status.add_argument("--json", action="store_true", help="one JSON document")
    transfer = commands.add_parser("transfer-leader", allow_abbrev=False, help="move a group's leadership")
    transfer.add_argument("group", type=int)
    transfer.add_argument("--to", type=int, required=True, metavar="NODE",
                          help="the node id that is to lead the group")
    snapshot = commands.add_parser("snapshot", allow_abbrev=False, help="snapshot groups now (every node given)")
    snapshot.add_argument("--group", type=int, help="only this group (default: all)")
    for name, text in (("drain", "move every leadership off a node (before maintenance)"),
                       ("undrain", "let a drained node lead groups again")):
        command = commands.add_parser(name, allow_abbrev=False, help=text)
        command.add_argument("--node", type=int,
                             help="the node's id, when several --admin URLs are given")
    node = commands.add_parser("node", allow_abbrev=False,
                               help="add a node to every group or remove it from every group")
    node_steps = node.add_subparsers(dest="node_step", metavar="STEP", required=True)
    add = node_steps.add_parser("add", allow_abbrev=False,
                                help="a learner in every group, promoted once caught up")
    add.add_argument("id", type=int, help="the node's id (in every node's [cluster] peers)")
    add.add_argument("--max-lag", type=int, default=64, metavar="ENTRIES",
                     help="promote a learner once it is this close to the leader's commit")
    remove = node_steps.add_parser("remove", allow_abbrev=False,
                                   help="leadership moved off it, then removed from every group")
    remove.add_argument("id", type=int)
    replace = node_steps.add_parser("replace", allow_abbrev=False,
                                    help="the new node takes the old one's groups")
    replace.add_argument("id", type=int, help="the node that leaves")
    replace.add_argument("new", type=int, help="the node that takes its place")
    address = node_steps.add_parser("address", allow_abbrev=False,
                                    help="register a node's (new) peer address on every node")
    address.add_argument("id", type=int)
    address.add_argument("address", metavar="HOST:PORT", help="its peer address")
    address.add_argument("--token", dest="join_token", required=True,
                         help="its join token (ursula-admin join-token ID)")
    token = commands.add_parser("join-token", allow_abbrev=False,
                                help="the join token of a node id")
    token.add_argument("id", type=int)
    group = commands.add_parser("group", allow_abbrev=False, help="move a group's replica")
    group_steps = group.add_subparsers(dest="group_step", metavar="STEP", required=True)
    move = group_steps.add_parser("move", allow_abbrev=False,
                                  help="a replica of G from node A to node B")
    move.add_argument("group", type=int)
    move.add_argument("--from", dest="source", type=int, required=True, metavar="A")
    move.add_argument("--to", dest="dest", type=int, required=True, metavar="B")
    rebalance = commands.add_parser("rebalance", allow_abbrev=False,
                                    help="move groups until replicas and leaders are even")
    for step in (add, remove, replace, move, rebalance):
        step.add_argument("--within", type=float, default=300.0, metavar="SECONDS",
                          help="give up after this long (default 300); run it again to resume")
    for step in (replace, move, rebalance):
        step.add_argument("--max-lag", type=int, default=64, metavar="ENTRIES",
                          help="promote a learner once it is this close to the leader's commit")
    backup = commands.add_parser("backup", allow_abbrev=False, help="create, verify or restore a backup")
    steps = backup.add_subparsers(dest="step", metavar="STEP", required=True)
    create = steps.add_parser("create", allow_abbrev=False, help="back the cluster up (it keeps serving)")
    create.add_argument("dest", help="a new directory, or cold:NAME (needs --config)")
    verify = steps.add_parser("verify", allow_abbrev=False, help="check a backup against the cold tier")
    verify.add_argument("source", help="a backup directory, or cold:NAME")
    verify.add_argument("--no-chunks", action="store_true",
                        help="check the images only, not the cold chunks")
    restore = steps.add_parser("restore", allow_abbrev=False, help="restore into this fresh node before it starts")
    restore.add_argument("source", help="a backup directory, or cold:NAME")
    restore.add_argument("--no-chunks", action="store_true",
                         help="do not check the cold chunks first (e.g. already verified)")
    return parser


# -- where the nodes are ------------------------------------------------------------------


def _load_config(path: str | None):
    if path is None:
        return None
    from ursula.config import ConfigError, load_config
    try:
        return load_config(path)
    except ConfigError as error:
        raise UsageError(f"config error: {error}") from None


def admin_url_of(config) -> str:
    """The URL of a node's admin plane, from its ``admin_listen``."""
    from ursula.config import endpoint_interface, endpoint_port
    listen = config.node.admin_listen
    port = endpoint_port(listen)
    if listen == "none" or port is None:
        raise UsageError(f"[node] admin_listen = {listen!r}: not a TCP port; give --admin")
    host = endpoint_interface(listen) or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if listen.startswith("ssl:") else "http"
    return f"{scheme}://{host}:{port}"


def _urls(args, config) -> list[str]:
    given = [u.strip() for item in (args.admin or []) for u in item.split(",") if u.strip()]
    if not given and os.environ.get("URSULA_ADMIN"):
        given = [u.strip() for u in os.environ["URSULA_ADMIN"].split(",") if u.strip()]
    if not given and config is not None:
        given = [admin_url_of(config)]
    return given or [DEFAULT_ADMIN]


def _token(args, config) -> str:
    if args.token:
        return args.token
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as handle:
                return handle.read().strip()
        except OSError as error:
            raise UsageError(f"--token-file: cannot read {args.token_file!r} "
                             f"({error.strerror})") from None
    if os.environ.get("URSULA_ADMIN_TOKEN"):
        return os.environ["URSULA_ADMIN_TOKEN"]
    return config.admin_token if config is not None else ""


# -- output -------------------------------------------------------------------------------


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def table(header: list[str], rows: list[list]) -> str:
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def _why(failure) -> str:
    return " ".join((failure.getErrorMessage() or failure.type.__name__).split())


@defer.inlineCallbacks
def _statuses(clients):
    """``[(client, status or None, error or None)]`` of every node, asked at once."""
    answers = yield defer.DeferredList([c.status() for c in clients], consumeErrors=True)
    return [(client, value if ok else None, None if ok else _why(value))
            for client, (ok, value) in zip(clients, answers, strict=True)]


def cluster_view(statuses) -> dict:
    """The cluster as ``status --json`` shows it: its nodes, and per group its leader, term
    and every answering node's replica with its commit lag (the leader's commit minus its
    own) and apply lag (its commit minus its applied index)."""
    nodes = []
    by_group: dict[int, list] = {}
    for client, status, error in statuses:
        if status is None:
            nodes.append({"url": client.url, "error": error})
            continue
        led = sorted(r["group"] for r in status["groups"] if r["role"] == "leader")
        nodes.append({"url": client.url, "node": status["node"],
                      "cores": status.get("cores", 1), "draining": status["draining"],
                      "group_count": status.get("group_count"), "leads": led,
                      "hot_bytes": sum(r.get("hot_bytes", 0) for r in status["groups"]),
                      "cold_bytes": sum(r.get("cold_bytes", 0) for r in status["groups"])})
        for row in status["groups"]:
            by_group.setdefault(row["group"], []).append({**row, "node": status["node"]})
    groups = []
    for group, rows in sorted(by_group.items()):
        leaders = [r for r in rows if r["role"] == "leader"]
        top = max(leaders, key=lambda r: r["term"]) if leaders else None
        term = max(r["term"] for r in rows)
        leader_commit = top["commit"] if top else max(r["commit"] for r in rows)
        replicas = [{"node": r["node"], "role": r["role"], "term": r["term"],
                     "commit": r["commit"], "applied": r["applied"],
                     "commit_lag": max(0, leader_commit - r["commit"]),
                     "apply_lag": max(0, r["commit"] - r["applied"]),
                     "snapshot": r.get("snapshot", 0), "hot_bytes": r.get("hot_bytes", 0),
                     "cold_bytes": r.get("cold_bytes", 0),
                     "flush_lag_bytes": r.get("flush_lag_bytes", 0),
                     **({"core": r["core"]} if "core" in r else {})}
                    for r in sorted(rows, key=lambda r: r["node"])]
        known = {r["leader"] for r in rows if r["leader"]}
        groups.append({"group": group, "term": term,
                       "leader": top["node"] if top else (known.pop() if len(known) == 1
                                                          else None),
                       "commit": leader_commit, "replicas": replicas})
    return {"nodes": nodes, "groups": groups}


def render_status(view: dict) -> str:
    node_rows = []
    for node in view["nodes"]:
        if "error" in node:
            node_rows.append(["?", node["url"], "-", "unreachable: " + node["error"], "", ""])
            continue
        node_rows.append([node["node"], node["url"], node["cores"],
                          "draining" if node["draining"] else "serving",
                          ",".join(map(str, node["leads"])) or "-",
                          human_bytes(node["hot_bytes"])])
    group_rows = []
    for group in view["groups"]:
        for r in group["replicas"]:
            group_rows.append([group["group"], r["node"], r["role"], r["term"], r["commit"],
                               r["applied"], r["commit_lag"], r["apply_lag"], r["snapshot"],
                               human_bytes(r["hot_bytes"]), human_bytes(r["cold_bytes"])])
    return (table(["NODE", "ADMIN", "CORES", "STATE", "LEADS", "HOT"], node_rows) + "\n\n"
            + table(["GROUP", "NODE", "ROLE", "TERM", "COMMIT", "APPLIED", "COMMIT-LAG",
                     "APPLY-LAG", "SNAPSHOT", "HOT", "COLD"], group_rows))


# -- commands -----------------------------------------------------------------------------


@defer.inlineCallbacks
def cmd_status(args, clients, out, err):
    statuses = yield _statuses(clients)
    view = cluster_view(statuses)
    if args.json:
        out.write(json.dumps(view, indent=1) + "\n")
    else:
        out.write(render_status(view) + "\n")
    unreachable = [n for n in view["nodes"] if "error" in n]
    if unreachable:
        raise Failed(f"{len(unreachable)} of {len(clients)} nodes did not answer: "
                     + "; ".join(n["error"] for n in unreachable))


@defer.inlineCallbacks
def cmd_transfer_leader(args, clients, out, err):
    statuses = yield _statuses(clients)
    target = None
    for client, status, _ in statuses:
        if status and any(r["group"] == args.group and r["role"] == "leader"
                          for r in status["groups"]):
            target = client
    if target is None:
        if len(clients) > 1:
            raise Failed(f"no node given leads group {args.group} (is it elected? give the "
                         "admin URL of every node)")
        target = clients[0]
    answer = yield target.transfer_leader(args.group, args.to)
    out.write(f"group {args.group}: node {answer['leader']} leads now\n")


@defer.inlineCallbacks
def cmd_snapshot(args, clients, out, err):
    for client in clients:
        answer = yield client.snapshot(args.group)
        rows = [answer] if "snapshots" not in answer else answer["snapshots"]
        for row in rows:
            what = ("snapshot at index" if row["taken"]
                    else "nothing new since the snapshot at index")
            out.write(f"{client.url}: group {row['group']}: {what} {row['index']}\n")


@defer.inlineCallbacks
def _one_node(args, clients):
    if args.node is None:
        if len(clients) > 1:
            raise UsageError("several nodes given: say which one with --node ID")
        return clients[0]
    for client, status, _ in (yield _statuses(clients)):
        if status is not None and status["node"] == args.node:
            return client
    raise Failed(f"node {args.node} is not among the nodes that answered")


@defer.inlineCallbacks
def cmd_drain(args, clients, out, err):
    client = yield _one_node(args, clients)
    answer = yield client.drain()
    who = f"node {answer['node']}" if answer.get("node") else client.url
    if not answer["drained"]:
        raise Failed(f"{who} still leads groups {answer['leading']} (are the other nodes "
                     "up and connected?); it stays draining")
    out.write(f"{who} drained: it leads no group, and hands over any it wins\n")


@defer.inlineCallbacks
def cmd_undrain(args, clients, out, err):
    client = yield _one_node(args, clients)
    yield client.undrain()
    out.write(f"{client.url}: serving again (it may win elections)\n")


@defer.inlineCallbacks
def cmd_backup(args, clients, out, err, config, reactor):
    from ursula.backup import BackupError, open_location
    try:
        if args.step == "create":
            from ursula.backup.create import create
            location = open_location(args.dest, config, reactor)
            manifest = yield create(clients, location, log=lambda line: out.write(line + "\n"))
            streams = sum(g.streams for g in manifest.groups)
            chunks = sum(g.chunks for g in manifest.groups)
            out.write(f"backup written to {location.description}: {manifest.group_count} "
                      f"groups, {streams} streams, {chunks} cold chunks referenced; it holds "
                      f"every append acknowledged before {manifest.created_at}\n")
            return
        location = open_location(args.source, config, reactor)
        manifest = yield location.manifest()
        if args.step == "restore":
            if config is None:
                raise UsageError("backup restore needs --config (the node to restore into)")
            from ursula.backup.restore import check_fresh, restore
            check_fresh(config, manifest)  # before any chunk is fetched
        report = yield _verify(location, manifest, config, reactor,
                               not args.no_chunks)
        if not report.ok:
            for problem in report.problems[:50]:
                err.write(f"ursula-admin: {problem}\n")
            raise Failed(f"{location.description}: {len(report.problems)} problems found")
        out.write(f"backup {location.description} ({manifest.created_at}): "
                  f"{manifest.group_count} groups, {report.streams} streams, "
                  f"{human_bytes(report.hot_bytes)} hot, {report.chunks} cold chunks "
                  f"({human_bytes(report.cold_bytes)})"
                  f"{' checked' if not args.no_chunks else ' (not checked)'}: ok\n")
        if args.step == "restore":
            images = {}
            for entry in manifest.groups:
                images[entry.group] = yield location.image(entry)
            restore(config, manifest, images, log=lambda line: out.write(line + "\n"))
            out.write(f"restored into {config.node.data_dir}: start the node now (every "
                      "node of the new cluster restored from the same backup)\n")
    except BackupError as error:
        raise Failed(str(error)) from None


def _verify(location, manifest, config, reactor, check_chunks):
    from ursula.backup.format import cold_store_of
    from ursula.backup.verify import verify
    store = cold_store_of(config, reactor) if config is not None and check_chunks else None
    return verify(location, store, check_chunks=check_chunks, manifest=manifest)


def _group_leaders(statuses) -> dict[int, tuple]:
    """group -> (the leader's client, its row) of every group some answering node leads (the
    highest term wins)."""
    leaders: dict[int, tuple] = {}
    for client, status, _ in statuses:
        for row in (status or {}).get("groups", []):
            if row["role"] == "leader":
                held = leaders.get(row["group"])
                if held is None or row["term"] > held[1]["term"]:
                    leaders[row["group"]] = (client, row)
    return leaders


def node_step(action: str, node: int, row: dict, max_lag: int):
    """What ``node add``/``node remove`` does next for one group, from its leader's row:
    ``None`` (done), ``("wait", why)``, ``("transfer", to)`` or ``("change", op)``."""
    voters, learners = row.get("voters", []), row.get("learners", [])
    if action == "add":
        if node in voters:
            return None
        if node in learners:
            match = row.get("match", {}).get(str(node), 0)
            if row["commit"] - match > max_lag:
                return ("wait", f"learner {node} at {match} of {row['commit']}")
            return ("change", "promote")
        return ("change", "add_learner")
    if node not in voters and node not in learners:
        return None
    if row["leader"] == node:
        others = [v for v in voters if v != node]
        if not others:
            return ("wait", f"node {node} is the last voter")
        match = row.get("match", {})
        return ("transfer", max(others, key=lambda v: match.get(str(v), 0)))
    return ("change", "remove")


@defer.inlineCallbacks
def cmd_node_address(args, clients, out):
    """Tell every node given where node ``id`` is (each checks the join token)."""
    answers = yield defer.DeferredList(
        [c.set_peer_address(args.id, args.address, args.join_token) for c in clients],
        consumeErrors=True)
    failed = [(c, v) for c, (ok, v) in zip(clients, answers, strict=True) if not ok]
    for client, (ok, _) in zip(clients, answers, strict=True):
        if ok:
            out.write(f"{client.url}: node {args.id} is at {args.address}\n")
    if failed:
        client, failure = failed[0]
        if failure.check(AdminRefused) and failure.value.status in (400, 403):
            raise Failed(f"{client.url}: {failure.value.reason}")
        raise Failed(f"{len(failed)} of {len(clients)} nodes did not take it ({client.url}: "
                     f"{_why(failure)}); run it again")


def _placed(statuses) -> bool:
    """Whether the groups have fewer voters than the cluster has genesis nodes."""
    answered = [s for _, s, _ in statuses if s]
    return bool(answered) and moves.view(answered).replication > 0


@defer.inlineCallbacks
def cmd_place(args, clients, out, err, reactor):
    """``group move``, ``rebalance`` and the placement-aware ``node add/remove/replace``:
    rounds of (status of every node given, the next step of the move in flight, or of a
    group left half-way, or the next planned move). Every step is idempotent and the plan is
    recomputed from the state each round, so a run that stopped resumes where it was."""
    deadline = reactor.seconds() + args.within
    max_lag = getattr(args, "max_lag", 64)
    nodes_extra, exclude, explicit = set(), set(), None
    if args.command == "group":
        explicit = (args.group, args.source, args.dest)
    elif args.command == "node":
        if args.node_step == "add":
            nodes_extra = {args.id}
        elif args.node_step == "remove":
            exclude = {args.id}
        else:
            nodes_extra, exclude = {args.new}, {args.id}
    current = explicit
    while True:
        statuses = yield _statuses(clients)
        answered = [(c, s) for c, s, _ in statuses if s]
        by_node = {s["node"]: c for c, s in answered}
        v = moves.view([s for _, s in answered])
        if not v.replication:
            raise Failed("every group has every node ([cluster] replication covers all "
                         "nodes): use node add / node remove")
        if explicit is not None and explicit[0] not in v.groups:
            raise Failed(f"group {explicit[0]}: no answering node hosts it")
        step = None
        if current is not None:
            group = current[0]
            step = moves.move_step(v.groups[group], current[1], current[2], max_lag)
            if step is None:
                out.write(f"group {group}: moved from node {current[1]} to node {current[2]}\n")
                if explicit is not None:
                    return
                current = None
                continue
        else:
            settled = moves.settle(v, max_lag, exclude)
            if settled is not None:
                group, step = settled
            else:
                planned = moves.plan(v, set(v.nodes) | nodes_extra, exclude)
                if planned is None:
                    counts, leaders = v.replicas(), v.leaders()
                    out.write("balanced: " + ", ".join(
                        f"node {n}: {counts.get(n, 0)} replicas, {leaders.get(n, 0)} led"
                        for n in sorted(set(v.nodes) | nodes_extra)) + "\n")
                    return
                if planned[0] == "move":
                    current = planned[1:]
                    out.write(f"group {current[0]}: moving from node {current[1]} to node "
                              f"{current[2]}\n")
                    continue
                group, step = planned[1], ("transfer", planned[2])
        yield _take(step, group, v, by_node, out)
        if reactor.seconds() > deadline:
            raise Failed(f"not done within {args.within:.0f} s (group {group}: {step}); run it "
                         "again to resume")
        yield task.deferLater(reactor, 0.2, lambda: None)


@defer.inlineCallbacks
def _take(step, group, v, by_node, out):
    """Take one step of a move; a refusal that may pass (409, 503, a node not answering)
    is tried again next round."""
    kind = step[0]
    if kind == "wait":
        return
    leader = v.groups[group].leader
    try:
        if kind in ("host", "drop"):
            client = by_node.get(step[1])
            if client is None:
                raise Failed(f"group {group}: node {step[1]} did not answer (give its --admin "
                             "URL)")
            if kind == "host":
                yield client.host_group(group)
                out.write(f"group {group}: node {step[1]} hosts a replica\n")
            else:
                yield client.drop_group(group)
                out.write(f"group {group}: node {step[1]} dropped its replica\n")
        elif leader not in by_node:
            return
        elif kind == "transfer":
            yield by_node[leader].transfer_leader(group, step[1])
            out.write(f"group {group}: leadership moved to node {step[1]}\n")
        else:
            yield by_node[leader].change_membership(group, step[1], step[2])
            out.write(f"group {group}: {step[1]} {step[2]}\n")
    except AdminRefused as refused:
        if refused.status == 400:
            raise Failed(f"group {group}: {refused.reason}") from None
    except AdminUnreachable:
        pass


@defer.inlineCallbacks
def cmd_node(args, clients, out, err, reactor):
    """Add a node to every group, or remove it from every group, one server at a time. Each
    round asks every node given for its status and takes the next step of each unfinished
    group on its leader; a refused step (another change in flight, a leader that moved) is
    tried again the next round, so a run that stopped half-way resumes where it was."""
    action, node = args.node_step, args.id
    deadline = reactor.seconds() + args.within
    done_before: set[int] = set()
    while True:
        statuses = yield _statuses(clients)
        counts = {s["group_count"] for _, s, _ in statuses if s and s.get("group_count")}
        leaders = _group_leaders(statuses)
        group_count = max(counts) if counts else len(leaders)
        pending = []
        for group in range(group_count):
            if group not in leaders:
                pending.append(f"group {group}: no leader among the nodes given")
                continue
            client, row = leaders[group]
            step = node_step(action, node, row, getattr(args, "max_lag", 0))
            if step is None:
                if group not in done_before:
                    done_before.add(group)
                    out.write(f"group {group}: node {node} "
                              f"{'is a voter' if action == 'add' else 'is no member'}\n")
                continue
            kind, what = step
            if kind == "wait":
                pending.append(f"group {group}: {what}")
                continue
            try:
                if kind == "transfer":
                    yield client.transfer_leader(group, what)
                    out.write(f"group {group}: leadership moved to node {what}\n")
                else:
                    yield client.change_membership(group, what, node)
                    out.write(f"group {group}: {what} {node}\n")
            except AdminRefused as refused:
                if refused.status == 400:
                    raise Failed(f"group {group}: {refused.reason}") from None
                pending.append(f"group {group}: {refused.reason}")
            pending.append(f"group {group}: in progress")
        if len(done_before) == group_count and group_count:
            out.write(f"node {node} {'added to' if action == 'add' else 'removed from'} "
                      f"all {group_count} groups\n")
            return
        if reactor.seconds() > deadline:
            raise Failed(f"node {action} {node}: not done within {args.within:.0f} s ("
                         + "; ".join(pending[:4]) + "); run it again to resume")
        yield task.deferLater(reactor, 0.2, lambda: None)


COMMANDS = {"status": cmd_status, "transfer-leader": cmd_transfer_leader,
            "snapshot": cmd_snapshot, "drain": cmd_drain, "undrain": cmd_undrain}


@defer.inlineCallbacks
def run(reactor, argv, out=None, err=None):
    """Run one command; its exit status (0, 1 or 2)."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        config = _load_config(args.config)
        token = _token(args, config)
        offline = args.command == "backup" and args.step != "create"  # no admin plane needed
        clients = [] if offline else [AdminClient(url, token, args.timeout)
                                      for url in _urls(args, config)]
        if args.command == "backup":
            yield cmd_backup(args, clients, out, err, config, reactor)
        elif args.command in ("group", "rebalance"):
            yield cmd_place(args, clients, out, err, reactor)
        elif args.command == "join-token":
            answer = yield clients[0].join_token(args.id)
            out.write(answer["token"] + "\n")
        elif args.command == "node" and args.node_step == "address":
            yield cmd_node_address(args, clients, out)
        elif args.command == "node":
            statuses = yield _statuses(clients)
            if _placed(statuses):
                yield cmd_place(args, clients, out, err, reactor)
            elif args.node_step == "replace":  # every node in every group: add, then remove
                new, old = args.new, args.id
                args.node_step, args.id = "add", new
                yield cmd_node(args, clients, out, err, reactor)
                args.node_step, args.id = "remove", old
                yield cmd_node(args, clients, out, err, reactor)
            else:
                yield cmd_node(args, clients, out, err, reactor)
        else:
            yield COMMANDS[args.command](args, clients, out, err)
    except UsageError as error:
        err.write(f"ursula-admin: {error}\n")
        return 2
    except (Failed, AdminRefused, AdminUnreachable) as error:
        err.write(f"ursula-admin: {error}\n")
        return 1
    return 0


def main(argv=None) -> None:
    """The ``ursula-admin`` console script."""
    def react(reactor):
        return run(reactor, argv if argv is not None else sys.argv[1:]).addCallback(_exit)

    def _exit(code):
        if code:
            raise SystemExit(code)
    task.react(react)


if __name__ == "__main__":
    main()
