"""Peer comparison: anomalib's PatchCore against edgecmg, per-frame CPU latency and peak memory on the
same KolektorSDD frames, the same CPU and the same torch, in one run.

    make bench-peer          # builds .venv-peer (torch 2.14.1, torchvision, anomalib, edgecmg), then runs:
    .venv-peer/bin/python benchmarks/bench_peer.py --out benchmarks/results/peer.md

anomalib needs torchvision, which pins a torch release of its own, so this benchmark has its own
environment (benchmarks/requirements-peer.txt) and both frameworks run on that one torch.

What is measured, and why this way:

- anomalib PatchCore as its defaults build it: wide_resnet50_2, layers layer2 + layer3, 256x256
  input, coreset ratio 0.1, 9 neighbours for the image score. Pretrained weights cannot be
  downloaded here, so the backbone is randomly initialised. Latency and memory do not depend on
  the weight values (same shapes, same FLOPs), but its scores are meaningless: this script reports
  no anomalib accuracy at all.
- Both frameworks are fitted on the same KolektorSDD training images, because the memory bank
  grows with them and the nearest-neighbour search is a large part of PatchCore's latency.
- Timed per frame, batch 1, after a warm-up, on full-size test frames: each framework's own
  pre-processing (resize, normalisation) is inside the timed region, as in deployment.
  Frames are read from disk outside the timed region. The rows are timed in interleaved rounds
  so that background load on a shared machine falls on all of them alike.
- Every fit and every measurement runs in a fresh process, so a peak RSS belongs to one framework
  and one backend alone (freed memory is rarely returned to the OS, so a shared process would
  charge one framework with what the other left behind). Same interpreter, same environment.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import importlib.metadata
import importlib.util
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from data_paths import KOLEKTOR  # benchmarks/ is on sys.path when a script here runs
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
INPUT_SIZE = (256, 256)  # anomalib PatchCore's default input; edgecmg is fitted at the same size
PROMPT = "a photo of a metal commutator"
PATCHCORE_LAYERS = ("layer2", "layer3")
PATCHCORE_BACKBONE = "wide_resnet50_2"
CORESET_RATIO = 0.1  # anomalib's default coreset_sampling_ratio
TARGET_SPEEDUP = 10.0
# anomalib's k-center-greedy allocates a [patches, ~250] float temporary per selected patch (20 MB for
# 20 images). Below glibc's dynamic mmap ceiling (32 MB) such blocks come from the heap, which then
# grew without bound (21 GB, killed by the OOM killer, with 20 images). A fixed 1 MiB threshold serves
# them with mmap and returns them at once (peak 1.4 GB). Set for the PatchCore fit only; timing runs
# with the default allocator for both frameworks.
CORESET_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
BUSY_CORES = 0.25  # background load (cores) above which the report warns that the figures are not clean


# --------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------
def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def check_dataset(root: Path) -> None:
    """A clear message instead of a traceback deep inside a fit when the data is not there."""
    layout = "MVTec layout: train/good/*.jpg|png and test/<class>/*.jpg|png"
    if not root.is_dir():
        raise SystemExit(f"error: dataset folder {root} does not exist ({layout}); pass --data DIR")
    if not (root / "train" / "good").is_dir() or not list_images(root / "train" / "good"):
        raise SystemExit(f"error: {root}/train/good has no images ({layout})")
    if not (root / "test").is_dir() or not test_images(root):
        raise SystemExit(f"error: {root}/test has no images ({layout})")


def test_images(root: Path) -> list[Path]:
    return [p for folder in sorted((root / "test").iterdir()) if folder.is_dir() for p in list_images(folder)]


def evenly_spaced(paths: list[Path], count: int) -> list[Path]:
    """``count`` paths spread over the sorted list: KolektorSDD files are sorted by part, so the
    first N would all show the same few commutators."""
    if count >= len(paths):
        return list(paths)
    step = len(paths) / count
    return [paths[int(i * step)] for i in range(count)]


def read_rgb(path: Path):
    """uint8 HxWx3 RGB, the same decoder for both frameworks so they get the same pixels."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"error: cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


# --------------------------------------------------------------------------------------------------
# helpers shared by the measuring processes
# --------------------------------------------------------------------------------------------------
def limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def time_frames(predict, frame_paths: list[Path], warmup: int) -> list[float]:
    """Milliseconds per call of ``predict(frame)``; the first ``warmup`` calls are not kept."""
    samples = []
    for i, path in enumerate(frame_paths):
        frame = read_rgb(path)  # outside the timed region: disk and JPEG decoding are not the model
        started = time.perf_counter()
        predict(frame)
        elapsed_ms = (time.perf_counter() - started) * 1e3
        if i >= warmup:
            samples.append(elapsed_ms)
    return samples


class BackgroundLoad:
    """How many cores other processes kept busy while this one and its children were measuring.

    On a shared machine a 2-thread torch process whose second core is taken stalls at every
    parallel region; small-kernel networks suffer far more than large ones, so a latency measured
    under load is not comparable and the report says so. Linux only (/proc/stat); None elsewhere.
    """

    def __init__(self) -> None:
        self.other_s = 0.0
        self.wall_s = 0.0

    @staticmethod
    def _snapshot() -> tuple[float, float, float] | None:
        import resource

        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        # user nice system idle iowait irq softirq ...: busy = all but idle and iowait
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
        ours = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                   for f in ("ru_utime", "ru_stime"))
        return busy, ours, time.perf_counter()

    def measure(self, function, *args):
        before = self._snapshot()
        result = function(*args)
        after = self._snapshot()
        if before and after:
            self.other_s += max(0.0, (after[0] - before[0]) - (after[1] - before[1]))
            self.wall_s += after[2] - before[2]
        return result

    @property
    def cores(self) -> float | None:
        return self.other_s / self.wall_s if self.wall_s > 0 else None


def run_isolated(function, *args, env: dict[str, str] | None = None):
    """``function(*args)`` in a freshly spawned interpreter (see the module docstring: a clean RSS),
    with ``env`` added to the environment it starts with."""
    context = multiprocessing.get_context("spawn")
    saved = dict(os.environ)
    os.environ.update(env or {})  # a spawned interpreter copies os.environ when it starts
    try:
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            return pool.submit(function, *args).result()
    finally:
        os.environ.clear()
        os.environ.update(saved)


# --------------------------------------------------------------------------------------------------
# anomalib PatchCore (run in child processes)
# --------------------------------------------------------------------------------------------------
def build_patchcore():
    """PatchcoreModel with anomalib's defaults, backbone randomly initialised (no downloads here)."""
    import torch
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    torch.manual_seed(0)
    return PatchcoreModel(layers=list(PATCHCORE_LAYERS), backbone=PATCHCORE_BACKBONE, pre_trained=False)


def patchcore_transform():
    """anomalib's own PatchCore pre-processing (resize to 256x256 with antialiasing, ImageNet
    normalisation): the transform its Engine applies to every batch."""
    from anomalib.models.image.patchcore.lightning_model import Patchcore

    return Patchcore.configure_pre_processor(image_size=INPUT_SIZE).transform


def frame_to_tensor(frame):
    """uint8 HxWx3 -> float [1, 3, H, W] in [0, 1], what anomalib's image reader hands the model."""
    import torch

    return torch.from_numpy(frame).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def fit_patchcore(train_paths: list[Path], out_path: Path, threads: int, batch_size: int = 8) -> dict:
    """Collect patch embeddings of the training images, subsample the coreset, save the model."""
    import torch

    limit_threads(threads)
    started = time.perf_counter()
    model, transform = build_patchcore(), patchcore_transform()
    model.train()  # in training mode PatchcoreModel stores the embeddings instead of scoring
    with torch.inference_mode():
        for start in range(0, len(train_paths), batch_size):
            # Transformed one by one: KolektorSDD images differ in size by a few pixels.
            model(torch.cat([transform(frame_to_tensor(read_rgb(p))) for p in train_paths[start:start + batch_size]]))
    embeddings = sum(e.shape[0] for e in model.embedding_store)
    torch.manual_seed(0)  # the coreset's random starting point
    model.subsample_embedding(CORESET_RATIO)
    model.eval()
    torch.save(model.state_dict(), out_path)
    return {"fit_s": time.perf_counter() - started, "train_images": len(train_paths), "embeddings": embeddings,
            "bank_rows": int(model.memory_bank.shape[0]), "bank_dim": int(model.memory_bank.shape[1])}


def measure_patchcore(model_path: Path, threads: int, frame_paths: list[Path], warmup: int) -> dict:
    import torch

    limit_threads(threads)
    model = build_patchcore()
    model.load_state_dict(torch.load(model_path, map_location="cpu", weights_only=True))
    model.eval()
    transform = patchcore_transform()

    def predict(frame):
        with torch.inference_mode():
            return float(model(transform(frame_to_tensor(frame))).pred_score[0])

    samples = time_frames(predict, frame_paths, warmup)
    # Imported after timing: edgecmg adds nothing to the anomalib process's peak before this point.
    from edgecmg.commands.bench import peak_rss_mib

    return {"samples_ms": samples, "peak_rss_mib": peak_rss_mib()}


# --------------------------------------------------------------------------------------------------
# edgecmg (run in child processes)
# --------------------------------------------------------------------------------------------------
def fit_edgecmg(train_paths: list[Path], artifact_path: Path, onnx_path: Path, threads: int) -> dict:
    """Fit, save the artifact and export the default (featurizer) ONNX graph when onnx is there."""
    from edgecmg import artifact
    from edgecmg.config import ModelConfig
    from edgecmg.errors import BackendUnavailableError
    from edgecmg.fit import fit

    limit_threads(threads)
    started = time.perf_counter()
    model, metadata = fit([str(p) for p in train_paths], ModelConfig(prompt=PROMPT, input_size=INPUT_SIZE),
                          progress=False)
    fit_s = time.perf_counter() - started
    artifact.save(model, metadata, artifact_path)
    exported, export_note = True, ""
    try:
        from edgecmg.export import export_onnx

        export_onnx(artifact_path, onnx_path)
    except BackendUnavailableError as exc:  # onnx not installed: report torch alone
        exported, export_note = False, str(exc)
    training = metadata["training"]
    return {"fit_s": fit_s, "train_images": training["images"], "bank_images": training["bank_images"],
            "bank_rows": training["bank_size"], "bank_dim": training["feature_dim"],
            "backbone": metadata["backbone"]["id"], "features": metadata["features"],
            "onnx": exported, "onnx_note": export_note}


def measure_edgecmg(model_path: Path, backend: str, threads: int, frame_paths: list[Path], warmup: int) -> dict:
    from edgecmg.commands.bench import peak_rss_mib
    from edgecmg.detector import Detector

    limit_threads(threads)  # the torch backend, and the host-side bank scoring after the ONNX featurizer
    # threads= sets ONNX Runtime's intra-op threads (its default would be every core of the machine).
    detector = Detector.load(model_path, backend=backend, device="cpu", threads=threads)
    samples = time_frames(lambda frame: detector.predict(frame).score, frame_paths, warmup)
    detector.close()
    return {"samples_ms": samples, "peak_rss_mib": peak_rss_mib()}


# --------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------
def summarise(samples_ms: list[float]) -> dict:
    from edgecmg.stream.latency import LatencyStats

    stats = LatencyStats.from_samples(samples_ms)
    return {"frames": stats.count, "p50_ms": stats.p50, "p90_ms": stats.p90, "mean_ms": stats.mean}


def make_row(framework: str, backend: str, backbone: str, fitted: dict, measured: dict) -> dict:
    return {"framework": framework, "backend": backend, "backbone": backbone,
            "input": f"{INPUT_SIZE[0]}x{INPUT_SIZE[1]}", "train_images": fitted["train_images"],
            "bank": f"{fitted['bank_rows']} x {fitted['bank_dim']}", "fit_s": fitted["fit_s"],
            "peak_rss_mib": measured["peak_rss_mib"], "background_cores": measured.get("background_cores"),
            **summarise(measured["samples_ms"]),
            "samples_ms": measured["samples_ms"]}


def add_speedups(rows: list[dict]) -> None:
    """Speed-up = anomalib's latency / this row's latency, on p50 (robust on a shared machine)
    and on the mean."""
    reference = rows[0]
    for row in rows:
        row["speedup_p50"] = reference["p50_ms"] / row["p50_ms"]
        row["speedup_mean"] = reference["mean_ms"] / row["mean_ms"]


def render_markdown(rows: list[dict], settings: dict, env: dict) -> str:
    versions = settings["versions"]
    best = max(rows[1:], key=lambda r: r["speedup_p50"], default=None)
    verdict = "no edgecmg row was measured" if best is None else (
        f"edgecmg's fastest CPU backend ({best['backend']}) is **{best['speedup_p50']:.1f}x** faster per frame "
        f"than anomalib PatchCore at p50 ({best['speedup_mean']:.1f}x on the mean); the target is "
        f">= {TARGET_SPEEDUP:.0f}x: **{'met' if best['speedup_p50'] >= TARGET_SPEEDUP else 'not met'}**.")
    lines = [
        f"Measured by `benchmarks/bench_peer.py` on {env.get('cpu')} ({env.get('cpu_cores')} cores, "
        f"{settings['threads']} threads), torch {env.get('torch')}, anomalib {versions['anomalib']}, "
        f"edgecmg {versions['edgecmg']} ({settings['edgecmg_revision']}), "
        f"onnxruntime {versions['onnxruntime'] or 'absent'}, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}. Load average {settings['load_before']} before, "
        f"{settings['load_after']} after (a shared machine: other work adds noise to both sides).",
        "",
        f"KolektorSDD, {settings['train_images']} training images (evenly spaced over train/good) for both "
        f"frameworks; {settings['frames']} timed frames per row ({settings['rounds']} interleaved rounds, each a "
        f"fresh process warmed up on {settings['warmup']} frames first), batch 1, full-size test images, resize and "
        "normalisation inside the timed region. Peak RSS: the whole measuring process (interpreter, imports, "
        "model, inference), largest over the row's rounds.",
        "",
        "| framework | backbone | input | train images | memory bank | latency p50 (ms) | p90 (ms) "
        "| mean (ms) | peak RSS (MiB) | speed-up vs anomalib (p50) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        name = row["framework"] if row is rows[0] else f"{row['framework']} ({row['backend']})"
        rss = "n/a" if row["peak_rss_mib"] is None else f"{row['peak_rss_mib']:.0f}"
        lines.append(f"| {name} | {row['backbone']} | {row['input']} | {row['train_images']} | {row['bank']} | "
                     f"{row['p50_ms']:.1f} | {row['p90_ms']:.1f} | {row['mean_ms']:.1f} | {rss} | "
                     f"{row['speedup_p50']:.1f}x |")
    lines += [
        "",
        verdict,
        "",
        background_note(rows, settings["threads"]),
        "",
        "anomalib's backbone is randomly initialised (pretrained weights cannot be downloaded on this "
        "machine): its latency and memory are those of the real model, its scores are not, so no accuracy "
        "is reported for either framework here. anomalib is timed through its torch model "
        "(PatchcoreModel, eval mode, inference_mode) with its own pre-processing; its Lightning "
        "post-processing (score normalisation, thresholds) is left out, which can only favour anomalib.",
        *([f"edgecmg ONNX export skipped: {settings['onnx_note']}"] if settings.get("onnx_note") else []),
    ]
    return "\n".join(lines) + "\n"


def background_note(rows: list[dict], threads: int) -> str:
    loads = [row["background_cores"] for row in rows]
    if any(load is None for load in loads):
        return "Background load while timing: not measured (no /proc/stat)."
    text = ("Background load while timing (cores kept busy by other processes, mean over each row's rounds): "
            + ", ".join(f"{row['framework']} {row['backend']} {row['background_cores']:.2f}" for row in rows) + ".")
    if max(loads) > BUSY_CORES:
        text += (f" **The machine was busy**: with {threads} threads, every parallel region waits for a "
                 "descheduled thread, which slows networks of many small kernels (edgecmg) far more than "
                 "networks of few large ones (PatchCore); rerun on an idle machine before quoting these figures.")
    return text


def write_report(out: Path, rows: list[dict], settings: dict) -> None:
    from edgecmg.stream.environment import environment_info

    env = environment_info()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_markdown(rows, settings, env))
    out.with_suffix(".json").write_text(json.dumps({"environment": env, "settings": settings, "rows": rows},
                                                   indent=2, default=str))


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=KOLEKTOR, help="KolektorSDD in MVTec layout")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/peer.md"))
    # 20 by default: anomalib's k-center-greedy coreset costs O(images^2) (one pass over all patches per
    # selected patch): 39 s for 20 images on an idle 2-core machine, 8 minutes for 50 on a busy one.
    # A smaller training set shrinks both banks: PatchCore's (1,024 patches x 0.1 per image) and
    # edgecmg's (its CMLE is capped at bank images - 1 dims: 17 at 20 images). The README sets the
    # table beside the full-size model's figures from bench_backends.py.
    parser.add_argument("--train-images", type=int, default=20,
                        help="training images for both frameworks (PatchCore's bank: 1024 patches each x 0.1)")
    parser.add_argument("--frames", type=int, default=100, help="timed frames per row")
    parser.add_argument("--warmup", type=int, default=3, help="untimed frames at the start of every measuring process")
    parser.add_argument("--rounds", type=int, default=4,
                        help="the timed frames are split into this many interleaved rounds (see measure_interleaved)")
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime intra-op threads")
    parser.add_argument("--work", type=Path, default=None, help="keep fitted models here (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.train_images < 10 or args.frames < 1 or args.warmup < 0 or args.threads < 1 or args.rounds < 1:
        parser.error("need --train-images >= 10 (edgecmg holds some out), --frames >= 1, --warmup >= 0, "
                     "--threads >= 1, --rounds >= 1")
    return args


def check_environment() -> None:
    missing = [name for name in ("torch", "anomalib", "edgecmg") if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(f"error: {', '.join(missing)} not importable with {sys.executable}; this benchmark has "
                         "its own environment: run `make bench-peer` (or use .venv-peer/bin/python)")


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def edgecmg_revision() -> str:
    """The commit of the edgecmg that is measured, '+dirty' with uncommitted changes ('unknown' outside
    a git checkout). The figures belong to that code, so the report names it."""
    import subprocess

    import edgecmg

    try:
        return subprocess.run(["git", "describe", "--always", "--dirty=+dirty"], cwd=Path(edgecmg.__file__).parent,
                              capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def load_average() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def split_rounds(frames: list[Path], rounds: int) -> list[list[Path]]:
    """``frames`` cut into ``rounds`` contiguous chunks of (nearly) equal length."""
    bounds = [round(i * len(frames) / rounds) for i in range(rounds + 1)]
    return [frames[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def measure_interleaved(jobs: list[tuple], frames: list[Path], warmup: int, rounds: int, step) -> dict:
    """Time every job on the same frames, in rounds: chunk r of every job runs before chunk r + 1 of
    any. The machine is shared, and background load drifts over minutes; interleaving spreads that
    drift over all rows alike instead of charging it to whichever row happened to run during a burst.
    Each chunk runs in a fresh process that first warms up on its chunk's first ``warmup`` frames."""
    merged = {name: {"samples_ms": [], "peak_rss_mib": None} for name, _, _ in jobs}
    background = {name: BackgroundLoad() for name, _, _ in jobs}
    chunks = split_rounds(frames, rounds)
    for r, chunk in enumerate(chunks, 1):
        for name, function, fargs in jobs:
            warmup_frames = [chunk[i % len(chunk)] for i in range(warmup)]
            result = background[name].measure(step, f"round {r}/{len(chunks)}: timing {name} on {len(chunk)} frames",
                                              function, *fargs, warmup_frames + chunk, warmup)
            merged[name]["samples_ms"] += result["samples_ms"]
            peaks = [x for x in (merged[name]["peak_rss_mib"], result["peak_rss_mib"]) if x is not None]
            merged[name]["peak_rss_mib"] = max(peaks, default=None)
    for name, load in background.items():
        merged[name]["background_cores"] = load.cores
    return merged


def run(args: argparse.Namespace, work: Path) -> None:
    train = evenly_spaced(list_images(args.data / "train" / "good"), args.train_images)
    tests = test_images(args.data)
    # The same frame sequence for every row: the test images in order, repeated when N is larger.
    frames = [tests[i % len(tests)] for i in range(args.frames)]
    settings = {"data": str(args.data), "train_images": len(train), "frames": args.frames, "warmup": args.warmup,
                "rounds": args.rounds, "threads": args.threads, "coreset_ratio": CORESET_RATIO,
                "load_before": load_average(), "edgecmg_revision": edgecmg_revision(),
                "versions": {name: package_version(name) for name in
                             ("torch", "torchvision", "anomalib", "edgecmg", "onnxruntime")},
                "train_files": [p.name for p in train]}
    started = time.perf_counter()

    def step(message: str, function, *fargs, env: dict[str, str] | None = None):
        print(f"[{time.perf_counter() - started:5.0f} s] {message}", flush=True)
        return run_isolated(function, *fargs, env=env)

    patchcore_fit = step(f"anomalib PatchCore: fitting on {len(train)} images", fit_patchcore, train,
                         work / "patchcore.pt", args.threads, env=CORESET_MALLOC_ENV)
    edgecmg_fit = step(f"edgecmg: fitting on {len(train)} images and exporting ONNX", fit_edgecmg, train,
                       work / "peer.edgecmg", work / "peer.onnx", args.threads)
    jobs = [("anomalib PatchCore", measure_patchcore, (work / "patchcore.pt",)),
            ("edgecmg torch", measure_edgecmg, (work / "peer.edgecmg", "torch"))]
    if edgecmg_fit["onnx"]:
        jobs.append(("edgecmg onnxruntime", measure_edgecmg, (work / "peer.onnx", "onnxruntime")))
    jobs = [(name, function, fargs + (args.threads,)) for name, function, fargs in jobs]
    measured = measure_interleaved(jobs, frames, args.warmup, args.rounds, step)

    patchcore_backbone = f"{PATCHCORE_BACKBONE} {'+'.join(PATCHCORE_LAYERS)} (random init)"
    edgecmg_backbone = f"{edgecmg_fit['backbone']} ({edgecmg_fit['features']})"
    rows = [make_row("anomalib PatchCore", "torch", patchcore_backbone, patchcore_fit, measured["anomalib PatchCore"])]
    rows += [make_row("edgecmg", name.split()[-1], edgecmg_backbone, edgecmg_fit, result)
             for name, result in measured.items() if name.startswith("edgecmg")]
    add_speedups(rows)
    settings.update(load_after=load_average(), onnx_note=edgecmg_fit["onnx_note"],
                    run_s=round(time.perf_counter() - started, 1),
                    fits={"anomalib": patchcore_fit, "edgecmg": edgecmg_fit})
    write_report(args.out, rows, settings)
    print(args.out.read_text())
    print(f"wrote {args.out} and {args.out.with_suffix('.json')} in {settings['run_s']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_dataset(args.data)
    check_environment()
    # Progress bars (anomalib's coreset selection, model loading) would drown the step log; the
    # measuring processes inherit this.
    os.environ.setdefault("TQDM_DISABLE", "1")
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        run(args, args.work)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
            run(args, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
