"""The compute tests: ``tests/conftest.py``'s in-process nodes (the single-process core and a
Raft cluster of one) with the example modules registered on the admin plane."""
