"""benchmarks/bench_cpu_use.py's measurement, on a real model for a few frames per backend."""
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import bench_cpu_use  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)


@pytest.mark.parametrize("backend,spin", [("torch", None), ("onnxruntime", False)])
def test_a_setting_gives_both_latencies_and_the_cpu_of_its_paced_frames(small_artifact, tmp_path, monkeypatch,
                                                                         backend, spin):
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime")
    monkeypatch.setenv("EDGECMG_CACHE_DIR", str(tmp_path / "cache"))
    figures = bench_cpu_use.measure(str(small_artifact), backend, spin, frames_back_to_back=4, frames_paced=3,
                                    pace_s=0.05)
    assert set(figures) == {"back_to_back_ms", "paced_ms", "paced_cpu_ms"}
    assert 0 < figures["back_to_back_ms"] < 5000 and 0 < figures["paced_ms"] < 5000
    assert figures["paced_cpu_ms"] > 0  # the frames' own work at least (the sleeps take none)
