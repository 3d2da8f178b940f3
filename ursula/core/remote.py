"""Groups this node does not host (``[cluster] replication`` below the node count): where they
are, and every call for them carried to a node that hosts them.

* ``RemoteGroup``: one group's members (voters and learners, as last learned) and leader hint.
  It looks enough like a ``GroupReplica`` for the ``Forwarder`` (``is_leader`` False,
  ``node.leader``, ``wait_for_leader``), so writes take the forwarder's path unchanged: a
  request id, retries, re-routing. What it knows starts from the group's initial voters
  (``ursula.core.placement.initial_voters``) and is corrected by every answer: a host answers
  with the leader it knows and the group's membership; a node that does not host the group
  answers ``not_member`` (and its own hint). With no leader known, ``find`` asks the members
  it knows, then every other peer, ``where`` the group is.
* ``call``: a read-side operation (``head``, ``read``, ``view``, ``list``, ``wait``) sent to
  the leader if known, else to a member, with retries to the next candidate until the
  deadline. The host runs a ReadIndex barrier before it answers (so a read through a node
  that does not host the group is linearizable, like a local one).
* ``RemoteSubscription``: a live reader of a stream of a remote group: a forwarded ``wait``
  that the host answers when the stream moves past what the reader saw (or after
  ``WAIT_S``; a spurious wake-up, the reader reads again).
* ``serve``: the host's side of those operations.

May import: Twisted, cbor2, ``ursula.raft`` (NONE), ``ursula.stream``, ``ursula.wire`` (its
errors), ``ursula.core``.
"""

from __future__ import annotations

import cbor2
from twisted.internet import defer
from twisted.logger import Logger

from ursula.core.interfaces import TooManyReaders, Unavailable
from ursula.raft import NONE
from ursula.stream.machine import (
    ReadResult,
    StreamError,
    StreamInfo,
    info_wire,
    view_from_wire,
    view_to_wire,
)
from ursula.wire import PeerError

log = Logger()

RETRY_S = 0.05
WAIT_S = 10.0  # a remote live reader's wait is answered after this long at most


def members_of(group) -> list[int]:
    node = group.node
    return sorted(set(node.voters) | set(node.learners))


# -- the asking side --------------------------------------------------------------------------

class RemoteGroup:
    is_leader = False

    def __init__(self, core, group_id: int, members):
        self.core = core
        self.group_id = group_id
        self.members = sorted(members)
        self.leader_hint = NONE
        self._waiters: list[defer.Deferred] = []
        self._finding = False
        self.finds = 0

    # the Forwarder's view of a group
    @property
    def node(self):
        return self

    @property
    def leader(self) -> int:
        return self.leader_hint

    def wait_for_leader(self):
        d = defer.Deferred(lambda d: self._waiters.remove(d) if d in self._waiters else None)
        self._waiters.append(d)
        self.find()
        return d

    # what answers teach
    def learn(self, leader: int, members=None) -> None:
        if members:
            self.members = sorted(int(m) for m in members)
        changed = leader != self.leader_hint
        self.leader_hint = leader or NONE
        if self.leader_hint != NONE:
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                if not d.called:
                    d.callback(leader)
        if changed and self.leader_hint != NONE:
            self.core.forwarder.leader_changed(self)

    def learned(self, target: int, answer: list) -> None:
        """A forwarded request's ``not_leader`` / ``not_member`` answer from ``target``."""
        kind = answer[0]
        if kind == "not_leader":
            leader = answer[1] if len(answer) > 1 else NONE
            self.learn(leader if leader != target else NONE,
                       answer[2] if len(answer) > 2 else None)
        else:  # not_member: drop it from what we know; its hint is only a hint
            self.forget(target)
            if target in self.members and len(self.members) > 1:
                self.members = [m for m in self.members if m != target]
            hint = answer[1] if len(answer) > 1 else NONE
            if hint and hint != self.core.node_id and hint != target:
                self.leader_hint = hint

    def forget(self, target: int) -> None:
        if self.leader_hint == target:
            self.leader_hint = NONE

    def candidates(self) -> list[int]:
        me = self.core.node_id
        first = [self.leader_hint] if self.leader_hint not in (NONE, me) else []
        rest = [m for m in self.members if m != me and m not in first]
        return first + rest

    def everyone(self) -> list[int]:
        transport = self.core.transport
        peers = transport.connected_peers() if transport else []
        known = self.candidates()
        return known + [p for p in peers if p not in known and p != self.core.node_id]

    def find(self) -> None:
        """Ask where the group is (members first, then everyone) until a leader is known."""
        if self._finding or self.core.transport is None or self.core.stopped:
            return
        self._finding = True
        self.finds += 1
        asked = [p for p in self.everyone() if self.core.transport.connected(p)]
        payload = cbor2.dumps(["where"])

        def ask(i):
            if self.leader_hint != NONE or i >= len(asked):
                done()
                return None
            d = self.core.transport.forward(asked[i], self.group_id, payload, timeout=1.0)

            def answered(data):
                kind, *rest = cbor2.loads(data)
                if kind == "at":
                    self.learn(rest[0], rest[1])
                return ask(i + 1)
            return d.addCallbacks(answered, lambda _: ask(i + 1))

        def done():
            self._finding = False
            if self.leader_hint == NONE and self._waiters and not self.core.stopped:
                self.core.reactor.callLater(RETRY_S * 4, self.find)
        ask(0)

    def call(self, op: str, args: list, deadline: float | None = None):
        """A read-side operation on a host of the group; a Deferred of its answer value."""
        core = self.core
        if deadline is None:
            deadline = core.reactor.seconds() + core.settings.leader_wait_s
        result = defer.Deferred()
        payload = cbor2.dumps([op, *args])
        tried: list[int] = []

        def attempt():
            if result.called:
                return
            if core.transport is None or core.stopped:
                result.errback(Unavailable("the node is shutting down"))
                return
            targets = [t for t in self.candidates() if t not in tried] or [
                t for t in self.everyone() if t not in tried]
            targets = [t for t in targets if core.transport.connected(t)]
            if not targets:
                tried.clear()
                if core.reactor.seconds() + RETRY_S > deadline:
                    result.errback(Unavailable(f"group {self.group_id}: no node that hosts it "
                                               f"could be reached; retry"))
                    return
                self.find()
                core.reactor.callLater(RETRY_S, attempt)
                return
            target = targets[0]
            tried.append(target)
            timeout = max(deadline - core.reactor.seconds(), 0.05) + (
                WAIT_S if op == "wait" else core.settings.request_timeout_s)
            d = core.transport.forward(target, self.group_id, payload, timeout=timeout)
            d.addCallbacks(lambda data: answered(target, data),
                           lambda failure: failed(target, failure))

        def answered(target, data):
            kind, *rest = cbor2.loads(data)
            if kind == "ok":
                if self.leader_hint == NONE and len(rest) > 2 and rest[1]:
                    self.learn(rest[1], rest[2])
                result.callback(rest[0])
            elif kind == "err":
                result.errback(_error(rest))
            elif kind == "unavailable":  # it could not answer now: ask the next one
                again()
            else:  # not_member / not_leader / no leader there yet: ask the next one
                self.learned(target, [kind, *rest])
                again()

        def failed(target, failure):
            if not failure.check(PeerError, defer.TimeoutError, defer.CancelledError):
                result.errback(failure)
                return
            self.forget(target)
            again()

        def again():
            if core.reactor.seconds() + RETRY_S > deadline:
                result.errback(Unavailable(f"group {self.group_id}: no node that hosts it "
                                           f"answered; retry"))
                return
            core.reactor.callLater(RETRY_S if len(tried) > 1 else 0, attempt)
        attempt()
        return result


class RemoteSubscription:
    """A live reader of a stream of a group hosted elsewhere (see the module docstring)."""

    __slots__ = ("key", "callback", "active")

    def __init__(self, remote: RemoteGroup, key, seen, callback):
        self.key = key
        self.callback = callback
        self.active = True
        d = remote.call("wait", [key[0], key[1], seen],
                        remote.core.reactor.seconds() + remote.core.settings.leader_wait_s)
        d.addBoth(self._woken)

    def _woken(self, _):
        if self.active:
            self.active = False
            self.callback()

    def cancel(self) -> None:
        self.active = False


def _error(rest: list) -> Exception:
    kind = rest[0]
    if kind == "stream":
        return StreamError(rest[1], rest[2] if len(rest) > 2 else None)
    if kind == "readers":
        return TooManyReaders()
    return Unavailable(f"the node that hosts the group could not answer ({rest[1]})")


def seen_of(info) -> list:
    """What a reader has seen of a stream (``wait`` fires once the stream differs)."""
    return list(info_wire(info)) if info is not None else []


# -- the host's side ----------------------------------------------------------------------------

def read_to_wire(result: ReadResult) -> list:
    return [info_wire(result.info), result.start, result.next_offset, bytes(result.data)]


def read_from_wire(data: list) -> ReadResult:
    info, start, next_offset, payload = data
    return ReadResult(StreamInfo(*info), start, next_offset, payload)


def info_from_wire(data: list) -> StreamInfo:
    return StreamInfo(*data)


def _error_answer(failure) -> bytes:
    if failure.check(StreamError):
        return cbor2.dumps(["err", "stream", failure.value.code, failure.value.next_offset])
    if failure.check(TooManyReaders):
        return cbor2.dumps(["err", "readers", ""])
    if failure.check(Unavailable):
        return cbor2.dumps(["unavailable", str(failure.value)])
    log.failure("a remote call failed", failure)
    return cbor2.dumps(["err", "error", failure.getErrorMessage()[:300]])


def serve(core, group, decoded: list):
    """Answer a read-side operation for ``group``, which this node hosts."""
    op, args = decoded[0], decoded[1:]
    reads = core.reads
    now_ms = core.now_ms
    hint = [group.node.leader, members_of(group)]

    def ok(value):
        return cbor2.dumps(["ok", value, *hint])

    if op == "head":
        bucket, stream = args
        d = reads.barrier(group).addCallback(
            lambda _: info_wire(group.machine.head(bucket, stream, now_ms())))
    elif op == "read":
        bucket, stream, offset, max_bytes = args
        d = reads.barrier(group).addCallback(
            lambda _: reads.read_applied(bucket, stream, offset, max_bytes))
        d.addCallback(read_to_wire)
    elif op == "view":
        bucket, stream, kind, max_bytes = args
        d = reads.view(bucket, stream, kind, max_bytes).addCallback(view_to_wire)
    elif op == "list":
        bucket, after, limit = args

        def listed(_):
            try:
                items = group.machine.list_streams(bucket, after, limit, now_ms())
            except StreamError as error:
                if error.code == "bucket_not_found":
                    return None
                raise
            return [[name, info_wire(info)] for name, info in items]
        d = reads.barrier(group).addCallback(listed)
    elif op == "wait":
        return _wait(core, group, args, ok)
    else:
        return cbor2.dumps(["err", "error", f"unknown remote call {op!r}"])
    return d.addCallbacks(ok, _error_answer)


def _wait(core, group, args, ok):
    bucket, stream, seen = args
    key = (bucket, stream)

    def current():
        try:
            return list(info_wire(group.machine.head(bucket, stream, core.now_ms())))
        except StreamError:
            return []
    if current() != list(seen):
        return ok(True)
    answer = defer.Deferred()
    try:
        subscription = core.watchers.add(key, lambda: answer.called or answer.callback(True))
    except TooManyReaders:
        return cbor2.dumps(["err", "readers", ""])
    timer = core.reactor.callLater(WAIT_S, lambda: answer.called or answer.callback(False))

    def done(value):
        if timer.active():
            timer.cancel()
        subscription.cancel()
        return ok(value)
    return answer.addCallback(done)


__all__ = ["RemoteGroup", "RemoteSubscription", "info_from_wire", "read_from_wire",
           "seen_of", "serve", "view_from_wire"]
