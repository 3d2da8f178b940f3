"""Helpers of the compute tests: the example modules, bad modules, a State Protocol workload
with its Python model, and the Node cross-check with ``@durable-streams/state``."""

from __future__ import annotations

import json
import os
import pathlib
import random
import shutil
import subprocess

import treq
from twisted.internet import defer
from twisted.web.client import HTTPConnectionPool

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "wasm"
STATE_WAT = (EXAMPLES / "state_protocol.wat").read_bytes()
COUNTER_WAT = (EXAMPLES / "byte_counter.wat").read_bytes()
HERE = pathlib.Path(__file__).resolve().parent

# -- bad modules (each one fails in its own way) ------------------------------------------

_ABI = """
  (memory (export "memory") {pages})
  (global $h (mut i32) (i32.const 1024))
  (func (export "ursula_abi_version") (result i32) (i32.const {abi}))
  (func $alloc (export "alloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $h))
    (global.set $h (i32.add (global.get $h) (local.get $n)))
    (if (i32.gt_u (global.get $h) (i32.shl (memory.size) (i32.const 16)))
      (then (if (i32.eq (memory.grow (i32.add (i32.shr_u (i32.sub (global.get $h)
                 (i32.shl (memory.size) (i32.const 16))) (i32.const 16)) (i32.const 1)))
                 (i32.const -1)) (then unreachable))))
    (local.get $p))
  (func (export "render") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get 0)) (i64.const 32))
            (i64.extend_i32_u (local.get 1))))
"""


def abi_module(reduce_body: str, pages: int = 1, abi: int = 1, extra: str = "") -> bytes:
    """A module with the ABI's exports and ``reduce_body`` as reduce's body (params 0-3)."""
    return (f"(module {extra}" + _ABI.format(pages=pages, abi=abi)
            + f'(func (export "reduce") (param i32 i32 i32 i32) (result i64) {reduce_body}))'
            ).encode()


ECHO = """(i64.or (i64.shl (i64.extend_i32_u (local.get 2)) (i64.const 32))
                 (i64.extend_i32_u (local.get 3)))"""
#: the new state is the record; a record "trap" traps, "loop" loops forever, "grow" grows
#: memory without end, "big" answers a huge output, "out" points outside memory, "no" refuses
MISCHIEF = abi_module(f"""
    (if (i32.eq (local.get 3) (i32.const 4))
      (then (if (i32.eq (i32.load (local.get 2)) (i32.const 0x70617274)) (then unreachable))
            (if (i32.eq (i32.load (local.get 2)) (i32.const 0x776f7267))
              (then (loop $g (br_if $g (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
                    unreachable))
            (if (i32.eq (i32.load (local.get 2)) (i32.const 0x706f6f6c))
              (then (loop $l (br $l))))))
    (if (i32.eq (local.get 3) (i32.const 3))
      (then (if (i32.eq (i32.load16_u (local.get 2)) (i32.const 0x6962))
              (then (return (i64.or (i64.shl (i64.extend_i32_u (local.get 2)) (i64.const 32))
                                    (i64.const 0x7fffffff)))))
            (if (i32.eq (i32.load16_u (local.get 2)) (i32.const 0x756f))
              (then (return (i64.shl (i64.const 0x7ffffff0) (i64.const 32)))))))
    (if (i32.eq (local.get 3) (i32.const 2))
      (then (if (i32.eq (i32.load16_u (local.get 2)) (i32.const 0x6f6e))
              (then (return (i64.const -1))))))
    {ECHO}""")

WITH_IMPORT = (b'(module (import "wasi_snapshot_preview1" "clock_time_get" '
               b'(func (param i32 i64 i32) (result i32)))' + abi_module(ECHO)[7:])
NO_REDUCE = (b"(module" + _ABI.format(pages=1, abi=1).encode() + b")")
WRONG_TYPE = (b"(module" + _ABI.format(pages=1, abi=1).encode()
              + b'(func (export "reduce") (param i32 i32 i32) (result i64) (i64.const 0)))')
WRONG_ABI = abi_module(ECHO, abi=7)
HUGE_MEMORY = abi_module(ECHO, pages=300)  # more than the default 256 pages
NOT_WASM = b"\x89PNG\r\n\x1a\n not a module at all"


# -- the State Protocol workload -----------------------------------------------------------

def state_messages(count: int = 10_000, keys: int = 300, seed: int = 13,
                   reset_at: int | None = None) -> list[dict]:
    """Change messages over ``keys`` keys of three types (inserts, updates, deletes; a value
    of a few shapes), with one ``reset`` control message at ``reset_at``."""
    rng = random.Random(seed)
    reset_at = count * 2 // 5 if reset_at is None else reset_at
    live: set[tuple[str, str]] = set()
    out = []
    for i in range(count):
        if i == reset_at:
            out.append({"headers": {"control": "reset"}})
            live.clear()
            continue
        kind = rng.choice(("user", "post", "comment"))
        key = f"{kind[0]}{rng.randrange(keys // 3)}"
        entity = (kind, key)
        if entity in live and rng.random() < 0.25:
            out.append({"type": kind, "key": key, "headers": {"operation": "delete",
                                                               "txid": f"t{i}"}})
            live.discard(entity)
            continue
        value = {"n": i, "name": f"{kind} {key}", "tags": [rng.randrange(9) for _ in range(
            rng.randrange(3))], "ok": rng.random() < 0.5, "score": rng.randrange(-5, 500) / 4}
        operation = "update" if entity in live else "insert"
        out.append({"type": kind, "key": key, "value": value,
                    "headers": {"operation": operation, "timestamp": f"2026-12-02T{i}"}})
        live.add(entity)
    return out


def materialise(messages) -> dict:
    """The Python model of a State Protocol client: (type, key) -> value."""
    state: dict = {}
    for message in messages:
        headers = message.get("headers", {})
        control = headers.get("control")
        if control == "reset":
            state.clear()
        elif control is None:
            entity = (message["type"], message["key"])
            if headers["operation"] == "delete":
                state.pop(entity, None)
            else:
                state[entity] = message["value"]
    return state


def canonical(state: dict) -> str:
    """A state as sorted JSON (comparable with the Node script's output)."""
    return json.dumps(sorted([t, k, v] for (t, k), v in state.items()), sort_keys=True,
                      separators=(",", ":"))


# -- the Node cross-check ------------------------------------------------------------------

NODE_PACKAGE = {"name": "ursula-compute-check", "private": True, "type": "module",
                "dependencies": {"@durable-streams/state": "0.3.1"}}


def node_checker() -> pathlib.Path:
    """A directory with ``@durable-streams/state`` installed (npm, cached between runs) and
    ``materialise.mjs``. npm is required: CI installs Node.js (``.ci/run``)."""
    npm = shutil.which("npm")
    assert npm is not None, "npm is required for the @durable-streams/state cross-check"
    cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"))
    target = cache / "ursula-compute-state-check"
    manifest = json.dumps(NODE_PACKAGE, sort_keys=True)
    stamp = target / ".installed"
    if not (stamp.exists() and stamp.read_text() == manifest):
        target.mkdir(parents=True, exist_ok=True)
        (target / "package.json").write_text(manifest)
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=target, check=True, timeout=600)
        stamp.write_text(manifest)
    shutil.copy(HERE / "materialise.mjs", target / "materialise.mjs")
    return target


def node_materialise(runs: dict) -> dict:
    """``{name: [message, ...]}`` -> ``{name: canonical state}``, each materialised by
    ``@durable-streams/state``'s ``MaterializedState`` in Node."""
    target = node_checker()
    done = subprocess.run(["node", str(target / "materialise.mjs")], cwd=target,
                          input=json.dumps(runs).encode(), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


# -- HTTP ----------------------------------------------------------------------------------

@defer.inlineCallbacks
def call(method: str, url: str, body: bytes | None = None, headers: dict | None = None):
    """Returns (response, body bytes)."""
    from twisted.internet import reactor
    pool = HTTPConnectionPool(reactor, persistent=False)
    response = yield treq.request(method, url, data=body, headers=headers or {}, pool=pool)
    content = yield response.content()
    return response, content


def header(response, name: str) -> str | None:
    values = response.headers.getRawHeaders(name)
    return values[0] if values else None


def parse_multipart(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    import re
    boundary = re.search(r"boundary=(\S+)", content_type).group(1).encode()
    assert body.endswith(b"--" + boundary + b"--\r\n")
    parts = []
    for raw in body.split(b"--" + boundary)[1:-1]:
        head, _, payload = raw[2:-2].partition(b"\r\n\r\n")
        ctype = dict(line.split(b": ", 1) for line in head.split(b"\r\n"))[b"content-type"]
        parts.append((ctype.decode(), payload))
    return parts


def client_state(parts: list[tuple[str, bytes]]) -> list[dict]:
    """The messages a State Protocol client applies after a bootstrap: the snapshot's (a JSON
    array of messages, or none) then one per retained update."""
    messages = json.loads(parts[0][1]) if parts[0][1] else []
    for _, payload in parts[1:]:
        messages.append(json.loads(payload))
    return messages
