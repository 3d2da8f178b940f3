"""Simulated clients: idempotent producers that append and read through whichever node they
believe leads, retrying on timeout.

What lives here: `Client` and `CasClient` (below, its own docstring).  Each client owns one producer id (epoch 0) and appends bodies
`<c{k}:{seq}>` (unique, so "exactly once" is a substring count) to one shared stream, one
request at a time, always retrying the same seq until it is acknowledged.  Now and then it
issues a linearizable read instead, and checks that the read shows every append
acknowledged (by any client) before the read was sent.

Every request carries a request id `c{k}:{seq}` (the state machine deduplicates by it); odd
clients send their appends without producer headers, so for them the request id is the only
thing that keeps a re-routed append from applying twice.  Re-routing: on a timeout the client
sends the same request (same seq, same request id) to another node; on "not leader" to the
leader named, if any.  Clients reach nodes over their own network (`sim.client_net`), so a
node cut off from its peers may still be reachable by clients.

May import: the standard library, ursula.stream and ursula.sim.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ursula.stream import commands as C
from ursula.stream import encode_command

if TYPE_CHECKING:
    from ursula.sim.run import Simulation

CONTENT_TYPE = "application/octet-stream"
CLIENT_BASE = 1000  # network endpoint ids of clients


class Client:
    def __init__(self, sim: Simulation, k: int, stream: str) -> None:
        self.sim = sim
        self.k = k
        self.endpoint = CLIENT_BASE + k
        self.stream = stream
        self.producer = f"c{k}"
        self.seq = 0
        self.created = False
        self.bound = sim.compute is None  # --compute: bind the counter after the create
        self.target = sim.rng.choice(sim.ids)
        self.req = 0
        self.op: tuple | None = None  # what is in flight
        self.acks = 0
        self.acks_after_heal = 0
        self.reads = 0
        self.stopped = False
        self.rng = sim.rng

    def start(self) -> None:
        self.sim.world.after(self.rng.randint(0, 5000), self._next)

    # -- issuing ----------------------------------------------------------------------------------
    def _next(self) -> None:
        if self.stopped:
            self.op = None
            return
        sim = self.sim
        if not self.created:
            cmd = C.CreateStream(bucket=sim.bucket, stream=self.stream, content_type=CONTENT_TYPE)
            self.op = ("create", encode_command(cmd))
        elif not self.bound:
            self.op = ("bind", encode_command(sim.compute.bind_command(self.stream)))
        elif self.rng.random() < sim.read_ratio:
            self.op = ("read", len(sim.checker.acked.get(self.stream, [])))
            if self.rng.random() < 0.5:
                # any node must serve a linearizable read (a follower asks the leader)
                self.target = self.rng.choice(sim.ids)
        else:
            self.op = self._append_op()
        self._send()

    def _append_op(self) -> tuple:
        body = b"<c%d:%d>" % (self.k, self.seq)
        producer = None
        if self.k % 2 == 0:
            producer = C.Producer(id=self.producer, epoch=0, seq=self.seq)
        cmd = C.Append(
            bucket=self.sim.bucket,
            stream=self.stream,
            content_type=CONTENT_TYPE,
            body=body,
            producer=producer,
        )
        return ("append", encode_command(cmd), body)

    def _send(self) -> None:
        sim = self.sim
        self.req += 1
        req = self.req
        target = self.target
        replica = sim.replicas[target]
        op = self.op
        endpoint = self.endpoint

        def reply(resp: tuple) -> None:
            sim.client_net.send(target, endpoint, self._on_reply, (req, resp))

        if op[0] == "read":
            sim.client_net.send(
                endpoint, target, lambda _: replica.submit_read(self.stream, reply), None
            )
        else:
            rid = f"{self.producer}:{self.seq if op[0] == 'append' else op[0]}"
            sim.client_net.send(
                endpoint, target, lambda _: replica.submit(op[1], rid, reply), None
            )
        sim.world.after(sim.client_timeout(), self._timeout, req)

    def _timeout(self, req: int) -> None:
        if req != self.req or self.op is None:
            return
        # re-route: the same request, same request id, to another node
        others = [i for i in self.sim.ids if i != self.target]
        self.target = self.rng.choice(others)
        self._send()

    def _retry(self, target: int | None) -> None:
        if target:
            self.target = target
        else:
            self.target = self.rng.choice(self.sim.ids)
        self.req += 1  # forget the old request; _send bumps again
        self.sim.world.after(self.rng.randint(1000, 10_000), self._send)

    # -- replies ----------------------------------------------------------------------------------
    def _on_reply(self, msg: tuple) -> None:
        req, (kind, val) = msg
        if req != self.req or self.op is None:
            return  # stale or duplicated
        op = self.op
        sim = self.sim
        if kind == "not_leader":
            self._retry(val if val != self.target else None)
            return
        if kind == "retry":
            self._retry(self.target)
            return
        if kind == "read_error":
            if op[0] == "read" and val == "stream_not_found" and sim.checker.acked.get(self.stream):
                sim.checker.fail(f"read: {self.stream} missing at node {self.target}")
            self._done()
            return
        if kind == "read":
            sim.checker.check_stream_data(
                f"linearizable read at node {self.target}", self.stream, val, upto=op[1]
            )
            self.reads += 1
            self._on_read(val)
            self._done()
            return
        out = val
        if op[0] == "create":
            if out.error is not None:
                sim.checker.fail(f"create {self.stream}: {out.error}")
            self.created = True
            self._done()
            return
        if op[0] == "bind":  # (another client's binding of the same module: a no-op)
            if out.error is not None:
                sim.checker.fail(f"bind {self.stream}: {out.error}")
            self.bound = True
            self._done()
            return
        self._on_appended(out)
        self._done()

    def _on_read(self, data: bytes) -> None:
        pass

    def _on_appended(self, out) -> None:
        sim = self.sim
        body = self.op[2]
        if out.error is not None:
            sim.checker.fail(f"append {self.producer}/{self.seq}: unexpected error {out.error}")
        if out.duplicate:
            if out.producer_seq != self.seq:
                sim.checker.fail(
                    f"append {self.producer}/{self.seq}: duplicate of seq {out.producer_seq}"
                )
            start, nxt = out.next_offset - len(body), out.next_offset
        else:
            start, nxt = out.start_offset, out.next_offset
        sim.checker.on_ack(self.producer, self.seq, self.stream, body, start, nxt, sim.world.now)
        self.seq += 1
        self.acks += 1
        if sim.healed:
            self.acks_after_heal += 1

    def _done(self) -> None:
        self.op = None
        self.sim.world.after(self.rng.randint(0, self.sim.think_us), self._next)


class CasClient(Client):
    """A writer that appends only with If-Match: the tail it last saw (from its last success's
    new tail, a 412's current tail, or a read), as a collaborator or an agent that must not
    commit over a change it has not seen.

    Each attempt is its own request (request id and body ``x{k}:{attempt}``: the checker's
    key ``("x{k}", attempt)``); a re-send after a timeout repeats the attempt, and the state
    machine answers it with its first outcome. A 412 is not an error: the next attempt
    expects the tail it carried. The checker's client-side rules (``on_conditional``): a
    success started at the expected tail, no two successes expected the same tail of a
    stream, a 412's tail is ahead of the expectation and of every append acknowledged before
    the attempt was made.
    """

    def __init__(self, sim: Simulation, k: int, stream: str) -> None:
        super().__init__(sim, k, stream)
        self.producer = f"x{k}"  # the checker's name of this writer (it sends no producer)
        self.known = 0  # the tail it expects (the stream is created empty)
        self.refused = 0

    def _append_op(self) -> tuple:
        body = b"<x%d:%d>" % (self.k, self.seq)
        cmd = C.Append(bucket=self.sim.bucket, stream=self.stream, content_type=CONTENT_TYPE,
                       body=body, if_match=self.known)
        floor = self.sim.checker.acked_tail.get(self.stream, 0)
        return ("append", encode_command(cmd), body, self.known, floor)

    def _on_read(self, data: bytes) -> None:
        self.known = max(self.known, len(data))

    def _on_appended(self, out) -> None:
        sim = self.sim
        _, _, body, expected, floor = self.op
        sim.checker.on_conditional(self.producer, self.seq, self.stream, expected, floor,
                                   out.error, out.start_offset, out.next_offset)
        self.known = out.next_offset
        if out.error is None:
            sim.checker.on_ack(self.producer, self.seq, self.stream, body, out.start_offset,
                               out.next_offset, sim.world.now)
            self.acks += 1
            if sim.healed:
                self.acks_after_heal += 1
        else:
            self.refused += 1
        self.seq += 1  # the next attempt is a new request, with a new body
