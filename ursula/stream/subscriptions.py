"""The replicated state of subscriptions (PROTOCOL.md sections 6-7): config, stream links with
acked and known tail offsets, wake generations, leases and webhook retry schedules.

A subscription ``id`` of bucket ``b`` lives in the group of the reserved stream name
``__ds/subscriptions/<id>`` of ``b`` (``sub_key``); every change to it is one
``commands.Subscription(bucket, stream, op, args)`` applied here by ``SubscriptionTable.apply``
(called from ``StreamMachine.apply``), so every replica of the group agrees and a new leader
carries on where the old one stopped. Time comes in as ``now_ms`` (the entry's stamp); random
values (wake ids, retry jitter, the signing key seed) come in as arguments chosen by the
proposer. The runtime (``ursula.subscriptions.service``) proposes the ops; this module decides.

Offsets are byte positions (``int``); ``-1`` is "before the first offset" (an acked cursor
that has processed nothing). A link is pending when its known tail is past ``max(acked, 0)``.

Ops (``args`` is a cbor-friendly dict):

* ``put`` {id, config, hash, base_url, links: [[path, uid, tail]], max}: create (the listed
  streams linked at their tails, as the protocol's backfill) or re-confirm (same hash) or
  ``SUBSCRIPTION_ALREADY_EXISTS``; ``get`` {id}; ``delete`` {id};
* ``links`` {id, add: [[path, uid, tail]], remove: [path]}: explicit membership;
* ``tails`` {id, tails: [[path, uid, tail]], gone: [path]}: what the runtime learnt of linked
  or pattern-matching streams (a stream seen for the first time is linked before its data:
  acked -1; a stream recreated under the same name, a new uid, restarts at -1);
* ``wake`` {id, generation, wake_id}: issue the next wake if the subscription is idle and has
  pending work (fenced by ``generation``: two leaders proposing the same wake issue one);
* ``delivered`` {id, wake_id, ok, done, next_attempt_ms}: a webhook answer (or a pull-wake
  event written): ok+done acks the wake's snapshot; ok starts the lease; not ok schedules a
  retry;
* ``claim`` {id, worker, wake_id, tails}: pull-wake claim; ``ack`` / ``callback`` {id,
  wake_id, generation, token_generation, acks: [[path, offset]], done, tails}; ``release``
  {id, wake_id, generation, token_generation}; ``expire`` {id, wake_id}: a lease ran out;
* ``key`` {seed}: the cluster's webhook signing key seed, set once (the first proposal wins).

Errors are the protocol's codes (``SUBSCRIPTION_NOT_FOUND``, ``FENCED``, ``ALREADY_CLAIMED``,
``NO_PENDING_WORK``, ``INVALID_OFFSET``, ``INVALID_REQUEST``...).

May import: the standard library only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from ursula.stream.commands import Subscription

SUB_PREFIX = "__ds/subscriptions/"
KEY_STREAM = "__ds/keys"
KEY_BUCKET = "_default"


def sub_key(sub_id: str) -> str:
    """The reserved stream name whose group holds subscription ``sub_id``."""
    return SUB_PREFIX + sub_id


def sub_command(bucket: str, sub_id: str, op: str, **args) -> Subscription:
    args["id"] = sub_id
    return Subscription(bucket, sub_key(sub_id), op, args)


def key_command(seed: bytes) -> Subscription:
    """Get the cluster's signing key seed, setting it to ``seed`` if it has none yet."""
    return Subscription(KEY_BUCKET, KEY_STREAM, "key", {"seed": seed})


def glob_match(pattern: str, path: str) -> bool:
    """``*`` matches one path segment, ``**`` zero or more; other segments literally (a ``*``
    inside a segment, as in ``album-*``, is a literal character, as in the reference server)."""
    return _match(pattern.split("/"), path.split("/"))


def _match(pat: list[str], parts: list[str]) -> bool:
    if not pat:
        return not parts
    head = pat[0]
    if head == "**":
        return any(_match(pat[1:], parts[i:]) for i in range(len(parts) + 1))
    if not parts:
        return False
    if head == "*" or head == parts[0]:
        return _match(pat[1:], parts[1:])
    return False


def literal_prefix(pattern: str) -> str:
    """The stream names matching ``pattern`` all start with this (for listing)."""
    cut = pattern.find("*")
    return pattern if cut < 0 else pattern[:cut]


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


@dataclass(slots=True)
class Link:
    glob: bool = False
    explicit: bool = False
    uid: int = 0  # the stream's uid when last seen (0: not seen yet)
    acked: int = -1
    tail: int = 0

    @property
    def pending(self) -> bool:
        return self.tail > max(self.acked, 0)

    @property
    def link_type(self) -> str:
        return "explicit" if self.explicit else "glob"

    def to_wire(self) -> list:
        return [self.glob, self.explicit, self.uid, self.acked, self.tail]


@dataclass(slots=True)
class Wake:
    wake_id: str
    generation: int
    snapshot: dict[str, int]  # path -> tail when the wake was issued
    issued_ms: int
    holder: str | None = None  # pull-wake: the worker holding the lease
    lease_until: int | None = None  # None: no lease running
    delivered: bool = False  # webhook answered 2xx / wake event written
    attempts: int = 0  # failed delivery attempts so far
    next_attempt_ms: int = 0

    def to_wire(self) -> list:
        return [self.wake_id, self.generation, sorted(self.snapshot.items()), self.issued_ms,
                self.holder, self.lease_until, self.delivered, self.attempts,
                self.next_attempt_ms]

    @classmethod
    def from_wire(cls, data: list) -> Wake:
        wake = cls(*data)
        wake.snapshot = dict((p, t) for p, t in data[2])
        return wake


@dataclass(slots=True)
class Sub:
    id: str
    bucket: str
    config: dict
    hash: str
    base_url: str
    created_ms: int
    links: dict[str, Link] = field(default_factory=dict)
    generation: int = 0
    wake: Wake | None = None
    version: int = 0  # bumped by every change (the runtime re-evaluates on a new version)

    @property
    def type(self) -> str:
        return self.config["type"]

    @property
    def pattern(self) -> str | None:
        return self.config.get("pattern")

    @property
    def lease_ttl_ms(self) -> int:
        return self.config["lease_ttl_ms"]

    def matches(self, path: str) -> bool:
        """The pattern matches ``path`` (never the subscription's own wake stream: its wake
        events would wake it again)."""
        pattern = self.pattern
        return (pattern is not None and glob_match(pattern, path)
                and path != self.config.get("wake_stream"))

    def pending(self) -> bool:
        return any(link.pending for link in self.links.values())

    def idle(self) -> bool:
        return self.wake is None

    def stream_infos(self, snapshot: dict[str, int] | None = None) -> list[dict]:
        """The ``streams`` array of a wake, claim or webhook body (PROTOCOL.md 7.1)."""
        out = []
        items = snapshot if snapshot is not None else {p: ln.tail for p, ln in self.links.items()}
        for path in sorted(items):
            link = self.links.get(path)
            if link is None:
                continue
            tail = items[path]
            out.append({"path": path, "link_type": link.link_type, "acked": link.acked,
                        "tail": tail, "has_pending": tail > max(link.acked, 0)})
        return out

    def view(self) -> dict:
        """What GET answers (offsets as ints; the HTTP layer renders them)."""
        return {"id": self.id, "config": self.config, "base_url": self.base_url,
                "created_ms": self.created_ms, "generation": self.generation,
                "status": "failed" if self.wake is not None and self.wake.attempts else "active",
                "streams": [{"path": p, "link_type": ln.link_type, "acked": ln.acked,
                             "tail": ln.tail} for p, ln in sorted(self.links.items())],
                "wake": self.wake.to_wire() if self.wake is not None else None}

    def to_wire(self) -> list:
        return [self.id, self.bucket, self.config, self.hash, self.base_url, self.created_ms,
                [[p, *ln.to_wire()] for p, ln in sorted(self.links.items())], self.generation,
                self.wake.to_wire() if self.wake is not None else None, self.version]

    @classmethod
    def from_wire(cls, data: list) -> Sub:
        (sid, bucket, config, hash_, base_url, created, links, generation, wake,
         version) = data
        sub = cls(sid, bucket, config, hash_, base_url, created, generation=generation,
                  version=version)
        sub.links = {item[0]: Link(*item[1:]) for item in links}
        sub.wake = Wake.from_wire(wake) if wake is not None else None
        return sub


class SubError(Exception):
    def __init__(self, code: str, payload: dict | None = None):
        super().__init__(code)
        self.code = code
        self.payload = payload


@dataclass(slots=True)
class Result:
    error: str | None = None
    created: bool = False
    payload: dict | None = None


class SubscriptionTable:
    """Every subscription of one group, plus (in the group of ``KEY_STREAM``) the signing key."""

    def __init__(self) -> None:
        self.subs: dict[tuple[str, str], Sub] = {}
        self.signing_seed: bytes | None = None

    def __len__(self) -> int:
        return len(self.subs)

    def get(self, bucket: str, sub_id: str) -> Sub | None:
        return self.subs.get((bucket, sub_id))

    # -- apply ------------------------------------------------------------------------------

    def apply(self, bucket: str, op: str, args: dict, now_ms: int) -> Result:
        if op not in _OPS:
            return Result(error="INVALID_REQUEST")
        handler = _OPS[op]
        if op == "key":
            return self._key(args)
        try:
            if op == "put":
                return self._put(bucket, args, now_ms)
            sub = self.subs.get((bucket, args.get("id")))
            if sub is None:
                raise SubError("SUBSCRIPTION_NOT_FOUND")
            self._expire_lease(sub, now_ms)
            result = handler(self, sub, args, now_ms)
            sub.version += 1
            return result
        except SubError as error:
            return Result(error=error.code, payload=error.payload)
        except (KeyError, TypeError, ValueError):
            return Result(error="INVALID_REQUEST")

    def _key(self, args: dict) -> Result:
        if self.signing_seed is None and isinstance(args.get("seed"), bytes):
            self.signing_seed = args["seed"]
        return Result(payload={"seed": self.signing_seed})

    def _put(self, bucket: str, args: dict, now_ms: int) -> Result:
        sub_id = args["id"]
        existing = self.subs.get((bucket, sub_id))
        if existing is not None:
            if existing.hash != args["hash"]:
                raise SubError("SUBSCRIPTION_ALREADY_EXISTS")
            return Result(payload=existing.view())
        limit = args.get("max")
        if limit is not None and len(self.subs) >= limit:
            raise SubError("SUBSCRIPTION_LIMIT")
        config = args["config"]
        sub = Sub(sub_id, bucket, config, args["hash"], args.get("base_url", ""), now_ms)
        explicit = set(config.get("streams") or ())
        for path, uid, tail in args.get("links", ()):
            link = Link(glob=sub.matches(path), explicit=path in explicit, uid=uid,
                        acked=tail, tail=tail)
            if link.glob or link.explicit:
                sub.links[path] = link
        for path in explicit:  # streams that do not exist yet: linked before their data
            sub.links.setdefault(path, Link(explicit=True))
        self.subs[(bucket, sub_id)] = sub
        return Result(created=True, payload=sub.view())

    def _get(self, sub: Sub, args: dict, now_ms: int) -> Result:
        sub.version -= 1  # a read changes nothing
        return Result(payload=sub.view())

    def _delete(self, sub: Sub, args: dict, now_ms: int) -> Result:
        del self.subs[(sub.bucket, sub.id)]
        return Result()

    def _links(self, sub: Sub, args: dict, now_ms: int) -> Result:
        for path, uid, tail in args.get("add", ()):
            link = sub.links.get(path)
            if link is None:
                sub.links[path] = Link(explicit=True, uid=uid, acked=tail, tail=tail)
            else:
                link.explicit = True
        for path in args.get("remove", ()):
            link = sub.links.get(path)
            if link is None:
                continue
            link.explicit = False
            if not link.glob:
                del sub.links[path]
        return Result()

    def _tails(self, sub: Sub, args: dict, now_ms: int) -> Result:
        self._learn(sub, args.get("tails", ()))
        for path in args.get("gone", ()):
            link = sub.links.get(path)
            if link is None:
                continue
            if link.explicit:
                link.uid, link.acked, link.tail = 0, -1, 0
            else:
                del sub.links[path]
        return Result()

    @staticmethod
    def _learn(sub: Sub, tails) -> None:
        for path, uid, tail in tails:
            link = sub.links.get(path)
            if link is None:
                if not sub.matches(path):
                    continue
                link = sub.links[path] = Link(glob=True)
            if link.uid and uid != link.uid:  # recreated under the same name: start again
                link.acked = -1
                link.tail = 0
            link.uid = uid
            if tail > link.tail:  # a stream's tail only grows (a new uid restarts it)
                link.tail = tail
            if not link.glob and sub.matches(path):
                link.glob = True

    def _wake(self, sub: Sub, args: dict, now_ms: int) -> Result:
        if args["generation"] != sub.generation or sub.wake is not None or not sub.pending():
            return Result(error="FENCED")
        self._issue(sub, args["wake_id"], now_ms)
        return Result(payload={"generation": sub.generation})

    @staticmethod
    def _issue(sub: Sub, wake_id: str, now_ms: int) -> None:
        sub.generation += 1
        snapshot = {p: ln.tail for p, ln in sub.links.items() if ln.pending}
        sub.wake = Wake(wake_id, sub.generation, snapshot, now_ms)

    def _delivered(self, sub: Sub, args: dict, now_ms: int) -> Result:
        wake = sub.wake
        if wake is None or wake.wake_id != args["wake_id"]:
            return Result(error="FENCED")
        if not args["ok"]:
            wake.attempts += 1
            wake.next_attempt_ms = int(args["next_attempt_ms"])
            return Result()
        wake.delivered = True
        wake.attempts = 0
        wake.next_attempt_ms = 0
        if args.get("done") and sub.type == "webhook":
            self._ack_snapshot(sub, wake)
            sub.wake = None
            return Result(payload={"next_wake": sub.pending()})
        if sub.type == "webhook" and wake.lease_until is None:
            wake.lease_until = now_ms + sub.lease_ttl_ms
        return Result()

    @staticmethod
    def _ack_snapshot(sub: Sub, wake: Wake) -> None:
        for path, tail in wake.snapshot.items():
            link = sub.links.get(path)
            if link is not None and tail > link.acked:
                link.acked = tail

    def _claim(self, sub: Sub, args: dict, now_ms: int) -> Result:
        if sub.type != "pull-wake":
            raise SubError("INVALID_REQUEST")
        self._learn(sub, args.get("tails", ()))
        wake = sub.wake
        if wake is not None and wake.holder is not None:
            raise SubError("ALREADY_CLAIMED", {"current_holder": wake.holder,
                                               "generation": sub.generation})
        if wake is None:
            if not sub.pending():
                raise SubError("NO_PENDING_WORK", {"paths": sorted(sub.links)})
            self._issue(sub, args["wake_id"], now_ms)
            wake = sub.wake
        wake.holder = str(args["worker"])
        wake.lease_until = now_ms + sub.lease_ttl_ms
        wake.delivered = True  # the worker has it: no (more) wake event to write
        wake.attempts = 0
        return Result(payload={"wake_id": wake.wake_id, "generation": sub.generation,
                               "streams": sub.stream_infos(),
                               "lease_ttl_ms": sub.lease_ttl_ms})

    def _fence(self, sub: Sub, args: dict) -> Wake:
        wake = sub.wake
        if (wake is None or args.get("token_generation") != sub.generation
                or args.get("generation") != sub.generation
                or args.get("wake_id") != wake.wake_id):
            raise SubError("FENCED")
        return wake

    def _ack(self, sub: Sub, args: dict, now_ms: int) -> Result:
        wake = self._fence(sub, args)
        self._learn(sub, args.get("tails", ()))
        acks = []
        for path, offset in args.get("acks", ()):
            link = sub.links.get(path)
            if link is None:
                raise SubError("INVALID_OFFSET", {"message": f"{path}: not a linked stream"})
            if offset < link.acked:
                raise SubError("INVALID_OFFSET", {"message": f"{path}: the ack regresses"})
            if offset > link.tail:
                raise SubError("INVALID_OFFSET", {"message": f"{path}: beyond the tail"})
            acks.append((link, offset))
        for link, offset in acks:
            link.acked = offset
        if args.get("done"):
            sub.wake = None
            return Result(payload={"ok": True, "next_wake": sub.pending()})
        wake.lease_until = now_ms + sub.lease_ttl_ms  # a heartbeat
        return Result(payload={"ok": True, "next_wake": False})

    def _release(self, sub: Sub, args: dict, now_ms: int) -> Result:
        self._fence(sub, args)
        sub.wake = None
        return Result(payload={"next_wake": sub.pending()})

    def _expire(self, sub: Sub, args: dict, now_ms: int) -> Result:
        return Result()  # _expire_lease ran before every op

    @staticmethod
    def _expire_lease(sub: Sub, now_ms: int) -> None:
        """A lease that ran out clears the holder and the wake (PROTOCOL.md 7.3); the runtime
        then issues another wake if work is pending."""
        wake = sub.wake
        if wake is not None and wake.lease_until is not None and wake.lease_until <= now_ms:
            sub.wake = None
            sub.version += 1

    # -- snapshots --------------------------------------------------------------------------

    def to_wire(self) -> dict:
        return {"subs": [s.to_wire() for _, s in sorted(self.subs.items())],
                "seed": self.signing_seed}

    @classmethod
    def from_wire(cls, data: dict | None) -> SubscriptionTable:
        table = cls()
        if data:
            for item in data.get("subs", ()):
                sub = Sub.from_wire(item)
                table.subs[(sub.bucket, sub.id)] = sub
            table.signing_seed = data.get("seed")
        return table


def retry_delay_ms(attempt: int, unit: float, initial_ms: int = 1000,
                   max_ms: int = 60_000, jitter: float = 0.2) -> int:
    """Back-off before retry ``attempt`` (1, 2, ...): ``initial * 2^(attempt-1)`` capped at
    ``max_ms``, times ``1 ± jitter``; ``unit`` in [0, 1) is the caller's random draw."""
    base = min(initial_ms * (2 ** max(0, min(attempt, 40) - 1)), max_ms)
    return max(0, round(base * (1 + jitter * (2 * unit - 1))))


_OPS = {
    "put": None, "key": None,
    "get": SubscriptionTable._get,
    "delete": SubscriptionTable._delete,
    "links": SubscriptionTable._links,
    "tails": SubscriptionTable._tails,
    "wake": SubscriptionTable._wake,
    "delivered": SubscriptionTable._delivered,
    "claim": SubscriptionTable._claim,
    "ack": SubscriptionTable._ack,
    "callback": SubscriptionTable._ack,
    "release": SubscriptionTable._release,
    "expire": SubscriptionTable._expire,
}
