"""``WasmReducer``: the compute extension's reducer (``ursula.stream.compute.Reducer``), run by
the state machine of every replica at apply.

Every call runs in a fresh wasmtime instance (no state survives between calls but the bytes
the host passes in), under the binding's limits: ``fuel`` (wasmtime's deterministic fuel
metering: the same module, state and record burn the same fuel everywhere, so the same record
fails the same way on every replica), ``memory_pages`` (the store's memory limit: a
``memory.grow`` past it fails) and ``max_output_bytes``. A failure raises
``ReduceFailed(kind, reason)``: ``fuel``; ``memory`` (the call trapped, and the same call given
twice the memory grows past the limit: a failed ``memory.grow`` made it trap; or the instance
could not start within the limit); ``output``; ``abi`` (an answer outside memory);
``rejected`` (a negative answer); ``trap`` (anything else, a host-side error included: nothing
but ``ReduceFailed`` leaves a call). Each failure is counted (``stats``) and reported to
``on_error(kind, reason, binding)`` (the node logs it).

Compiled modules are cached by digest (compiled from the binding's own bytes the first time).

May import: ``ursula.stream`` (the compute types) and wasmtime.
"""

from __future__ import annotations

from ctypes import POINTER, addressof, byref, memmove, string_at

import wasmtime

from ursula.compute.abi import PAGE, ModuleError, compile_module, engine
from ursula.stream.compute import Binding, ReduceFailed

#: Compiled modules kept (by digest) by default; the least recently used goes first
#: (``[compute] module_cache``).
MODULE_CACHE = 64
MAX_PAGES = 65536
_MASK32 = 0xFFFFFFFF


class WasmReducer:
    def __init__(self, on_error=None, module_cache: int = MODULE_CACHE):
        self.on_error = on_error
        self.module_cache = max(1, module_cache)
        self._modules: dict[str, wasmtime.Module] = {}
        self.calls = 0
        self.errors: dict[str, int] = {}

    def stats(self) -> dict:
        return {"calls": self.calls, "errors": dict(self.errors)}

    # -- the Reducer interface -------------------------------------------------------------

    def reduce(self, binding: Binding, state: bytes, record: bytes) -> bytes:
        return self._call(binding, "reduce", state, record)

    def render(self, binding: Binding, state: bytes) -> bytes:
        return self._call(binding, "render", state, None)

    # -- calls -----------------------------------------------------------------------------

    def _module(self, binding: Binding) -> wasmtime.Module:
        module = self._modules.pop(binding.digest, None)
        if module is None:
            module = compile_module(binding.module)
            if len(self._modules) >= self.module_cache:
                del self._modules[next(iter(self._modules))]
        self._modules[binding.digest] = module
        return module

    def _call(self, binding: Binding, name: str, state: bytes, record: bytes | None) -> bytes:
        self.calls += 1
        try:
            return self._run(binding, name, state, record)
        except ReduceFailed as failure:
            self._failed(failure, binding)
            raise
        except Exception as error:  # a host-side surprise must not escape into apply
            failure = ReduceFailed("trap", f"{name}: host error {error!r}")
            self._failed(failure, binding)
            raise failure from None

    def _failed(self, failure: ReduceFailed, binding: Binding) -> None:
        self.errors[failure.kind] = self.errors.get(failure.kind, 0) + 1
        if self.on_error is not None:
            self.on_error(failure.kind, failure.reason, binding)

    def _run(self, binding: Binding, name: str, state: bytes, record: bytes | None) -> bytes:
        try:
            module = self._module(binding)
        except ModuleError as error:  # cannot happen for a binding the machine accepted
            raise ReduceFailed("abi", str(error)) from None
        limit = binding.memory_pages * PAGE
        try:
            return self._execute(module, binding, name, state, record, limit)[0]
        except wasmtime.Trap as trap:
            if trap.trap_code == wasmtime.TrapCode.OUT_OF_FUEL:
                raise ReduceFailed("fuel", f"{name} ran out of fuel ({binding.fuel})") from None
            if self._needs_more_memory(module, binding, name, state, record, limit):
                raise ReduceFailed("memory", f"{name} needs more memory than the binding "
                                             f"allows ({binding.memory_pages} pages): "
                                             f"{_message(trap)}") from None
            raise ReduceFailed("trap", f"{name} trapped: {_message(trap)}") from None
        except _NoStart as error:
            raise ReduceFailed("memory", f"the instance does not start within "
                                         f"{binding.memory_pages} pages: {error}") from None
        except wasmtime.WasmtimeError as error:
            raise ReduceFailed("trap", f"{name} failed: {_message(error)}") from None

    def _needs_more_memory(self, module, binding, name, state, record, limit) -> bool:
        """After a trap: whether the same call, given twice the memory, grows past the
        binding's limit (then a failed ``memory.grow`` is what made it trap). A function of
        the call's inputs only, so every replica classifies a failure alike."""
        probe = min(2 * limit, MAX_PAGES * PAGE)
        if probe <= limit:
            return False
        try:
            size = self._execute(module, binding, name, state, record, probe)[1]
        except _Probed as probed:
            size = probed.size
        except (wasmtime.WasmtimeError, ReduceFailed, _NoStart):
            return False
        return size > limit

    @staticmethod
    def _execute(module, binding: Binding, name: str, state: bytes, record: bytes | None,
                 limit: int) -> tuple[bytes, int]:
        """One call in a fresh instance: (output, memory size at the end)."""
        store = wasmtime.Store(engine())
        store.set_fuel(binding.fuel)
        store.set_limits(memory_size=limit)
        memory = None
        try:
            try:
                instance = wasmtime.Instance(store, module, [])
            except wasmtime.WasmtimeError as error:
                raise _NoStart(_message(error)) from None
            exports = instance.exports(store)
            memory = exports["memory"]
            size = len(state) + (len(record) if record is not None else 0)
            ptr = _call_export(store, exports["alloc"], (size,))
            if ptr < 0 or ptr + size > memory.data_len(store):
                raise ReduceFailed("abi", f"alloc({size}) answered {ptr}, outside memory")
            base = addressof(memory.data_ptr(store).contents)  # (bounds checked above)
            if state:
                memmove(base + ptr, state, len(state))
            if record is None:
                packed = _call_export(store, exports["render"], (ptr, len(state)))
            else:
                if record:
                    memmove(base + ptr + len(state), record, len(record))
                packed = _call_export(store, exports["reduce"],
                                      (ptr, len(state), ptr + len(state), len(record)))
            if packed < 0:
                raise ReduceFailed("rejected", f"{name} refused its input ({packed})")
            out_ptr, out_len = packed >> 32, packed & _MASK32
            if out_len > binding.max_output_bytes:
                raise ReduceFailed("output", f"{name} answered {out_len} bytes; the binding "
                                             f"allows {binding.max_output_bytes}")
            end = memory.data_len(store)
            if out_ptr + out_len > end:
                raise ReduceFailed("abi", f"{name} answered bytes outside memory")
            # (the memory may have moved while the call grew it)
            out = string_at(addressof(memory.data_ptr(store).contents) + out_ptr, out_len) \
                if out_len else b""
            return out, end
        except wasmtime.Trap:
            if memory is not None and limit > binding.memory_pages * PAGE:
                raise _Probed(memory.data_len(store)) from None
            raise
        finally:
            store.close()


def _public_call(store, func, args: tuple) -> int:
    return func(store, *args)


def _make_fast_call():
    """A call of an export whose parameters are all i32 and whose one result is an i32 or i64,
    through wasmtime's C API directly: ``Func.__call__`` converts every argument through
    generic type checks, which is most of the cost of a small call. Falls back to the public
    call if this wasmtime lacks the pieces (the self-test below compares the two)."""
    try:
        from wasmtime import _ffi as ffi
        val_t, i32, i64 = ffi.wasmtime_val_t, ffi.WASMTIME_I32.value, ffi.WASMTIME_I64.value
        call, trap_t = ffi.wasmtime_func_call, ffi.wasm_trap_t
        arrays = {n: val_t * n for n in range(5)}
    except (ImportError, AttributeError):  # pragma: no cover - another wasmtime
        return _public_call

    def fast_call(store, func, args: tuple) -> int:
        n = len(args)
        params = arrays[n]()
        for i, value in enumerate(args):
            params[i].kind = i32
            params[i].of.i32 = value
        results = arrays[1]()
        trap = POINTER(trap_t)()
        error = call(store._context(), byref(func._func), params, n, results, 1, byref(trap))
        if error:
            raise wasmtime.WasmtimeError._from_ptr(error)
        if trap:
            raise wasmtime.Trap._from_ptr(trap)
        result = results[0]
        return result.of.i64 if result.kind == i64 else result.of.i32

    try:  # the self-test: the same answers as the public call, traps included
        probe = wasmtime.Module(engine(), b"""(module
          (func (export "a") (param i32 i32) (result i64)
            (i64.sub (i64.extend_i32_s (local.get 0)) (i64.extend_i32_s (local.get 1))))
          (func (export "b") (param i32) (result i32) (i32.div_u (i32.const 1) (local.get 0))))""")
        store = wasmtime.Store(engine())
        store.set_fuel(10_000)
        exports = wasmtime.Instance(store, probe, []).exports(store)
        for args in ((5, 7), (-1, 2**31 - 1)):
            assert fast_call(store, exports["a"], args) == exports["a"](store, *args)
        assert fast_call(store, exports["b"], (1,)) == 1
        try:
            fast_call(store, exports["b"], (0,))
        except wasmtime.Trap as trap:
            assert trap.trap_code == wasmtime.TrapCode.INTEGER_DIVISION_BY_ZERO
        else:
            raise AssertionError("no trap")
        store.close()
    except Exception:  # pragma: no cover - another wasmtime
        return _public_call
    return fast_call


_CALL = None


def _call_export(store, func, args: tuple) -> int:
    global _CALL
    if _CALL is None:
        _CALL = _make_fast_call()
    return _CALL(store, func, args)


class _NoStart(Exception):
    """The instance could not be made (its initial memory is over the limit)."""


class _Probed(Exception):
    """A probe call trapped; ``size`` is its memory's size then."""

    def __init__(self, size: int):
        super().__init__(size)
        self.size = size


def _message(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
