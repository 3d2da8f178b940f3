"""The cold tier: immutable chunks of stream bytes in an object store, behind ``IColdStore``.

* ``ursula.cold.interfaces``: ``IColdStore`` and its errors;
* ``ursula.cold.chunks``: the chunk layout (a header with a checksum) and the object keys;
* ``ursula.cold.memory``, ``ursula.cold.local``, ``ursula.cold.s3``: the three backends;
* ``ursula.cold.cache``: the LRU chunk cache (a byte cap, one fetch per chunk at a time).

``open_store(section, data_dir, reactor)`` builds the backend ``[cold] backend`` names.

May import: Twisted, zope.interface, boto3, ``ursula.storage``.
"""

from __future__ import annotations

import os

from ursula.cold.cache import ChunkCache
from ursula.cold.chunks import chunk_key, decode_chunk, encode_chunk
from ursula.cold.interfaces import ChunkCorrupt, ChunkMissing, ColdError, IColdStore
from ursula.cold.memory import MemoryColdStore

__all__ = ["ChunkCache", "ChunkCorrupt", "ChunkMissing", "ColdError", "IColdStore",
           "MemoryColdStore", "chunk_key", "decode_chunk", "encode_chunk", "open_store"]


def open_store(section, data_dir: str, reactor):
    """The cold store of ``[cold]`` (``section``: a ``ColdSection``); None for ``none``."""
    if section.backend == "none":
        return None
    if section.backend == "memory":
        return MemoryColdStore()
    if section.backend == "s3":
        from ursula.cold.s3 import S3ColdStore
        return S3ColdStore(reactor, section.bucket, prefix=section.prefix,
                           endpoint_url=section.endpoint_url or None,
                           region=section.region or None)
    from ursula.cold.local import LocalColdStore
    root = section.directory or os.path.join(data_dir, "cold")
    return LocalColdStore(reactor, root)
