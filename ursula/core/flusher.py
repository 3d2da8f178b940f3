"""``Flusher``: the cold tier's writer (``IFlusher``). On every group this node leads, once the
group holds more than ``hot_bytes`` of hot (in-memory) stream bytes, it takes the oldest hot
bytes of the streams that hold the most, down to a low-water mark (``hot_bytes`` less a
quarter, at most ``chunk_bytes`` less), uploads them, then proposes one ``ColdFlushed`` per
stream range; every replica drops the bytes when it applies it. One stream's bytes go as one
chunk object (at most ``chunk_bytes``); the small ranges of several streams go together as
one pack (``ursula.cold.chunks``), so many small streams cost one upload, not one each.

* Pipelined: up to ``depth`` chunks of a group are in flight at once (uploading, or proposed
  and not yet applied), the next ranges planned past the ones in flight. Uploads run side by
  side; their ``ColdFlushed`` are proposed in plan order, so each applies at its stream's hot
  start (one that does not, because an earlier one failed, is refused by the state machine
  and changes nothing).
* Idempotent: a chunk's key is derived from the group, the stream's uid and the range (a
  pack's from the group and its ranges), so an upload retried (by this leader or the next)
  overwrites the same object; a ``ColdFlushed`` of a range already cold is a no-op in the
  state machine. A chunk object whose stream is gone by the time it commits is deleted again
  (a pack is left to the collection or the orphan sweep).
* Faults: a failed upload or delete is retried with exponential back-off (``backoff_max_s``),
  counted (``upload_errors``) and logged; after any failure the group plans nothing new until
  its chunks in flight are done, then plans again from the hot start. Appends go on meanwhile,
  until a group holds ``max_hot_bytes``: then ``admit`` refuses writes to it (503 with
  Retry-After), nothing acknowledged is dropped, and writes resume once flushing caught up.
* Collection: the chunks of dropped streams (``StreamMachine.cold_garbage``, replicated) are
  deleted from the store by the leader after the drop committed, then acknowledged with
  ``ColdCollected`` (never while the group has chunks in flight); a pack is deleted after the
  acknowledgement once no stream of the group refers to any of its chunks.
* Snapshots and retention: a snapshot blob published inline (``PublishSnapshot``) is stored
  as its own object (the chunk layout of ``[0, size)``, ``snapshot_key``), then
  ``SnapshotFlushed`` drops it from every replica's memory; a replaced or dropped snapshot's
  object, and the chunks a retention floor passed (``AdvanceRetention``), reach
  ``cold_garbage`` and are collected as above (a pack once no stream refers to it).
* Orphans: an upload whose ``ColdFlushed`` never applied (its leader lost the lead, an
  earlier chunk failed, the range was planned again with other bounds) leaves an object no
  stream references. Every ``sweep_interval_s`` the leader lists its group's keys
  (``g<group>/``) and deletes those that no stream of the group references (its own chunks,
  soft-deleted sources of forks included; a fork in another group only references chunks its
  source still holds), that are not in flight and that are older than ``orphan_grace_s`` (an
  upload of a deposed leader may still commit meanwhile).

May import: Twisted, zope.interface, ``ursula.cold``, ``ursula.stream``, ``ursula.core``.
"""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.logger import Logger
from zope.interface import implementer

from ursula.cold.chunks import (
    chunk_key,
    chunk_ref,
    encode_chunk,
    locate,
    object_key,
    pack_key,
    snapshot_key,
)
from ursula.core.interfaces import IFlusher
from ursula.stream import commands as C

log = Logger()

COLLECT_BATCH = 64


def _most_bytes_first(candidate):
    return -candidate[0]


class _Upload:
    """One object of a group in flight: a chunk of one stream, or a pack of several streams'
    small chunks; its ``ColdFlushed`` commands, and how far it got."""

    __slots__ = ("key", "commands", "size", "pack", "uploaded", "proposed", "pending",
                 "applied")

    def __init__(self, key: str, commands: list, pack: bool):
        self.key = key
        self.commands = commands
        self.size = sum(c.end - c.start for c in commands)
        self.pack = pack
        self.uploaded = False
        self.proposed = False
        self.pending = 0  # commands proposed whose outcome has not come back
        self.applied = 0


class _GroupPlan:
    """The uploads of one group in flight, in plan order, and where each stream's plan ends."""

    __slots__ = ("chunks", "ends", "bytes", "failed")

    def __init__(self):
        self.chunks: list[_Upload] = []
        self.ends: dict[int, int] = {}  # stream uid -> end of its last planned chunk
        self.bytes = 0  # hot bytes covered by the uploads in flight
        self.failed = False  # plan nothing new until the uploads in flight are done


@implementer(IFlusher)
class Flusher:
    def __init__(self, reactor, groups: dict, store, cache=None, hot_bytes: int = 32 << 20,
                 max_hot_bytes: int = 128 << 20, chunk_bytes: int = 4 << 20,
                 interval_s: float = 0.1, backoff_max_s: float = 30.0, depth: int = 4,
                 sweep_interval_s: float = 600.0, orphan_grace_s: float = 600.0,
                 pack_ranges: int = 256):
        self.reactor = reactor
        self.groups = groups
        self.store = store
        self.cache = cache
        self.hot_bytes = hot_bytes
        self.max_hot_bytes = max(max_hot_bytes, hot_bytes)
        self.chunk_bytes = chunk_bytes
        # a flush takes the group down to here, so that small streams go out in packs
        self.low_water_bytes = hot_bytes - min(hot_bytes // 4, chunk_bytes)
        self.pack_ranges = max(1, pack_ranges)
        self.interval_s = interval_s
        self.backoff_max_s = backoff_max_s
        self.depth = max(1, depth)
        self.sweep_interval_s = sweep_interval_s
        self.orphan_grace_s = orphan_grace_s
        self.sweeping: set[int] = set()
        self._last_sweep: dict[int, float] = {}
        self.busy: set[int] = set()  # groups collecting garbage
        self.snapshots_in_flight: set[tuple] = set()  # (group, uid, offset, digest)
        self.plans: dict[int, _GroupPlan] = {}
        self.retry_at: dict[int, float] = {}
        self.backoff: dict[int, float] = {}
        self.counts = {"uploads": 0, "uploaded_bytes": 0, "upload_errors": 0, "collected": 0,
                       "orphans_deleted": 0}
        self.stopped = False
        self._loop = None

    # -- IFlusher ----------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = task.LoopingCall(self.poll)
        self._loop.clock = self.reactor
        self._loop.start(self.interval_s, now=False)

    def stop(self) -> None:
        self.stopped = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def kick(self, group) -> None:
        machine = group.machine
        if machine.total_bytes > self.hot_bytes or machine.cold_garbage or \
                machine.snapshot_bytes:
            self._run(group)

    def admit(self, group):
        hot = group.machine.total_bytes
        if hot >= self.max_hot_bytes:
            return (f"group {group.group_id} holds {hot} hot bytes (the cap is "
                    f"{self.max_hot_bytes}): the cold tier is behind; retry later")
        return None

    def stats(self) -> dict:
        return dict(self.counts)

    def lag_bytes(self, group) -> int:
        """Hot bytes above the flush threshold (what is waiting for the cold tier)."""
        return max(0, group.machine.total_bytes - self.hot_bytes)

    # -- the work ----------------------------------------------------------------------------

    def poll(self) -> None:
        for group in self.groups.values():
            self._run(group)
            self._maybe_sweep(group)

    # -- orphans -----------------------------------------------------------------------------

    def _maybe_sweep(self, group) -> None:
        gid = group.group_id
        if self.stopped or not group.is_leader or gid in self.sweeping:
            return
        now = self.reactor.seconds()
        last = self._last_sweep.setdefault(gid, now)
        if now - last < self.sweep_interval_s:
            return
        self._last_sweep[gid] = now
        self.sweeping.add(gid)
        d = self.store.list(f"g{gid}/")
        d.addCallback(self._delete_orphans, group)
        d.addErrback(lambda failure: log.warn(
            "cold tier: the orphan sweep of group {group} failed ({error})", group=gid,
            error=failure.value))
        d.addBoth(lambda _: self.sweeping.discard(gid))

    def orphans(self, group, listing) -> list[str]:
        """The keys of ``listing`` (``[(key, modified)]``) that nothing of the group refers
        to, that are not in flight, and that are older than ``orphan_grace_s``."""
        referenced = self.referenced_objects(group)
        oldest = self.reactor.seconds() - self.orphan_grace_s
        return [key for key, modified in listing if key not in referenced and modified <= oldest]

    def referenced_objects(self, group) -> set[str]:
        """The keys of the objects that a stream of the group (or its garbage not yet
        collected, or an upload in flight) refers to."""
        machine = group.machine
        referenced = {object_key(chunk[2]) for stream in machine.streams.values()
                      for chunk in stream.chunks}
        referenced.update(object_key(key) for key in machine.cold_garbage)
        referenced.update(stream.snapshot.key for stream in machine.streams.values()
                          if stream.snapshot is not None and stream.snapshot.key is not None)
        gid = group.group_id
        referenced.update(snapshot_key(gid, uid, offset, digest)
                          for g, uid, offset, digest in self.snapshots_in_flight if g == gid)
        plan = self.plans.get(group.group_id)
        if plan is not None:
            referenced.update(upload.key for upload in plan.chunks)
        return referenced

    def _delete_orphans(self, listing, group):
        if not group.is_leader:
            return None
        keys = self.orphans(group, listing)
        if not keys:
            return None
        log.info("cold tier: deleting {count} orphaned objects of group {group}",
                 count=len(keys), group=group.group_id)
        if self.cache is not None:
            for key in keys:
                self.cache.forget(key)

        def deleted(results):
            self.counts["orphans_deleted"] += sum(1 for ok, _ in results if ok)
        return defer.DeferredList([self.store.delete(key) for key in keys],
                                  consumeErrors=True).addCallback(deleted)

    def in_flight(self, group_id: int) -> int:
        """How many of the group's chunks are uploading or proposed."""
        plan = self.plans.get(group_id)
        return 0 if plan is None else len(plan.chunks)

    def _run(self, group) -> None:
        gid = group.group_id
        plan = self.plans.get(gid)
        if plan is None:
            plan = self.plans[gid] = _GroupPlan()
        if not self._may_start(group, plan):
            return
        machine = group.machine
        if machine.cold_garbage and not plan.chunks:
            self._collect(group, list(machine.cold_garbage[:COLLECT_BATCH]))
            return
        if machine.snapshot_bytes:
            self._flush_snapshots(group)
        # (an upload may fail at once: the conditions are checked again for every chunk)
        while (len(plan.chunks) < self.depth
               and machine.total_bytes - plan.bytes > self.hot_bytes
               and self._may_start(group, plan)):
            if not self._plan_one(group, plan):
                break

    def _may_start(self, group, plan: _GroupPlan) -> bool:
        gid = group.group_id
        return not (self.stopped or plan.failed or gid in self.busy or not group.is_leader
                    or self.reactor.seconds() < self.retry_at.get(gid, 0.0))

    def _plan_one(self, group, plan: _GroupPlan) -> bool:
        """Plan and start uploading the next object; False if there is nothing to flush.

        The stream with the most unplanned hot bytes goes first. When its bytes alone bring
        the group down to its low-water mark (or fill a chunk), they go as one chunk object;
        otherwise the next streams' bytes join them in one pack (up to ``chunk_bytes`` and
        ``pack_ranges`` ranges), so that many small streams cost one upload, not one each."""
        ends = plan.ends
        machine = group.machine
        candidates = []
        for stream in machine.streams.values():
            if not stream.data:
                continue
            first = max(stream.base, ends.get(stream.uid, 0))
            if stream.tail > first:
                candidates.append((stream.tail - first, first, stream))
        if not candidates:
            return False
        wanted = max(1, machine.total_bytes - plan.bytes - self.low_water_bytes)
        candidates.sort(key=_most_bytes_first)
        picked, size = [], 0
        for left, first, stream in candidates:
            take = min(left, self.chunk_bytes - size)
            picked.append((stream, first, first + take))
            size += take
            if size >= wanted or size >= self.chunk_bytes or len(picked) >= self.pack_ranges:
                break
        gid = group.group_id
        commands, parts = [], []
        if len(picked) == 1:
            stream, start, end = picked[0]
            key = chunk_key(gid, stream.uid, stream.bucket, stream.name, start, end)
            blob, checksum = encode_chunk(start, end, stream.slice(start, end))
            commands.append(C.ColdFlushed(stream.bucket, stream.name, stream.uid, start, end,
                                          key, checksum))
            parts.append(blob)
        else:
            key = pack_key(gid, [(stream.uid, start, end) for stream, start, end in picked])
            offset = 0
            for stream, start, end in picked:
                blob, checksum = encode_chunk(start, end, stream.slice(start, end))
                commands.append(C.ColdFlushed(stream.bucket, stream.name, stream.uid, start,
                                              end, chunk_ref(key, offset), checksum))
                parts.append(blob)
                offset += len(blob)
        for stream, _, end in picked:
            ends[stream.uid] = end
        upload = _Upload(key, commands, pack=len(picked) > 1)
        plan.chunks.append(upload)
        plan.bytes += upload.size
        d = self.store.put(key, parts[0] if len(parts) == 1 else b"".join(parts))
        d.addCallbacks(self._uploaded, self._upload_failed, callbackArgs=(group, plan, upload),
                       errbackArgs=(group, plan, upload))
        return True

    def _uploaded(self, _, group, plan: _GroupPlan, upload: _Upload) -> None:
        upload.uploaded = True
        self.backoff.pop(group.group_id, None)
        if plan.failed:
            self._done(group, plan, upload)  # not proposed: the ranges are planned again
            return
        for ready in plan.chunks:  # propose in plan order, as far as uploads have got
            if not ready.uploaded:
                break
            if not ready.proposed:
                ready.proposed = True
                ready.pending = len(ready.commands)
                for command in ready.commands:
                    group.submit(command).addCallbacks(
                        self._flushed, self._not_proposed,
                        callbackArgs=(group, plan, ready, command),
                        errbackArgs=(group, plan, ready))

    def _upload_failed(self, failure, group, plan: _GroupPlan, upload: _Upload) -> None:
        self._back_off(failure, group, f"upload of {upload.key}")
        self._abandon(group, plan)
        self._done(group, plan, upload)

    def _abandon(self, group, plan: _GroupPlan) -> None:
        """An upload failed, or one of its commands did not apply: so do the uploaded objects
        that wait to be proposed (the ones uploading are done when their upload ends, the
        proposed ones when their commands' outcomes are in)."""
        plan.failed = True
        # the next plan waits for a poll at least (a proposal dropped while this node still
        # leads must not be re-planned and re-proposed in a tight loop)
        gid = group.group_id
        self.retry_at[gid] = max(self.retry_at.get(gid, 0.0),
                                 self.reactor.seconds() + self.interval_s)
        for waiting in [c for c in plan.chunks if c.uploaded and not c.proposed]:
            plan.chunks.remove(waiting)
            plan.bytes -= waiting.size

    def _flushed(self, outcome, group, plan: _GroupPlan, upload: _Upload, command) -> None:
        if outcome.error == "not_found":  # the stream went away
            if not upload.pack:  # the object is garbage (a pack waits for its other streams)
                self.store.delete(command.key).addErrback(lambda _: None)
        elif outcome.error is None:
            if not outcome.duplicate:
                upload.applied += 1
                self.counts["uploaded_bytes"] += command.end - command.start
        else:  # not at the hot start: an earlier chunk failed
            self._abandon(group, plan)
        self._answered(group, plan, upload)

    def _not_proposed(self, failure, group, plan: _GroupPlan, upload: _Upload) -> None:
        """Leadership moved (or the proposal may not commit): the next leader flushes."""
        self._abandon(group, plan)
        self._answered(group, plan, upload)

    def _answered(self, group, plan: _GroupPlan, upload: _Upload) -> None:
        upload.pending -= 1
        if upload.pending == 0:
            if upload.applied:
                self.counts["uploads"] += 1
            self._done(group, plan, upload)

    def _done(self, group, plan: _GroupPlan, upload: _Upload) -> None:
        if upload in plan.chunks:
            plan.chunks.remove(upload)
            plan.bytes -= upload.size
        if not plan.chunks:
            plan.ends.clear()  # every range planned is applied or abandoned
            plan.failed = False
        self._run(group)

    def _flush_snapshots(self, group) -> None:
        """Store the group's inline snapshot blobs in the cold tier, then ``SnapshotFlushed``."""
        gid = group.group_id
        for stream in list(group.machine.streams.values()):
            snap = stream.snapshot
            if snap is None or snap.blob is None:
                continue
            token = (gid, stream.uid, snap.offset, snap.digest)
            if token in self.snapshots_in_flight:
                continue
            self.snapshots_in_flight.add(token)
            key = snapshot_key(gid, stream.uid, snap.offset, snap.digest)
            blob, checksum = encode_chunk(0, snap.size, snap.blob)
            command = C.SnapshotFlushed(stream.bucket, stream.name, stream.uid, snap.offset,
                                        snap.digest, key, checksum)
            d = self.store.put(key, blob)
            d.addCallback(lambda _, command=command: group.submit(command))
            d.addCallbacks(self._snapshot_flushed, self._snapshot_failed,
                           callbackArgs=(group, command), errbackArgs=(group, key))
            d.addBoth(lambda _, token=token: self.snapshots_in_flight.discard(token))

    def _snapshot_flushed(self, outcome, group, command) -> None:
        if outcome.error is not None:  # replaced or dropped meanwhile: the object is garbage
            self.store.delete(command.key).addErrback(lambda _: None)
        else:
            self.counts["snapshots"] = self.counts.get("snapshots", 0) + 1

    def _snapshot_failed(self, failure, group, key: str) -> None:
        self._back_off(failure, group, f"upload of snapshot {key}")

    def _collect(self, group, keys: list[str]) -> None:
        """Delete the objects of dropped chunks, then acknowledge them (``ColdCollected``). A
        pack is deleted once none of its chunks is referenced any more (after the
        acknowledgement); until then only the reference goes."""
        gid = group.group_id
        self.busy.add(gid)
        if self.cache is not None:
            for key in keys:
                self.cache.forget(key)
        whole = [key for key in keys if locate(key)[1] is None]
        packs = sorted({object_key(key) for key in keys if locate(key)[1] is not None})
        d = defer.gatherResults([self.store.delete(key) for key in whole], consumeErrors=True)

        def deleted(_):
            return group.submit(C.ColdCollected(tuple(keys))).addCallbacks(
                lambda _: self._collected(group, len(keys), packs),
                lambda _: self.busy.discard(group.group_id))  # leadership moved: the next leader
        d.addCallbacks(deleted, self._failed, errbackArgs=(group, f"delete of {keys[0]}"))

    def _collected(self, group, count: int, packs=()) -> None:
        self.busy.discard(group.group_id)
        self.counts["collected"] += count
        if packs:
            referenced = self.referenced_objects(group)
            for key in packs:
                if key not in referenced:
                    self.store.delete(key).addErrback(lambda f, key=key: log.warn(
                        "cold tier: delete of pack {key} failed ({error}); the orphan sweep "
                        "retries", key=key, error=f.value))
        self._run(group)

    def _failed(self, failure, group, what: str) -> None:
        self.busy.discard(group.group_id)
        self._back_off(failure, group, what)

    def _back_off(self, failure, group, what: str) -> None:
        gid = group.group_id
        self.counts["upload_errors"] += 1
        error = getattr(failure.value, "subFailure", failure).value
        now = self.reactor.seconds()
        if now < self.retry_at.get(gid, 0.0):
            # another chunk of the same round failed: one back-off step per round
            log.debug("cold tier: {what} failed ({error})", what=what, error=error)
            return
        delay = min(self.backoff_max_s, self.backoff.get(gid, 0.1) * 2)
        self.backoff[gid] = delay
        self.retry_at[gid] = now + delay
        log.warn("cold tier: {what} failed ({error}); retrying in {delay:.1f} s", what=what,
                 error=error, delay=delay)
