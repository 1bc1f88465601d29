"""Memory over a long stream: ``Detector.stream`` over a looped image folder for thousands of frames,
the process's resident memory read at fixed intervals, once per backend.

    python benchmarks/bench_soak.py --out benchmarks/results/soak.md

A line camera runs for days; a detector that keeps a little of every frame (a growing list, a
cache without a bound, a leaked session buffer) dies of it there, never in a short test. Each
backend runs in a process of its own, so that one backend's libraries and caches do not count
against another's. The source is the KolektorSDD test folder, looped (``StreamConfig(loop=True)``),
policy "all": every frame is read from disk, decoded, resized and judged. The model is fitted on the
KolektorSDD training images (or pass ``--model``); the ONNX Runtime backend exports it to ONNX
through edgecmg's cache, here a temporary folder.

Resident memory (VmRSS, Linux) is read after a garbage collection every ``--every`` frames. The
first reading comes after ``--every`` frames, when allocators and caches have settled; "growth" is
the last reading minus that first one, and "slope" the least-squares line through all readings.
The run passes when growth stays under ``--max-growth-mib``; the table also extrapolates the slope
to a day at 30 fps, which a run of a few thousand frames measures only roughly.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from data_paths import KOLEKTOR, SHARED_DATA  # benchmarks/ is on sys.path when a script here runs
from edgecmg.commands.bench import rss_mib


FRAMES_PER_DAY = 30 * 86_400  # a camera at 30 fps, for the slope's extrapolation


def soak(model: Path, backend: str, source: Path, frames: int, every: int) -> dict:
    """Stream ``frames`` frames from ``source`` (looped) through ``backend``; readings every ``every``."""
    from edgecmg.config import StreamConfig
    from edgecmg.detector import Detector

    det = Detector.load(model, backend=backend)
    readings = []
    judged = 0
    started = time.perf_counter()
    with det.stream(str(source), config=StreamConfig(policy="all", loop=True)) as run:
        with tqdm(total=frames, desc=f"soak {det.backend}", unit="frame", leave=False) as bar:
            for _ in run:
                judged += 1
                bar.update()
                if judged % every == 0:
                    gc.collect()
                    readings.append({"frame": judged, "seconds": time.perf_counter() - started, "rss_mib": rss_mib()})
                if judged >= frames:
                    break
        stats = run.stats.to_dict()
    record = {"backend": det.backend, "device": str(det.runner.device), "input_size": list(det.input_size), "frames": judged,
              "seconds": time.perf_counter() - started, "dropped": stats["frames_dropped"],
              "corrupt_skipped": stats.get("corrupt_skipped", 0), "readings": readings}
    det.close()
    return record


def slope_per_1000(readings: list[dict]) -> float:
    """Least-squares slope of RSS against frame number, MiB per 1,000 frames."""
    xs = [r["frame"] for r in readings]
    ys = [r["rss_mib"] for r in readings]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    return 1000 * sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread


def settled_since(readings: list[dict], within_mib: float = 0.1) -> int:
    """The frame from which every reading lies within ``within_mib`` of the last one: a leak keeps
    moving it to the end, a one-off step leaves it early."""
    last = readings[-1]["rss_mib"]
    since = readings[-1]["frame"]
    for reading in reversed(readings):
        if abs(reading["rss_mib"] - last) > within_mib:
            break
        since = reading["frame"]
    return since


def child_main(args: argparse.Namespace) -> int:
    """One backend's soak, in this process; prints its record as one JSON line on stdout."""
    import torch

    torch.set_num_threads(args.threads)
    record = soak(Path(args.model), args.child, Path(args.source), args.frames, args.every)
    print("SOAK " + json.dumps(record), flush=True)
    return 0


def run_child(script: Path, args: argparse.Namespace, model: Path, backend: str, cache: Path) -> dict:
    command = [sys.executable, str(script), "--child", backend, "--model", str(model), "--source", str(args.source),
               "--frames", str(args.frames), "--every", str(args.every), "--threads", str(args.threads)]
    # The child's progress bar goes to this terminal (stderr); its record comes back on stdout.
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env={**os.environ, "EDGECMG_CACHE_DIR": str(cache)})
    records = [line[5:] for line in done.stdout.splitlines() if line.startswith("SOAK ")]
    if done.returncode != 0 or not records:
        raise SystemExit(f"the {backend} soak failed (exit {done.returncode}); its output:\n{done.stdout}")
    return json.loads(records[-1])


def shown_source(source: Path) -> str:
    """The source as the README shows it: relative to ../shared/data where it lies there."""
    try:
        return f"`{source.resolve().relative_to(SHARED_DATA.resolve())}`"
    except ValueError:
        return f"`{source}`"


def table(records: list[dict], args: argparse.Namespace, env: dict) -> str:
    input_size = records[0]["input_size"]
    lines = [
        f"Measured by `benchmarks/bench_soak.py` on {env.get('device') or env.get('cpu')} "
        f"({env.get('cpu_cores')} CPU cores), torch {env.get('torch')}, ONNX Runtime {env.get('onnxruntime')}, "
        f"{args.threads} torch threads, model input {input_size[0]}x{input_size[1]}, {shown_source(args.source)} "
        f"looped for {args.frames:,} frames (policy \"all\"), resident memory read every {args.every:,} frames, "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
        "| backend | frames judged | dropped | frames/s | RSS at first reading | RSS at the end | lowest / highest | growth | within 0.1 MiB of the end since frame | slope per 1,000 frames | slope as a day at 30 fps |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for r in records:
        rss = [x["rss_mib"] for x in r["readings"]]
        growth = rss[-1] - rss[0]
        slope = slope_per_1000(r["readings"]) if len(rss) > 1 else 0.0
        lines.append(f"| {r['backend']} | {r['frames']:,} | {r['dropped']} | {r['frames'] / r['seconds']:.1f} | "
                     f"{rss[0]:.1f} MiB | {rss[-1]:.1f} MiB | {min(rss):.1f} / {max(rss):.1f} MiB | "
                     f"{growth:+.1f} MiB | {settled_since(r['readings']):,} | {slope:+.2f} MiB | "
                     f"{slope * FRAMES_PER_DAY / 1000:+.0f} MiB |")
        flat = growth < args.max_growth_mib and r["frames"] == args.frames and r["dropped"] == 0
        verdicts.append(f"{r['backend']}: {'yes' if flat else 'NO'}")
    lines += ["", f"Growth under {args.max_growth_mib:g} MiB over the run, every frame judged: " + ", ".join(verdicts)
              + f". The last column extrapolates the slope to a camera at 30 fps for a day ({FRAMES_PER_DAY:,} "
              f"frames); over {args.frames:,} frames a slope that small is not told apart from the allocator's "
              "noise: a run of hours on the target (--frames) is what rules it out."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="fitted model (*.edgecmg); default: fit one on KolektorSDD")
    parser.add_argument("--backends", nargs="+", default=["torch", "onnxruntime"])
    parser.add_argument("--source", type=Path, default=KOLEKTOR / "test" / "good",
                        help="image folder or video file, looped (default: KolektorSDD's normal test images)")
    parser.add_argument("--frames", type=int, default=24_000)
    parser.add_argument("--every", type=int, default=2_000, help="frames between memory readings")
    parser.add_argument("--input-size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"),
                        help="model input size when fitting here")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--max-growth-mib", type=float, default=8.0)
    parser.add_argument("--out", default="benchmarks/results/soak.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: run one backend's soak here
    args = parser.parse_args()
    if args.child:
        return child_main(args)
    if args.every < 1 or args.frames < 2 * args.every:
        parser.error(f"--frames ({args.frames}) must be at least twice --every ({args.every}): the growth needs two readings")
    if not args.source.exists():
        raise SystemExit(f"{args.source} not found: put ../shared/data beside the repo or pass --source")
    if rss_mib() is None:
        raise SystemExit("the soak reads resident memory from /proc/self/status: it runs on Linux only")

    from edgecmg.stream.environment import environment_info
    from bench_backends import fit_kolektor

    with tempfile.TemporaryDirectory(prefix="edgecmg-bench-soak-") as tmp:
        tmp = Path(tmp)
        model = Path(args.model) if args.model else fit_kolektor(tmp / "kolektor.edgecmg", tuple(args.input_size))
        records = [run_child(Path(__file__).resolve(), args, model, backend, tmp / "cache") for backend in args.backends]
    env = environment_info()
    text = table(records, args, env)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"model": str(model), "frames": args.frames,
                                                    "every": args.every, "threads": args.threads, "environment": env,
                                                    "runs": records}, indent=2, default=str))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
