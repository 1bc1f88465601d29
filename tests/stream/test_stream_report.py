"""Latency statistics, environment info, report files, the OpenCV latency plot, the status line."""
from __future__ import annotations

import csv
import datetime
import io
import json
import math
import re
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecmg.config import StreamConfig
from edgecmg.errors import ConfigError, DataError
from edgecmg.stream import (
    LatencyStats,
    LiveStatusLine,
    StreamPipeline,
    environment_info,
    markdown_table,
    plot_latency,
    write_report,
)


# ---------------------------------------------------------------------------- LatencyStats
def test_latency_quantiles_match_numpy():
    rng = np.random.default_rng(0)
    data = rng.gamma(2.0, 5.0, size=2000)
    stats = LatencyStats().extend(data)
    for q, got in ((50, stats.p50), (90, stats.p90), (99, stats.p99)):
        assert got == pytest.approx(np.percentile(data, q))
    assert stats.mean == pytest.approx(data.mean())
    assert stats.max == pytest.approx(data.max()) and stats.min == pytest.approx(data.min())
    assert stats.count == len(stats) == 2000


def test_latency_memory_is_bounded_by_the_window():
    stats = LatencyStats(window=100)
    for v in range(1000):
        stats.add(float(v))
    window = stats.samples()
    assert len(window) == 100 and window[0] == 900 and window[-1] == 999  # oldest first
    assert stats.count == 1000 and stats.max == 999 and stats.mean == pytest.approx(499.5)
    assert stats.p50 == pytest.approx(949.5)  # quantiles are over the recent window
    assert stats._ms.nbytes == 800  # fixed ring, whatever the number of samples
    for v in range(1000, 1050):  # the ring's write position is now mid-buffer (50), not at its start
        stats.add(float(v))
    np.testing.assert_array_equal(stats.samples(), np.arange(950, 1050))  # still oldest first
    assert stats.p50 == pytest.approx(999.5)


def test_latency_empty_and_invalid():
    stats = LatencyStats()
    assert math.isnan(stats.p50) and math.isnan(stats.mean) and math.isnan(stats.fps)
    assert stats.summary()["p99_ms"] is None and stats.summary()["count"] == 0
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(DataError):
            stats.add(bad)
    with pytest.raises(ConfigError):
        LatencyStats(window=1)
    with pytest.raises(ConfigError):
        LatencyStats().percentile(101)


def test_latency_fps_is_wall_clock_throughput():
    stats = LatencyStats()
    stats.add(10.0)
    assert stats.fps == pytest.approx(100.0)  # one sample: 1000 / mean
    import time

    for _ in range(5):
        time.sleep(0.01)
        stats.add(1.0)
    # 5 intervals of >= 10 ms: at most ~100 samples/s, whatever the 1 ms latency says.
    assert 20 < stats.fps <= 110
    s = stats.summary(prefix="infer_")
    keys = ("count", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "fps")
    assert set(s) == {f"infer_{k}" for k in keys}


def test_latency_fps_over_a_full_window_spans_its_oldest_to_newest_sample(monkeypatch):
    """Once more samples than the window have arrived, fps spans the window's oldest and newest
    arrival times, wherever the ring's write position is."""
    import types

    from edgecmg.stream import latency

    now = [0.0]
    monkeypatch.setattr(latency, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    stats = LatencyStats(window=10)
    for i in range(25):  # 20 per second for the first 15, then 10 per second
        now[0] = 0.05 * i if i < 15 else 0.7 + 0.1 * (i - 14)
        stats.add(1.0)
    # the window holds samples 15..24, arrived at 0.8 .. 1.7 s: 9 intervals over 0.9 s
    assert stats.fps == pytest.approx(10.0)
    now[0] += 0.1
    stats.add(1.0)  # 16..25: still 10 per second
    assert stats.fps == pytest.approx(10.0)


# ---------------------------------------------------------------------------- environment
def test_environment_info_describes_this_machine():
    env = environment_info()
    for key in ("device", "device_type", "cpu", "cpu_cores", "python", "numpy", "torch", "onnxruntime",
                "tensorrt", "triton", "opencv", "cuda_runtime", "nvidia_driver"):
        assert key in env
    assert isinstance(env["device"], str) and env["device"]
    assert env["device_type"] in ("cpu", "cuda")
    assert env["cpu_cores"] >= 1
    assert env["numpy"] == np.__version__ and env["opencv"] == cv2.__version__
    from edgecmg.kernels import _common

    assert (env["triton"] is not None) == _common.triton_installed()
    json.dumps(env)  # must be JSON-serialisable as is


def test_environment_info_without_torch_loads_none_and_takes_its_version_from_the_package():
    """A stream of an .onnx writes its summary with import_torch=False: torch (1.5 s, 200 MB) is
    not loaded for a run it had no part in; its version still comes from the package's metadata."""
    import subprocess
    from importlib import metadata

    probe = ("import json, sys\nfrom edgecmg.stream.environment import environment_info\n"
             "env = environment_info(import_torch=False)\nprint(json.dumps([env['torch'], env['cuda_runtime'], "
             "env['triton'] is not None, 'torch' in sys.modules]))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=Path(__file__).parent)
    assert json.loads(out.stdout) == [metadata.version("torch"), None, True, False], out.stderr


def test_environment_info_without_torch_asks_torch_where_the_process_has_it():
    pytest.importorskip("torch")  # imported in this process: the details are torch's, as with import_torch

    assert environment_info(import_torch=False) == environment_info()


def test_the_gpu_is_named_by_the_driver_without_torch(tmp_path, monkeypatch):
    from edgecmg.stream import environment

    gpus = tmp_path / "gpus"
    (gpus / "0000:c1:00.0").mkdir(parents=True)
    (gpus / "0000:c1:00.0" / "information").write_text("Model: \t\t NVIDIA H100 80GB HBM3\nIRQ:   \t\t 112\n")
    (gpus / "0000:01:00.0").mkdir()
    (gpus / "0000:01:00.0" / "information").write_text("Model: \t\t NVIDIA RTX 4000 Ada Generation\n")
    assert environment._nvidia_gpu_name(str(gpus)) == "NVIDIA RTX 4000 Ada Generation"  # the first by bus
    # no driver file: nvidia-smi's first line
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\necho \"$1\" > " + str(tmp_path / "asked") + "\nprintf 'NVIDIA L4\\nNVIDIA L4\\n'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(smi.parent))
    assert environment._nvidia_gpu_name(str(tmp_path / "none")) == "NVIDIA L4"
    assert (tmp_path / "asked").read_text().strip() == "--query-gpu=name"
    smi.write_text("#!/bin/sh\nexit 9\n")  # a driver that fails: no name, no error
    assert environment._nvidia_gpu_name(str(tmp_path / "none")) is None


def test_without_torch_the_summary_names_the_gpu_the_driver_names(monkeypatch):
    from edgecmg.stream import environment

    monkeypatch.delitem(sys.modules, "torch")  # as in a process that never imported it
    monkeypatch.setattr(environment, "_nvidia_gpu_name", lambda: "NVIDIA L4")
    monkeypatch.setattr(environment, "_nvidia_driver", lambda: "580.1")
    env = environment.environment_info(import_torch=False)
    assert (env["device"], env["device_type"], env["nvidia_driver"], env["cudnn"]) == ("NVIDIA L4", "cuda", "580.1", None)
    monkeypatch.setattr(environment, "_nvidia_gpu_name", lambda: None)
    env = environment.environment_info(import_torch=False)
    assert (env["device"], env["device_type"], env["nvidia_driver"]) == (env["cpu"], "cpu", None)


# ---------------------------------------------------------------------------- report files
def test_markdown_shows_a_latency_summary_as_median_and_tail():
    rows = [{"source": "cam0", "latency_ms": {"mean_ms": 40.0, "p50_ms": 37.5284, "p90_ms": 56.6, "p99_ms": 62.9,
                                                "max_ms": 63.6}}]
    lines = markdown_table(rows).strip().splitlines()
    assert lines[0] == "| source | latency_ms p50 / p99 |"
    assert lines[2] == "| cam0 | 37.53 / 62.90 |"


def test_write_report_writes_json_csv_and_markdown(tmp_path, capsys):
    rows = [
        {"backend": "torch-cpu", "batch": 1, "p50_ms": 12.3456, "p99_ms": 20.0, "fps": 80.1},
        {"backend": "onnxruntime|cpu", "batch": 8, "p50_ms": 0.5, "p99_ms": float("nan"),
         "fps": np.float32(950.0), "extra": {"threads": 2}},
    ]
    env = {"device": "Test CPU", "cpu_cores": 2}
    table = write_report(rows, tmp_path / "out", "bench_test", environment=env, echo=True)

    assert capsys.readouterr().out == table
    lines = table.strip().splitlines()
    assert lines[0] == "| backend | batch | p50_ms | p99_ms | fps | extra |"
    assert lines[1].startswith("|---|---:|---:|")
    assert "| 12.35 |" in lines[2] and "onnxruntime\\|cpu" in lines[3] and "| 950.0 |" in lines[3]

    payload = json.loads((tmp_path / "out" / "bench_test.json").read_text())
    assert payload["environment"] == env and len(payload["rows"]) == 2
    created = datetime.datetime.fromisoformat(payload["created"])  # RFC 3339 with the local offset, as fit's
    assert created.utcoffset() is not None and abs(created - datetime.datetime.now(datetime.timezone.utc)).total_seconds() < 60
    assert payload["rows"][1]["p99_ms"] is None  # NaN is not JSON
    assert payload["rows"][1]["extra"] == {"threads": 2}

    with open(tmp_path / "out" / "bench_test.csv", newline="") as fh:
        got = list(csv.DictReader(fh))
    assert [r["backend"] for r in got] == ["torch-cpu", "onnxruntime|cpu"]
    assert float(got[0]["p50_ms"]) == pytest.approx(12.3456) and got[0]["extra"] == ""
    assert json.loads(got[1]["extra"]) == {"threads": 2}
    md = (tmp_path / "out" / "bench_test.md").read_text()
    assert "Device: Test CPU" in md and table in md


def test_write_report_default_environment_and_bad_input(tmp_path):
    write_report([{"a": 1}], tmp_path, "env_default")
    assert json.loads((tmp_path / "env_default.json").read_text())["environment"]["device"]
    with pytest.raises(DataError, match=r"rows\[1\]"):
        write_report([{"a": 1}, "oops"], tmp_path, "x", environment={})
    with pytest.raises(DataError, match="list of dicts"):
        write_report({"a": 1}, tmp_path, "x", environment={})
    for stem in ("", "sub/dir"):
        with pytest.raises(ConfigError, match="stem"):
            write_report([{"a": 1}], tmp_path, stem, environment={})
    assert markdown_table([]) == "_(no rows)_\n"


def test_report_from_pipeline_stats(tmp_path):
    pipe = StreamPipeline([np.zeros((4, 4, 3), np.uint8)] * 6, StreamConfig(policy="all", batch=2))
    list(pipe.run(lambda frames, pre: frames))
    write_report([pipe.stats.to_dict()], tmp_path, "stream", environment={})
    row = json.loads((tmp_path / "stream.json").read_text())["rows"][0]
    assert row["frames_yielded"] == 6 and row["latency_ms"]["p99_ms"] is not None


# ---------------------------------------------------------------------------- plot
def test_plot_latency_writes_a_readable_png(tmp_path):
    rng = np.random.default_rng(1)
    samples = {
        "torch-cpu": rng.normal(40, 5, 500).clip(1),
        "onnxruntime": list(rng.normal(15, 2, 500).clip(1)),
        "tensorrt-int8": LatencyStats().extend(rng.gamma(3, 1.0, 300)),
        "empty": [],
    }
    samples["torch-cpu"][:3] = 5000  # outliers beyond the axis are counted, not plotted
    out = plot_latency(samples, tmp_path / "plots" / "latency.png", title="bench")
    img = cv2.imread(str(out))
    assert img is not None and img.shape[1] == 1100 and img.shape[0] > 4 * 90
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20  # drawn, not a blank canvas
    # Each backend row carries its own colour (not only grey text).
    saturated = (img.max(axis=2).astype(int) - img.min(axis=2).astype(int)) > 80
    assert saturated.sum() > 2000


def test_plot_latency_rejects_bad_input(tmp_path):
    with pytest.raises(DataError):
        plot_latency({}, tmp_path / "x.png")
    with pytest.raises(DataError, match="finite"):
        plot_latency({"a": [], "b": [float("nan")]}, tmp_path / "x.png")
    with pytest.raises(ConfigError, match=".png"):
        plot_latency({"a": [1.0]}, tmp_path / "x.svg")


# ---------------------------------------------------------------------------- status line
class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_live_status_line_overwrites_one_line_and_throttles():
    now = [0.0]
    out = FakeTTY()
    line = LiveStatusLine(out, min_interval_s=0.25, clock=lambda: now[0], width=120)
    assert line.update(fps=30.0, p50_ms=12.34, p99_ms=40.0, drops=2)
    now[0] = 0.1
    assert not line.update(fps=31.0, p50_ms=12.0, p99_ms=41.0, drops=2)  # too soon
    now[0] = 0.3
    assert line.update(fps=29.5, p50_ms=13.0, p99_ms=float("nan"), drops=5, reconnects=1, frames=99)
    line.close()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert "  29.5 fps | p50 13.0 ms | p99 - ms | drops 5 | reconnects 1 | frames 99" in text
    assert line.last_text.startswith("  29.5 fps")


def test_live_status_line_writes_whole_lines_when_not_a_terminal():
    now = [0.0]
    out = io.StringIO()
    line = LiveStatusLine(out, min_interval_s=0.25, clock=lambda: now[0])
    line.update(fps=1.0, p50_ms=1.0, p99_ms=2.0, drops=0)
    now[0] = 1.0
    assert not line.update(fps=1.0, p50_ms=1.0, p99_ms=2.0, drops=0)  # logs get a slower rate
    now[0] = 6.0
    assert line.update(fps=2.0, p50_ms=1.0, p99_ms=2.0, drops=0)
    # the end's forced update, the figures unchanged: a log already has that line (it was written twice)
    assert not line.update(force=True, fps=2.0, p50_ms=1.0, p99_ms=2.0, drops=0)
    line.close()
    assert "\r" not in out.getvalue() and out.getvalue().count("\n") == 2
    # each line starts with the time: a service's log shows when the figures were true
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d{4} +[12]\.0 fps \| p50", row) for row in out.getvalue().splitlines())


def test_a_status_line_whose_reader_is_gone_goes_quiet_instead_of_stopping_the_stream():
    """`edgecmg stream ... 2>&1 | head -1`: the status output's pipe breaks; the stream must go on."""
    import os

    read_end, write_end = os.pipe()
    out = os.fdopen(write_end, "w")
    os.close(read_end)  # the reader went away
    now = [0.0]
    line = LiveStatusLine(out, min_interval_s=0.0, clock=lambda: now[0])
    assert line.update(fps=1.0, p50_ms=1.0, p99_ms=2.0, drops=0)  # written, or given up: never raised
    now[0] = 10.0
    assert line.update(fps=2.0, p50_ms=1.0, p99_ms=2.0, drops=0)
    line.close()
    assert isinstance(line.lost, BrokenPipeError)
    closed = io.StringIO()
    line = LiveStatusLine(closed)
    closed.close()
    line.update(fps=1.0, p50_ms=1.0, p99_ms=2.0, drops=0, force=True)
    assert isinstance(line.lost, OSError)
    try:
        out.close()
    except BrokenPipeError:
        pass


def test_a_dumb_terminal_gets_whole_lines_not_escape_codes(monkeypatch):
    monkeypatch.setenv("TERM", "dumb")
    out = FakeTTY()
    line = LiveStatusLine(out)
    line.update(fps=1.0, p50_ms=1.0, p99_ms=2.0, drops=0)
    line.close()
    assert not line.is_tty and "\x1b" not in out.getvalue() and "\r" not in out.getvalue()
    monkeypatch.setenv("TERM", "xterm-256color")
    assert LiveStatusLine(FakeTTY()).is_tty


def test_live_status_line_from_pipeline_stats():
    pipe = StreamPipeline([np.zeros((4, 4, 3), np.uint8)] * 5, StreamConfig(policy="all"))
    list(pipe.run(lambda frames, pre: frames))
    out = FakeTTY()
    with LiveStatusLine(out, width=200) as line:
        assert line.update_from(pipe.stats, extra="cam0")
    assert "fps | p50" in out.getvalue() and "frames 5 | cam0" in out.getvalue()
    # one frame gives no rate yet: its "fps" was the start-up time's inverse (85 fps on a 10 fps camera)
    pipe = StreamPipeline([np.zeros((4, 4, 3), np.uint8)], StreamConfig(policy="all"))
    list(pipe.run(lambda frames, pre: frames))
    out = FakeTTY()
    with LiveStatusLine(out, width=200) as line:
        assert line.update_from(pipe.stats)
    assert "\r- fps | p50" in out.getvalue() and "frames 1" in out.getvalue()


def test_field_lines_put_one_field_a_line_aligned_with_cells_as_the_table_writes_them():
    from edgecmg.stream.report import field_lines

    row = {"source": "cam|0", "fps": 12.3456, "latency_ms": {"p50_ms": 10.0, "p99_ms": 20.5}, "threshold": None}
    assert field_lines(row) == ("source                cam|0\n"
                                "fps                   12.35\n"
                                "latency_ms p50 / p99  10.00 / 20.50\n"
                                "threshold\n")
    assert field_lines({}) == ""
