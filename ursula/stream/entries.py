"""The Raft entry format of the stream state machine:
``[now_ms, [command bytes, ...]]`` or ``[now_ms, [command bytes, ...], [request id, ...]]``.

The leader batches every command of one turn into one entry stamped with its own clock, so
every replica applies the same commands at the same time. One place for the format, used by
the group driver (and so by the node runtime and the simulator alike).

A request id (a string, or None) names one client request across retries: a command whose id
the machine has already applied is not applied again, and the first outcome is answered instead
(Raft thesis 6.3). The forwarder relies on it to re-route a request away from a leader that went
silent without applying it twice.

May import: cbor2 and ``ursula.stream`` modules.
"""

from __future__ import annotations

import cbor2

from ursula.stream.commands import decode_command


def encode_entry(now_ms: int, raw_commands: list[bytes],
                 request_ids: list[str | None] | None = None) -> bytes:
    if request_ids is None or not any(request_ids):
        return cbor2.dumps([now_ms, raw_commands])
    return cbor2.dumps([now_ms, raw_commands, request_ids])


def apply_entry(machine, data: bytes, dedup: bool = True) -> list[tuple[object, object]]:
    """Apply an entry's commands in order; ``[(command, outcome), ...]`` (empty for no data).

    ``dedup=False`` ignores request ids (a planted broken rule for the simulator only)."""
    if not data:
        return []
    decoded = cbor2.loads(data)
    now_ms, raw_commands = decoded[0], decoded[1]
    request_ids = decoded[2] if len(decoded) > 2 else None
    return apply_commands(machine, now_ms, [decode_command(raw) for raw in raw_commands],
                          request_ids, dedup)


def apply_commands(machine, now_ms: int, commands: list, request_ids: list | None,
                   dedup: bool = True) -> list[tuple[object, object]]:
    """``apply_entry`` of an entry whose commands are decoded already (the leader keeps the
    commands it proposed, so that it does not decode its own entries again)."""
    applied = []
    for i, command in enumerate(commands):
        request_id = request_ids[i] if request_ids is not None and dedup else None
        applied.append((command, machine.apply_request(request_id, command, now_ms)))
    return applied
