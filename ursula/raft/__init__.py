"""ursula.raft: a pure, sans-I/O Raft core (one RaftNode per group per replica).

Modules, one job each:
- messages: records (Entry, HardState, ConfState, ConfChange, Snapshot) and peer messages,
            with wire form
- log:      MemoryStorage (persisted state), Unstable (not yet persisted), RaftLog (both)
- progress: per-follower replication state on the leader, quorum arithmetic
- readonly: ReadIndex bookkeeping (linearizable reads without a log write)
- node:     RaftNode, Config, Ready: the role state machine driven by step/tick/propose, and
            membership changes (learners, one server at a time)

No Twisted, no clock, no I/O; randomness only from the random.Random the caller injects.
May import: the standard library and cbor2 only.
"""

from ursula.raft.log import MemoryStorage, RaftLog
from ursula.raft.messages import (
    ADD_LEARNER,
    ENTRY_CONF_CHANGE,
    ENTRY_NORMAL,
    NONE,
    PROMOTE,
    REMOVE,
    AppendEntries,
    AppendResponse,
    ConfChange,
    ConfState,
    Entry,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    Snapshot,
    SnapshotMeta,
    SnapshotResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
    decode_message,
    encode_message,
    from_wire,
    to_wire,
)
from ursula.raft.node import (
    CANDIDATE,
    FOLLOWER,
    LEADER,
    PRE_CANDIDATE,
    ConfChangeRefused,
    Config,
    NotLeader,
    ProposalDropped,
    RaftError,
    RaftNode,
    Ready,
)
from ursula.raft.readonly import ReadState

__all__ = [
    "ADD_LEARNER",
    "ENTRY_CONF_CHANGE",
    "ENTRY_NORMAL",
    "NONE",
    "PROMOTE",
    "REMOVE",
    "AppendEntries",
    "AppendResponse",
    "CANDIDATE",
    "Config",
    "ConfChange",
    "ConfChangeRefused",
    "ConfState",
    "Entry",
    "FOLLOWER",
    "HardState",
    "Heartbeat",
    "HeartbeatResponse",
    "InstallSnapshot",
    "LEADER",
    "MemoryStorage",
    "Message",
    "NotLeader",
    "PRE_CANDIDATE",
    "ProposalDropped",
    "RaftError",
    "RaftLog",
    "RaftNode",
    "ReadIndexRequest",
    "ReadIndexResponse",
    "ReadState",
    "Ready",
    "Snapshot",
    "SnapshotMeta",
    "SnapshotResponse",
    "TimeoutNow",
    "VoteRequest",
    "VoteResponse",
    "decode_message",
    "encode_message",
    "from_wire",
    "to_wire",
]
