"""The Raft entry format of the stream state machine: ``[now_ms, [command bytes, ...]]``.

The leader batches every command of one turn into one entry stamped with its own clock, so
every replica applies the same commands at the same time. One place for the format, used by
the node runtime and the simulator.

May import: cbor2 and ``ursula.stream`` modules.
"""

from __future__ import annotations

import cbor2

from ursula.stream.commands import decode_command


def encode_entry(now_ms: int, raw_commands: list[bytes]) -> bytes:
    return cbor2.dumps([now_ms, raw_commands])


def apply_entry(machine, data: bytes) -> list[tuple[object, object]]:
    """Apply an entry's commands in order; ``[(command, outcome), ...]`` (empty for no data)."""
    if not data:
        return []
    now_ms, raw_commands = cbor2.loads(data)
    applied = []
    for raw in raw_commands:
        command = decode_command(raw)
        applied.append((command, machine.apply(command, now_ms)))
    return applied
