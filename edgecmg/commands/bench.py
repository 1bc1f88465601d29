"""``edgecmg bench``: per-frame latency of every available backend, side by side in one run."""
from __future__ import annotations

import argparse
import gc
import logging
import sys
import time
from pathlib import Path

import numpy as np

from edgecmg.errors import BackendUnavailableError, ConfigError, DataError, EdgeCMGError
from edgecmg.fileio import point_at_devnull

log = logging.getLogger("edgecmg")


def _reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets the peak resident set size (VmHWM) of this process."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _status_mib(field: str) -> float | None:
    """A memory figure of this process from /proc/self/status (``field``: "VmHWM", "VmRSS"), MiB;
    None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def peak_rss_mib() -> float | None:
    """This process's peak resident set size (VmHWM), MiB; None off Linux. Not ru_maxrss: after
    fork + exec that one still carries the parent's peak (benchmarks/bench_peer.py uses this too)."""
    return _status_mib("VmHWM")


def rss_mib() -> float | None:
    """This process's resident set size now (VmRSS), MiB; None off Linux (benchmarks/bench_soak.py)."""
    return _status_mib("VmRSS")


def _frames(args: argparse.Namespace) -> tuple[list[np.ndarray] | None, str]:
    """--images' frames, or None: seeded random frames made per model, at its own input size."""
    if args.images:
        from edgecmg.imageio import list_images, load_images

        paths = list_images(args.images)[: max(1, args.frames)]
        frames, _, _ = load_images(paths)
        if not frames:
            raise DataError(f"--images {args.images}: none of the {len(paths)} image(s) could be read (each is named "
                            "above); give a folder of readable images, or leave --images out for noise frames")
        return frames, f"{len(frames)} images from {args.images}"
    return None, "seeded random frames at each model's input size"


def random_frames(size: tuple[int, int]) -> list[np.ndarray]:
    """Latency does not depend on content (dense kNN, fixed shapes): seeded noise frames will do."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(8)]


def bench_backend(model: str, backend: str, frames: list[np.ndarray] | None, *, n_frames: int, warmup: int,
                  batch: int) -> tuple[dict, list[float]]:
    """Latency (ms per frame) of one backend; returns the summary row and the raw samples.
    ``frames`` None: ``random_frames`` at the model's input size, whatever its file type."""
    if n_frames < batch:
        raise ConfigError(f"n_frames={n_frames}: time at least one batch of {batch} frames")
    from edgecmg.detector import Detector
    from edgecmg.stream.latency import LatencyStats

    gc.collect()
    _reset_peak_rss()
    # torch only where something loaded it (an earlier row, or this model's loader below): an .onnx timed
    # on ONNX Runtime runs without it. Where torch is not loaded yet, it holds no memory from before.
    torch = sys.modules.get("torch")
    allocated_before = 0
    if torch is not None and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        allocated_before = torch.cuda.memory_allocated()  # what earlier rows left: not this row's
    detector = Detector.load(model, backend=backend)
    with detector:  # closed whatever ends the timing: the next backend's row must not meet its session
        if frames is None:
            frames = random_frames(detector.input_size)
            # Noise frames hold no part: the check for frames stretched against the training images'
            # aspect (a model fitted with --input-size of another shape) is about real frames only.
            detector._frame_shapes_checked.add(tuple(detector.input_size))
        batches = [[frames[(i * batch + j) % len(frames)] for j in range(batch)]
                   for i in range(warmup + n_frames // batch)]
        stats = LatencyStats()
        started = None
        for i, group in enumerate(batches):
            if i == warmup:
                started = time.perf_counter()
            t0 = time.perf_counter()
            detector.predict_batch(group)
            elapsed = (time.perf_counter() - t0) * 1e3
            if i >= warmup:
                for _ in group:
                    stats.add(elapsed / batch)
        wall = time.perf_counter() - started
        measured = (len(batches) - warmup) * batch
        row = {
            "backend": backend, "device": detector.runner.device, "precision": detector.precision,
            "batch": batch, "frames": measured, "p50_ms": stats.p50, "p90_ms": stats.p90, "p99_ms": stats.p99,
            "max_ms": stats.max, "fps": measured / wall, "peak_host_mib": peak_rss_mib(),
            # torch's allocator sees only torch's own memory: reported for the torch runner on a GPU, not
            # for ONNX Runtime or TensorRT (their memory is their own) nor for a CPU row.
            "peak_device_mib": ((sys.modules["torch"].cuda.max_memory_allocated() - allocated_before) / 2**20
                                if detector.backend == "torch" and detector.runner.device.startswith("cuda")
                                else None),
        }
    return row, stats.samples().tolist()


class Lines:
    """bench's lines on stdout (a row per backend, the table). They only report the run: the report
    files are what it makes, so a reader gone away (``edgecmg bench M | head -1``) must not end it
    before they are written. At the first broken pipe the lines stop and stdout goes to os.devnull
    (the interpreter flushes what is buffered at exit, which would fail again); ``broken`` then says
    so, for the exit status."""

    def __init__(self) -> None:
        self.broken = False

    def say(self, text: str) -> None:
        if self.broken:
            return
        try:
            # Flushed line by line: a buffered line would meet the broken pipe later, outside this try.
            print(text, flush=True)
        except BrokenPipeError:
            self.broken = True
            try:
                point_at_devnull(sys.stdout.fileno())
            except (OSError, ValueError):  # a stdout without a descriptor (a test's capture): nothing to flush
                pass


def _check_counts(args: argparse.Namespace) -> None:
    """Refuse frame counts that time nothing: --frames 0 (or fewer than one --batch) leaves no timed
    call (the wall clock never starts), --batch 0 divides by zero, a negative --warmup eats into the
    timed calls."""
    if args.batch < 1:
        raise ConfigError(f"--batch {args.batch}: frames per inference call must be >= 1 (default 1)")
    if args.frames < args.batch:
        raise ConfigError(f"--frames {args.frames}: time at least one batch of --batch {args.batch} frames "
                          f"(use --frames {max(args.batch, 200)} or more)")
    if args.warmup < 0:
        raise ConfigError(f"--warmup {args.warmup}: untimed frames must be >= 0 (default 20)")


def run_bench(args: argparse.Namespace) -> int:
    """Every (model file, backend) pair in one run: e.g. ``part.edgecmg part.int8.onnx`` puts torch,
    ONNX Runtime FP32 and ONNX Runtime INT8 side by side. A damaged file among several is skipped
    and named (exit 1), and the others' timings are still written. A stdout whose reader went away
    ends the printing, not the run: the report is written, then exit 141 (as for any command whose
    output is cut short; 1 where a file could not be timed)."""
    from edgecmg.stream.environment import environment_info
    from edgecmg.stream.plot import plot_latency
    from edgecmg.stream.report import write_report

    from edgecmg.commands import output_folder
    from edgecmg.runtime.registry import check_model_file

    _check_counts(args)
    for kind, given in (("model file", args.model), ("backend", args.backends or [])):
        for twice in sorted({item for item in given if given.count(item) > 1}):
            log.warning("%s %s is given more than once: timed once", kind, twice)
    args.backends = list(dict.fromkeys(args.backends)) if args.backends else args.backends
    models = list(dict.fromkeys(args.model))  # one or more files (nargs='+'), each once
    refused: list[str] = []
    # A mistyped name, a folder or a file of no model type (an image, a .calib.json) is named now, in
    # info's words, before anything is timed: one alone is the error, one of several is skipped.
    for model in models:
        try:
            check_model_file(Path(model).expanduser())
        except EdgeCMGError as exc:
            if len(models) == 1:
                raise
            _refuse(model, exc, refused)
    if len(refused) == len(models):
        raise EdgeCMGError(f"none of the {len(models)} model files could be timed (each is named above)")
    # a file in the way fails now, not after every backend has run; --images' folder is read, not written
    with output_folder(args.out, inputs=[args.images] if args.images else []) as out:
        frames, frames_note = _frames(args)
        rows, samples, skipped, lines = [], {}, [], Lines()

        def write(stopped: str | None = None) -> str:
            environment = environment_info(import_torch=False)  # torch's details where a row loaded it
            environment.update({"models": [str(m) for m in models], "inputs": frames_note})
            if refused:
                environment["refused"] = refused
            if skipped:  # a backend asked for that is not in the table: the report says why
                environment["skipped"] = skipped
            if stopped:
                environment["stopped"] = stopped
            table = write_report(rows, out, "bench", environment=environment, schema="edgecmg.bench.v1")
            title = f"edgecmg bench: {Path(models[0]).stem.split('.')[0]} on {environment.get('device')}"
            plot_latency(samples, out / "bench_latency.png", title=title)
            return f"\ndevice: {environment.get('device')}  ({frames_note})\n{table}"

        try:
            for model in models:
                if str(model) in refused:
                    continue
                try:
                    bench_model(model, models, args, frames, rows, samples, skipped=skipped, lines=lines)
                except EdgeCMGError as exc:
                    if len(models) == 1:
                        raise
                    # One damaged file among several: the others' timings are still written.
                    _refuse(model, exc, refused)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM (Terminated): the rows timed so far are written
            if rows:
                write(stopped=f"stopped by the user after {len(rows)} backend row(s); the rest were not timed")
                args.stop_note = lambda: (f"the {len(rows)} row(s) timed before the stop are written to {out}/bench.json, "
                                          "bench.csv, bench.md")
            raise
        if not rows:
            why = f": {'; '.join(skipped)}" if skipped else ""
            raise EdgeCMGError(f"no backend could run {', '.join(map(str, models))}{why}")
        lines.say(f"{write()}\nwrote {out}/bench.json, bench.csv, bench.md, bench_latency.png")
        # A stream's inference ran 2 to 4 times these figures on the same model: paced frames meet cold
        # caches and a CPU clocked down between them, beside capture and the host's other work.
        lines.say("frames judged back to back: a live stream's per-frame times also hold capture, queueing and "
                  "caches cold between frames; its summary (edgecmg stream) gives those")
    if refused:
        log.error("%d of %d model files could not be timed: %s", len(refused), len(models), ", ".join(refused))
        return 1
    return 141 if lines.broken else 0


def _refuse(model: str, exc: EdgeCMGError, refused: list[str]) -> None:
    """Name a model file among several that cannot be timed, and why (the others are still timed)."""
    why = str(exc)
    for name in (str(model), str(Path(model).expanduser())):
        if why.startswith(f"{name}: "):  # the reason names the file already: once is enough
            why = why[len(name) + 2:]
            break
    log.error("skipped %s: %s", model, why)
    refused.append(str(model))


def bench_model(model: str, models: list[str], args: argparse.Namespace, frames: list[np.ndarray] | None,
                rows: list[dict], samples: dict[str, list[float]], *, skipped: list[str], lines: Lines) -> None:
    """Time every backend asked for (or available) on ``model``, one of ``models``; adds to ``rows``
    (the report) and ``samples`` (the plot), and to ``skipped`` "<backend> on <model>: <why>" for each
    backend asked for that could not run it. ``lines``: where its row's line is printed."""
    from edgecmg.runtime.registry import SPECS, make_runner, runner_choices

    def skip(backend: str, why: str) -> None:
        log.warning("skipping %s on %s: %s", backend, model, why)
        skipped.append(f"{backend} on {model}: {why}")

    here = list(dict.fromkeys(b for b, _ in runner_choices(model)))
    if not here and not args.backends:
        # Nothing here runs this file (an engine without TensorRT, or a damaged engine header): the
        # runner's own error says why, rather than the file silently getting no row.
        make_runner(model)
    backends = here
    if args.backends:
        # A requested backend that cannot run the file here (torch on an .onnx, TensorRT not
        # installed) is skipped for that file, named, and the others are timed, whether one file is
        # given or several. Only where none of them can run the one file given are they tried
        # anyway: make_runner's error then says why, rather than "no backend could run".
        backends = [b for b in args.backends if b in here]
        if not backends and len(models) == 1:
            backends = args.backends
        suffix = Path(model).suffix.lower()
        for missing in [b for b in args.backends if b not in backends]:
            if any(s.backend == missing and suffix in s.suffixes for s in SPECS):
                skip(missing, f"{missing} is not available on this machine")
            else:
                skip(missing, f"{missing} does not run {suffix} files")
    for backend in backends:
        try:
            row, latencies = bench_backend(model, backend, frames, n_frames=args.frames, warmup=args.warmup,
                                           batch=args.batch)
        except BackendUnavailableError as exc:
            skip(backend, str(exc))
            continue
        # Plot labels: the backend, and the file name when several files run; a label seen before
        # (two files of one name in different folders) gets a number, so no row is dropped.
        base = label = backend if len(models) == 1 else f"{backend} {Path(model).name}"
        number = 1
        while label in samples:
            label, number = f"{base} ({number})", number + 1
        # The file name, or the whole path where two files share a name (rows must stay apart).
        name = Path(model).name
        rows.append({"model": name if [Path(m).name for m in models].count(name) == 1 else str(model), **row})
        samples[label] = latencies
        lines.say(f"{label:>28}: p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms  {row['fps']:.1f} FPS")
