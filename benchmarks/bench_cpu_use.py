"""The README's "CPU use between frames" table: what spin-waiting threads cost and buy on a CPU.

ONNX Runtime's threads (spinning by default; ``Detector.load(..., spin=False)`` turns it off) and
torch's GNU OpenMP threads (spinning unless ``OMP_WAIT_POLICY=PASSIVE`` is set before the process
starts) are timed on one KolektorSDD model at 416x160 (the size fit picks for it), each setting in a
process of its own: frames judged back to back (median latency), then frames paced as a camera
would deliver them (median latency, and the process's CPU time per frame from ``getrusage``); then
again with ``--busy`` other processes (plain Python loops) keeping the cores busy, as a camera
decoder or an application beside edgecmg would.

    python benchmarks/bench_cpu_use.py      # writes benchmarks/results/cpu_use.md

The model is kept in ``--work`` per code version, as bench_backends.py keeps its own.
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
# (label, backend, spin, extra environment)
SETTINGS = [
    ("ONNX Runtime, default (spinning)", "onnxruntime", None, {}),
    ("ONNX Runtime, `spin=False`", "onnxruntime", False, {}),
    ("torch, default (GNU OpenMP spinning)", "torch", None, {}),
    ("torch, `OMP_WAIT_POLICY=PASSIVE`", "torch", None, {"OMP_WAIT_POLICY": "PASSIVE"}),
]


def measure(model: str, backend: str, spin, frames_back_to_back: int, frames_paced: int, pace_s: float) -> dict:
    """In this process: (back-to-back median ms, paced median ms, paced CPU ms per frame)."""
    import resource

    from edgecmg.detector import Detector
    from edgecmg.imageio import read_image

    images = [read_image(p) for p in sorted((KOLEKTOR / "test" / "good").iterdir())[:20]]
    with Detector.load(model, backend=backend, spin=spin) as detector:
        for image in images[:5]:  # warm-up
            detector.predict(image)
        back_to_back = []
        for i in range(frames_back_to_back):
            started = time.perf_counter()
            detector.predict(images[i % len(images)])
            back_to_back.append((time.perf_counter() - started) * 1e3)
        paced = []
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu_before = usage.ru_utime + usage.ru_stime
        for i in range(frames_paced):
            time.sleep(pace_s)  # the camera's next frame
            started = time.perf_counter()
            detector.predict(images[i % len(images)])
            paced.append((time.perf_counter() - started) * 1e3)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu_per_frame = (usage.ru_utime + usage.ru_stime - cpu_before) * 1e3 / frames_paced
    return {"back_to_back_ms": statistics.median(back_to_back), "paced_ms": statistics.median(paced),
            "paced_cpu_ms": cpu_per_frame}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "cpu_use.md"))
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "edgecmg-bench-cpu-use"))
    parser.add_argument("--frames", type=int, default=200, help="frames back to back, and paced, per setting")
    parser.add_argument("--fps", type=float, default=10.0, help="the paced frames' rate")
    parser.add_argument("--busy", type=int, default=2, help="busy processes beside edgecmg in the second pass")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # "MODEL BACKEND SPIN": one setting, in this process
    args = parser.parse_args()
    if args.child:
        model, backend, spin = json.loads(args.child)
        print(json.dumps(measure(model, backend, spin, args.frames, args.frames // 2, 1.0 / args.fps)))
        return

    from bench_backends import kolektor_model

    from edgecmg.stream.environment import environment_info

    model = kolektor_model(Path(args.work), INPUT_SIZE)
    rows = []
    for busy in (0, args.busy):
        for label, backend, spin, extra_env in SETTINGS:
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            env.update(extra_env, EDGECMG_CACHE_DIR=str(model.parent / "cache"))
            others = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
            try:
                done = subprocess.run([sys.executable, __file__, "--child", json.dumps([str(model), backend, spin]),
                                       "--frames", str(args.frames), "--fps", str(args.fps)],
                                      env=env, capture_output=True, text=True, check=True)
            finally:
                for other in others:
                    other.kill()
                    other.wait()
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append((label, busy, figures))
            print(f"{label}, {busy} busy: {figures}", flush=True)
    machine = environment_info()
    lines = [
        f"Measured by `benchmarks/bench_cpu_use.py` on {machine.get('cpu', 'this CPU')} "
        f"({os.cpu_count()} cores), torch {machine.get('torch', '?')}, ONNX Runtime "
        f"{machine.get('onnxruntime', '?')}, {time.strftime('%Y-%m-%d')}: KolektorSDD model at "
        f"{INPUT_SIZE[0]}x{INPUT_SIZE[1]}, each setting in its own process, {args.frames} frames back to "
        f"back, then {args.frames // 2} paced at {args.fps:g} a second, alone and beside {args.busy} busy "
        "processes (plain Python loops); CPU time of the process (`getrusage`) per paced frame.",
        "",
        "| setting | other busy processes | back to back: latency p50 | paced: latency p50 | "
        "paced: CPU per frame |",
        "|---|---|---|---|---|",
    ]
    for label, busy, figures in rows:
        lines.append(f"| {label} | {busy} | {figures['back_to_back_ms']:.1f} ms | {figures['paced_ms']:.1f} ms | "
                     f"{figures['paced_cpu_ms']:.1f} ms |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
