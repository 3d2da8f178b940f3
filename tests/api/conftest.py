"""The API tests run against the data plane (``ursula.http.dataplane``, the public port), on the
single-process core and on a Raft cluster of one: the ``node_factory`` of ``tests/conftest.py``."""
