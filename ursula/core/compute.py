"""The node's side of the compute extension: the reducer every local state machine is given
(``ursula.compute.WasmReducer``), with its per-record failures logged (each replica logs the
failures it reduces, the 1st, 2nd, 4th, ... and every 1000th of a kind; every one is counted in
``RaftCore.stats`` and the metrics).

May import: Twisted (the logger), ``ursula.compute``.
"""

from __future__ import annotations

from twisted.logger import Logger

log = Logger()


def _should_log(count: int) -> bool:
    """The 1st, 2nd, 4th, 8th ... and then every 1000th failure of a kind: a module that fails
    on every record must not flood the log (the metrics count every one)."""
    return count & (count - 1) == 0 or count % 1000 == 0


def make_reducer(enabled: bool = True, module_cache: int = 64):
    """The node's reducer, or None when ``[compute] enabled`` is off (bindings are refused)."""
    if not enabled:
        return None
    from ursula.compute import WasmReducer
    reducer = WasmReducer(module_cache=module_cache)

    def logged(kind: str, reason: str, binding) -> None:
        count = reducer.errors.get(kind, 0)
        if _should_log(count):
            log.warn("compute: module {module} ({digest}): a call failed ({kind}, failure "
                     "{count} of this kind here): {reason}", module=binding.module_id,
                     digest=binding.digest[:12], kind=kind, count=count, reason=reason)
    reducer.on_error = logged
    return reducer


def reducer_stats(reducer) -> dict:
    if reducer is None:
        return {"compute_calls": 0, "compute_errors": {}}
    stats = reducer.stats()
    return {"compute_calls": stats["calls"], "compute_errors": stats["errors"]}
