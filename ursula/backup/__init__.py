"""Backups of a whole cluster (``ursula-admin backup create | verify | restore``).

A backup is one image per Raft group, each the group's state machine snapshot at a known
applied index (taken after a ReadIndex barrier, so it holds every append acknowledged before
the backup started; with the hot bytes, and references to the cold chunks), plus a manifest
(``manifest.json``: format version, group count, per group its index, term, size and
SHA-256), written last. It lives in a local directory or in the cold store (``cold:NAME``: the
objects ``backups/NAME/...`` beside the chunks it references).

* ``ursula.backup.format``: the manifest, the location of a backup, reading an image's chunk
  references;
* ``ursula.backup.create``: fetch every group's image from the admin plane and store it;
* ``ursula.backup.verify``: check the images against the manifest and every referenced chunk
  against the cold tier;
* ``ursula.backup.restore``: write each group's image into a fresh node's journal (offline,
  before the new cluster starts).

May import: Twisted, the standard library, ``ursula.cold``, ``ursula.storage``, ``ursula.raft``,
``ursula.stream``, ``ursula.config``.
"""

from ursula.backup.format import BackupError, Location, Manifest, open_location

__all__ = ["BackupError", "Location", "Manifest", "open_location"]
