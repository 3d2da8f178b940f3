"""``verify``: a backup checked against its manifest and the cold tier.

Every group image must be present with the size and SHA-256 the manifest records and decode
as a state machine snapshot; every cold chunk an image references must be in the cold store,
with a valid header, the range and checksum the reference records (``ursula.cold.chunks``; a
reference into a pack, ``<pack key>#<offset>``, is read as the store reads it: that range).
A chunk deleted since the backup was made (its stream was deleted or expired, so the running
cluster collected it) shows up here as missing.

May import: Twisted, the standard library, ``ursula.cold``, ``ursula.backup``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.internet import defer

from ursula.backup.format import BackupError, image_summary
from ursula.cold import ChunkMissing, ColdError, decode_chunk
from ursula.cold.chunks import fetch_range

#: Chunks fetched at once while verifying.
PARALLEL_FETCHES = 8


@dataclass
class Report:
    groups: int = 0
    streams: int = 0
    chunks: int = 0
    cold_bytes: int = 0
    hot_bytes: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@defer.inlineCallbacks
def verify(location, cold_store, check_chunks: bool = True, manifest=None):
    """A ``Report`` of ``location``; ``cold_store``: the cluster's (None: no cold tier)."""
    if manifest is None:
        manifest = yield location.manifest()
    report = Report(groups=manifest.group_count)
    chunks = {}
    for entry in manifest.groups:
        try:
            data = yield location.image(entry)
            streams, refs, hot, _ = image_summary(data)
        except BackupError as error:
            report.problems.append(str(error))
            continue
        report.streams += streams
        report.hot_bytes += hot
        for ref in refs:
            chunks.setdefault(ref[0], (entry.group, *ref))
    report.chunks = len(chunks)
    report.cold_bytes = sum(end - start for _, _, start, end, _, _ in chunks.values())
    if not check_chunks or not chunks:
        return report
    if cold_store is None:
        report.problems.append(f"the backup references {len(chunks)} cold chunks, but the "
                               "config has no cold store ([cold] of the cluster's nodes)")
        return report
    semaphore = defer.DeferredSemaphore(PARALLEL_FETCHES)

    @defer.inlineCallbacks
    def check(group, key, start, end, checksum, name):
        try:
            blob = yield cold_store.get(*fetch_range(key, start, end))
            decode_chunk(blob, key, start, end, checksum)
        except ChunkMissing:
            report.problems.append(f"group {group} stream {name}: cold chunk {key} "
                                   f"[{start}, {end}) is missing")
        except ColdError as error:
            report.problems.append(f"group {group} stream {name}: {error}")

    yield defer.gatherResults([semaphore.run(check, *ref) for ref in sorted(chunks.values())],
                              consumeErrors=True)
    return report
