"""``ModuleRegistry``: the compute modules registered with a node, kept as files
``<directory>/<id>.wasm`` (the checked binary), so that every process of the node (the
supervisor's admin plane writes, every core's data plane reads) sees the same set.

A module reaches the other replicas through Raft, not through this registry: ``PUT
{stream}/compute`` looks the module up here and puts its bytes and digest in the binding
command (``docs/wasm.md``). ``[compute] modules`` lists modules loaded (checked and written
here) when the node starts.

May import: ``ursula.stream`` (the compute types) and wasmtime.
"""

from __future__ import annotations

import os
import re

from ursula.compute.abi import ComputeLimits, ModuleError, ModuleInfo, load_module
from ursula.stream.compute import module_digest

MODULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_module_id(module_id: str) -> str:
    if not MODULE_ID.match(module_id or ""):
        raise ModuleError(f"bad module id {module_id!r}: 1 to 64 of A-Z a-z 0-9 . _ -, "
                          "starting with a letter or digit")
    return module_id


def parse_module_list(text: str) -> list[tuple[str, str]]:
    """``id = path`` entries (newlines or commas between them), as ``[compute] modules``."""
    out = []
    for item in text.replace(",", "\n").splitlines():
        item = item.strip()
        if not item:
            continue
        module_id, sep, path = item.partition("=")
        if not sep or not path.strip():
            raise ModuleError(f"expected 'id = path', got {item!r}")
        out.append((check_module_id(module_id.strip()), path.strip()))
    return out


class ModuleRegistry:
    def __init__(self, directory: str, limits: ComputeLimits | None = None,
                 max_module_bytes: int = 4 << 20):
        self.directory = directory
        self.limits = limits or ComputeLimits()
        self.max_module_bytes = max_module_bytes
        self._cache: dict[str, tuple[float, ModuleInfo]] = {}

    def _path(self, module_id: str) -> str:
        return os.path.join(self.directory, check_module_id(module_id) + ".wasm")

    def register(self, module_id: str, data: bytes) -> ModuleInfo:
        """Check ``data`` (binary or WAT) and keep it under ``module_id`` (replacing one of that
        id: bindings made before keep their own copy and digest)."""
        path = self._path(module_id)
        info = load_module(module_id, data, self.limits, self.max_module_bytes)
        os.makedirs(self.directory, exist_ok=True)
        partial = f"{path}.{os.getpid()}.partial"
        with open(partial, "wb") as handle:
            handle.write(info.binary)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
        self._cache.pop(module_id, None)
        return info

    def load_files(self, entries: list[tuple[str, str]]) -> list[ModuleInfo]:
        """Register ``(id, path)`` modules from files (``[compute] modules``)."""
        out = []
        for module_id, path in entries:
            try:
                with open(path, "rb") as handle:
                    data = handle.read()
            except OSError as error:
                raise ModuleError(f"module {module_id!r}: cannot read {path!r} "
                                  f"({error.strerror})") from None
            try:
                out.append(self.register(module_id, data))
            except ModuleError as error:
                raise ModuleError(f"module {module_id!r} ({path}): {error}") from None
        return out

    def get(self, module_id: str) -> ModuleInfo | None:
        """The registered module, or None."""
        path = self._path(module_id)
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError:
            self._cache.pop(module_id, None)
            return None
        cached = self._cache.get(module_id)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        with open(path, "rb") as handle:
            binary = handle.read()
        info = ModuleInfo(module_id, module_digest(binary), binary, "wasm")
        self._cache[module_id] = (mtime, info)
        return info

    def remove(self, module_id: str) -> bool:
        try:
            os.unlink(self._path(module_id))
        except FileNotFoundError:
            return False
        self._cache.pop(module_id, None)
        return True

    def list(self) -> list[ModuleInfo]:
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            if name.endswith(".wasm") and MODULE_ID.match(name[:-5]):
                info = self.get(name[:-5])
                if info is not None:
                    out.append(info)
        return out
