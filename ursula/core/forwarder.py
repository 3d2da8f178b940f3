"""``Forwarder``: a command goes to its group's leader, wherever that is.

On the group's leader the command is proposed here (the hot path: no request id, as before).
Anywhere else it becomes a *forwarded request* with a request id
(``"<node id>:<process nonce>:<counter>"``) that travels to the leader and into the proposal,
so that the state machine applies it at most once (``StreamMachine.apply_request``). Because of
that id the forwarder may send the same request again without fear of a double apply:

* **re-routing**: when the group's known leader changes while a request is outstanding (at a
  leader that froze, say: its socket open, no answer), the request is sent at once to the new
  leader, or proposed here if this node now leads. The first answer wins; later answers (the
  old leader waking up) are ignored. A frozen leader so costs about one election timeout;
* **retries**: a lost connection, a forward timeout, a leader that answers "not the leader" or
  that could not apply the request (it stepped down, its own wait timed out) all retry with
  the same id after ``RETRY_DELAY_S``, while the request's leader-wait deadline allows. A
  request waiting for its retry is re-routed at once if the group's leader changes first (a
  leadership transfer refuses proposals until the new leader is elected, a few milliseconds on
  a LAN: the requests it caught go to the new leader then, not ``RETRY_DELAY_S`` later);
* **leader waits**: while the group has no known leader the request waits for one, up to its
  deadline (``leader_wait_s`` after it arrived), then fails with ``Unavailable`` (HTTP 503 +
  Retry-After). Every request fails with ``Unavailable`` after ``request_timeout_s`` at most.

It also answers the requests other nodes forward here (``answer``). A group this node does not
host (``ursula.core.remote.RemoteGroup``) takes the same path: its leader is a hint, corrected
by every ``not_leader`` / ``not_member`` answer and dropped when it cannot be reached.

May import: Twisted, zope.interface, cbor2, ``ursula.raft``, ``ursula.stream``, ``ursula.wire``
(its errors), ``ursula.loop``, ``ursula.core``.
"""

from __future__ import annotations

import itertools
import uuid
from collections import deque

import cbor2
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ursula.core.group import NotLeader, Retry
from ursula.core.interfaces import IForwarder, Unavailable
from ursula.loop import Timeouts
from ursula.raft import NONE
from ursula.stream import decode_command, encode_command
from ursula.stream.machine import outcome_from_wire, outcome_to_wire
from ursula.wire import PeerError

log = Logger()

RETRY_DELAY_S = 0.05
#: How often the deadlines of the requests proposed here are checked.
SWEEP_S = 0.1


def with_timeout(timeouts: Timeouts, d, seconds: float):
    """``d``, failing with ``Unavailable`` after ``seconds`` (a coarse ``Timeouts`` bucket, not
    a reactor DelayedCall per request)."""
    def timed_out(failure):
        failure.trap(defer.CancelledError, defer.TimeoutError)
        raise Unavailable("the request timed out waiting for the cluster")
    return timeouts.deadline(d, seconds).addErrback(timed_out)


def leader_known(reactor, group, deadline: float):
    """Fires once ``group`` has a known leader; ``Unavailable`` at ``deadline``."""
    remaining = deadline - reactor.seconds()
    if remaining <= 0:
        return defer.fail(Unavailable(f"group {group.group_id} has no leader; retry"))
    d = group.wait_for_leader()

    def no_leader(failure):
        failure.trap(defer.CancelledError, defer.TimeoutError)
        raise Unavailable(f"group {group.group_id} has no leader; retry")
    return d.addTimeout(remaining, reactor).addErrback(no_leader)


def _forget(group, target: int) -> None:
    """A group hosted elsewhere (``ursula.core.remote.RemoteGroup``) drops a leader hint that
    could not be reached (a hosted group learns its leader from Raft)."""
    forget = getattr(group, "forget", None)
    if forget is not None:
        forget(target)


class _Request:
    """One forwarded request, across its attempts."""

    __slots__ = ("group", "command", "request_id", "payload", "deadline", "result", "timer",
                 "expires", "target", "attempt", "waiting", "sends")

    def __init__(self, group, command, request_id: str, deadline: float):
        self.group = group
        self.command = command
        self.request_id = request_id
        self.payload = cbor2.dumps(["submit", encode_command(command), request_id])
        self.deadline = deadline
        self.result = defer.Deferred()
        self.timer = None
        self.expires = 0.0
        self.target = NONE
        self.attempt = 0
        self.waiting = None
        self.sends = 0


@implementer(IForwarder)
class Forwarder:
    def __init__(self, reactor, node_id: int, transport, settings,
                 timeouts: Timeouts | None = None):
        self.reactor = reactor
        self.timeouts = timeouts or Timeouts(reactor)
        self.node_id = node_id
        self.transport = transport
        self.settings = settings
        self.stopped = False
        self.reroutes = 0
        self.retries = 0
        self._nonce = uuid.uuid4().hex[:12]
        self._ids = itertools.count(1)
        self._requests: set[_Request] = set()
        self._outstanding: dict[int, set[_Request]] = {}  # group -> sent to a remote leader
        # group -> (deadline, Deferred) of the requests proposed here, in the order proposed
        self._local: dict[int, deque] = {}
        self._sweeper = None
        #: group -> {node id: writes proposed here that entered that node}, while the core's
        #: load follower (``RaftCore._follow_load``) wants it; None: not counted
        self.load: dict[int, dict[int, int]] | None = None
        #: while this node drains, its request ids say so ("-<node id>:...") and the leaders
        #: do not count its writes: no group follows the load onto a node that is stopping
        self.draining = False

    def _count(self, group_id: int, origin: int) -> None:
        counts = self.load.get(group_id)
        if counts is None:
            counts = self.load[group_id] = {}
        counts[origin] = counts.get(origin, 0) + 1

    # -- the client side -----------------------------------------------------------------------

    def submit(self, group, command, deadline: float):
        if self.stopped:
            return defer.fail(Unavailable("the node is shutting down"))
        if group.is_leader and group.node.lead_transferee == NONE:
            if self.load is not None:
                self._count(group.group_id, self.node_id)
            return self._propose_here(group, command)
        # (while the leadership moves away, the request takes the path that retries)
        request_id = (f"{'-' if self.draining else ''}{self.node_id}:{self._nonce}:"
                      f"{next(self._ids)}")
        req = _Request(group, command, request_id, deadline)
        req.expires = self.reactor.seconds() + self.settings.request_timeout_s
        req.timer = self.timeouts.call_later(self.settings.request_timeout_s, self._finish, req,
                                             Unavailable("the request timed out waiting for "
                                                         "the cluster"))
        self._requests.add(req)
        self._route(req)
        return req.result

    def _propose_here(self, group, command, request_id: str | None = None):
        """The hot path: propose on this node, the group's leader. The request's deadline
        (``request_timeout_s``) is an entry in the group's queue of local proposals, checked
        every ``SWEEP_S`` (they are answered in log order, so the queue stays as short as the
        proposals in flight): no timer per request."""
        d = group.submit(command, request_id)
        if d.called:
            return d
        queue = self._local.get(group.group_id)
        if queue is None:
            queue = self._local[group.group_id] = deque()
        queue.append((self.reactor.seconds() + self.settings.request_timeout_s, d))
        if self._sweeper is None:
            self._sweeper = self.timeouts.call_later(SWEEP_S, self._sweep)
        return d

    def _sweep(self) -> None:
        self._sweeper = None
        now = self.reactor.seconds()
        waiting = False
        for queue in self._local.values():
            while queue and (queue[0][1].called or queue[0][0] <= now):
                _, d = queue.popleft()
                if not d.called:
                    d.errback(Unavailable("the request timed out waiting for the cluster"))
            waiting = waiting or bool(queue)
        if waiting and not self.stopped:
            self._sweeper = self.timeouts.call_later(SWEEP_S, self._sweep)

    def leader_changed(self, group) -> None:
        leader = group.node.leader
        if leader == NONE:
            return  # nobody better to ask yet: keep waiting on the outstanding attempts
        for req in list(self._outstanding.get(group.group_id, ())):
            if req.target != leader:  # (sent to, or failed at, another node)
                self.reroutes += 1
                log.debug("re-routing request {rid} of group {group} from node {old} to node "
                         "{new}", rid=req.request_id, group=group.group_id, old=req.target,
                         new=leader)
                self._route(req)

    def stop(self) -> None:
        self.stopped = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for req in list(self._requests):
            self._finish(req, Unavailable("the node is shutting down"))

    def _route(self, req: _Request) -> None:
        if req.result.called:
            return
        if self.stopped:
            self._finish(req, Unavailable("the node is shutting down"))
            return
        group = req.group
        self._outstanding.get(group.group_id, set()).discard(req)
        req.attempt += 1
        attempt = req.attempt
        if req.waiting is not None:
            waiting, req.waiting = req.waiting, None
            waiting.cancel()
        if group.is_leader:
            req.target = self.node_id
            d = group.submit(req.command, req.request_id)
            d.addCallbacks(lambda outcome: self._finish(req, outcome),
                           lambda failure: self._failed(req, attempt, failure))
            return
        leader = group.node.leader
        if leader == NONE or self.transport is None:
            req.target = NONE
            req.waiting = leader_known(self.reactor, group, req.deadline)
            req.waiting.addCallbacks(lambda _: self._again(req, attempt),
                                     lambda failure: self._no_leader(req, attempt, failure))
            return
        if not self.transport.connected(leader):
            # nothing sent to it: wait for the connection (or a new leader) and retry
            req.target = NONE
            _forget(group, leader)
            self._retry_later(req, attempt, f"the leader (node {leader}) is not connected")
            return
        req.target = leader
        req.sends += 1
        self._outstanding.setdefault(group.group_id, set()).add(req)
        remaining = max(req.expires - self.reactor.seconds(), 0.001)
        d = self.transport.forward(leader, group.group_id, req.payload, timeout=remaining)
        d.addCallbacks(lambda data: self._answered(req, attempt, data),
                       lambda failure: self._failed(req, attempt, failure))

    def _answered(self, req: _Request, attempt: int, data: bytes) -> None:
        kind, value, *extra = cbor2.loads(data)
        if kind == "ok":
            self._finish(req, outcome_from_wire(value))  # any attempt's answer will do
        elif attempt == req.attempt and not req.result.called:
            learned = getattr(req.group, "learned", None)  # a group hosted elsewhere
            if learned is not None and kind in ("not_leader", "not_member"):
                learned(req.target, [kind, value, *extra])
            if kind in ("not_leader", "not_member"):
                self._retry_later(req, attempt, "no leader could be reached; retry")
            else:
                self._retry_later(req, attempt,
                                  f"the leader could not apply the request: {value}")

    def _failed(self, req: _Request, attempt: int, failure) -> None:
        if req.result.called or attempt != req.attempt:
            return  # an attempt that was superseded: its failure does not matter
        if failure.check(PeerError, NotLeader, Retry):
            if failure.check(PeerError):
                _forget(req.group, req.target)
            # Sent, maybe applied, maybe not: the request id makes a retry safe.
            self._retry_later(req, attempt, f"forwarding to the leader failed: "
                                            f"{failure.getErrorMessage()}")
        else:
            self._finish(req, failure)

    def _no_leader(self, req: _Request, attempt: int, failure) -> None:
        if attempt == req.attempt:
            req.waiting = None
            self._finish(req, failure)

    def _retry_later(self, req: _Request, attempt: int, why: str) -> None:
        if self.reactor.seconds() + RETRY_DELAY_S > req.deadline:
            self._finish(req, Unavailable(why))
            return
        self.retries += 1
        # outstanding meanwhile: a leader change re-routes it before the delay is up (a request
        # proposed here that failed is not outstanding otherwise)
        self._outstanding.setdefault(req.group.group_id, set()).add(req)
        self.reactor.callLater(RETRY_DELAY_S, self._again, req, attempt)

    def _again(self, req: _Request, attempt: int) -> None:
        if attempt == req.attempt:
            self._route(req)

    def _finish(self, req: _Request, result) -> None:
        if req.result.called:
            return
        self._requests.discard(req)
        self._outstanding.get(req.group.group_id, set()).discard(req)
        if req.timer is not None and req.timer.active():
            req.timer.cancel()
        req.attempt += 1  # every attempt still in flight is now stale
        if req.waiting is not None:
            waiting, req.waiting = req.waiting, None
            waiting.cancel()
        if isinstance(result, Exception | Failure):
            req.result.errback(result)
        else:
            req.result.callback(result)

    # -- the leader's side ---------------------------------------------------------------------

    def answer(self, group, payload: bytes, decoded: list | None = None):
        """A follower forwarded a command: propose it if we lead, else say who does. The
        proposal's deadline (``request_timeout_s``) is kept like a local one's (the group's
        queue, swept every ``SWEEP_S``); ``decoded`` is ``payload`` decoded, if the caller
        has done it already."""
        if decoded is None:
            decoded = cbor2.loads(payload)
        if group is None or decoded[0] != "submit":
            return cbor2.dumps(["error", "unknown group or request"])
        if not group.is_leader:
            node = group.node
            return cbor2.dumps(["not_leader", node.leader,
                                sorted(set(node.voters) | set(node.learners))])
        request_id = decoded[2] if len(decoded) > 2 else None
        if self.load is not None and request_id:
            origin = request_id.partition(":")[0]
            if origin.isdigit():
                self._count(group.group_id, int(origin))
        d = self._propose_here(group, decode_command(decoded[1]), request_id)
        return d.addCallbacks(_applied_answer, _unavailable_answer)


def _applied_answer(outcome) -> bytes:
    return cbor2.dumps(["ok", outcome_to_wire(outcome)])


def _unavailable_answer(failure) -> bytes:
    return cbor2.dumps(["unavailable", failure.getErrorMessage()[:200]])
