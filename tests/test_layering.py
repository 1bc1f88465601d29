"""The dependency order of shared/DESIGN.md, enforced: no module imports one from a higher layer.

Read from the source with ``ast`` (function-level imports count too), so a backwards import fails
here even when it only runs on a rarely used path.
"""
from __future__ import annotations

import ast
import json
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Where each import name lives (kernels/ and calibration/ install as edgecmg.kernels / .calibration).
SOURCE_ROOTS = {"edgecmg": REPO / "edgecmg", "edgecmg.kernels": REPO / "kernels",
                "edgecmg.calibration": REPO / "calibration"}

# Lower layers first; a module may import its own unit and any unit of a lower layer.
LAYERS: list[set[str]] = [
    # __init__: __version__, and the public names (edgecmg.Detector, ...) imported by their module's
    # name on first access only, so importing the package loads nothing above it; the others: constants
    {"errors", "__init__", "distributions", "magic", "lazy", "progress",  # lazy: the first-use import of __init__'s names
     "pixel_limit"},                                    # OpenCV's decode limit, set by __init__ before cv2 loads
    {"fileio"},                                         # atomic writes: errors only
    {"model.layouts", "visualize", "imageio", "metrics", "thresholds", "kernels"},  # leaves: errors only
    {"config", "result", "datasets", "ops"},            # config checks a layout name against the table
    {"header_checks"},                                  # a model header's fields: no torch
    {"onnx_header"},                                    # an export's header and checks: no torch
    {"model"},                                          # pure torch, over ops
    {"artifact", "fit"},
    {"export"},
    {"export_cache"},                                   # exports kept for ONNX Runtime, over export
    {"onnx_checks", "engine_file"},                     # no TensorRT: its parser's checks; the .engine file
    {"fp16_cast"},                                      # the float16 copy, over onnx_checks
    {"engine"},                                         # TensorRT: platform, compatibility, build
    {"calibration", "runtime"},
    {"stream"},
    {"detector"},                                       # the façade: runtime + stream
    {"evaluation"},
    {"commands"},
    {"cli"},
]


def _modules() -> dict[str, Path]:
    found = {}
    for package, root in SOURCE_ROOTS.items():
        for path in root.rglob("*.py"):
            parts = [p for p in path.relative_to(root).with_suffix("").parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def _unit(module: str) -> str:
    """The layer unit of a dotted module name: edgecmg.model.layouts is its own unit, every other
    module of a subpackage belongs to the subpackage."""
    parts = module.split(".")[1:]
    if not parts:
        return "__init__"
    if parts[:2] == ["model", "layouts"]:
        return "model.layouts"
    return parts[0]


def _layer(unit: str) -> int:
    for i, units in enumerate(LAYERS):
        if unit in units:
            return i
    raise AssertionError(f"module unit {unit!r} has no layer in LAYERS: add it where shared/DESIGN.md (beside the repository) puts it")


def _imports(path: Path, modules: dict[str, Path], package: str = "") -> set[str]:
    """The edgecmg modules ``path`` imports, resolved to existing modules; ``package`` (the dotted
    package the file is in) resolves relative imports (``from ..x import y``). Imports under ``if
    TYPE_CHECKING:`` never run: they only name types for type checkers, and are left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_checking = [node for node in ast.walk(tree) if isinstance(node, ast.If)
                     and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"]
    for_type_checkers = {id(inner) for node in type_checking
                         for statement in node.body for inner in ast.walk(statement)}
    targets = set()
    for node in ast.walk(tree):
        if id(node) in for_type_checkers:
            continue
        names = []
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[:len(package.split(".")) - node.level + 1]
            module = ".".join(base + ([node.module] if node.module else []))
            names = [module] + [f"{module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "edgecmg":
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] == "edgecmg"]
        for name in names:
            while name not in modules and "." in name:
                name = name.rsplit(".", 1)[0]  # `from edgecmg.x import function` -> edgecmg.x
            if name in modules and name != "edgecmg":
                targets.add(name)
            elif name == "edgecmg" and isinstance(node, ast.ImportFrom):
                targets.update(f"edgecmg.{a.name}" for a in node.names if f"edgecmg.{a.name}" in modules)
    return targets


def test_no_module_imports_a_higher_layer():
    modules = _modules()
    assert len(modules) > 40, "source roots not found"
    backwards = []
    for name, path in sorted(modules.items()):
        unit = _unit(name)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for target in sorted(_imports(path, modules, package)):
            if _unit(target) != unit and _layer(_unit(target)) > _layer(unit):
                backwards.append(f"{path.relative_to(REPO)}: {name} imports {target}")
    assert not backwards, "imports against the dependency order:\n" + "\n".join(backwards)


def test_the_check_sees_a_backwards_import(tmp_path):
    # the resolver must find both import forms, or the test above could pass on anything
    modules = _modules()
    probe = tmp_path / "probe.py"
    probe.write_text("from edgecmg import artifact\nimport edgecmg.cli\n"
                     "def f():\n    from edgecmg.detector import Detector\n")
    assert _imports(probe, modules) == {"edgecmg.artifact", "edgecmg.cli", "edgecmg.detector"}
    probe.write_text("from . import knn\nfrom ..runtime import registry\n")  # as if in edgecmg/kernels/
    assert _imports(probe, modules, "edgecmg.kernels") == {"edgecmg.kernels", "edgecmg.kernels.knn",
                                                           "edgecmg.runtime", "edgecmg.runtime.registry"}


def test_the_public_names_are_the_modules_own_and_importing_the_package_loads_none_of_them():
    import subprocess
    import sys

    import edgecmg

    for name in edgecmg.__all__:
        value = getattr(edgecmg, name)
        if name != "__version__":
            owner = __import__(edgecmg._EXPORTS[name], fromlist=[name])
            assert value is getattr(owner, name), name
    assert set(edgecmg.__all__) <= set(dir(edgecmg))
    with pytest.raises(AttributeError, match="module 'edgecmg' has no attribute 'Detektor'"):
        edgecmg.Detektor
    # a fresh interpreter: `import edgecmg` (every CLI start) must not pull in torch or numpy
    probe = "import sys, edgecmg; print(sorted(m for m in ('torch', 'numpy', 'edgecmg.detector') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO / "tests")
    assert out.stdout.strip() == "[]"


def test_edgecmg_stream_names_each_name_where_it_is_defined():
    """The lazy table says which module defines each public name of edgecmg.stream (it named
    sources for to_rgb_uint8, which imageio defines): every entry is that module's own."""
    import edgecmg.stream as stream

    for name in stream.__all__:
        value = getattr(stream, name)
        assert value.__module__ == stream._EXPORTS[name], name
    assert set(stream.__all__) <= set(dir(stream))


def test_dir_lists_the_public_names_before_any_is_imported():
    """Tab completion (IPython, an editor's console) lists dir(edgecmg): the lazy names are there from
    the start, not only once something imported them."""
    import subprocess
    import sys

    probe = ("import edgecmg, edgecmg.stream, edgecmg.kernels as k; print(sorted(set(edgecmg.__all__) - "
             "set(dir(edgecmg))), sorted(set(edgecmg.stream.__all__) - set(dir(edgecmg.stream))), "
             "sorted(set(k.__all__) - set(dir(k))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO / "tests")
    assert out.stdout.strip() == "[] [] []"


def test_which_triton_is_installed_is_asked_without_torch():
    """edgecmg.kernels loads its kernels on first use: ``env`` and a stream's summary ask kernels._common
    which Triton is installed, which imported torch with the kernels before."""
    import subprocess
    import sys

    probe = ("import sys, edgecmg.kernels\nfrom edgecmg.kernels import _common\n_common.triton_installed()\n"
             "print('torch' in sys.modules, callable(edgecmg.kernels.knn_reference), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO / "tests")
    assert out.stdout.split() == ["False", "True", "True"], out.stderr


@pytest.mark.parametrize("package", ["edgecmg", "edgecmg.stream", "edgecmg.kernels"])
def test_type_checkers_see_every_public_name_as_re_exported(package):
    """The names under ``if TYPE_CHECKING:`` are what type checkers know of the lazy exports: each must be
    there, as ``from M import X as X`` from the module the table names (a strict checker, mypy
    --no-implicit-reexport, refused `from edgecmg import Detector` as written before)."""
    import importlib

    module = importlib.import_module(package)
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    seen = {}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                for alias in statement.names:
                    assert alias.asname == alias.name, f"{package}: {alias.name} imported without 'as {alias.name}'"
                    seen[alias.name] = statement.module
    assert seen == module._EXPORTS


def test_a_process_running_an_exported_onnx_imports_neither_torch_nor_onnx(full_onnx, kolektor_root, tmp_path):
    """Reading, checking and running a whole-detector .onnx on ONNX Runtime needs no torch: imported,
    it cost every start of a service 1.3-1.6 s and about 200 MB (measured on 2 cores), more on a
    Jetson's cores. The API and the CLI's commands that run a model, each in a fresh interpreter."""
    import subprocess
    import sys

    pytest.importorskip("onnxruntime")
    image = sorted((kolektor_root / "test" / "good").iterdir())[0]
    probe = ("import sys, cv2\nfrom edgecmg import Detector\n"
             f"detector = Detector.load({str(full_onnx)!r}, backend='onnxruntime')\n"
             f"result = detector.predict(cv2.imread({str(image)!r}), bgr=True)\n"
             "print(result.score > -1e9, 'torch' in sys.modules, 'onnx' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    # nor the onnx package (a second more: onnx_header reads a sealed export without it)
    assert out.stdout.split() == ["True", "False", "False"], out.stderr
    cli = ("import sys\nfrom edgecmg.cli import main\n"
           f"status = main(['-q', 'predict', {str(full_onnx)!r}, {str(image)!r}, '--out', 'out', '--backend', "
           "'onnxruntime'])\nprint(status, 'torch' in sys.modules, 'onnx' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", cli], capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.splitlines()[-1].split() == ["0", "False", "False"], out.stdout + out.stderr
    # and `edgecmg stream`, to the summary it writes at the end (whose environment asked torch before)
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / image.name).write_bytes(image.read_bytes())
    cli = ("import sys\nfrom edgecmg.cli import main\n"
           f"status = main(['-q', 'stream', 'frames', '-m', {str(full_onnx)!r}, '--backend', 'onnxruntime', "
           "'--report', 'report'])\nprint(status, 'torch' in sys.modules, 'onnx' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", cli], capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.splitlines()[-1].split() == ["0", "False", "False"], out.stdout + out.stderr
    summary = json.loads((tmp_path / "report" / "stream_summary.json").read_text(encoding="utf-8"))
    assert summary["environment"]["torch"] == metadata.version("torch")
    assert summary["rows"][0]["frames_yielded"] == 1
    # `edgecmg bench` times it without torch too (its device memory is torch's, reported for torch rows
    # only), `edgecmg info` describes it without torch (with the onnx package: its whole check), and
    # `edgecmg threshold` and `eval` judge good frames and a test set with it (both imported torch before)
    for command, loads_onnx in ((["bench", str(full_onnx), "--backends", "onnxruntime", "--frames", "4",
                                  "--warmup", "1", "--out", "bench"], False), (["info", str(full_onnx)], True),
                                (["threshold", str(full_onnx), "frames", "--backend", "onnxruntime"], False),
                                (["eval", str(full_onnx), str(kolektor_root), "--backend", "onnxruntime",
                                  "--out", "eval"], False)):
        cli = f"import sys\nfrom edgecmg.cli import main\nstatus = main(['-q', *{command!r}])\n" \
              "print(status, 'torch' in sys.modules, 'onnx' in sys.modules)\n"
        out = subprocess.run([sys.executable, "-c", cli], capture_output=True, text=True, cwd=tmp_path)
        assert out.stdout.splitlines()[-1].split() == ["0", "False", str(loads_onnx)], out.stdout + out.stderr
    bench = json.loads((tmp_path / "bench" / "bench.json").read_text(encoding="utf-8"))
    assert bench["rows"][0]["peak_device_mib"] is None and bench["environment"]["cuda_runtime"] is None
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["backend"] == "onnxruntime" and metrics["image_auroc"] > 0.5


def test_the_torch_free_header_checks_hold_the_kernels_limits():
    """header_checks keeps its own copy of the kNN limit (importing kernels.knn loads torch)."""
    import numpy as np

    from edgecmg.header_checks import FLOAT32_MAX, MAX_KNN_K
    from edgecmg.kernels.knn import MAX_K

    assert MAX_KNN_K == MAX_K and FLOAT32_MAX == float(np.finfo(np.float32).max)
