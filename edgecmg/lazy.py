"""Public names of a package imported from their modules on first use (PEP 562), so that importing
the package (``import edgecmg``, the command line's start) loads nothing it does not need."""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package`` (called from its ``__init__``), whose public
    names ``exports`` maps to the modules that define them."""
    namespace = vars(sys.modules[package])

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # the next access is a plain lookup
        return value

    def __dir__() -> list[str]:
        # What tab completion offers: the public names, not the package's helpers (TYPE_CHECKING, the
        # submodules its imports bind); the dunders stay, as on any module.
        dunders = {name for name in namespace if name.startswith("__") and name.endswith("__")}
        return sorted(dunders | set(namespace.get("__all__", ())) | set(exports))

    return __getattr__, __dir__
