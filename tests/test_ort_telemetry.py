"""ONNX Runtime's official Linux builds send usage events to Microsoft and keep a device id under
~/.cache/Microsoft unless ORT_DISABLE_TELEMETRY=1 is set when it initialises (at import): edgecmg,
made for factory lines, sets it before each of its imports, where the user has not set it."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("onnxruntime")

IMPORTS = {
    "the runners": "from edgecmg.runtime.onnx_runner import import_onnxruntime; import_onnxruntime()",
    "calibrate": "from edgecmg.calibration.quantize import _ort_quantization; _ort_quantization()",
}


def _import_in_a_fresh_process(code: str, home, **env) -> tuple[bool, str]:
    """(whether ONNX Runtime left its telemetry folder in ``home``, the process's stderr)."""
    # ONNX Runtime keeps its telemetry off by itself where CI is set (as .ci/run sets it): not here.
    environment = {key: value for key, value in os.environ.items() if key not in ("ORT_DISABLE_TELEMETRY", "CI")}
    environment.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), **env)
    done = subprocess.run([sys.executable, "-c", code + "; import os; print(os.environ.get('ORT_DISABLE_TELEMETRY'))"],
                          cwd=home, env=environment, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return (home / ".cache" / "Microsoft").exists(), done.stdout.strip()


@pytest.mark.parametrize("where", sorted(IMPORTS))
def test_onnxruntime_is_imported_with_its_telemetry_off_unless_the_user_says_otherwise(where, tmp_path):
    (tmp_path / "on").mkdir()
    (tmp_path / "off").mkdir()
    # The user's own choice is kept: "0" asks for ONNX Runtime's telemetry (and shows what it leaves).
    left_files, value = _import_in_a_fresh_process(IMPORTS[where], tmp_path / "on", ORT_DISABLE_TELEMETRY="0")
    assert value == "0"
    if not left_files:
        pytest.skip("this onnxruntime build keeps no telemetry files (builds before 1.2x, or built without it)")
    left_files, value = _import_in_a_fresh_process(IMPORTS[where], tmp_path / "off")
    assert value == "1"
    assert not left_files
