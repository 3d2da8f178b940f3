"""The compute extension's part of the state machine: a stream's binding to a WebAssembly
reducer, its materialised state, and the compaction policy (``docs/wasm.md``).

A ``Binding`` lives in ``Stream.compute``. It carries everything a replica needs to run the
reducer: the module's bytes and digest and the limits of one call (fuel, memory pages, output
bytes), so every replica reduces every committed record with the same code under the same
budget, whatever its own configuration says. The reducer itself is injected into the
``StreamMachine`` (an object with ``reduce`` and ``render``, see ``Reducer``): this package stays
pure and the simulator can run it; the node passes ``ursula.compute.WasmReducer``.

A record whose reduction fails (``ReduceFailed``: a trap, fuel exhaustion, a memory or output
limit, a broken ABI answer) is skipped: the state stays what it was before it, the failure is
counted in the binding (``errors``, ``error_kinds``, ``last_error``) and the append itself
succeeds. The error's kind is replicated; its long reason (a trap's message) is only logged by
the reducer of each replica.

May import: the standard library only.
"""

from __future__ import annotations

import hashlib

#: The reducer ABI this server speaks (the module exports ``ursula_abi_version`` returning it).
ABI_VERSION = 1

#: How a call can fail (``ReduceFailed.kind``).
ERROR_KINDS = ("trap", "fuel", "memory", "output", "abi", "rejected")


class ReduceFailed(Exception):
    """One reducer call failed: ``kind`` (one of ``ERROR_KINDS``) and a one-line ``reason``."""

    def __init__(self, kind: str, reason: str):
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


class Reducer:
    """The interface the state machine calls (``ursula.compute.WasmReducer`` implements it).

    Both methods are deterministic functions of their arguments (the binding's module bytes
    and limits, the state, the record) and raise ``ReduceFailed`` on any failure."""

    def reduce(self, binding: Binding, state: bytes, record: bytes) -> bytes:
        raise NotImplementedError

    def render(self, binding: Binding, state: bytes) -> bytes:
        raise NotImplementedError


def state_digest(state: bytes) -> str:
    """SHA-256 of a materialised state, in hex (``GET {stream}/compute`` shows it)."""
    return hashlib.sha256(state).hexdigest()


def module_digest(module: bytes) -> str:
    """SHA-256 of a module's binary, in hex: the digest a binding names."""
    return hashlib.sha256(module).hexdigest()


class Binding:
    """A stream's compute binding and its materialised state (the state of every record of
    ``[0, offset)``, failed records skipped)."""

    __slots__ = ("module_id", "digest", "module", "fuel", "memory_pages", "max_output_bytes",
                 "every_records", "every_bytes", "snapshot_content_type", "bound_at", "state",
                 "offset", "records", "errors", "error_kinds", "last_error", "since_records",
                 "since_bytes", "snapshots", "render_errors")

    def __init__(self, module_id: str, digest: str, module: bytes, fuel: int,
                 memory_pages: int, max_output_bytes: int, every_records: int,
                 every_bytes: int, snapshot_content_type: str, bound_at: int = 0):
        self.module_id = module_id
        self.digest = digest
        self.module = module
        self.fuel = fuel
        self.memory_pages = memory_pages
        self.max_output_bytes = max_output_bytes
        self.every_records = every_records  # compaction policy: 0 is off
        self.every_bytes = every_bytes
        self.snapshot_content_type = snapshot_content_type
        self.bound_at = bound_at  # the tail when the binding was made
        self.state = b""
        self.offset = 0  # the state covers [0, offset)
        self.records = 0  # records reduced (successfully)
        self.errors = 0  # records (and renders) that failed
        self.error_kinds: dict[str, int] = {}
        self.last_error: list | None = None  # [record end offset, kind]
        self.since_records = 0  # since the last automatic snapshot
        self.since_bytes = 0
        self.snapshots = 0  # automatic snapshots published
        self.render_errors = 0

    def same_binding(self, other: Binding) -> bool:
        """Whether ``other`` binds the same module with the same limits and policy."""
        return (self.module_id, self.digest, self.fuel, self.memory_pages,
                self.max_output_bytes, self.every_records, self.every_bytes,
                self.snapshot_content_type) == (
                    other.module_id, other.digest, other.fuel, other.memory_pages,
                    other.max_output_bytes, other.every_records, other.every_bytes,
                    other.snapshot_content_type)

    def failed(self, offset: int, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1
        self.last_error = [offset, kind]

    def due(self) -> bool:
        """Whether the compaction policy asks for an automatic snapshot now."""
        return bool((self.every_records and self.since_records >= self.every_records)
                    or (self.every_bytes and self.since_bytes >= self.every_bytes))

    def describe(self) -> dict:
        """What ``GET {stream}/compute`` answers (JSON-friendly; offsets as integers)."""
        return {
            "module": self.module_id, "digest": self.digest, "abi": ABI_VERSION,
            "limits": {"fuel": self.fuel, "memory_pages": self.memory_pages,
                       "max_output_bytes": self.max_output_bytes},
            "policy": {"every_records": self.every_records, "every_bytes": self.every_bytes,
                       "snapshot_content_type": self.snapshot_content_type},
            "bound_at": self.bound_at, "offset": self.offset, "records": self.records,
            "errors": self.errors, "error_kinds": dict(sorted(self.error_kinds.items())),
            "last_error": ({"offset": self.last_error[0], "kind": self.last_error[1]}
                           if self.last_error else None),
            "snapshots": self.snapshots, "render_errors": self.render_errors,
            "since_records": self.since_records, "since_bytes": self.since_bytes,
            "state_bytes": len(self.state), "state_digest": state_digest(self.state),
        }

    def to_wire(self) -> list:
        return [self.module_id, self.digest, self.module, self.fuel, self.memory_pages,
                self.max_output_bytes, self.every_records, self.every_bytes,
                self.snapshot_content_type, self.bound_at, self.state, self.offset,
                self.records, self.errors, dict(self.error_kinds), self.last_error,
                self.since_records, self.since_bytes, self.snapshots, self.render_errors]

    @classmethod
    def from_wire(cls, data: list) -> Binding:
        binding = cls(*data[:10])
        (binding.state, binding.offset, binding.records, binding.errors, kinds,
         binding.last_error, binding.since_records, binding.since_bytes, binding.snapshots,
         binding.render_errors) = data[10:20]
        binding.error_kinds = dict(kinds)
        return binding
