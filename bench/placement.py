"""Where a benchmarked cluster's leaders are: put them on chosen nodes through the admin API.

Elections place a cluster's leaders differently on every start, and on one small machine the
placement moves the CPU per append by tens of percent (bench/cpu.py). Measuring tools that
compare two builds use ``place_leaders`` so both runs have the same one:

    placement.admin_on_unix_sockets()          # before servers.Server(...).start()
    socks = placement.admin_sockets(workdir, nodes)
    placement.place_leaders(socks, "1,2,3,1")  # group g led by the g-th node id of the list
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import servers


def admin_on_unix_sockets() -> None:
    """Give every ursula node started from now on an admin listener on a unix socket in its
    work directory (``node<i>/data.admin.sock``)."""
    servers.NODE_INI = servers.NODE_INI.replace(
        "admin_listen = none", "admin_listen = unix:{data_dir}.admin.sock")


def admin_sockets(workdir: str, nodes: int) -> list[str]:
    return [os.path.join(workdir, f"node{i}", "data.admin.sock") for i in range(nodes)]


def admin(sock: str, method: str, path: str) -> dict:
    text = subprocess.run(["curl", "-s", "-X", method, "--unix-socket", sock,
                           f"http://node{path}"], capture_output=True, text=True,
                          timeout=30).stdout
    return json.loads(text or "{}")


def place_leaders(socks: list[str], leaders: str) -> None:
    """Move group g's leadership to the g-th node id of the comma list ``leaders``; returns
    once every group listed is led there."""
    wanted = [int(x) for x in leaders.split(",")]
    deadline = time.monotonic() + 30
    while True:
        groups = admin(socks[0], "GET", "/__ursula/groups").get("groups", [])
        wrong = [g for g in groups if g["group"] < len(wanted)
                 and g.get("leader") != wanted[g["group"]]]
        if not wrong:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"--leaders: groups still led elsewhere: {wrong}")
        for g in wrong:
            if g.get("leader"):
                admin(socks[g["leader"] - 1], "POST", f"/__ursula/groups/{g['group']}"
                      f"/transfer-leader?to={wanted[g['group']]}")
        time.sleep(0.5)
