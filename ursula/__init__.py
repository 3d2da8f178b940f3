"""ursula: a distributed, quorum-replicated server for the Durable Streams Protocol.

Package layout (imports only point down):

- ``ursula.protocol``  pure request parsing / response rendering helpers (stdlib only)
- ``ursula.stream``    the pure, deterministic stream state machine (imports protocol)
- ``ursula.core``      one node's runtime: wires the state machine to the reactor
- ``ursula.http``      the Klein application (imports core through its interface)
- ``ursula.config``    ``node.ini`` parsing with clear errors
- ``ursula.supervisor`` the ``twistd`` service maker
"""

__version__ = "0.1.0"
