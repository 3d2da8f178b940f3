"""The backup format: ``manifest.json``, one image file per group, and where they live.

::

    manifest.json          {"format": "ursula-backup", "format_version": 1, "group_count": G,
                            "created_at", "started_ms", "finished_ms", "source",
                            "groups": [{"group", "file", "index", "term", "bytes", "sha256",
                                        "streams", "chunks", "hot_bytes", "cold_bytes"}, ...]}
    group-00000.img ...    the group's state machine snapshot (``StreamMachine.snapshot``)

A ``Location`` is an ``IColdStore`` and a key prefix: a local directory (a
``LocalColdStore`` rooted there: atomic writes) or ``cold:NAME``, the objects
``backups/NAME/...`` of the cluster's own cold store (``[cold]`` of ``--config``), which its
orphan sweep never touches (it lists ``g<group>/`` only).

May import: Twisted, the standard library, ``ursula.cold``, ``ursula.stream``, ``ursula.config``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

from twisted.internet import defer

FORMAT = "ursula-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
COLD_PREFIX = "backups/"


class BackupError(Exception):
    """A backup cannot be made, read, verified or restored; ``str()`` is one line."""


def image_name(group: int) -> str:
    return f"group-{group:05d}.img"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class GroupImage:
    group: int
    index: int
    term: int
    bytes: int
    sha256: str
    file: str
    streams: int = 0
    chunks: int = 0
    hot_bytes: int = 0
    cold_bytes: int = 0

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Manifest:
    group_count: int
    groups: list[GroupImage] = field(default_factory=list)
    created_at: str = ""
    started_ms: int = 0
    finished_ms: int = 0
    source: str = ""
    format_version: int = FORMAT_VERSION

    def encode(self) -> bytes:
        value = {"format": FORMAT, "format_version": self.format_version,
                 "group_count": self.group_count, "created_at": self.created_at,
                 "started_ms": self.started_ms, "finished_ms": self.finished_ms,
                 "source": self.source, "groups": [g.to_json() for g in self.groups]}
        return (json.dumps(value, indent=1) + "\n").encode()

    @classmethod
    def decode(cls, blob: bytes, where: str) -> Manifest:
        try:
            value = json.loads(blob)
            if not isinstance(value, dict) or value.get("format") != FORMAT:
                raise BackupError(f"{where}: not an ursula backup manifest")
            version = value.get("format_version")
            if version != FORMAT_VERSION:
                raise BackupError(f"{where}: format version {version!r}; this ursula reads "
                                  f"version {FORMAT_VERSION}")
            groups = [GroupImage(**{k: g[k] for k in GroupImage.__dataclass_fields__
                                    if k in g}) for g in value["groups"]]
            manifest = cls(int(value["group_count"]), groups, value.get("created_at", ""),
                           int(value.get("started_ms", 0)), int(value.get("finished_ms", 0)),
                           value.get("source", ""), version)
        except BackupError:
            raise
        except (ValueError, KeyError, TypeError) as error:
            raise BackupError(f"{where}: a damaged manifest ({type(error).__name__}: "
                              f"{error})") from None
        if sorted(g.group for g in manifest.groups) != list(range(manifest.group_count)):
            raise BackupError(f"{where}: the manifest does not list every one of its "
                              f"{manifest.group_count} groups once")
        return manifest


@dataclass
class Location:
    """Where a backup lives: ``store`` (an ``IColdStore``) under ``prefix``."""

    store: object
    prefix: str
    description: str

    def key(self, name: str) -> str:
        return self.prefix + name

    def put(self, name: str, data: bytes):
        return self.store.put(self.key(name), data)

    def get(self, name: str):
        return self.store.get(self.key(name))

    @defer.inlineCallbacks
    def manifest(self) -> Manifest:
        from ursula.cold import ChunkMissing, ColdError
        try:
            blob = yield self.get(MANIFEST)
        except ChunkMissing:
            raise BackupError(f"{self.description}: no {MANIFEST} (not a backup, or one that "
                              "did not finish)") from None
        except ColdError as error:
            raise BackupError(f"{self.description}: cannot read {MANIFEST} ({error})") from None
        return Manifest.decode(blob, f"{self.description}/{MANIFEST}")

    @defer.inlineCallbacks
    def exists(self):
        from ursula.cold import ChunkMissing
        try:
            yield self.get(MANIFEST)
        except ChunkMissing:
            return False
        return True

    @defer.inlineCallbacks
    def image(self, entry: GroupImage) -> bytes:
        """The image of one group, checked against the manifest."""
        from ursula.cold import ChunkMissing, ColdError
        try:
            data = yield self.get(entry.file)
        except ChunkMissing:
            raise BackupError(f"{self.description}: {entry.file} (group {entry.group}) is "
                              "missing") from None
        except ColdError as error:
            raise BackupError(f"{self.description}: cannot read {entry.file} ({error})") \
                from None
        if len(data) != entry.bytes or sha256(data) != entry.sha256:
            raise BackupError(f"{self.description}: {entry.file} (group {entry.group}) does not "
                              f"match its checksum in the manifest ({len(data)} bytes, "
                              f"{entry.bytes} expected)")
        return data


def cold_store_of(config, reactor):
    """The cluster's cold store from ``[cold]`` of a node's config, or None."""
    from ursula.cold import open_store
    try:
        return open_store(config.cold, config.node.data_dir, reactor)
    except (OSError, ValueError) as error:
        raise BackupError(f"[cold] backend: cannot open the {config.cold.backend} store "
                          f"({error})") from None


def open_location(spec: str, config, reactor) -> Location:
    """``cold:NAME`` (the cluster's cold store, from ``config``) or a local directory."""
    if spec.startswith("cold:"):
        name = spec[5:].strip("/")
        if not name or any(part in ("", ".", "..") for part in name.split("/")):
            raise BackupError(f"{spec}: expected cold:NAME with a plain name")
        if config is None:
            raise BackupError(f"{spec}: a backup in the cold store needs --config (the node's "
                              "[cold] section)")
        store = cold_store_of(config, reactor)
        if store is None:
            raise BackupError(f"{spec}: the config has no cold store ([cold] backend = none)")
        return Location(store, f"{COLD_PREFIX}{name}/", spec)
    from ursula.cold.local import LocalColdStore
    if not spec:
        raise BackupError("a backup location is required (a directory or cold:NAME)")
    try:
        return Location(LocalColdStore(reactor, spec), "", os.path.abspath(spec))
    except OSError as error:
        raise BackupError(f"{spec}: cannot use this directory ({error.strerror})") from None


def image_summary(data: bytes):
    """``(streams, chunk references, hot bytes, cold bytes)`` of a group image; the chunk
    references are ``(key, start, end, checksum, bucket/stream)``, without repeats (a fork
    shares its source's chunks)."""
    from ursula.stream import StreamMachine
    try:
        machine = StreamMachine.restore(data)
    except Exception as error:  # noqa: BLE001 - any decoding error means a damaged image
        raise BackupError(f"cannot decode the image ({type(error).__name__}: {error})") \
            from None
    seen = {}
    for stream in machine.streams.values():
        for start, end, key, checksum in stream.chunks:
            seen.setdefault(key, (key, start, end, checksum, f"{stream.bucket}/{stream.name}"))
    return len(machine.streams), list(seen.values()), machine.total_bytes, machine.cold_bytes
