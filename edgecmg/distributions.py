"""pip distribution names under which optional libraries install, for modules that ask which
version is present without importing the library; reading such a version; and how to install one of
edgecmg's extras.

Kept here, apart from the runners and kernels that use them, because those import torch and the
environment report (``edgecmg.stream.environment``) has to work where torch does not import.
"""
import functools
import importlib.metadata
import os
import re
from typing import Optional

# Each installs the one ``onnxruntime`` module. With two of them the one installed last owns the
# shared files: a CPU build over a GPU build (e.g. a package that asks for plain onnxruntime,
# installed after onnxruntime-gpu) hides the CUDA and TensorRT providers.
ONNXRUNTIME = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino", "onnxruntime-qnn")
# PyPI's triton, the nightly builds torch pins (pytorch-triton), and the Windows port; each installs ``triton``.
TRITON = ("triton", "pytorch-triton", "triton-windows")


def major_minor(version: Optional[str]) -> Optional[tuple[int, int]]:
    """(major, minor) of a library's version ("4.10.0-dev" -> (4, 10)); None where it holds none."""
    found = re.match(r"(\d+)\.(\d+)", version or "")
    return (int(found[1]), int(found[2])) if found else None


@functools.lru_cache(maxsize=1)
def _edgecmg_requirements() -> tuple[str, ...]:
    """The installed edgecmg's requirements, read once: the modules that build hints at import each
    ask for another extra, and each read searches the import path for the metadata."""
    try:
        return tuple(importlib.metadata.requires("edgecmg") or ())
    except importlib.metadata.PackageNotFoundError:  # a source tree never installed
        return ()


@functools.lru_cache(maxsize=None)
def extra_install_hint(extra: str, *only: str) -> str:
    """The pip command that installs edgecmg's ``extra``, right for a clone and for a wheel alike:
    ``pip install 'onnx>=1.15' 'onnxruntime>=1.17' (edgecmg's [onnx] extra; in a clone: pip install
    -e '.[onnx]')``. The packages come from the installed edgecmg's own metadata, so
    the hint cannot drift from pyproject.toml; a source tree never installed gets the clone's form.
    ``only``: the distributions of the extra to name, where the others may be installed in another
    build (``onnx`` alone: plain onnxruntime installed over onnxruntime-gpu would hide its providers).
    """
    clone = f"pip install -e '.[{extra}]'"
    requirements = _edgecmg_requirements()
    in_extra = re.compile(rf"""extra\s*==\s*["']{re.escape(extra)}["']""")
    packages = [requirement.split(";")[0].replace(" ", "") for requirement in requirements
                if ";" in requirement and in_extra.search(requirement.split(";", 1)[1])]
    if only:
        packages = [p for p in packages if re.split(r"[<>=!~\[]", p, maxsplit=1)[0] in only]
    if not packages:
        return f"{clone} in the edgecmg clone"
    return "pip install " + " ".join(f"'{p}'" for p in packages) + f" (edgecmg's [{extra}] extra; in a clone: {clone})"


# ONNX Runtime's official builds (1.2x on Linux) send usage events to Microsoft over HTTPS and keep a
# device id and an event database under ~/.cache/Microsoft unless this is "1" when it initialises,
# which is at import. A factory line's SDK should not call out: edgecmg sets it where the user has not
# set it either way ("0" turns ONNX Runtime's telemetry back on).
ORT_TELEMETRY_VARIABLE = "ORT_DISABLE_TELEMETRY"


def onnxruntime_telemetry_off() -> None:
    """Called before every import of onnxruntime by edgecmg; a no-op where the variable is set."""
    os.environ.setdefault(ORT_TELEMETRY_VARIABLE, "1")
