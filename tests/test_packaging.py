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
    for name in ("pyproject.toml", "README.md"):
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
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"edgecmg"}
