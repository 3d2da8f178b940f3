"""Placement: streams onto Raft groups (``fnv1a64(bucket + "/" + stream) mod G``) and groups
onto nodes (``initial_voters``: each group's voter set at creation; ``Placement``: what a core
process knows of the groups it hosts and of those it does not).

The same function as the original server, so group ids match. May import: the stdlib only.
"""

from __future__ import annotations

from functools import lru_cache

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
MASK = 0xFFFFFFFFFFFFFFFF


def fnv1a64(data: bytes) -> int:
    value = FNV_OFFSET
    for byte in data:
        value = ((value ^ byte) * FNV_PRIME) & MASK
    return value


@lru_cache(maxsize=1 << 16)
def group_of(bucket: str, stream: str, groups: int) -> int:
    """The group of a stream (cached: the pure-Python hash was 2% of the append path)."""
    return fnv1a64(f"{bucket}/{stream}".encode()) % groups


# -- groups onto nodes ---------------------------------------------------------------------------

#: ``[cluster] replication = 0``: every node while the cluster has at most this many nodes.
ALL_NODES_UP_TO = 5
DEFAULT_REPLICATION = 3  # ... and this many voters per group above it


def resolve_replication(replication: int, nodes: int) -> int:
    """The voters per group: ``replication``, or (0) every node up to five nodes, else 3."""
    if replication <= 0:
        return nodes if nodes <= ALL_NODES_UP_TO else DEFAULT_REPLICATION
    return min(replication, nodes)


def initial_voters(genesis, replication: int, group: int) -> list[int]:
    """The voters group ``group`` is created with. Over the sorted genesis list of n nodes the
    replicas are dealt round-robin: group g holds the nodes ``g*r .. g*r + r - 1`` (mod n),
    so any G groups put ``G * r / n`` replicas on each node, within one. Every node computes
    the same sets from the same ``[cluster]`` section."""
    nodes = tuple(sorted(genesis))
    r = resolve_replication(replication, len(nodes))
    if r >= len(nodes):
        return list(nodes)
    return sorted(_table(nodes, r, group)[group][0])


def preferred_leader(genesis, replication: int, group: int) -> int:
    """The voter that campaigns first in a new group: of the group's voters, the one that is
    the preferred leader of the fewest groups before it (leaders spread like the replicas)."""
    nodes = tuple(sorted(genesis))
    r = resolve_replication(replication, len(nodes))
    if r >= len(nodes):
        return nodes[group % len(nodes)]
    return _table(nodes, r, group)[group][1]


_TABLES: dict[tuple, list] = {}


def _table(nodes: tuple, r: int, upto: int) -> list:
    table = _TABLES.setdefault((nodes, r), [])
    if len(table) > upto:
        return table
    n = len(nodes)
    leads = dict.fromkeys(nodes, 0)
    for _, lead in table:
        leads[lead] += 1
    for g in range(len(table), upto + 1):
        voters = [nodes[(g * r + k) % n] for k in range(r)]
        lead = min(voters, key=lambda v: (leads[v], voters.index(v)))
        leads[lead] += 1
        table.append((tuple(voters), lead))
    return table


class Placement:
    """What one core process knows of where groups live: the genesis voters and replication
    (the initial voter set of every group), the groups it is responsible for (``owned``: on
    a node of C cores, ``g mod C == k``) and the file that lists the groups it hosts now
    (``hosted_file``, JSON, replaced atomically; None: kept in memory)."""

    def __init__(self, genesis, replication: int, groups: int, owned=None,
                 hosted_file: str | None = None):
        self.genesis = sorted(genesis)
        self.replication = replication
        self.groups = groups
        self.owned = [g for g in range(groups) if owned is None or owned(g)]
        self.hosted_file = hosted_file

    @property
    def voters_per_group(self) -> int:
        return resolve_replication(self.replication, len(self.genesis))

    @property
    def every_node(self) -> bool:
        """``replication = 0`` on at most five genesis nodes: every node hosts every group,
        and a node that joins joins every group (as before placement existed)."""
        return self.replication <= 0 and len(self.genesis) <= ALL_NODES_UP_TO

    def initial(self, group: int) -> list[int]:
        return initial_voters(self.genesis, self.replication, group)

    def placed_on(self, node_id: int) -> list[int]:
        """The groups a new data directory of ``node_id`` hosts: those whose initial voters
        hold it, or every group while each group has every node (a node that joins such a
        cluster joins every group, as before placement)."""
        if self.every_node:
            return list(self.owned)
        return [g for g in self.owned if node_id in self.initial(g)]

    def load_hosted(self, node_id: int, recovered=(), joining: bool = False) -> list[int]:
        """The groups this process hosts: those of the file, else (a new data directory) the
        groups placed on this node plus any the journal holds, and the file is written."""
        import json
        import os
        if self.hosted_file and os.path.exists(self.hosted_file):
            with open(self.hosted_file, encoding="utf-8") as handle:
                return sorted(int(g) for g in json.load(handle)["groups"])
        hosted = sorted(set(self.placed_on(node_id)) | {g for g in recovered if g in self.owned})
        self.save_hosted(hosted)
        return hosted

    def save_hosted(self, hosted) -> None:
        import json
        import os
        if not self.hosted_file:
            return
        tmp = self.hosted_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump({"groups": sorted(hosted)}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.hosted_file)
