"""Helpers shared by the storage tests."""

from __future__ import annotations

from ursula.raft.messages import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from ursula.storage.records import EntriesRecord, HardStateRecord


def ents(first: int, last: int, term: int = 1, tag: bytes = b"") -> tuple[Entry, ...]:
    return tuple(Entry(term, i, tag + b"e%d" % i) for i in range(first, last + 1))


def er(group: int, first: int, last: int, term: int = 1, tag: bytes = b"") -> EntriesRecord:
    return EntriesRecord(group, ents(first, last, term, tag))


def hs(group: int, term: int, vote: int = 0, commit: int = 0) -> HardStateRecord:
    return HardStateRecord(group, HardState(term, vote, commit))


def snap(index: int, term: int = 1, data: bytes = b"image", voters=(1, 2, 3)) -> Snapshot:
    return Snapshot(SnapshotMeta(index, term, ConfState(tuple(voters))), data + b"@%d" % index)
