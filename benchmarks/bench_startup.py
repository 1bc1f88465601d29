"""The README's "Start-up" table: how long a freshly started process takes to its first verdict, and
its resident memory then, as a service restarted by systemd after a crash or a reboot sees it.

Each setting runs in a process of its own, started ``--repeats`` times (interleaved, so a busy moment
of the machine does not fall on one setting alone): the KolektorSDD model at 416x160 as fitted
(``.edgecmg``) on torch and on ONNX Runtime (its export already in the cache, as after the first
start), its whole-detector ``.onnx`` export on ONNX Runtime, and the same ``.onnx`` on bare ONNX
Runtime (an InferenceSession and one run, no edgecmg: the floor). The files are in the OS's page
cache (as after a restart; after a reboot add the disk's reads).

    python benchmarks/bench_startup.py      # writes benchmarks/results/startup.md
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from data_paths import KOLEKTOR, REPO  # benchmarks/ is on sys.path when a script here runs

INPUT_SIZE = (416, 160)
IMAGE = KOLEKTOR / "test" / "good" / "kos01_Part1.jpg"
# (label, which model file, backend; None: bare ONNX Runtime)
SETTINGS = [
    ("`.edgecmg` on torch", "edgecmg", "torch"),
    ("`.edgecmg` on ONNX Runtime (export cached)", "edgecmg", "onnxruntime"),
    ("`.onnx` (whole detector) on ONNX Runtime", "onnx", "onnxruntime"),
    ("the same `.onnx` on bare ONNX Runtime, no edgecmg", "onnx", None),
]
HEAVY = ("torch", "onnx", "onnxruntime", "scipy")  # modules a start may or may not pull in

# Runs in the measured process: imports included in the time, from interpreter start on.
CHILD = """
import json, sys, time
started = time.perf_counter()
import cv2
model, backend, image = sys.argv[1:4]
frame = cv2.imread(image)
if backend == "none":
    import numpy as np
    import onnxruntime as ort
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    height, width = (session.get_inputs()[0].shape[1:3])
    rgb = cv2.cvtColor(cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    session.run(None, {session.get_inputs()[0].name: rgb[None]})
else:
    from edgecmg import Detector
    Detector.load(model, backend=backend).predict(frame, bgr=True)
seconds = time.perf_counter() - started
status = open("/proc/self/status").read()
rss_mib = int(status.split("VmRSS:")[1].split()[0]) / 1024
print(json.dumps({"seconds": seconds, "rss_mib": rss_mib,
                  "imported": [name for name in %r if name in sys.modules]}))
""" % (HEAVY,)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "startup.md"))
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "edgecmg-bench-backends"),
                        help="where the model is kept per code version (shared with bench_backends.py)")
    parser.add_argument("--repeats", type=int, default=7, help="fresh processes per setting")
    args = parser.parse_args()

    from bench_backends import kolektor_model

    from edgecmg.config import ExportConfig
    from edgecmg.export import export_onnx
    from edgecmg.stream.environment import environment_info

    model = kolektor_model(Path(args.work), INPUT_SIZE)
    onnx = model.with_suffix(".onnx")
    if not onnx.is_file():
        export_onnx(model, onnx, ExportConfig(with_scoring=True))
    files = {"edgecmg": model, "onnx": onnx}
    # The process starts in another folder than the repository: its root's kernels/ would hide a package.
    env = dict(os.environ, EDGECMG_CACHE_DIR=str(model.parent / "cache"))
    runs: dict[str, list[dict]] = {label: [] for label, _, _ in SETTINGS}
    for repeat in range(args.repeats + 1):  # the first round fills the export cache and the page cache
        for label, kind, backend in SETTINGS:
            done = subprocess.run([sys.executable, "-c", CHILD, str(files[kind]), backend or "none", str(IMAGE)],
                                  env=env, cwd=model.parent, capture_output=True, text=True, check=True)
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            if repeat:
                runs[label].append(figures)
                print(f"{label}: {figures}", flush=True)
    machine = environment_info()
    lines = [
        f"Measured by `benchmarks/bench_startup.py` on {machine.get('cpu', 'this CPU')} ({os.cpu_count()} cores), "
        f"torch {machine.get('torch', '?')}, ONNX Runtime {machine.get('onnxruntime', '?')}, "
        f"{time.strftime('%Y-%m-%d')}: the KolektorSDD model at {INPUT_SIZE[0]}x{INPUT_SIZE[1]}, {args.repeats} fresh "
        "processes per setting (interleaved), each from interpreter start to its first verdict on one image; "
        "resident memory then.",
        "",
        "| setting | to first verdict: min | median | memory (median) | heavy modules imported |",
        "|---|---|---|---|---|",
    ]
    for label, _, _ in SETTINGS:
        seconds = [run["seconds"] for run in runs[label]]
        memory = statistics.median(run["rss_mib"] for run in runs[label])
        imported = ", ".join(runs[label][-1]["imported"]) or "none"
        lines.append(f"| {label} | {min(seconds):.2f} s | {statistics.median(seconds):.2f} s | {memory:.0f} MiB | "
                     f"{imported} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
