"""The compute extension in the simulator (``--compute``): the clients bind the byte counter
(``examples/wasm/byte_counter.wat``, run by the real ``ursula.compute.WasmReducer``) to their
streams, and the checker demands, on every replica at every audit and at the end, that the
materialised state is exactly the reduction of that replica's own stream (the counter's
appends and bytes equal the stream's appends and tail, the state covers the whole stream), and
at the end that every replica holds the same state. Crashes, restarts from snapshots, snapshot
installs on lagging followers and re-routed (deduplicated) requests all happen meanwhile.

What lives here: `SimCompute`, and the planted broken rule ``compute_diverges`` (one node's
reducer counts one byte too many: each replica reduces at apply, so a reducer that is not the
same everywhere must be caught).

May import: the standard library, ursula.stream, ursula.compute and ursula.sim.
"""

from __future__ import annotations

import pathlib
import struct

from ursula.sim.checker import Violation
from ursula.stream import commands as C
from ursula.stream.compute import state_digest

COUNTER = pathlib.Path(__file__).resolve().parents[2] / "examples" / "wasm" / "byte_counter.wat"
_COUNTER_WAT = None


def _module_text() -> bytes:
    global _COUNTER_WAT
    if _COUNTER_WAT is None:
        _COUNTER_WAT = COUNTER.read_bytes()
    return _COUNTER_WAT


class _Diverging:
    """The broken rule: a reducer that counts one byte too many (on one node)."""

    def __init__(self, inner):
        self.inner = inner

    def reduce(self, binding, state, record):
        return self.inner.reduce(binding, state, record + b"!")

    def render(self, binding, state):
        return self.inner.render(binding, state)


class SimCompute:
    def __init__(self, bucket: str, rule: str | None = None):
        from ursula.compute import ComputeLimits, load_module
        self.bucket = bucket
        self.rule = rule
        self.info = load_module("counter", _module_text(), ComputeLimits(), 1 << 20)
        self.checks = 0

    def bind_command(self, stream: str) -> C.BindCompute:
        return C.BindCompute(self.bucket, stream, "counter", self.info.digest, self.info.binary,
                             1_000_000, 16, 4096)

    def reducer_for(self, node_id: int):
        from ursula.compute import WasmReducer
        reducer = WasmReducer()
        if self.rule == "compute_diverges" and node_id == 1:
            return _Diverging(reducer)
        return reducer

    def check_replica(self, machine, where: str) -> None:
        """The state of every bound stream is the reduction of this replica's stream."""
        for (_, name), stream in machine.streams.items():
            binding = stream.compute
            if binding is None:
                continue
            self.checks += 1
            appends, total = struct.unpack("<QQ", binding.state) if binding.state else (0, 0)
            if (binding.offset, appends, total, binding.errors) != (
                    stream.tail, len(stream.ends), stream.tail, 0):
                raise Violation(
                    f"compute: {where}, stream {name}: the state says {appends} appends, "
                    f"{total} bytes up to offset {binding.offset} ({binding.errors} errors); "
                    f"the stream holds {len(stream.ends)} appends, {stream.tail} bytes")

    def check_agreement(self, machines: dict) -> None:
        """Every replica (converged) holds the same state for every bound stream."""
        seen: dict[str, tuple] = {}
        for node_id, machine in machines.items():
            for (_, name), stream in machine.streams.items():
                binding = stream.compute
                if binding is None:
                    continue
                mine = (binding.offset, binding.records, state_digest(binding.state))
                first = seen.setdefault(name, (node_id, mine))
                if first[1] != mine:
                    raise Violation(f"compute: stream {name}: node {node_id} holds {mine}, "
                                    f"node {first[0]} {first[1]}")
