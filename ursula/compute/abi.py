"""The reducer ABI, version 1 (``docs/wasm.md``), and the checks a module passes before it is
registered or bound: WebAssembly (binary, or WAT text compiled here), no imports at all, the
ABI's exports with their exact types, an ABI version this server speaks, and an instance that
fits the limits.

Exports of a module (ABI 1)::

    memory                                   the module's linear memory
    ursula_abi_version() -> i32              1
    alloc(len: i32) -> i32                   a buffer of len bytes in memory
    reduce(state_ptr, state_len, record_ptr, record_len: i32) -> i64
    render(state_ptr, state_len: i32) -> i64

``reduce`` and ``render`` answer ``(ptr << 32) | len`` of their output in memory (the new
state; the snapshot body), or a negative value to refuse the input (kind ``rejected``).

May import: ``ursula.stream`` (the compute types) and wasmtime.
"""

from __future__ import annotations

from dataclasses import dataclass

import wasmtime

from ursula.stream.compute import ABI_VERSION, module_digest

WASM_MAGIC = b"\0asm"
PAGE = 65536

#: name -> (parameter types, result types), as wasmtime spells them
FUNCTIONS = {
    "ursula_abi_version": ((), ("i32",)),
    "alloc": (("i32",), ("i32",)),
    "reduce": (("i32", "i32", "i32", "i32"), ("i64",)),
    "render": (("i32", "i32"), ("i64",)),
}


class ModuleError(Exception):
    """A module that cannot be used; ``str()`` is a one-line reason (a 400 at registration)."""


@dataclass(frozen=True, slots=True)
class ComputeLimits:
    """The limits of one reducer call (they travel in the binding: every replica uses them)."""

    fuel: int = 5_000_000
    memory_pages: int = 256
    max_output_bytes: int = 1 << 20


@dataclass(frozen=True, slots=True)
class ModuleInfo:
    module_id: str
    digest: str
    binary: bytes
    source: str  # "wasm" or "wat"

    def describe(self) -> dict:
        return {"id": self.module_id, "digest": self.digest, "bytes": len(self.binary),
                "source": self.source, "abi": ABI_VERSION}


_ENGINE = None


def engine() -> wasmtime.Engine:
    """The process's wasmtime engine: fuel metering on, NaNs canonicalised, no threads and no
    relaxed SIMD (whose results may differ between machines): every replica computes the same
    thing."""
    global _ENGINE
    if _ENGINE is None:
        config = wasmtime.Config()
        config.consume_fuel = True
        config.cranelift_nan_canonicalization = True
        config.wasm_threads = False
        config.wasm_relaxed_simd = False
        config.parallel_compilation = False
        _ENGINE = wasmtime.Engine(config)
    return _ENGINE


def to_binary(data: bytes) -> tuple[bytes, str]:
    """The module's binary and whether it came as "wasm" or "wat" text."""
    if data.startswith(WASM_MAGIC):
        return bytes(data), "wasm"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ModuleError("not a WebAssembly module (neither the binary format, which starts "
                          "with \\0asm, nor WAT text)") from None
    try:
        return bytes(wasmtime.wat2wasm(text)), "wat"
    except wasmtime.WasmtimeError as error:
        if "(module" not in text and "(func" not in text:
            raise ModuleError("not a WebAssembly module (neither the binary format, which "
                              "starts with \\0asm, nor WAT text)") from None
        raise ModuleError(f"WAT text does not compile: {_first_line(error)}") from None


def _first_line(error: Exception) -> str:
    """wasmtime's message on one line (its context lines joined), at most 300 characters."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = "; ".join(line for line in lines if not line.startswith("Caused by"))
    return (text[:297] + "...") if len(text) > 300 else (text or type(error).__name__)


def _kinds(types) -> tuple[str, ...]:
    return tuple(str(t) for t in types)


def compile_module(binary: bytes) -> wasmtime.Module:
    """Compile and check the ABI's static rules (imports, exports and their types)."""
    try:
        module = wasmtime.Module(engine(), binary)
    except wasmtime.WasmtimeError as error:
        raise ModuleError(f"not a valid WebAssembly module: {_first_line(error)}") from None
    imports = module.imports
    if imports:
        names = ", ".join(f"{i.module}.{i.name}" for i in imports[:5])
        raise ModuleError(f"a compute module may import nothing (no WASI, clock, randomness, "
                          f"network or files); this one imports {names}")
    exports = {e.name: e.type for e in module.exports}
    memory = exports.get("memory")
    if not isinstance(memory, wasmtime.MemoryType):
        raise ModuleError("the module must export its linear memory as 'memory'")
    for name, (params, results) in FUNCTIONS.items():
        kind = exports.get(name)
        if not isinstance(kind, wasmtime.FuncType):
            raise ModuleError(f"the module must export the function {name!r} (ABI "
                              f"{ABI_VERSION}, docs/wasm.md)")
        if _kinds(kind.params) != params or _kinds(kind.results) != results:
            raise ModuleError(f"export {name!r} must have the type ({', '.join(params)}) -> "
                              f"{', '.join(results)}; it has ({', '.join(_kinds(kind.params))})"
                              f" -> {', '.join(_kinds(kind.results)) or 'nothing'}")
    return module


def load_module(module_id: str, data: bytes, limits: ComputeLimits,
                max_module_bytes: int) -> ModuleInfo:
    """Check a module end to end (including a trial instance under ``limits`` and its ABI
    version); raises ``ModuleError`` with a one-line reason."""
    if not data:
        raise ModuleError("the module is empty")
    if len(data) > max_module_bytes:
        raise ModuleError(f"the module is {len(data)} bytes; [compute] max_module_bytes is "
                          f"{max_module_bytes}")
    binary, source = to_binary(data)
    if len(binary) > max_module_bytes:
        raise ModuleError(f"the compiled module is {len(binary)} bytes; [compute] "
                          f"max_module_bytes is {max_module_bytes}")
    module = compile_module(binary)
    store = wasmtime.Store(engine())
    store.set_fuel(limits.fuel)
    store.set_limits(memory_size=limits.memory_pages * PAGE)
    try:
        instance = wasmtime.Instance(store, module, [])
        version = instance.exports(store)["ursula_abi_version"](store)
    except wasmtime.Trap as trap:
        raise ModuleError(f"the module traps when started: {_first_line(trap)}") from None
    except wasmtime.WasmtimeError as error:
        raise ModuleError(f"the module does not start within the limits ([compute] "
                          f"memory_pages = {limits.memory_pages}): {_first_line(error)}") \
            from None
    if version != ABI_VERSION:
        raise ModuleError(f"the module speaks ABI version {version}; this server speaks "
                          f"{ABI_VERSION}")
    return ModuleInfo(module_id, module_digest(binary), binary, source)
