"""One simulated replica: the node's own `GroupDriver` over a fake disk, a network and a clock.

What lives here: `Replica`.  All Raft and state-machine logic is in
`ursula.replica.GroupDriver`, the class the node runtime runs; this module only supplies the
I/O around it, as `ursula.core.group` does for a real node:

- the clock: `tick()` every `tick_interval` (skewed per node);
- one turn of the event loop: after any input, a turn is scheduled after 0 delay (so every
  request that arrives at one instant is batched): `flush(now)`, then `ready()`; the Work's
  `send_now` messages go out at once (the leader's parallel write) and `persisted()` is called
  after the simulated fsync delay; then `Output.messages` are sent, outcomes and reads are
  answered (a read gets the machine's data at release time) and a requested snapshot is
  saved (`snapshot_saved` after another disk delay);
- the disk (`ursula.sim.disk.FakeDisk`): it survives `crash()`; the driver, the machine,
  the Work being written and every waiting request are lost, as after a power cut.
  `restart()` builds a new driver from the disk;
- a frozen process (`freeze(until)`, like SIGSTOP): no ticks, no message handling, no disk
  completions and no client requests until `until`; everything that arrives meanwhile is
  queued and handled on resume, in an order shuffled from the seed (a woken reactor finds
  all its sockets readable at once), with the old in-memory state;
- a slow disk (`slow_disk(until, max_delay)`): fsyncs take up to `max_delay` until `until`;
- client requests: proposed with their decoded form. The planted twin ``ifmatch_at_submit``
  (``BROKEN_RULES`` of ``ursula.sim.run``) judges If-Match here, against this node's applied
  tail, instead of in the state machine at apply.

May import: the standard library, cbor2, ursula.raft, ursula.stream, ursula.replica and
ursula.sim.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import cbor2

from ursula.raft import LEADER, Config
from ursula.raft.messages import from_wire
from ursula.replica import GroupDriver, Rejection, SnapshotPolicy
from ursula.sim.checker import Violation
from ursula.sim.disk import FakeDisk
from ursula.stream import commands as C
from ursula.stream import decode_command, encode_command
from ursula.stream.machine import Outcome, StreamError

if TYPE_CHECKING:
    from ursula.sim.run import Simulation

Reply = Callable[[tuple], Any]
_KINDS = {C.CreateStream: "create", C.Append: "append", C.AppendBatch: "batch"}


class Replica:
    def __init__(self, sim: Simulation, nid: int, skew: float) -> None:
        self.sim = sim
        self.id = nid
        self.disk = FakeDisk(sim.ids, sim.disk_mode)
        self.tick_interval = int(sim.tick_us * (1.0 + skew))
        self.incarnation = 0
        self.up = False
        self.driver: GroupDriver | None = None
        self.restarts = 0
        self.frozen_until = 0
        self.frozen_queue: list[tuple] = []
        self.slow_until = 0
        self.slow_max = 0
        self.start()

    @property
    def storage(self):
        return self.disk.storage

    @property
    def node(self):
        return self.driver.node

    @property
    def machine(self):
        return self.driver.machine

    @property
    def applied(self) -> int:
        return self.driver.applied

    @property
    def frozen(self) -> bool:
        return self.sim.world.now < self.frozen_until

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        sim = self.sim
        self.incarnation += 1
        cfg = Config(id=self.id, **sim.raft_config)
        # with compact_keep = 50 the kept entries are bounded by bytes too (about a dozen
        # entries), so followers behind that get a snapshot sooner
        policy = SnapshotPolicy(every=sim.snapshot_every, keep=sim.compact_keep, log_bytes=1 << 40,
                                keep_bytes=800 if sim.compact_keep == 50 else 1 << 40)
        self.driver = GroupDriver(
            0, self.storage, cfg, random.Random(sim.rng.getrandbits(64)), policy=policy,
            record_applied=True, broken=sim.driver_rules, hold_bytes=sim.hold_bytes,
        )
        self.last_applied = self.driver.applied
        self.flusher = sim.new_flusher(self) if sim.cold else None
        self.turn_scheduled = False
        self.led_term = -1
        self.up = True
        inc = self.incarnation
        # recovery: what the disk holds must still match every other log (log matching)
        st = self.storage
        if len(st.ents) > 1:
            sim.checker.on_persist(self.id, st.ents[1:], self.node.log)
        if self.disk.mode == "lazy_fsync":
            self.disk.background_sync()
            sim.world.after(sim.rng.randint(5, 60) * 1000, self._sync_disk, inc)
        sim.world.after(sim.rng.randint(0, self.tick_interval), self._event, inc, self._tick)
        self._after_event()

    def _sync_disk(self, inc: int) -> None:
        if inc != self.incarnation:
            return
        self.disk.background_sync()
        self.sim.world.after(self.sim.rng.randint(5, 60) * 1000, self._sync_disk, inc)

    def crash(self) -> None:
        self.disk.crash()
        self.up = False
        self.incarnation += 1
        self.driver = None
        self.frozen_until = 0
        self.frozen_queue = []

    def restart(self) -> None:
        self.restarts += 1
        self.start()

    # -- faults of the process and its disk ----------------------------------------------------
    def freeze(self, until: int) -> None:
        if not self.up or self.frozen:
            return
        self.frozen_until = until
        self.sim.world.at(until, self._thaw, self.incarnation)

    def _thaw(self, inc: int) -> None:
        if inc != self.incarnation:
            return
        self.frozen_until = 0
        queue, self.frozen_queue = self.frozen_queue, []
        self.sim.rng.shuffle(queue)
        for args in queue:
            self._event(*args)

    def slow_disk(self, until: int, max_delay: int) -> None:
        self.slow_until = until
        self.slow_max = max_delay

    def disk_delay(self) -> int:
        if self.sim.world.now < self.slow_until:
            return self.sim.rng.randint(self.slow_max // 4, self.slow_max)
        return self.sim.disk_delay()

    # -- every input goes through here ----------------------------------------------------------
    def event(self, inc: int, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` as an input of incarnation ``inc`` (dropped if it crashed since,
        queued while frozen): for the I/O around the replica, such as cold-tier uploads."""
        self._event(inc, fn, *args)

    def _event(self, inc: int, fn: Callable[..., Any], *args: Any) -> None:
        if inc != self.incarnation or not self.up:
            return  # crashed meanwhile: lost
        if self.frozen:
            self.frozen_queue.append((inc, fn, *args))
            return
        fn(*args)
        self._after_event()

    def _after_event(self) -> None:
        node = self.driver.node
        if node.role == LEADER:
            chk = self.sim.checker
            chk.on_leader(self.id, node.term)
            if self.led_term != node.term:
                self.led_term = node.term
                chk.on_new_leader(self.id, node.term, node.log)
            chk.on_leader_commit(self.id, node.term, node.committed,
                                 node.log.term(node.committed))
        if not self.turn_scheduled and self.driver.has_work():
            self.turn_scheduled = True
            self.sim.world.after(0, self._event, self.incarnation, self._turn)

    def _tick(self) -> None:
        self.driver.tick()
        if self.flusher is not None:
            self.flusher.tick()
        self.sim.world.after(self.tick_interval, self._event, self.incarnation, self._tick)

    def deliver(self, msg: Any) -> None:
        if self.up:
            self._event(self.incarnation, self._step, msg)

    def _step(self, msg: Any) -> None:
        if self.sim.wire:
            msg = from_wire(cbor2.loads(msg))
        self.driver.step(msg)

    def _send(self, messages) -> None:
        sim = self.sim
        for m in messages:
            dst = sim.replicas[m.dst]
            payload = cbor2.dumps(m.to_wire()) if sim.wire else m
            sim.net.send(self.id, m.dst, dst.deliver, payload)

    # -- one turn of the event loop -------------------------------------------------------------
    def _turn(self) -> None:
        self.turn_scheduled = False
        driver = self.driver
        for token, rejection in driver.flush(self.sim.world.now_ms):
            self._answer(token, rejection)
        try:
            work = driver.ready()  # applies the committed entries that were durable already
        except (AssertionError, Violation):
            raise
        except Exception as err:  # e.g. a torn record that does not decode
            self.sim.checker.fail(f"node {self.id} could not apply its log: "
                                  f"{type(err).__name__}: {err}")
        if work is None:
            return
        if work.send_now:
            self._send(work.send_now)
        self.disk.write_started(work)
        # the term before the Work's first entry, as the log was when the Work was made: by
        # the time the write is done the log in memory may already hold a newer leader's
        # entries there (they are written by the next Work)
        prev_term = driver.node.log.term(work.entries[0].index - 1) if work.entries else None
        self.sim.world.after(self.disk_delay(), self._event, self.incarnation,
                             self._persisted, work, prev_term)
        if work.applied_now is not None:
            self._carry_out(work.applied_now)

    def _persisted(self, work, prev_term=None) -> None:
        sim = self.sim
        chk = sim.checker
        driver = self.driver
        if work.entries:
            chk.on_persist(self.id, work.entries, driver.node.log, prev_term)
        previous = self.storage.snapshot()
        try:
            out = driver.persisted()
        except (AssertionError, Violation):
            raise
        except Exception as err:  # e.g. a torn record that does not decode
            chk.fail(f"node {self.id} could not apply its log: {type(err).__name__}: {err}")
        self.disk.write_done()
        if out.installed_snapshot:
            sim.snapshots_installed += 1
            # entries applied after the installed snapshot come in out.applied
            self.last_applied = out.applied[0].index - 1 if out.applied else driver.applied
        if out.messages:
            self._send(out.messages)
        self._carry_out(out)
        if out.snapshot is not None:
            snap = out.snapshot
            self.disk.snapshot_started(snap, previous)
            sim.world.after(self.disk_delay(), self._event, self.incarnation,
                            self._snapshot_saved, snap)

    def _carry_out(self, out) -> None:
        """Check the applied entries of an Output, answer its outcomes and reads."""
        sim = self.sim
        driver = self.driver
        for e in out.applied:
            self._check_applied(e)
        self.last_applied = max(self.last_applied, driver.applied)
        for token, result in out.outcomes:
            self._answer(token, result)
        for token in out.reads:
            stream, reply = token
            try:
                reply(("read", sim.read_stream(driver.machine, stream, f"node {self.id}")))
            except StreamError as err:
                reply(("read_error", err.code))

    def _snapshot_saved(self, snap) -> None:
        self.disk.snapshot_done()
        self.driver.snapshot_saved(snap)

    def _check_applied(self, e) -> None:
        chk = self.sim.checker
        if e.index != self.last_applied + 1:
            chk.fail(f"node {self.id} applied index {e.index} after {self.last_applied}")
        self.last_applied = e.index
        rids = None
        if e.data:
            decoded = cbor2.loads(e.data)
            rids = decoded[2] if len(decoded) > 2 else None
        outs = []
        effects = []
        for i, (cmd, out) in enumerate(e.results):
            outs.append(out)
            kind = _KINDS.get(type(cmd))
            if kind is not None:
                effects.append((rids[i] if rids is not None else None, cmd.stream, kind,
                                getattr(cmd, "if_match", None), out.error,
                                out.duplicate or (kind == "create" and not out.created),
                                out.start_offset, out.next_offset))
            if isinstance(cmd, C.Append) and out.error is None and not out.duplicate:
                if cmd.producer is not None:
                    key = (cmd.producer.id, cmd.producer.seq)
                elif rids is not None and rids[i]:
                    who, _, seq = rids[i].rpartition(":")
                    key = (who, int(seq))
                else:
                    continue
                chk.on_write(key[0], key[1], cmd.stream, out.start_offset, out.next_offset,
                             e.index)
        summary = tuple((o.error, o.duplicate, o.start_offset, o.next_offset) for o in outs)
        chk.on_apply(self.id, e.index, e.term, e.data, summary)
        chk.on_applied_appends(e.index, effects)

    def _answer(self, token, result) -> None:
        reply = token[1] if isinstance(token, tuple) else token
        if isinstance(result, Rejection):
            if result.kind == "not_leader":
                reply(("not_leader", result.leader))
            elif result.kind == "retry":
                reply(("retry", None))
            return
        reply(("ok", result))

    # -- client requests (from the client network) ----------------------------------------------
    def submit(self, cmd: bytes, request_id: str | None, reply: Reply) -> None:
        if self.up:
            self._event(self.incarnation, self._submit, cmd, request_id, reply)

    def _submit(self, cmd: bytes, request_id: str | None, reply: Reply) -> None:
        # with its decoded form, as the node runtime does: the leader applies its own entries
        # without decoding them (the checker compares its outcomes with the followers')
        decoded = decode_command(cmd)
        if self.sim.sim_rule == "ifmatch_at_submit" and getattr(decoded, "if_match", None) \
                is not None:
            # planted twin: If-Match judged where the request arrives, against this node's
            # applied tail, and the append then proposed without it (a check outside the
            # state machine: two writers expecting the same tail can both pass it)
            try:
                tail = self.machine.head(decoded.bucket, decoded.stream,
                                         self.sim.world.now_ms).tail
            except StreamError:
                tail = None
            if tail is not None and tail != decoded.if_match:
                reply(("ok", Outcome(error="precondition_failed", next_offset=tail)))
                return
            decoded = dataclasses.replace(decoded, if_match=None)
            cmd = encode_command(decoded)
        rejection = self.driver.propose(reply, cmd, request_id, decoded)
        if rejection is not None:
            self._answer(reply, rejection)

    def propose_internal(self, raw: bytes, cmd, reply: Reply) -> None:
        """A command of the node itself (the cold tier's ColdFlushed), without a request id;
        ``reply`` gets what a client would."""
        rejection = self.driver.propose(reply, raw, None, cmd)
        if rejection is not None:
            self._answer(reply, rejection)

    def submit_read(self, stream: str, reply: Reply) -> None:
        if self.up:
            self._event(self.incarnation, self._submit_read, stream, reply)

    def _submit_read(self, stream: str, reply: Reply) -> None:
        token = (stream, reply)
        rejection = self.driver.read(token)
        if rejection is not None:
            self._answer(token, rejection)

    def transfer_leadership(self, to: int) -> None:
        if self.up and not self.frozen and self.driver.is_leader:
            self._event(self.incarnation, self.driver.transfer_leadership, to)
