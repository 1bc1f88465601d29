"""What a benchmark ran on (:func:`environment_info`): device, CPU, drivers and library versions.

Every report records it next to its numbers, and ``edgecmg env`` starts from it. It imports none of
torch, TensorRT, OpenCV or Triton at module level and survives each one absent or broken, so that
``env`` runs where they fail and can name what does not import.
"""
from __future__ import annotations

import importlib
import importlib.metadata as _md
import os
import platform
import re
import shutil
import subprocess
import sys
from typing import Any, Optional

import numpy as np

from edgecmg import distributions

__all__ = ["environment_info"]


def _read_text(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8", "replace").replace("\x00", "").strip() or None
    except OSError:
        return None


def _cpu_model() -> Optional[str]:
    info = _read_text("/proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "Processor", "cpu model"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", info, re.MULTILINE)
        if m:
            return m.group(1).strip()
    return platform.processor() or platform.machine() or None


def _dist_version(*names: str) -> Optional[str]:
    for name in names:
        try:
            return _md.version(name)
        except _md.PackageNotFoundError:
            continue
    return None


def _module_version(module: str, *dists: str) -> Optional[str]:
    """Version from package metadata, else from the module (JetPack installs TensorRT/OpenCV
    through apt, without pip metadata)."""
    version = _dist_version(*dists) if dists else None
    if version:
        return version
    try:
        mod = importlib.import_module(module)
    except Exception:  # not installed, or broken native libraries: report as absent
        return None
    return str(getattr(mod, "__version__", "") or "") or None


def _nvidia_smi(field: str) -> Optional[str]:
    """``nvidia-smi --query-gpu=FIELD`` for the first GPU; None where nvidia-smi is absent or fails."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, f"--query-gpu={field}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=5, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    first = out.splitlines()[0].strip() if out else ""
    return first or None


def _nvidia_driver() -> Optional[str]:
    text = _read_text("/proc/driver/nvidia/version")
    if text:
        m = re.search(r"Kernel Module\s+(?:for\s+\S+\s+)?([0-9][0-9.]+)", text)
        if m:
            return m.group(1)
    return _nvidia_smi("driver_version")


def _nvidia_gpu_name(gpus_dir: str = "/proc/driver/nvidia/gpus") -> Optional[str]:
    """The first NVIDIA GPU's name as the driver gives it, without CUDA: ``Model:`` in the driver's
    per-GPU file (no process started), else ``nvidia-smi``; None where neither names one (no
    driver, or a Jetson, whose integrated GPU is in neither: the board names it there)."""
    try:
        gpus = sorted(os.listdir(gpus_dir))
    except OSError:
        gpus = []
    for gpu in gpus:
        m = re.search(r"^Model:\s*(.+)$", _read_text(os.path.join(gpus_dir, gpu, "information")) or "", re.MULTILINE)
        if m:
            return m.group(1).strip()
    return _nvidia_smi("name")


def _onnxruntime_version() -> Optional[str]:
    return _dist_version(*distributions.ONNXRUNTIME)


def _triton_version() -> Optional[str]:
    from edgecmg.kernels import _common  # imports no torch (edgecmg.kernels loads its kernels lazily)

    if not _common.triton_installed():
        return None
    return _common.triton_version() or "installed, version unknown"


def environment_info(*, import_torch: bool = True) -> dict[str, Any]:
    """What a benchmark ran on: device, CPU, drivers and library versions (None = absent).

    ``device`` is the CUDA device name when there is one, else the CPU model (``/proc/cpuinfo``,
    or the board name on a Jetson via ``/proc/device-tree/model``).

    import_torch: with False, torch is asked only where this process has imported it already; else
    its version comes from its package's metadata, the GPU is named by the NVIDIA driver, and
    ``cuda_runtime`` and ``cudnn`` (torch's) are None. A stream of an exported ``.onnx`` or an engine
    writes its summary so, without loading torch for a run torch had no part in (about 1.5 s and
    200 MB here).
    """
    board = _read_text("/proc/device-tree/model")
    cpu = _cpu_model()
    info: dict[str, Any] = {
        "device": None,
        "device_type": "cpu",
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "board": board,
        "jetson_l4t": _read_text("/etc/nv_tegra_release"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "nvidia_driver": None,
        "cuda_runtime": None,
        "cudnn": None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": None,
        "onnxruntime": _onnxruntime_version(),
        "tensorrt": _module_version("tensorrt", "tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11"),
        "triton": _triton_version(),  # the kernels need 3.4 or later
        "opencv": _module_version("cv2"),
        "edgecmg": _dist_version("edgecmg"),
    }
    if import_torch or "torch" in sys.modules:
        _add_torch_details(info)
    else:
        info["torch"] = _dist_version("torch")
        gpu = None if info["jetson_l4t"] else _nvidia_gpu_name()
        if gpu:
            info["device"], info["device_type"] = gpu, "cuda"
    if info["device_type"] == "cuda" or info["jetson_l4t"]:
        info["nvidia_driver"] = _nvidia_driver()
    if info["device"] is None:
        info["device"] = board if info["jetson_l4t"] and board else cpu
    return info


def _add_torch_details(info: dict[str, Any]) -> None:
    """torch's version, CUDA runtime and cuDNN, and the GPU as torch names it, into ``info``."""
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda_runtime"] = torch.version.cuda
        if torch.cuda.is_available():
            info["device"] = torch.cuda.get_device_name(0)
            info["device_type"] = "cuda"
            try:
                info["cudnn"] = torch.backends.cudnn.version()
            except Exception:
                pass
    except Exception:  # torch absent or its CUDA libraries broken: still report the rest
        pass
