"""The WASM compute extension: modules run with wasmtime (no imports at all), the reducer ABI,
the limits of one call, and the node's module registry (``docs/wasm.md``).

``WasmReducer`` is the reducer the state machine calls at apply (``ursula.stream.compute``);
``ModuleRegistry`` keeps the modules registered with a node (admin API and ``[compute]
modules``); ``load_module`` checks a module (binary or WAT text) against the ABI.

May import: ``ursula.stream`` (the compute types) and wasmtime.
"""

from ursula.compute.abi import ComputeLimits, ModuleError, ModuleInfo, load_module
from ursula.compute.engine import WasmReducer
from ursula.compute.registry import ModuleRegistry, parse_module_list

__all__ = ["ComputeLimits", "ModuleError", "ModuleInfo", "ModuleRegistry", "WasmReducer",
           "load_module", "parse_module_list"]
