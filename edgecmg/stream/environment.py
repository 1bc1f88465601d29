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


def _nvidia_driver() -> Optional[str]:
    text = _read_text("/proc/driver/nvidia/version")
    if text:
        m = re.search(r"Kernel Module\s+(?:for\s+\S+\s+)?([0-9][0-9.]+)", text)
        if m:
            return m.group(1)
    exe = shutil.which("nvidia-smi")
    if exe:
        try:
            out = subprocess.run(
                [exe, "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=5, check=False,
            ).stdout.strip()
            return out.splitlines()[0].strip() if out else None
        except (OSError, subprocess.SubprocessError):
            return None
    return None


def _onnxruntime_version() -> Optional[str]:
    return _dist_version(*distributions.ONNXRUNTIME)


def _triton_version() -> Optional[str]:
    try:
        from edgecmg.kernels import _common
    except Exception:  # noqa: BLE001  (edgecmg.kernels imports torch, which environment_info must survive without)
        return _dist_version(*distributions.TRITON)
    if not _common.triton_installed():
        return None
    return _common.triton_version() or "installed, version unknown"


def environment_info() -> dict[str, Any]:
    """What a benchmark ran on: device, CPU, drivers and library versions (None = absent).

    ``device`` is the CUDA device name when torch sees one, else the CPU model (``/proc/cpuinfo``,
    or the board name on a Jetson via ``/proc/device-tree/model``).
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
    if info["device_type"] == "cuda" or info["jetson_l4t"]:
        info["nvidia_driver"] = _nvidia_driver()
    if info["device"] is None:
        info["device"] = board if info["jetson_l4t"] and board else cpu
    return info
