"""Helpers shared by the Triton kernels: availability, lazy JIT, shape buckets, AOT checks.

Why Triton is imported lazily: Triton decides at import time whether kernels are compiled for the
GPU or run by its CPU interpreter (``TRITON_INTERPRET=1``): ``import triton.language`` already
decorates Triton's own library functions (``tl.sum``, ``tl.max``...) for one mode or the other. The
torch references live in the same modules as the kernels and are imported by CPU-only code long
before anyone sets that variable (a test, a user on a laptop), so nothing here imports Triton until a
kernel is launched: kernel sources are plain functions whose global ``tl`` is bound, and which are
decorated, on first launch (``lazy_jit``).
"""
from __future__ import annotations

import importlib.util
import os
import sys
from typing import Callable, Optional

from edgecmg.errors import BackendUnavailableError

TRITON_INSTALL_HINT = "pip install 'edgecmg[triton]' (Triton >= 3.0, CUDA GPU; or TRITON_INTERPRET=1 for the CPU interpreter)"
_INTERPRET_ENV = "TRITON_INTERPRET"


def triton_available() -> bool:
    """True when Triton is installed. Does not import it (see the module docstring)."""
    if "triton" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        return False


def require_triton():
    """Import and return ``triton.language``; BackendUnavailableError when that fails."""
    try:
        import triton.language as tl
    except Exception as exc:  # ImportError, or a broken install raising something else
        raise BackendUnavailableError("triton", f"cannot import triton ({type(exc).__name__}: {exc})",
                                      TRITON_INSTALL_HINT) from exc
    return tl


def interpret_mode() -> bool:
    """True when Triton kernels run through the CPU interpreter.

    Once ``triton.language`` is imported the mode is fixed (its library functions were decorated for
    one mode), so that is what is reported, whatever the environment says now; before the import,
    ``TRITON_INTERPRET`` decides.
    """
    std = sys.modules.get("triton.language.standard")
    if std is not None:
        return type(getattr(std, "sum", None)).__name__ == "InterpretedFunction"
    return os.environ.get(_INTERPRET_ENV, "0").strip().lower() in ("1", "true", "on", "yes", "y")


_JIT_CACHE: dict[tuple[str, bool], object] = {}  # (function + jit options, mode) -> kernel


def bind_language(fn: Callable, constexprs: Optional[dict] = None) -> None:
    """Bind ``tl`` (and constexpr module constants) in the globals of a kernel source function.

    The constants replace module globals of the same name by ``tl.constexpr`` objects, so their
    names must be used by kernel code only (host code keeps its own plain-number names).
    """
    tl = require_triton()
    g = fn.__globals__
    if g.get("tl") is None:
        g["tl"] = tl
    for name, value in (constexprs or {}).items():
        if not isinstance(g.get(name), tl.constexpr):
            g[name] = tl.constexpr(value)  # kernels may only read constexpr globals


def lazy_jit(fn: Callable, constexprs: Optional[dict] = None, **jit_kwargs) -> object:
    """``triton.jit(fn)`` built on first use and cached."""
    bind_language(fn, constexprs)
    import triton

    key = (f"{fn.__module__}.{fn.__qualname__}{sorted(jit_kwargs.items())}", interpret_mode())
    kernel = _JIT_CACHE.get(key)
    if kernel is None:
        kernel = triton.jit(fn, **jit_kwargs)
        _JIT_CACHE[key] = kernel
    return kernel


_TUNED_CACHE: dict[tuple[str, bool], object] = {}


def lazy_autotune(fn: Callable, configs_fn: Callable[[], list], key: list[str], jit_kwargs: dict | None = None,
                  prune: Optional[Callable] = None, tag: str = "", constexprs: Optional[dict] = None) -> object:
    """``triton.autotune(configs, key)(triton.jit(fn))``, built on first use and cached.

    Only used on a real GPU: under the interpreter the launchers pass one fixed small config, since
    timing configurations through the interpreter would take minutes and mean nothing. ``tag`` tells
    apart tuners of the same kernel over different config lists.
    """
    require_triton()
    import triton

    cache_key = (f"{fn.__module__}.{fn.__qualname__}{tag}", interpret_mode())
    tuned = _TUNED_CACHE.get(cache_key)
    if tuned is None:
        kwargs = {"configs": configs_fn(), "key": key}
        if prune is not None:
            kwargs["prune_configs_by"] = {"early_config_prune": prune}
        tuned = triton.autotune(**kwargs)(lazy_jit(fn, constexprs, **(jit_kwargs or {})))
        _TUNED_CACHE[cache_key] = tuned
    return tuned


def next_pow2(x: int) -> int:
    """Smallest power of two >= x (1 for x <= 1)."""
    return 1 if x <= 1 else 1 << (int(x) - 1).bit_length()


def bucket(x: int, lo: int = 16) -> int:
    """Autotune key bucket: the next power of two, at least ``lo``.

    A camera stream sends the same shapes frame after frame, but batch sizes and banks vary between
    deployments; bucketing means one tuning run covers every size up to the next power of two instead
    of re-benchmarking all configurations whenever n or m changes by one.
    """
    return max(lo, next_pow2(x))


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def num_sms(device) -> int:
    """Streaming multiprocessors of a CUDA device (used to size split grids); 1 elsewhere."""
    import torch

    if getattr(device, "type", str(device)) != "cuda" or not torch.cuda.is_available():
        return 1
    return torch.cuda.get_device_properties(device).multi_processor_count


def compile_for_target(fn: Callable, signature: dict, constexprs: dict, arch: int = 90, num_warps: int = 4,
                       num_stages: int = 3, globals_constexprs: Optional[dict] = None, jit_kwargs: dict | None = None):
    """Compile a kernel source ahead of time for a CUDA arch (90 = H100/H200, 87 = Jetson Orin).

    Needs no GPU: Triton ships LLVM and ptxas. The tests use it to catch what only the GPU compiler
    checks (``tl.dot`` shapes, loop-carried types, register and shared-memory limits) on a CPU-only
    machine. Must run in a process whose Triton was imported without TRITON_INTERPRET (the tests
    spawn one). Returns the compiled kernel (``.asm['cubin']``, ``.metadata``).
    """
    if interpret_mode():
        raise RuntimeError("compile_for_target needs a process where triton was imported without TRITON_INTERPRET")
    bind_language(fn, globals_constexprs)
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    jitted = triton.JITFunction(fn, **(jit_kwargs or {}))
    src = ASTSource(jitted, signature, constexprs=constexprs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32),
                          options={"num_warps": num_warps, "num_stages": num_stages})
