"""The node's side of the compute extension: the reducer every local state machine is given
(``ursula.compute.WasmReducer``), with its per-record failures logged (each replica logs the
failures it reduces; the counts are in ``RaftCore.stats`` and the metrics).

May import: Twisted (the logger), ``ursula.compute``.
"""

from __future__ import annotations

from twisted.logger import Logger

log = Logger()


def _logged(kind: str, reason: str, binding) -> None:
    log.warn("compute: module {module} ({digest}): a call failed ({kind}): {reason}",
             module=binding.module_id, digest=binding.digest[:12], kind=kind, reason=reason)


def make_reducer(enabled: bool = True):
    """The node's reducer, or None when ``[compute] enabled`` is off (bindings are refused)."""
    if not enabled:
        return None
    from ursula.compute import WasmReducer
    return WasmReducer(on_error=_logged)


def reducer_stats(reducer) -> dict:
    if reducer is None:
        return {"compute_calls": 0, "compute_errors": {}}
    stats = reducer.stats()
    return {"compute_calls": stats["calls"], "compute_errors": stats["errors"]}
