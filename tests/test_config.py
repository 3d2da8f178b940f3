"""``node.ini`` parsing: defaults, every kind of bad value, the cluster section."""

from __future__ import annotations

import dataclasses

import pytest

from ursula.config import ConfigError, NodeConfig, load_config, parse_config, parse_peers
from ursula.supervisor import with_backlog


def test_defaults_are_the_embedded_single_node():
    config = parse_config("")
    assert config.cold.backend == "local"  # auto: a node of its own keeps <data_dir>/cold
    assert dataclasses.replace(config, cold=NodeConfig().cold) == NodeConfig()
    assert config.node.listen == "tcp:4437:interface=127.0.0.1"
    assert config.storage.fsync == "always"
    assert list(config.peers) == [1]  # a cluster of one


@pytest.mark.parametrize("text, where", [
    ("[http]\nlong_poll_timeout_ms = soon", "[http] long_poll_timeout_ms"),
    ("[http]\nlong_poll_timeout_ms = 0", "[http] long_poll_timeout_ms"),
    ("[http]\naccess_log = maybe", "[http] access_log"),
    ("[limits]\nmax_body_bytes = -1", "[limits] max_body_bytes"),
    ("[limits]\nmax_bodee = 1", "[limits] max_bodee"),
    ("[limits]\nrequest_timeout_s = 0", "[limits] request_timeout_s"),
    ("[limits]\nmax_pipelined_requests = 0", "[limits] max_pipelined_requests"),
    ("[nodes]\nlisten = x", "[nodes]"),
    ("[node]\nlisten = bogus:1", "[node] listen"),
    ("[log]\nformat = xml", "[log] format"),
    ("[storage]\nfsync = sometimes", "[storage] fsync"),
    ("[cluster]\ngroups = 0", "[cluster] groups"),
    ("[cluster]\npeers = 1 = nowhere", "[cluster] peers"),
    ("[cluster]\npeers = 1 = h:1, 1 = h:2", "[cluster] peers"),
    ("[cluster]\nnode_id = 4\nsecret = 0123456789abcdef\npeers = 1 = h:1, 2 = h:2",
     "[cluster] node_id"),
    ("[cluster]\npeers = 1 = h:1, 2 = h:2", "[cluster] secret"),
    ("[cluster]\nsecret = short\npeers = 1 = h:1, 2 = h:2", "[cluster] secret"),
    ("[cluster]\ntls_cert = /nonexistent.pem", "[cluster] tls_key"),
    ("[cluster]\nsecret_file = /nonexistent", "[cluster] secret_file"),
])
def test_bad_values_name_their_key_in_one_line(text, where):
    with pytest.raises(ConfigError) as raised:
        parse_config(text)
    message = str(raised.value)
    assert where in message and "\n" not in message


def test_peers_with_client_urls():
    peers = parse_peers("1 = 10.0.0.1:7441 http://10.0.0.1:4437\n2 = [::1]:7442")
    assert peers[1].host == "10.0.0.1" and peers[1].port == 7441
    assert peers[1].client_url == "http://10.0.0.1:4437"
    assert peers[2].host == "::1" and peers[2].client_url == ""
    assert peers[1].endpoint == "tcp:host=10.0.0.1:port=7441"


def test_cluster_secret_from_file(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s" * 32 + "\n")
    config = parse_config(f"[cluster]\nsecret_file = {secret}\n"
                          "peers = 1 = h:1, 2 = h:2")
    assert config.cluster_secret == b"s" * 32


def test_load_config_makes_the_data_dir(tmp_path):
    path = tmp_path / "node.ini"
    path.write_text(f"[node]\ndata_dir = {tmp_path}/deep/data\n")
    config = load_config(str(path))
    assert (tmp_path / "deep" / "data").is_dir()
    assert config.node.data_dir == f"{tmp_path}/deep/data"
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path / "missing.ini"))


def test_listen_backlog_is_added_only_where_missing():
    assert with_backlog("tcp:4437:interface=127.0.0.1", 1024) == \
        "tcp:4437:interface=127.0.0.1:backlog=1024"
    assert with_backlog("tcp:4437:backlog=5", 1024) == "tcp:4437:backlog=5"
    assert with_backlog("unix:/run/ursula.sock", 1024) == "unix:/run/ursula.sock"


def test_cores_default_explicit_and_limits():
    import os

    from ursula.config import parse_config
    default = parse_config("[cluster]\ngroups = 64\n")
    assert default.node.cores == 0 and default.cores == (os.cpu_count() or 1)
    assert parse_config("[cluster]\ngroups = 1\n").cores == 1  # at most groups
    assert parse_config("[node]\ncores = 1\n").cores == 1
    assert parse_config("[node]\ncores = 3\n[cluster]\ngroups = 3\n").cores == 3
    with pytest.raises(ConfigError, match=r"\[node\] cores: 8 cores need at least as many"):
        parse_config("[node]\ncores = 8\n[cluster]\ngroups = 4\n")
    with pytest.raises(ConfigError, match=r"\[node\] listen: with cores > 1"):
        parse_config("[node]\ncores = 2\nlisten = unix:/tmp/u.sock\n")


def test_core_ports_shift():
    from ursula.coreproc import parse_tcp, shift_port
    assert parse_tcp("tcp:4437:interface=127.0.0.1") == ("127.0.0.1", 4437)
    assert parse_tcp("tcp:port=80") == ("0.0.0.0", 80)
    assert shift_port("tcp:7441:interface=10.0.0.1", 2) == "tcp:7443:interface=10.0.0.1"
    assert shift_port("tcp:interface=10.0.0.1:port=7441", 1) == "tcp:interface=10.0.0.1:port=7442"


def test_parallel_write_reaches_every_group_driver():
    from ursula.core.cluster import MemoryPersister, RaftCore
    from ursula.raft import MemoryStorage
    from ursula.supervisor import core_settings

    assert parse_config("").cluster.parallel_write is True
    config = parse_config("[cluster]\nparallel_write = false\n")
    settings = core_settings(config)
    assert settings.parallel_write is False
    core = RaftCore(None, 1, 2, {g: MemoryStorage([1]) for g in range(2)}, MemoryPersister(),
                    settings=settings)
    assert [g.driver.parallel_write for g in core.groups.values()] == [False, False]


PEERS3 = ("[cluster]\nnode_id = 1\nsecret = a-secret-of-16-bytes-or-more\npeers =\n"
          "  1 = 127.0.0.1:7441\n  2 = 127.0.0.1:7451\n  3 = 127.0.0.1:7461\n")


def test_a_cluster_needs_a_shared_cold_tier():
    assert parse_config(PEERS3).cold.backend == "none"  # auto in a cluster
    with pytest.raises(ConfigError, match=r"\[cold\] directory"):
        parse_config(PEERS3 + "[cold]\nbackend = local\n")
    with pytest.raises(ConfigError, match=r"\[cold\] backend"):
        parse_config(PEERS3 + "[cold]\nbackend = memory\n")
    shared = parse_config(PEERS3 + "[cold]\nbackend = local\ndirectory = /mnt/shared\n")
    assert shared.cold.backend == "local"
    assert parse_config(PEERS3 + "[cold]\nbackend = s3\nbucket = b\n").cold.backend == "s3"
    from ursula.config import _resolve_cold
    assert _resolve_cold(NodeConfig()).cold.backend == "local"  # the embedded default


def test_node_hot_bytes_lowers_each_groups_share():
    from ursula.supervisor import core_settings
    config = parse_config("[cluster]\ngroups = 4\n[storage]\nnode_hot_bytes = 67108864\n")
    assert config.group_hot_bytes == 16777216
    smaller = parse_config("[cluster]\ngroups = 4\n[storage]\nhot_bytes = 1048576\n"
                           "node_hot_bytes = 67108864\n")
    assert smaller.group_hot_bytes == 1 << 20  # hot_bytes is the per-group ceiling
    settings = core_settings(config)
    assert settings.hot_bytes == 16777216 and settings.hot_max_bytes == 4 * 16777216
    assert parse_config("").group_hot_bytes == 16 << 20  # 0: groups x hot_bytes
    with pytest.raises(ConfigError, match=r"\[storage\] node_hot_bytes: 2048 gives each"):
        parse_config("[cluster]\ngroups = 4\n[storage]\nnode_hot_bytes = 2048\n")
    keep = core_settings(parse_config("[cluster]\nlog_keep_bytes = 1024\n"))
    assert keep.snapshot_keep_bytes == 1024


def test_the_flusher_keys_have_lower_bounds_and_reach_the_core():
    from ursula.supervisor import core_settings

    config = parse_config("[cold]\nflush_depth = 2\nsweep_interval_s = 30\norphan_grace_s = 120\n"
                          "pack_ranges = 16\n")
    settings = core_settings(config)
    assert (settings.flush_depth, settings.sweep_interval_s, settings.orphan_grace_s,
            settings.pack_ranges) == (2, 30, 120, 16)
    for key, bad in (("flush_depth", 0), ("sweep_interval_s", 0), ("orphan_grace_s", 59),
                     ("pack_ranges", 0)):
        with pytest.raises(ConfigError, match=rf"\[cold\] {key}"):
            parse_config(f"[cold]\n{key} = {bad}\n")


@pytest.mark.parametrize("text, where, words", [
    ("[node]\nadmin_listen = tcp:4438", "[node] admin_token", "not on loopback"),
    ("[node]\nadmin_listen = tcp:4438:interface=0.0.0.0", "[node] admin_token", "0.0.0.0"),
    ("[node]\nadmin_listen = tcp:4437", "[node] admin_listen", "public port"),
    ("[node]\nadmin_listen = tcp:4439:interface=10.0.0.5\nadmin_token = short",
     "[node] admin_token", "at least 16"),
    ("[node]\nadmin_token_file = /nonexistent", "[node] admin_token_file", "cannot read"),
    ("[node]\nadmin_drain_timeout_s = 0", "[node] admin_drain_timeout_s", "at least 1"),
])
def test_the_admin_plane_is_loopback_or_token_protected(text, where, words):
    with pytest.raises(ConfigError) as raised:
        parse_config(text)
    message = str(raised.value)
    assert message.startswith(where) and words in message and "\n" not in message


def test_admin_token_from_the_config_or_a_file(tmp_path):
    assert parse_config("").admin_token == ""
    assert parse_config("[node]\nadmin_listen = unix:/tmp/admin.sock\n").admin_token == ""
    v6 = parse_config("[node]\nadmin_listen = tcp6:4438:interface=\\:\\:1\n")
    assert v6.node.admin_listen.startswith("tcp6")  # loopback: no token needed
    token = "0123456789abcdef-token"
    config = parse_config(f"[node]\nadmin_listen = tcp:4438:interface=0.0.0.0\n"
                          f"admin_token = {token}\n")
    assert config.admin_token == token
    path = tmp_path / "token"
    path.write_text(token + "\n")
    config = parse_config(f"[node]\nadmin_listen = tcp:4438\nadmin_token_file = {path}\n")
    assert config.admin_token == token
    with pytest.raises(ConfigError, match="not both"):
        parse_config(f"[node]\nadmin_token = {token}\nadmin_token_file = {path}\n")
