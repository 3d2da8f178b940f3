"""The compute tests run on ``tests/conftest.py``'s in-process nodes (the single-process core
and a Raft cluster of one, each with the admin plane and its module registry); the modules and
helpers are in ``compute_helpers.py``."""
