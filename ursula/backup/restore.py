"""``restore``: a backup written into a fresh node's journals, before the new cluster starts.

Run on every node of the new cluster (``ursula-admin backup restore SOURCE --config node.ini``),
then start the nodes. For each group the image becomes the group's snapshot in the journal of
the core that owns it (``<data_dir>/journal``, or ``<data_dir>/core-<k>/journal`` with
``[node] cores`` > 1), at the backup's index and term, with the new cluster's voters
(``[cluster] peers``), and the hard state ``(term, no vote, commit = index)``: every node
starts from the same committed snapshot, elects a leader in the next term and goes on from
there. Producers' epochs and sequence numbers, stream tails, TTLs, subscriptions and the cold
chunk references are in the images, so clients resume where the backup left them.

Refused, with one line saying why: another group count than the backup's (streams are placed
by ``hash mod groups``), a data directory that holds a journal already (restore only into a
fresh node), a ``cluster.json`` of other ids, an image that does not match the manifest.

May import: the standard library, ``ursula.storage``, ``ursula.raft``, ``ursula.config``,
``ursula.supervisor``, ``ursula.backup``.
"""

from __future__ import annotations

import glob
import os

from ursula.backup.format import BackupError
from ursula.raft import NONE
from ursula.raft.messages import ConfState, HardState, Snapshot, SnapshotMeta
from ursula.storage import HardStateRecord, Journal, JournalError


def journal_dir(config, group: int) -> str:
    """The journal directory of the core that owns ``group`` (as ``ursula.supervisor`` and
    ``ursula.coreproc`` open it)."""
    data_dir = config.node.data_dir
    cores = config.cores
    if cores == 1:
        return os.path.join(data_dir, "journal")
    return os.path.join(data_dir, f"core-{group % cores}", "journal")


def check_fresh(config, manifest) -> None:
    """Refuse a restore that could not give the cluster the backup's state."""
    groups = config.cluster.groups
    if manifest.group_count != groups:
        raise BackupError(f"the backup holds {manifest.group_count} groups and this node has "
                          f"[cluster] groups = {groups}: a backup restores only into a cluster "
                          f"with the same group count (set groups = {manifest.group_count} on "
                          "every node of the new cluster)")
    data_dir = config.node.data_dir
    for directory in [os.path.join(data_dir, "journal"),
                      *glob.glob(os.path.join(data_dir, "core-*", "journal"))]:
        held = [p for sub in ("wal", "snap") for p in glob.glob(os.path.join(directory, sub, "*"))]
        if held:
            raise BackupError(f"[node] data_dir: {directory} holds a journal already; restore "
                              "only into a fresh node (move the data directory away first)")


def restore(config, manifest, images: dict[int, bytes], log=lambda line: None) -> None:
    """Write ``images`` (group -> image, checked against ``manifest``) into this node's
    journals, then its ``cluster.json``."""
    from ursula.config import ConfigError
    from ursula.supervisor import check_cluster_identity
    check_fresh(config, manifest)
    try:
        check_cluster_identity(config)  # refuses other ids; writes cluster.json when fresh
    except ConfigError as error:
        raise BackupError(str(error)) from None
    voters = ConfState(tuple(config.genesis))
    by_dir: dict[str, list] = {}
    for entry in manifest.groups:
        if entry.index > 0:  # index 0: the group never applied anything; it starts empty
            by_dir.setdefault(journal_dir(config, entry.group), []).append(entry)
    for directory, entries in sorted(by_dir.items()):
        try:
            journal = Journal(directory, fsync=config.storage.fsync,
                              segment_bytes=config.storage.segment_bytes)
        except (JournalError, OSError) as error:
            raise BackupError(f"[node] data_dir: cannot open the journal {directory} "
                              f"({error})") from None
        try:
            for entry in entries:
                meta = SnapshotMeta(entry.index, entry.term, voters)
                journal.save_snapshot(entry.group, Snapshot(meta, images[entry.group]),
                                      replace=True)
                journal.write_batch([HardStateRecord(
                    entry.group, HardState(entry.term, NONE, entry.index))])
                log(f"group {entry.group}: restored at index {entry.index} (term "
                    f"{entry.term}) into {directory}")
        finally:
            journal.close()
