"""Backups on an in-process Raft node with a local cold tier (chunks flushed at 1 KiB per
group): ``ursula-admin backup create`` through the admin plane, ``verify`` against the cold
tier (and what it finds when a chunk, an image or the manifest is damaged), ``restore`` into a
fresh data directory (the journal it writes recovers to the backed-up state) and its
refusals."""

from __future__ import annotations

import io
import json
import os

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, reactor

from ursula.admin import admin_site
from ursula.admin.cli import run
from ursula.backup.format import MANIFEST, Manifest, image_name
from ursula.cold.local import LocalColdStore
from ursula.core.cluster import CoreSettings, RaftCore
from ursula.core.persist import MemoryPersister
from ursula.http.dataplane import data_plane_factory
from ursula.http.metrics import Metrics
from ursula.raft import MemoryStorage
from ursula.storage import recover
from ursula.stream import StreamMachine

GROUPS = 2


def _ini(tmp_path, name: str, groups: int = GROUPS, cores: int = 1) -> str:
    path = tmp_path / f"{name}.ini"
    path.write_text(f"[node]\ndata_dir = {tmp_path / name}\ncores = {cores}\n"
                    f"admin_listen = none\n[cluster]\ngroups = {groups}\n"
                    f"[storage]\nfsync = never\n"
                    f"[cold]\nbackend = local\ndirectory = {tmp_path / 'cold'}\n")
    return str(path)


class InProcessNode:
    def __init__(self, tmp_path):
        from ursula.config import NodeConfig
        self.cold = LocalColdStore(reactor, str(tmp_path / "cold"))
        self.core = RaftCore(reactor, 1, GROUPS, {g: MemoryStorage([1]) for g in range(GROUPS)},
                             MemoryPersister(), settings=CoreSettings(
                                 # bytes go cold above 1 KiB; the cap is far above what the
                                 # tests write, so a flusher slowed by a busy machine never
                                 # answers an append 503
                                 hot_bytes=1024, hot_max_bytes=256 << 10, chunk_bytes=1024),
                             cold_store=self.cold)
        self.core.start()
        metrics = Metrics(self.core)
        self.port = reactor.listenTCP(0, data_plane_factory(self.core, NodeConfig(), reactor,
                                                            metrics), interface="127.0.0.1")
        self.admin = reactor.listenTCP(0, admin_site(self.core, metrics), interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"
        self.admin_url = f"http://127.0.0.1:{self.admin.getHost().port}"

    def stop(self):
        self.core.stop()
        return defer.gatherResults([self.port.stopListening(), self.admin.stopListening()])


@pytest.fixture
def node(tmp_path):
    node = InProcessNode(tmp_path)
    yield node
    pytest_twisted.blockon(node.stop())


@pytest_twisted.inlineCallbacks
def _fill(node, streams=("a", "b", "c"), appends=12):
    """Appends with producer headers; returns the bytes each stream holds."""
    held = {}
    for name in streams:
        yield treq.put(f"{node.url}/v1/stream/{name}", headers={"Content-Type": "text/plain"})
        body = b""
        for seq in range(appends):
            piece = f"{name}:{seq};".encode() * 40
            response = yield treq.post(
                f"{node.url}/v1/stream/{name}", data=piece,
                headers={"Content-Type": "text/plain", "Producer-Id": name,
                         "Producer-Epoch": "0", "Producer-Seq": str(seq)})
            yield response.content()
            assert response.code == 200
            body += piece
        held[name] = body
    return held


@pytest_twisted.inlineCallbacks
def _until_cold(node):
    for _ in range(200):
        if sum(g.machine.cold_bytes for g in node.core.groups.values()) > 1024:
            return
        yield _sleep(0.02)
    raise AssertionError("nothing was flushed to the cold tier")


def _sleep(seconds):
    from twisted.internet import task
    return task.deferLater(reactor, seconds, lambda: None)


@pytest_twisted.inlineCallbacks
def _cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    status = yield run(reactor, list(argv), out, err)
    return status, out.getvalue(), err.getvalue()


@pytest_twisted.inlineCallbacks
def test_create_verify_restore(node, tmp_path):
    held = yield _fill(node)
    yield _until_cold(node)
    backup = str(tmp_path / "backup")
    status, out, err = yield _cli("--admin", node.admin_url, "backup", "create", backup)
    assert status == 0, err
    manifest = Manifest.decode(open(os.path.join(backup, MANIFEST), "rb").read(), "m")
    assert manifest.group_count == GROUPS
    assert sum(g.chunks for g in manifest.groups) > 0 and sum(g.streams for g in
                                                             manifest.groups) == 3
    for entry in manifest.groups:
        assert entry.index >= 1 and os.path.getsize(os.path.join(backup, entry.file)) == \
            entry.bytes
    # again into the same place: refused
    status, _, err = yield _cli("--admin", node.admin_url, "backup", "create", backup)
    assert status == 1 and "holds a backup already" in err
    config = _ini(tmp_path, "restored")
    status, out, err = yield _cli("--config", config, "backup", "verify", backup)
    assert status == 0 and ": ok" in out, err
    status, out, err = yield _cli("--config", config, "backup", "restore", backup)
    assert status == 0, err
    recovered = recover(str(tmp_path / "restored" / "journal"))
    for entry in manifest.groups:
        group = recovered.groups[entry.group]
        assert group.snapshot.meta.index == entry.index
        assert group.snapshot.meta.conf.voters == (1,)
        assert group.hard_state.commit == entry.index and group.hard_state.term == entry.term
        assert group.entries == []
    images = {g.group: StreamMachine.restore(recovered.groups[g.group].snapshot.data)
              for g in manifest.groups}
    for name, body in held.items():
        machine = next(m for m in images.values() if ("_default", name) in m.streams)
        stream = machine.streams[("_default", name)]
        assert stream.tail == len(body) and stream.chunks  # old bytes are cold references
        assert (stream.producers[name].epoch, stream.producers[name].seq) == (0, 11)
    assert json.load(open(tmp_path / "restored" / "cluster.json"))["groups"] == GROUPS
    # a second restore into the now restored node: refused, nothing touched
    status, _, err = yield _cli("--config", config, "backup", "restore", backup)
    assert status == 1 and "holds a journal already" in err


@pytest_twisted.inlineCallbacks
def test_verify_finds_missing_and_damaged_chunks_and_images(node, tmp_path):
    yield _fill(node, streams=("v",), appends=60)
    yield _until_cold(node)
    backup = str(tmp_path / "backup")
    status, _, err = yield _cli("--admin", node.admin_url, "backup", "create", backup)
    assert status == 0, err
    node.core.flusher.stop()  # nothing is flushed or collected behind the test's back
    config = _ini(tmp_path, "check")
    chunks = sorted(p for p in (tmp_path / "cold").rglob("*") if p.is_file())
    assert len(chunks) >= 2
    damaged = chunks[0].read_bytes()
    chunks[0].write_bytes(damaged[:-1] + bytes([damaged[-1] ^ 1]))
    chunks[1].unlink()
    status, _, err = yield _cli("--config", config, "backup", "verify", backup)
    assert status == 1
    assert "is missing" in err and "checksum" in err and "2 problems found" in err
    status, out, _ = yield _cli("--config", config, "backup", "verify", backup, "--no-chunks")
    assert status == 0 and "not checked" in out
    # an image that does not match the manifest
    image = tmp_path / "backup" / image_name(0)
    image.write_bytes(image.read_bytes() + b"x")
    status, _, err = yield _cli("--config", config, "backup", "verify", backup, "--no-chunks")
    assert status == 1 and "does not match its checksum" in err
    # a restore refuses before writing anything
    status, _, err = yield _cli("--config", config, "backup", "restore", backup, "--no-chunks")
    assert status == 1 and not (tmp_path / "check" / "journal").exists()
    (tmp_path / "backup" / MANIFEST).unlink()
    status, _, err = yield _cli("--config", config, "backup", "verify", backup)
    assert status == 1 and "did not finish" in err


@pytest_twisted.inlineCallbacks
def test_restore_refuses_another_group_count(node, tmp_path):
    yield _fill(node, streams=("g",), appends=2)
    backup = str(tmp_path / "backup")
    status, _, err = yield _cli("--admin", node.admin_url, "backup", "create", backup)
    assert status == 0, err
    config = _ini(tmp_path, "eight", groups=8)
    status, _, err = yield _cli("--config", config, "backup", "restore", backup)
    assert status == 1 and err.count("\n") == 1
    assert "holds 2 groups" in err and "groups = 8" in err and "same group count" in err
    assert not (tmp_path / "eight" / "journal").exists()


@pytest_twisted.inlineCallbacks
def test_restore_with_cores_writes_each_group_into_its_cores_journal(node, tmp_path):
    yield _fill(node, streams=("x", "y"), appends=3)
    backup = str(tmp_path / "backup")
    assert (yield _cli("--admin", node.admin_url, "backup", "create", backup))[0] == 0
    config = _ini(tmp_path, "two", cores=2)
    status, _, err = yield _cli("--config", config, "backup", "restore", backup)
    assert status == 0, err
    for k in range(2):
        recovered = recover(str(tmp_path / "two" / f"core-{k}" / "journal"))
        assert sorted(recovered.groups) == [k]


@pytest_twisted.inlineCallbacks
def test_a_backup_in_the_cold_store(node, tmp_path):
    yield _fill(node, streams=("z",), appends=4)
    config = _ini(tmp_path, "cold-user")
    status, out, err = yield _cli("--admin", node.admin_url, "--config", config, "backup",
                                  "create", "cold:nightly-1")
    assert status == 0, err
    assert (tmp_path / "cold" / "backups" / "nightly-1" / MANIFEST).exists()
    status, out, err = yield _cli("--config", config, "backup", "verify", "cold:nightly-1")
    assert status == 0, err
    status, _, err = yield _cli("backup", "create", "cold:x/../y")
    assert status == 1 and "plain name" in err
    status, _, err = yield _cli("backup", "verify", "cold:nightly-1")
    assert status == 1 and "needs --config" in err


def test_a_damaged_manifest_is_one_line():
    from ursula.backup import BackupError
    for blob in (b"{", b'{"format": "other"}', b'{"format": "ursula-backup", "format_version": 9}',
                 b'{"format": "ursula-backup", "format_version": 1, "group_count": 2, '
                 b'"groups": []}'):
        with pytest.raises(BackupError) as raised:
            Manifest.decode(blob, "here")
        assert "\n" not in str(raised.value) and str(raised.value).startswith("here")
