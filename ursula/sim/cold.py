"""The cold tier in the simulator: a shared object store with faults, a flusher on the leader,
and reads that stitch cold chunks to hot bytes (``Simulation(cold=True)``, ``--cold``).

What lives here:

- `SimColdStore`: key -> payload, shared by every node and surviving every crash (S3). An
  upload completes after a random delay; it fails with a small probability, and always while
  an outage lasts (`outage(until)`, a fault the run schedules from its own random stream);
- `SimFlusher`: what ``ursula.core.flusher.Flusher`` does, on a replica while it leads: above
  ``hot_bytes`` it plans objects down to a low-water mark, from the hot starts of the streams
  that hold the most: one stream's range alone (at most ``chunk_bytes``), or the ranges of
  several streams packed in one object (chunk references ``<key>#<offset>``); up to ``depth``
  in flight, uploaded side by side, their ``ColdFlushed`` proposed in plan order once
  uploaded; any failure (an upload, a lost proposal, a refused range) stops the plan until the
  objects in flight are done. It is lost when its replica crashes;
- `stitched_read`: a replica's whole stream, its cold spans fetched from the store: a span
  whose object is missing or fails its checksum is a violation (the state machine may only
  reference a chunk that is stored, whole).

Planted twins (``BROKEN_RULES`` of ``ursula.sim.run``): ``flush_before_upload`` proposes a
chunk's ``ColdFlushed`` when it is planned, before its upload is done (or even succeeded);
``chunk_key_per_stream`` names chunks by stream only, so a later chunk overwrites an older
one's object; ``pack_refs_at_zero`` refers every chunk of a pack to the pack's first bytes.

May import: the standard library, ursula.stream and ursula.sim.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

from ursula.sim.checker import Violation
from ursula.stream import commands as C
from ursula.stream import encode_command

if TYPE_CHECKING:
    from ursula.sim.replica import Replica

MS = 1000


class SimColdStore:
    def __init__(self, world, rng, fail_p: float = 0.02, max_delay: int = 20 * MS) -> None:
        self.world = world
        self.rng = rng
        self.fail_p = fail_p
        self.max_delay = max_delay
        self.objects: dict[str, bytes] = {}
        self.down_until = 0
        self.uploads = 0
        self.failures = 0  # uploads that failed
        self.abandoned = 0  # chunks a flusher gave up (failed upload, lost or refused proposal)

    def outage(self, until: int) -> None:
        self.down_until = max(self.down_until, until)

    def put(self, key: str, payload: bytes, done) -> None:
        """Store ``payload`` under ``key`` after a delay, then ``done(ok)``."""
        def finish():
            if self.world.now < self.down_until or self.rng.random() < self.fail_p:
                self.failures += 1
                done(False)
                return
            self.objects[key] = payload
            self.uploads += 1
            done(True)
        self.world.after(self.rng.randint(0, self.max_delay), finish)


def stitched_read(machine, store: SimColdStore, bucket: str, stream: str, now_ms: int,
                  where: str) -> bytes:
    """The stream's bytes from offset 0: cold spans from the store, then the hot bytes."""
    result = machine.read(bucket, stream, 0, 1 << 30, now_ms)
    parts = []
    for start, end, ref, checksum, c_start, c_end in result.cold:
        key, _, offset = ref.partition("#")
        payload = store.objects.get(key)
        if payload is not None and offset:
            payload = payload[int(offset):int(offset) + c_end - c_start]
        if payload is None:
            raise Violation(f"cold: {where} references chunk {key} of {stream} "
                            f"[{c_start}, {c_end}), which the store does not hold")
        if len(payload) != c_end - c_start or zlib.crc32(payload) != checksum:
            raise Violation(f"cold: chunk {key} of {stream} fails its checksum at {where} "
                            f"(its object holds other bytes)")
        parts.append(payload[start - c_start:end - c_start])
    parts.append(result.data)
    return b"".join(parts)


class _Chunk:
    """One object in flight: its ``ColdFlushed`` commands (one per stream range)."""

    __slots__ = ("commands", "size", "uploaded", "proposed", "pending", "refused")

    def __init__(self, commands: list) -> None:
        self.commands = commands
        self.size = sum(c.end - c.start for c in commands)
        self.uploaded = False
        self.proposed = False
        self.pending = 0
        self.refused = False


class SimFlusher:
    def __init__(self, replica: Replica, store: SimColdStore, hot_bytes: int, chunk_bytes: int,
                 depth: int, broken: str | None = None) -> None:
        self.replica = replica
        self.store = store
        self.hot_bytes = hot_bytes
        self.chunk_bytes = chunk_bytes
        self.depth = depth
        self.broken = broken
        self.chunks: list[_Chunk] = []
        self.ends: dict[int, int] = {}
        self.planned = 0
        self.failed = False
        self.retry_at = 0

    def tick(self) -> None:
        replica = self.replica
        if not replica.driver.is_leader or self.failed or replica.sim.world.now < self.retry_at:
            return
        machine = replica.machine
        while len(self.chunks) < self.depth and machine.total_bytes - self.planned > self.hot_bytes:
            if not self._plan_one(machine):
                return

    def _plan_one(self, machine) -> bool:
        candidates = []
        for stream in machine.streams.values():
            first = max(stream.base, self.ends.get(stream.uid, 0))
            if stream.tail > first:
                candidates.append((stream.tail - first, stream.uid, first, stream))
        if not candidates:
            return False
        low_water = self.hot_bytes - min(self.hot_bytes // 4, self.chunk_bytes)
        wanted = max(1, machine.total_bytes - self.planned - low_water)
        candidates.sort(key=lambda c: (-c[0], c[1]))
        picked, size = [], 0
        for left, _, first, stream in candidates:
            take = min(left, self.chunk_bytes - size)
            picked.append((stream, first, first + take))
            size += take
            if size >= wanted or size >= self.chunk_bytes:
                break
        commands, parts = [], []
        if len(picked) == 1:
            stream, start, end = picked[0]
            if self.broken == "chunk_key_per_stream":
                key = f"g0/s{stream.uid}"
            else:
                key = f"g0/s{stream.uid}/{start:016x}-{end:016x}"
            refs = [key]
        else:
            key = "g0/packs/" + "+".join(f"{s.uid}:{a:x}-{b:x}" for s, a, b in picked)
            refs, offset = [], 0
            for _, start, end in picked:
                at_zero = self.broken == "pack_refs_at_zero"
                refs.append(f"{key}#{0 if at_zero else offset}")
                offset += end - start
        for (stream, start, end), ref in zip(picked, refs, strict=True):
            payload = bytes(stream.slice(start, end))
            parts.append(payload)
            commands.append(C.ColdFlushed(stream.bucket, stream.name, stream.uid, start, end,
                                          ref, zlib.crc32(payload)))
            self.ends[stream.uid] = end
        chunk = _Chunk(commands)
        self.chunks.append(chunk)
        self.planned += chunk.size
        inc = self.replica.incarnation
        self.store.put(key, b"".join(parts),
                       lambda ok: self.replica.event(inc, self._uploaded, chunk, ok))
        if self.broken == "flush_before_upload":
            chunk.uploaded = True
            self._propose_ready()
        return True

    def _uploaded(self, chunk: _Chunk, ok: bool) -> None:
        if self.broken == "flush_before_upload":
            return
        if not ok:
            self.retry_at = self.replica.sim.world.now + 50 * MS
            self._abandon(chunk)
            self._done(chunk)
            return
        chunk.uploaded = True
        if self.failed:
            self._done(chunk)
            return
        self._propose_ready()

    def _propose_ready(self) -> None:
        for chunk in self.chunks:
            if not chunk.uploaded:
                break
            if not chunk.proposed:
                chunk.proposed = True
                chunk.pending = len(chunk.commands)
                for command in chunk.commands:
                    self.replica.propose_internal(
                        encode_command(command), command,
                        lambda answer, chunk=chunk: self._answered(chunk, answer))

    def _answered(self, chunk: _Chunk, answer: tuple) -> None:
        kind, outcome = answer
        if kind != "ok" or outcome.error is not None:
            if not chunk.refused:
                chunk.refused = True
                self._abandon(chunk)
        chunk.pending -= 1
        if chunk.pending == 0:
            self._done(chunk)

    def _abandon(self, chunk: _Chunk) -> None:
        self.store.abandoned += 1
        self.failed = True
        for waiting in [c for c in self.chunks if c.uploaded and not c.proposed]:
            self._drop(waiting)

    def _drop(self, chunk: _Chunk) -> None:
        if chunk in self.chunks:
            self.chunks.remove(chunk)
            self.planned -= chunk.size

    def _done(self, chunk: _Chunk) -> None:
        self._drop(chunk)
        if not self.chunks:
            self.ends.clear()
            self.failed = False
