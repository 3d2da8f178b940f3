"""Raft records and messages: small dataclasses plus their cbor2 wire form.

What lives here: the log record types (`Entry`, `HardState`, `ConfState`, `SnapshotMeta`,
`Snapshot`), every message two replicas exchange (one dataclass per kind), and
`to_wire()` / `from_wire()` which turn a message into nested lists of ints, bools and bytes
that cbor2 (and AMP, later) can carry, and back.

All values are treated as immutable once built.  Node ids are positive ints; `NONE` (0) means
"no node".

May import: the standard library and cbor2 only.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import cbor2

NONE = 0

#: Entry kinds: an application command (or the leader's no-op, empty), or a membership change
#: (`ConfChange`, applied by the Raft node itself, never by the application).
ENTRY_NORMAL = 0
ENTRY_CONF_CHANGE = 1

#: `ConfChange` operations (one server at a time).
ADD_LEARNER = 1  # a new member that receives the log and snapshots but does not vote
PROMOTE = 2  # a learner becomes a voter
REMOVE = 3  # a voter or a learner leaves
_CONF_OPS = {ADD_LEARNER: "add_learner", PROMOTE: "promote", REMOVE: "remove"}


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry.  An entry with empty `data` is the leader's no-op; apps skip it."""

    term: int
    index: int
    data: bytes = b""
    kind: int = ENTRY_NORMAL

    def size(self) -> int:
        return len(self.data) + 16

    def to_wire(self) -> list:
        return [self.term, self.index, self.data, self.kind]

    @classmethod
    def from_wire(cls, w: list) -> Entry:
        return cls(int(w[0]), int(w[1]), bytes(w[2]), int(w[3]))


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on disk before any message that depends on it is sent."""

    term: int = 0
    vote: int = NONE
    commit: int = 0

    def to_wire(self) -> list:
        return [self.term, self.vote, self.commit]

    @classmethod
    def from_wire(cls, w: list) -> HardState:
        return cls(int(w[0]), int(w[1]), int(w[2]))


@dataclass(frozen=True, slots=True)
class ConfState:
    """The membership of a group: its voters and its learners (stored with snapshot metadata;
    changed by `ConfChange` entries)."""

    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()

    def to_wire(self) -> list:
        # no learners: the flat list of voters, as before learners existed
        if not self.learners:
            return list(self.voters)
        return [list(self.voters), list(self.learners)]

    @classmethod
    def from_wire(cls, w: list) -> ConfState:
        if w and isinstance(w[0], list):
            return cls(tuple(int(v) for v in w[0]), tuple(int(v) for v in w[1]))
        return cls(tuple(int(v) for v in w))

    @property
    def members(self) -> tuple[int, ...]:
        return self.voters + self.learners

    def changed(self, cc: ConfChange) -> ConfState:
        """This membership after ``cc`` (ValueError if ``cc`` does not apply to it)."""
        voters, learners = set(self.voters), set(self.learners)
        node = cc.node
        if cc.op == ADD_LEARNER:
            if node in voters or node in learners:
                raise ValueError(f"node {node} is already a member")
            learners.add(node)
        elif cc.op == PROMOTE:
            if node not in learners:
                raise ValueError(f"node {node} is not a learner")
            learners.discard(node)
            voters.add(node)
        elif cc.op == REMOVE:
            if node not in voters and node not in learners:
                raise ValueError(f"node {node} is not a member")
            if voters == {node}:
                raise ValueError(f"node {node} is the last voter")
            voters.discard(node)
            learners.discard(node)
        else:
            raise ValueError(f"unknown membership change {cc.op}")
        return ConfState(tuple(sorted(voters)), tuple(sorted(learners)))


@dataclass(frozen=True, slots=True)
class ConfChange:
    """One membership change, the data of an ``ENTRY_CONF_CHANGE`` entry."""

    op: int
    node: int

    def encode(self) -> bytes:
        return cbor2.dumps([self.op, self.node])

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        op, node = cbor2.loads(data)
        return cls(int(op), int(node))

    def __str__(self) -> str:
        return f"{_CONF_OPS.get(self.op, self.op)} {self.node}"


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int = 0
    term: int = 0
    conf: ConfState = ConfState()

    def to_wire(self) -> list:
        return [self.index, self.term, self.conf.to_wire()]

    @classmethod
    def from_wire(cls, w: list) -> SnapshotMeta:
        return cls(int(w[0]), int(w[1]), ConfState.from_wire(w[2]))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An application state-machine image (opaque bytes) as of `meta.index`."""

    meta: SnapshotMeta
    data: bytes = b""

    def to_wire(self) -> list:
        return [self.meta.to_wire(), self.data]

    @classmethod
    def from_wire(cls, w: list) -> Snapshot:
        return cls(SnapshotMeta.from_wire(w[0]), bytes(w[1]))


# ---------------------------------------------------------------------------------------------
# Messages.  Every message has `term`, `src` and `dst` first; `TAG` is its wire discriminator.


class Message:
    """Mixin for all messages: generic wire encoding driven by the dataclass fields."""

    __slots__ = ()
    TAG: ClassVar[int]
    # field name -> (encode, decode) for fields that are not plain ints/bools/bytes
    _CODECS: ClassVar[dict[str, tuple[Any, Any]]] = {}

    # set for each message class by `_plan` (below): the fields read at once, and the
    # positions (in the wire list) of the fields that have a codec
    _GET: ClassVar[Any]
    _ARITY: ClassVar[int]
    _ENC: ClassVar[tuple]
    _DEC: ClassVar[tuple]

    def to_wire(self) -> list:
        out: list = [self.TAG, *self._GET(self)]
        for i, enc in self._ENC:
            out[i] = enc(out[i])
        return out

    def encode(self) -> bytes:
        return cbor2.dumps(self.to_wire())


def _entries_enc(es: tuple[Entry, ...]) -> list:
    return [e.to_wire() for e in es]


def _entries_dec(w: list) -> tuple[Entry, ...]:
    return tuple(Entry.from_wire(x) for x in w)


_META = (SnapshotMeta.to_wire, SnapshotMeta.from_wire)
_ENTRIES = (_entries_enc, _entries_dec)


@dataclass(frozen=True, slots=True)
class VoteRequest(Message):
    """RequestVote.  `pre` marks a pre-vote (term is the would-be term, not adopted by anyone);
    `transfer` marks a campaign started by TimeoutNow, which may override a follower's lease."""

    TAG: ClassVar[int] = 1
    term: int
    src: int
    dst: int
    last_index: int
    last_term: int
    pre: bool = False
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class VoteResponse(Message):
    TAG: ClassVar[int] = 2
    term: int
    src: int
    dst: int
    granted: bool
    pre: bool = False


@dataclass(frozen=True, slots=True)
class AppendEntries(Message):
    """AppendEntries (empty `entries` is a probe).  `commit` is the leader's commit index."""

    TAG: ClassVar[int] = 3
    _CODECS: ClassVar[dict] = {"entries": _ENTRIES}
    term: int
    src: int
    dst: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int


@dataclass(frozen=True, slots=True)
class AppendResponse(Message):
    """Success: `index` is the follower's last index matching the leader's log.
    Reject: `index` is the rejected `prev_index`; `hint_index`/`hint_term` give the largest
    follower index whose term is <= the leader's prev_term (fast back-off)."""

    TAG: ClassVar[int] = 4
    term: int
    src: int
    dst: int
    index: int
    reject: bool = False
    hint_index: int = 0
    hint_term: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """Leader heartbeat; `ctx` non-empty when it also confirms leadership for a ReadIndex."""

    TAG: ClassVar[int] = 5
    term: int
    src: int
    dst: int
    commit: int
    ctx: bytes = b""


@dataclass(frozen=True, slots=True)
class HeartbeatResponse(Message):
    TAG: ClassVar[int] = 6
    term: int
    src: int
    dst: int
    ctx: bytes = b""


@dataclass(frozen=True, slots=True)
class InstallSnapshot(Message):
    """One chunk of a snapshot: bytes [offset, offset+len(data)) of the image; `done` on the
    last chunk."""

    TAG: ClassVar[int] = 7
    _CODECS: ClassVar[dict] = {"meta": _META}
    term: int
    src: int
    dst: int
    meta: SnapshotMeta
    offset: int
    data: bytes
    done: bool


@dataclass(frozen=True, slots=True)
class SnapshotResponse(Message):
    """Ack of a (non-final) chunk: the follower holds `offset` bytes of snapshot `index`."""

    TAG: ClassVar[int] = 8
    term: int
    src: int
    dst: int
    index: int
    offset: int


@dataclass(frozen=True, slots=True)
class TimeoutNow(Message):
    """Leadership transfer: the receiver starts an election at once (no pre-vote)."""

    TAG: ClassVar[int] = 9
    term: int
    src: int
    dst: int


@dataclass(frozen=True, slots=True)
class ReadIndexRequest(Message):
    """A follower asks the leader for a read index on behalf of its client."""

    TAG: ClassVar[int] = 10
    term: int
    src: int
    dst: int
    ctx: bytes


@dataclass(frozen=True, slots=True)
class ReadIndexResponse(Message):
    TAG: ClassVar[int] = 11
    term: int
    src: int
    dst: int
    ctx: bytes
    index: int


MESSAGE_TYPES: tuple[type, ...] = (
    VoteRequest,
    VoteResponse,
    AppendEntries,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    SnapshotResponse,
    TimeoutNow,
    ReadIndexRequest,
    ReadIndexResponse,
)
_BY_TAG: dict[int, type] = {cls.TAG: cls for cls in MESSAGE_TYPES}


def _plan(cls) -> None:
    """Work out once per message class what ``to_wire`` / ``from_wire`` do per field (reading
    ``dataclasses.fields`` for every message cost more than the rest of the encoding)."""
    names = [f.name for f in fields(cls)]
    getter = operator.attrgetter(*names)
    cls._GET = getter if len(names) > 1 else (lambda m, g=getter: (g(m),))
    cls._ARITY = len(names)
    cls._ENC = tuple((i + 1, cls._CODECS[n][0]) for i, n in enumerate(names) if n in cls._CODECS)
    cls._DEC = tuple((i + 1, cls._CODECS[n][1]) for i, n in enumerate(names) if n in cls._CODECS)


for _cls in MESSAGE_TYPES:
    _plan(_cls)


def to_wire(msg: Message) -> list:
    """Message -> nested list of ints, bools and bytes (cbor2-encodable)."""
    return msg.to_wire()


def from_wire(w: list) -> Message:
    """Inverse of `to_wire`.  Raises ValueError on an unknown tag or wrong arity."""
    try:
        cls = _BY_TAG[int(w[0])]
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise ValueError(f"not a raft message: {w!r:.80}") from e
    if len(w) != cls._ARITY + 1:
        raise ValueError(f"{cls.__name__}: expected {cls._ARITY} fields, got {len(w) - 1}")
    if not cls._DEC:
        return cls(*w[1:])
    args = list(w)
    for i, dec in cls._DEC:
        args[i] = dec(args[i])
    return cls(*args[1:])


def encode_message(msg: Message) -> bytes:
    return cbor2.dumps(msg.to_wire())


def decode_message(data: bytes) -> Message:
    return from_wire(cbor2.loads(data))
