"""``create``: a consistent backup of a running cluster through its admin plane.

For each group in turn, ``GET /__ursula/backup/group/<g>`` of a node: the node runs a ReadIndex
barrier on the group (through its leader, wherever that is) and answers the state machine's
snapshot at its applied index. So the image holds every append whose commit was acknowledged
before the request, in particular every one acknowledged before the backup started
(``started_ms``); appends acknowledged later may or may not be in it. The images are checked
against the checksum the node sent, stored, and the manifest is written last: a backup without
a manifest is incomplete and is refused by ``verify`` and ``restore``.

``clients`` are ``ursula.admin.client.AdminClient``-like objects (``backup_info()``,
``backup_group(g)``): a group's image is asked of the next one when a node cannot answer.

May import: Twisted, the standard library, ``ursula.backup``.
"""

from __future__ import annotations

import time

from twisted.internet import defer

from ursula.backup.format import (
    FORMAT_VERSION,
    MANIFEST,
    BackupError,
    GroupImage,
    Manifest,
    image_name,
    image_summary,
    sha256,
)


def _why(failure) -> str:
    return " ".join((failure.getErrorMessage() or failure.type.__name__).split())[:300]


@defer.inlineCallbacks
def _first(clients, call, what: str):
    """``call(client)`` on each client until one answers; BackupError naming every refusal."""
    errors = []
    for client in clients:
        try:
            answer = yield call(client)
        except Exception:  # noqa: BLE001 - AdminRefused, AdminUnreachable, ...
            errors.append(_why(defer.Failure()))
            continue
        return client, answer
    raise BackupError(f"{what}: no node answered ({'; '.join(errors)})")


@defer.inlineCallbacks
def create(clients, location, log=lambda line: None, clock=time.time):
    """Back the cluster up into ``location`` (a ``Location``); the ``Manifest`` written."""
    if (yield location.exists()):
        raise BackupError(f"{location.description}: holds a backup already (choose a new "
                          "name or directory)")
    started_ms = int(clock() * 1000)
    _, info = yield _first(clients, lambda c: c.backup_info(), "backup info")
    if info.get("format_version") != FORMAT_VERSION:
        raise BackupError(f"the node speaks backup format {info.get('format_version')!r}, "
                          f"this ursula-admin {FORMAT_VERSION}")
    count = int(info["group_count"])
    manifest = Manifest(count, started_ms=started_ms,
                        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                 time.gmtime(started_ms / 1000)))
    sources = []
    for group in range(count):
        client, (headers, data) = yield _first(
            clients, lambda c, g=group: c.backup_group(g), f"group {group}")
        digest = sha256(data)
        if headers.get("ursula-backup-sha256") != digest:
            raise BackupError(f"group {group}: the image from {client.url} does not match the "
                              "checksum it was sent with")
        streams, chunks, hot, cold = image_summary(data)
        entry = GroupImage(group, int(headers["ursula-backup-index"]),
                           int(headers["ursula-backup-term"]), len(data), digest,
                           image_name(group), streams, len(chunks), hot, cold)
        yield location.put(entry.file, data)
        manifest.groups.append(entry)
        sources.append(client.url)
        log(f"group {group}: index {entry.index}, {streams} streams, {hot} hot bytes, "
            f"{len(chunks)} cold chunks ({cold} bytes), from {client.url}")
    manifest.finished_ms = int(clock() * 1000)
    manifest.source = ", ".join(sorted(set(sources)))
    yield location.put(MANIFEST, manifest.encode())
    return manifest
