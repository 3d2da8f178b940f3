"""ursula.storage: the per-core journal (WAL), Raft hard state and snapshots, recovery.

- `ursula.storage.records`: record kinds and their length + CRC framing (pure).
- `ursula.storage.journal`: `Journal` (segment files, synchronous I/O), `recover`,
  `memory_storage`.
- `ursula.storage.committer`: `GroupCommitter`, group commit off the reactor thread (Twisted).

Importing this package does not import Twisted; import `ursula.storage.committer` for that.
May import: the standard library, cbor2 and ursula.raft (records and MemoryStorage); only
`committer` may import Twisted.
"""

from ursula.storage.journal import (
    FSYNC_ALWAYS,
    FSYNC_NEVER,
    Journal,
    JournalCorrupt,
    JournalError,
    RecoveredGroup,
    Recovery,
    RecoveryReport,
    memory_storage,
    recover,
)
from ursula.storage.records import (
    CheckpointRecord,
    EntriesRecord,
    HardStateRecord,
    RecordError,
    SnapshotRecord,
    SnapshotRef,
    decode_stream,
)

__all__ = [
    "FSYNC_ALWAYS",
    "FSYNC_NEVER",
    "CheckpointRecord",
    "EntriesRecord",
    "HardStateRecord",
    "Journal",
    "JournalCorrupt",
    "JournalError",
    "RecordError",
    "RecoveredGroup",
    "Recovery",
    "RecoveryReport",
    "SnapshotRecord",
    "SnapshotRef",
    "decode_stream",
    "memory_storage",
    "recover",
]
