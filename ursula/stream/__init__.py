"""The replicated state machine of one group: streams, buckets, producers, TTL, close, forks.

``StreamMachine.apply(command, now_ms) -> Outcome`` is the only way state changes; reads are
pure queries that also take ``now_ms``. ``snapshot()`` / ``StreamMachine.restore()`` use cbor2.
Deterministic: time comes inside every call, nothing reads a clock.

May import: the standard library, cbor2 and ``ursula.protocol``. Never Twisted.
"""

from ursula.stream import commands
from ursula.stream.commands import decode_command, encode_command
from ursula.stream.machine import Outcome, ReadResult, StreamInfo, StreamMachine

__all__ = [
    "Outcome", "ReadResult", "StreamInfo", "StreamMachine", "commands", "decode_command",
    "encode_command",
]
