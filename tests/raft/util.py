"""Helpers for building a single RaftNode with a given persisted state."""

from __future__ import annotations

import random

from ursula.raft import Config, Entry, HardState, MemoryStorage, RaftNode


def make_node(
    node_id: int = 1,
    voters=(1, 2, 3),
    terms: list[int] | None = None,
    term: int = 0,
    vote: int = 0,
    commit: int = 0,
    seed: int = 0,
    **cfg,
) -> RaftNode:
    """A node whose log holds one entry per item of `terms` (entry i+1 has term terms[i])."""
    st = MemoryStorage(voters)
    ents = [Entry(t, i + 1, b"e%d" % (i + 1)) for i, t in enumerate(terms or [])]
    st.append(ents)
    st.set_hard_state(HardState(max(term, ents[-1].term if ents else 0), vote, commit))
    return RaftNode(Config(id=node_id, **cfg), st, random.Random(seed))


def drain(node: RaftNode):
    """Take one Ready, persist it to the node's own storage, advance; return it."""
    rd = node.ready()
    st = node.storage
    if rd.snapshot is not None:
        st.apply_snapshot(rd.snapshot)
    if rd.entries:
        st.append(rd.entries)
    if rd.hard_state is not None:
        st.set_hard_state(rd.hard_state)
    node.advance(rd)
    return rd
