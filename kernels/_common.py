"""Helpers shared by the Triton kernels: availability, lazy JIT, grid arithmetic, launch tuning,
AOT checks.

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
import threading
import time
from importlib import metadata
from typing import Callable, Optional, Sequence

from edgecmg import distributions
from edgecmg.errors import BackendUnavailableError

TRITON_INSTALL_HINT = (distributions.extra_install_hint("triton") + "; the kernels need a CUDA GPU (or "
                       "TRITON_INTERPRET=1 for the CPU interpreter); on x86-64 each torch pins its Triton: where "
                       "pip would replace this torch's Triton, upgrade torch instead (torch 2.8 or later pins 3.4+)")
# The oldest Triton the kernels are checked on. Before 3.4 the interpreter takes the kernels' string
# annotations ("tl.constexpr", under `from __future__ import annotations`) for plain values; with that
# worked around, 3.1's interpreter still returned wrong split-bank kNN indices (torch 2.5.1 + triton
# 3.1.0, Python 3.10). Older releases are refused rather than trusted.
TRITON_MIN_VERSION = (3, 4)
TRITON_MIN_VERSION_TEXT = ".".join(map(str, TRITON_MIN_VERSION))
_INTERPRET_ENV = "TRITON_INTERPRET"
_AUTOTUNE_ENV = "EDGECMG_AUTOTUNE"


def triton_version() -> Optional[str]:
    """The installed Triton's version, read without importing it; None when it cannot be told."""
    module = sys.modules.get("triton")
    if getattr(module, "__version__", None):
        return str(module.__version__)
    for dist in distributions.TRITON:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _too_old(version: Optional[str]) -> bool:
    found = distributions.major_minor(version)
    return found is not None and found < TRITON_MIN_VERSION


def triton_installed() -> bool:
    """True when some Triton is installed, however old. Does not import it (see the module docstring)."""
    if "triton" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        return False


def too_old_triton() -> Optional[str]:
    """"triton X is older than 3.4" when the Triton found is one the kernels refuse, else None: the one
    wording of the refusal, the GPU's fallback note and ``edgecmg env``."""
    version = triton_version()
    return f"triton {version} is older than {TRITON_MIN_VERSION_TEXT}" if _too_old(version) else None


def triton_available() -> bool:
    """True when a Triton the kernels run on (``TRITON_MIN_VERSION`` or later) is installed. Does not
    import it."""
    return triton_installed() and too_old_triton() is None


def require_triton():
    """Import and return ``triton.language``; BackendUnavailableError when that fails or the installed
    Triton is older than ``TRITON_MIN_VERSION``."""
    old = too_old_triton()
    if old:
        raise BackendUnavailableError("triton", f"{old}, the oldest release the kernels are checked on",
                                      TRITON_INSTALL_HINT)
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
    return _env_flag(_INTERPRET_ENV) is True


def _env_flag(name: str) -> Optional[bool]:
    """An on/off environment variable: True, False, or None when it is unset or says neither."""
    value = os.environ.get(name, "").strip().lower()
    if value in ("1", "true", "on", "yes", "y"):
        return True
    if value in ("0", "false", "off", "no", "n"):
        return False
    return None


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


def next_pow2(x: int) -> int:
    """Smallest power of two >= x (1 for x <= 1)."""
    return 1 if x <= 1 else 1 << (int(x) - 1).bit_length()


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def split_evenly(total: int, splits: int, align: int) -> tuple[int, int]:
    """(splits, items per split) for ``total`` items cut into at most ``splits`` contiguous slices.

    On a GPU each slice holds a multiple of ``align`` items, so every tile divides a slice; under the
    interpreter (tiny test shapes) slices are as even as possible. Rounding can leave fewer slices
    than asked: the count returned is the one to launch.
    """
    splits = max(1, min(int(splits), total))
    per_split = cdiv(total, splits)
    if splits > 1 and not interpret_mode():
        per_split = cdiv(per_split, align) * align
    return cdiv(total, per_split), per_split


_SM_COUNTS: dict[int, int] = {}


def num_sms(device) -> int:
    """Streaming multiprocessors of a CUDA device (used to size split grids); 1 elsewhere. Cached per
    device: launchers call it on every frame."""
    import torch

    if getattr(device, "type", str(device).split(":")[0]) != "cuda" or not torch.cuda.is_available():
        return 1
    index = torch.device(device).index
    if index is None:
        index = torch.cuda.current_device()
    count = _SM_COUNTS.get(index)
    if count is None:
        count = _SM_COUNTS[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return count


def shape_bucket(x: int) -> int:
    """Power-of-two bucket of a size, the shape key of ``LaunchTuner``: a stream whose sizes wobble
    (a bank that grows, a last batch that is short) keeps its tuned configuration."""
    return next_pow2(max(int(x), 1))


def autotune_enabled() -> bool:
    """Tuning runs on a GPU unless ``EDGECMG_AUTOTUNE=0``; under the interpreter only when
    ``EDGECMG_AUTOTUNE=1`` (timings mean nothing there; the tests use it to exercise the tuner)."""
    forced = _env_flag(_AUTOTUNE_ENV)
    return not interpret_mode() if forced is None else forced


def _synchronize(device) -> None:
    import torch

    if getattr(device, "type", None) == "cuda":
        torch.cuda.synchronize(device)


def _capturing(device) -> bool:
    import torch

    return getattr(device, "type", None) == "cuda" and torch.cuda.is_current_stream_capturing()


class LaunchTuner:
    """Picks the fastest of a few launch configurations, once per key (a case and shape buckets).

    Why not ``triton.autotune``: it keys on argument values and tunes inside one kernel's launch, but
    a configuration here is more than the kernel's tiles: the bank or class split is sized to the
    tile (``BLOCK_N`` decides how many programs one split makes) and a split adds a merge launch. So
    each candidate is timed end to end through the launcher's own ``launch(config)``, host time
    included (at a frame's sizes the host's launch work is a real part of the latency). Candidates
    are kept small and every one is built without register spills for sm_90 and sm_87
    (tests/kernels/test_gpu_compile.py). Inside CUDA-graph capture nothing can be timed: the cached
    choice, or the first candidate, is used without tuning.
    """

    def __init__(self, repeats: int = 5):
        self.repeats = repeats
        self.chosen: dict[tuple, dict] = {}
        self.timings: dict[tuple, list[float]] = {}  # seconds per candidate, for benchmarks and tests
        self.last: Optional[dict] = None  # the configuration of the latest call, for benchmark tables
        # One tuning at a time: two threads timing candidates together would time each other's
        # kernels (synchronize waits for the whole device) and could keep a slow choice.
        self._tuning = threading.Lock()

    def choose(self, key: tuple, candidates: Sequence[dict], launch: Callable[[dict], object], device) -> dict:
        cfg = self.chosen.get(key)
        if cfg is None:
            with self._tuning:
                cfg = self.chosen.get(key) or self._tune(key, candidates, launch, device)
        self.last = cfg
        return cfg

    def _tune(self, key: tuple, candidates: Sequence[dict], launch: Callable[[dict], object], device) -> dict:
        if len(candidates) == 1 or not autotune_enabled() or _capturing(device):
            return candidates[0]
        seconds = []
        for candidate in candidates:
            launch(candidate)  # compiles it, and warms caches
            _synchronize(device)
            start = time.perf_counter()
            for _ in range(self.repeats):
                launch(candidate)
            _synchronize(device)
            seconds.append((time.perf_counter() - start) / self.repeats)
        best = min(range(len(candidates)), key=seconds.__getitem__)
        self.timings[key] = seconds
        self.chosen[key] = candidates[best]
        return candidates[best]


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
