"""benchmarks/bench_startup.py's measured process, run as the benchmark runs it, on real models."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import bench_startup  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)


@pytest.mark.parametrize("kind,backend", [("edgecmg", "torch"), ("onnx", "onnxruntime"), ("onnx", "none")])
def test_a_fresh_process_reports_its_time_to_a_verdict_memory_and_imports(small_artifact, full_onnx, tmp_path,
                                                                          kind, backend):
    if kind == "onnx":
        pytest.importorskip("onnxruntime")
    model = small_artifact if kind == "edgecmg" else full_onnx
    done = subprocess.run([sys.executable, "-c", bench_startup.CHILD, str(model), backend, str(bench_startup.IMAGE)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert 0 < figures["seconds"] < 120 and 20 < figures["rss_mib"] < 8000
    # torch comes with a torch model only, the onnx package with neither: an .onnx on ONNX Runtime is
    # read without it
    assert ("torch" in figures["imported"]) == (backend == "torch") and "onnx" not in figures["imported"]
