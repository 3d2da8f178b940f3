"""ursula: a distributed, quorum-replicated server for the Durable Streams Protocol.

Package layout (imports only point down):

- ``ursula.protocol``  pure request parsing / response rendering helpers (stdlib only)
- ``ursula.stream``    the pure, deterministic stream state machine (imports protocol)
- ``ursula.raft``      Raft for one group, sans-I/O
- ``ursula.replica``   the group driver: a group's Raft node + state machine, pure
- ``ursula.storage``   the per-core journal
- ``ursula.wire``      the peer transport (AMP)
- ``ursula.core``      one node's runtime: wires the pure parts to the reactor
- ``ursula.http``      the Klein application (imports core through its interface)
- ``ursula.sim``       the deterministic simulator around the group driver
- ``ursula.config``    ``node.ini`` parsing with clear errors
- ``ursula.supervisor`` the ``twistd`` service maker

Every module says in its docstring what it may import; ``tests/test_imports.py`` checks it.

May import: nothing outside the standard library.
"""

__version__ = "0.1.0"
