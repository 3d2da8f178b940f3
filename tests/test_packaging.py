"""Packaging pitfalls: every package is listed in setup.cfg and the twistd plugin is found."""

from __future__ import annotations

import configparser
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_every_ursula_package_is_listed_in_setup_cfg():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    listed = set(parser["options"]["packages"].split())
    found = {".".join(init.parent.relative_to(ROOT).parts)
             for init in (ROOT / "ursula").rglob("__init__.py")}
    assert "ursula.stream" in found
    assert found <= listed, f"missing from setup.cfg: {sorted(found - listed)}"
    assert "twisted.plugins" in listed


def test_twistd_plugin_is_discoverable():
    from twisted.application.service import IServiceMaker
    from twisted.plugin import getPlugins

    makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
    assert "ursula" in makers
    options = makers["ursula"].options()
    options.parseOptions(["--config", "node.ini"])
    assert options["config"] == "node.ini"
