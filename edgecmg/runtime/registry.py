"""Runner registry: maps a model file to the runner that executes it.

backend names: "torch", "onnxruntime", "tensorrt"; "auto" picks the fastest one available here.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Optional

from edgecmg.errors import BackendUnavailableError, ConfigError
from edgecmg.runtime.base import Runner

BACKENDS = ("torch", "onnxruntime", "tensorrt")
# Which backends can execute each kind of file, fastest first.
_BY_SUFFIX = {
    ".edgecmg": ("torch",),
    ".onnx": ("tensorrt", "onnxruntime"),
    ".engine": ("tensorrt",),
    ".plan": ("tensorrt",),
}


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def available_backends() -> list[str]:
    """Backends whose libraries import on this machine."""
    found = ["torch"]
    if _importable("onnxruntime"):
        found.append("onnxruntime")
    if _importable("tensorrt"):
        found.append("tensorrt")
    return found


def backends_for(path: str) -> list[str]:
    """Backends that can run ``path`` here, fastest first."""
    suffix = Path(path).suffix.lower()
    if suffix not in _BY_SUFFIX:
        raise ConfigError(f"{path}: unknown model file type {suffix!r}; expected .edgecmg, .onnx or .engine")
    available = available_backends()
    return [b for b in _BY_SUFFIX[suffix] if b in available]


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def make_runner(path: str, backend: str = "auto", device: Optional[str] = None) -> Runner:
    """The runner for ``path`` (not yet active)."""
    if backend != "auto" and backend not in BACKENDS:
        raise ConfigError(f"backend={backend!r}: choose one of auto, {', '.join(BACKENDS)}")
    suffix = Path(path).suffix.lower()
    if suffix not in _BY_SUFFIX:
        raise ConfigError(f"{path}: unknown model file type {suffix!r}; expected .edgecmg, .onnx or .engine")
    candidates = backends_for(path)
    if backend == "auto":
        if not candidates:
            raise BackendUnavailableError(_BY_SUFFIX[suffix][0], f"nothing here can run {path}",
                                          "pip install 'edgecmg[onnx]'")
        backend = candidates[0]
    elif backend not in _BY_SUFFIX[suffix]:
        raise ConfigError(f"{path}: backend {backend!r} cannot run {suffix} files; use one of {_BY_SUFFIX[suffix]}")
    device = device or _default_device()
    if backend == "torch":
        from edgecmg import artifact
        from edgecmg.runtime.torch_runner import TorchRunner

        header, _ = artifact.read_header(path)
        return TorchRunner(path, header, device=device)
    if backend == "onnxruntime":
        from edgecmg.runtime.onnx_runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, device=device)
    from edgecmg.runtime.tensorrt_runner import TensorRTRunner

    return TensorRTRunner(path, device=device)


def load_host_scorer(runner: Runner) -> Any:
    """The BankScorer a featurizer-only runner needs, rebuilt from the file it runs."""
    loader = getattr(runner, "load_scorer", None)
    if loader is None:
        raise ConfigError(f"{runner.backend} runner for {runner.path} cannot provide its memory bank")
    return loader()
