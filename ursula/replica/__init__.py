"""The group driver: one Raft group's node, state machine, pending proposals and reads, as a
pure object that the node runtime and the simulator both run (see ``driver``).

May import: the standard library, ``ursula.raft`` and ``ursula.stream``.
"""

from ursula.replica.driver import (
    BROKEN_RULES,
    AppliedEntry,
    GroupDriver,
    Output,
    Rejection,
    SnapshotPolicy,
    Work,
)

__all__ = ["BROKEN_RULES", "AppliedEntry", "GroupDriver", "Output", "Rejection",
           "SnapshotPolicy", "Work"]
