"""FP32 vs INT8 (explicit Q/DQ) on ONNX Runtime CPU: image/pixel AUROC and per-frame latency.

    python benchmarks/bench_int8.py                      # fits or reuses models under $TMPDIR/edgecmg-bench-int8
    python benchmarks/bench_int8.py --datasets elpv --frames 30

For KolektorSDD (../shared/data/kolektorsdd, pixel masks) and elpv mono cells (PyPI elpv-dataset,
256x256, image labels only) it fits a model (or reuses ``<work>/code-<source hash>/<name>.edgecmg``), exports the FP32
featurizer and full graphs, calibrates INT8 with both Q/DQ profiles (``tensorrt``: TensorRT-
buildable; ``cpu``: what ONNX Runtime's x86 kernels fuse), evaluates every variant with
``edgecmg.metrics.evaluate`` (featurizer on ONNX Runtime + the BankScorer on the host, the
Detector's path) and times ONNX Runtime CPU at batch 1 with ``--threads`` intra-op threads:

- featurizer: ``runner.infer`` alone;
- end to end: raw frame -> resize (``edgecmg.imageio.resize_to_input``) -> featurizer -> host BankScorer (torch);
- full graph: raw frame -> resize -> one ONNX graph with the scoring inside.

Variants are timed round-robin over ``--rounds`` rounds (the machine may be shared); each cell is
the median over all timed frames. Writes ``--out`` (markdown) and prints it.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import tempfile
import sys
import time
from pathlib import Path

import numpy as np

from data_paths import KOLEKTOR, REPO  # benchmarks/ is on sys.path when a script here runs


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------------
# datasets and models
# --------------------------------------------------------------------------------------------------
def dataset(name: str, work: Path, small_bank: int):
    """(train paths, calibration dir, test samples, ModelConfig, has masks).

    ``<name>-small`` is the same data fitted with ``max_bank_size=small_bank`` (a latency-tuned model:
    the host kNN costs patches x bank x dim multiply-adds per frame)."""
    from dataclasses import replace

    from edgecmg.config import ModelConfig

    if name.endswith("-small"):
        train, calib, test, config, masks = dataset(name[:-len("-small")], work, small_bank)
        return train, calib, test, replace(config, max_bank_size=small_bank), masks

    if name == "kolektor":
        from edgecmg.datasets import MVTecDataset

        ds = MVTecDataset(KOLEKTOR)
        train = [s.path for s in ds.train_samples()]
        return train, KOLEKTOR / "train" / "good", ds.test_samples(), \
            ModelConfig(prompt="a photo of a metal commutator"), True
    if name == "elpv":
        from edgecmg.datasets import elpv_dataset

        train_samples, test = elpv_dataset("mono")
        calib = work / "elpv_train"
        calib.mkdir(parents=True, exist_ok=True)
        for s in train_samples:
            link = calib / s.path.name
            if not link.exists():
                link.symlink_to(s.path)
        return [s.path for s in train_samples], calib, test, \
            ModelConfig(prompt="an electroluminescence image of a solar cell", input_size=(256, 256)), False
    raise SystemExit(f"unknown dataset {name!r}")


HAND_WRITTEN = "## Reading the tables (hand-written"


def fitted(name: str, train, config, work: Path) -> Path:
    from edgecmg import artifact
    from edgecmg.fit import fit

    path = work / f"{name}.edgecmg"
    if path.is_file():
        _log(f"{name}: reusing {path}")
        return path
    _log(f"{name}: fitting on {len(train)} images")
    model, meta = fit(train, config, progress=False)
    artifact.save(model, meta, path)
    return path


def load_test(samples, size, with_masks):
    from edgecmg.datasets import sample_mask
    from edgecmg.evaluation import resize_mask
    from edgecmg.imageio import read_image, resize_to_input

    h, w = size
    raw, frames, masks = [], [], []
    for s in samples:
        image = read_image(s.path)
        raw.append(image)
        frames.append(resize_to_input(image, (h, w)))
        if with_masks:
            mask = sample_mask(s, image.shape[:2])
            masks.append(None if mask is None else resize_mask(mask, (h, w)))
    return raw, np.stack(frames), [s.label for s in samples], (masks if with_masks else None)


# --------------------------------------------------------------------------------------------------
# accuracy and latency
# --------------------------------------------------------------------------------------------------
def evaluate_variant(path: Path, frames, labels, masks, threads: int, engine_network: bool = False) -> dict:
    """Metrics of one model file, cached beside it (keyed by the file's SHA-256 and the test set size).

    engine_network: evaluate what ``edgecmg build --precision int8`` gives TensorRT instead (the float
    layers and Q/DQ scales cast to float16, ``convert_to_fp16``), on ONNX Runtime with graph
    optimisation off: its CPU graph optimiser mis-fuses float16 Q/DQ. It has no float16
    convolution on a CPU, so it casts around those ops: tensors, weights and scales are rounded to
    float16 between ops as in the engine, the arithmetic inside an op runs in float32.
    """
    import json

    from edgecmg.export import read_onnx_header
    from edgecmg.fileio import file_sha256

    key = {"sha256": file_sha256(path), "frames": len(frames), "masks": masks is not None,
           "engine_network": engine_network, "decisions": True}
    cache = path.with_suffix(".engine-network.eval.json" if engine_network else ".eval.json")
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            return saved["metrics"]

    from edgecmg.metrics import evaluate, verdict_counts

    scores, maps = [], []
    for result in (_engine_network_results if engine_network else _onnxruntime_results)(path, frames, threads):
        scores.append(result[0])
        maps.append(result[1])
    metrics = evaluate(labels, scores, masks, maps) if masks is not None else evaluate(labels, scores)
    # The verdicts at the threshold stored in the file (an INT8 file keeps its FP32 model's threshold).
    threshold = float(read_onnx_header(path)["threshold"])
    metrics.update(threshold=threshold, **verdict_counts(labels, scores, threshold))
    cache.write_text(json.dumps({"key": key, "metrics": metrics}))
    return metrics


def _onnxruntime_results(path: Path, frames, threads: int):
    from edgecmg.detector import Detector

    with Detector.load(path, backend="onnxruntime", threads=threads) as detector:
        for i in range(0, len(frames), 8):
            for result in detector.predict_batch(list(frames[i:i + 8])):
                yield result.score, result.anomaly_map


def _engine_network_results(path: Path, frames, threads: int):
    import onnxruntime as ort
    import torch

    from edgecmg.export import load_scorer_from_onnx
    from edgecmg.fp16_cast import convert_to_fp16

    network = convert_to_fp16(str(path), keep_fp32_ops=())
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(network.SerializeToString(), options, providers=["CPUExecutionProvider"])
    scorer = load_scorer_from_onnx(path)[0]
    for i in range(0, len(frames), 8):
        embeddings, match_scores = session.run(["embeddings", "match_scores"], {"image": frames[i:i + 8]})
        with torch.no_grad():
            out = scorer(torch.from_numpy(embeddings), torch.from_numpy(match_scores))
        yield from zip(out.score.numpy().tolist(), out.anomaly_map.numpy())


def time_variants(variants: dict[str, tuple[Path, str]], raw_frames, size, threads: int, frames: int,
                  rounds: int) -> dict[str, list[float]]:
    """{label: per-frame ms}; modes: "featurizer", "e2e" (featurizer + host scoring), "full"."""
    import torch

    from edgecmg.imageio import resize_to_input
    from edgecmg.runtime.onnx_runner import OnnxRunner

    torch.set_num_threads(threads)
    h, w = size
    runners = {}
    for label, (path, mode) in variants.items():
        runner = OnnxRunner(path, threads=threads).activate()
        runners[label] = (runner, mode, runner.host_scorer() if runner.produces_features else None)
    pre = [resize_to_input(f, (h, w))[None] for f in raw_frames[:frames]]

    def one(runner, mode, scorer, i):
        if mode == "featurizer":
            return runner.infer(pre[i % len(pre)])
        x = resize_to_input(raw_frames[i % len(raw_frames)], (h, w))[None]
        out = runner.infer(x)
        if scorer is not None:
            with torch.no_grad():
                scorer(torch.from_numpy(out["embeddings"]), torch.from_numpy(out["match_scores"]))
        return out

    times = {label: [] for label in variants}
    for label, (runner, mode, scorer) in runners.items():  # warm up
        for i in range(3):
            one(runner, mode, scorer, i)
    for r in range(rounds):
        # A seeded shuffle per round, and two untimed frames per turn: no variant always follows the
        # same one, whose spinning threads could slow its first frames.
        order = list(runners)
        random.Random(r).shuffle(order)
        for label in order:
            runner, mode, scorer = runners[label]
            for i in range(2):
                one(runner, mode, scorer, i)
            for i in range(frames):
                t0 = time.perf_counter()
                one(runner, mode, scorer, i)
                times[label].append((time.perf_counter() - t0) * 1000)
    for runner, _, _ in runners.values():
        runner.deactivate()
    return times


# --------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------
def cpu_description() -> str:
    name, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name in ("", "unknown CPU", "x86_64"):
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return f"{name}, {os.cpu_count()} cores, SIMD: {', '.join(simd) or 'unknown'}"


def fmt(x, digits=4):
    return "n/a" if x is None else f"{x:.{digits}f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "edgecmg-bench-int8")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "int8.md")
    parser.add_argument("--datasets", nargs="+", default=["kolektor", "elpv", "elpv-small"],
                        help="kolektor, elpv, and <name>-small (fitted with --small-bank)")
    parser.add_argument("--small-bank", type=int, default=2048, help="max_bank_size of the -small models")
    parser.add_argument("--method", choices=["entropy", "percentile", "minmax"],
                        help="default: calibrate()'s per-profile default (DEFAULT_METHOD)")
    parser.add_argument("--samples", type=int, default=None,
                        help="calibration images (default: edgecmg.calibration.DEFAULT_SAMPLES)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--float-convs", type=int, default=None,
                        help="first convolutions kept in float (default: calibrate()'s default)")
    parser.add_argument("--frames", type=int, default=20, help="timed frames per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    import onnxruntime

    from edgecmg import artifact
    from edgecmg.calibration import DEFAULT_FLOAT_CONVS, DEFAULT_METHOD, DEFAULT_SAMPLES, calibrate
    from edgecmg.config import ExportConfig
    from edgecmg.export import export_onnx

    from bench_backends import source_hash  # benchmarks/ is on sys.path when run as a script

    # One subfolder per code version: a model fitted by older code is never reused.
    args.work = args.work / f"code-{source_hash()}"
    args.work.mkdir(parents=True, exist_ok=True)
    float_convs = DEFAULT_FLOAT_CONVS if args.float_convs is None else args.float_convs
    samples = DEFAULT_SAMPLES if args.samples is None else args.samples
    methods = {p: args.method or DEFAULT_METHOD[p] for p in ("tensorrt", "cpu")}
    tag = "" if float_convs == DEFAULT_FLOAT_CONVS else f".fc{float_convs}"  # INT8 file names per setting
    load_before = os.getloadavg()
    accuracy_rows, latency_rows, notes = [], [], []
    for name in args.datasets:
        train, calib_dir, test, config, with_masks = dataset(name, args.work, args.small_bank)
        art = fitted(name, train, config, args.work)
        model, header = artifact.load(art)
        size = tuple(model.geometry.input_size)
        bank = tuple(model.scorer.memory_bank.shape)
        notes.append(f"{name}: input {size[0]}x{size[1]}, bank {bank[0]} x {bank[1]}, "
                     f"{len(train)} training images, {len(test)} test images")
        files = {
            "fp32": export_onnx(art, args.work / f"{name}.fp32.onnx"),
            "fp32-full": export_onnx(art, args.work / f"{name}.fp32.full.onnx", ExportConfig(with_scoring=True)),
        }
        for profile in ("tensorrt", "cpu"):
            _log(f"{name}: calibrating int8 ({profile} profile, {methods[profile]}, {samples} images)")
            files[f"int8-{profile}"] = calibrate(art, calib_dir, args.work / f"{name}.int8.{profile}{tag}.onnx",
                                                 method=methods[profile], samples=samples, profile=profile,
                                                 float_convs=float_convs, progress=False)
        files["int8-cpu-full"] = calibrate(art, calib_dir, args.work / f"{name}.int8.cpu{tag}.full.onnx",
                                           method=methods["cpu"], samples=samples, profile="cpu",
                                           with_scoring=True, float_convs=float_convs, progress=False,
                                           cache_path=args.work / f"{name}.int8.cpu{tag}.calib.json")
        raw, frames, labels, masks = load_test(test, size, with_masks)
        results = {}
        for key in ("fp32", "int8-tensorrt", "int8-cpu"):
            _log(f"{name}: evaluating {key}")
            results[key] = evaluate_variant(files[key], frames, labels, masks, args.threads)
        _log(f"{name}: evaluating the int8 engine's network")
        results["int8-tensorrt, engine network"] = evaluate_variant(files["int8-tensorrt"], frames, labels, masks,
                                                                    args.threads, engine_network=True)
        base = results["fp32"]
        for key, r in results.items():
            d_img = r["image_auroc"] - base["image_auroc"]
            d_pix = None if r["pixel_auroc"] is None else r["pixel_auroc"] - base["pixel_auroc"]
            img_delta = f"{d_img:+.4f}" if key != "fp32" else ""  # INT8 - FP32, signed
            pix_delta = f"{d_pix:+.4f}" if key != "fp32" and d_pix is not None else ""
            accuracy_rows.append(f"| {name} | {key} | {fmt(r['image_auroc'])} | {img_delta} "
                                 f"| {fmt(r['pixel_auroc'])} | {pix_delta} | {r['good_flagged']} / "
                                 f"{r['defects_missed']} |")

        _log(f"{name}: timing")
        variants = {
            "FP32 featurizer": (files["fp32"], "featurizer"),
            "INT8 featurizer (tensorrt profile)": (files["int8-tensorrt"], "featurizer"),
            "INT8 featurizer (cpu profile)": (files["int8-cpu"], "featurizer"),
            "FP32 end to end (featurizer + host scoring)": (files["fp32"], "e2e"),
            "INT8 end to end (cpu profile + host scoring)": (files["int8-cpu"], "e2e"),
            "FP32 end to end (full graph)": (files["fp32-full"], "full"),
            "INT8 end to end (cpu profile, full graph)": (files["int8-cpu-full"], "full"),
        }
        times = time_variants(variants, raw, size, args.threads, args.frames, args.rounds)
        ref = {"featurizer": statistics.median(times["FP32 featurizer"]),
               "e2e": statistics.median(times["FP32 end to end (featurizer + host scoring)"]),
               "full": statistics.median(times["FP32 end to end (full graph)"])}
        for label, (_, mode) in variants.items():
            t = times[label]
            med = statistics.median(t)
            latency_rows.append(f"| {name} {size[0]}x{size[1]} | {label} | {med:.1f} | {np.percentile(t, 90):.1f} | "
                                f"{ref[mode] / med:.2f}x |")
    load_after = os.getloadavg()

    lines = [
        "# INT8 (explicit Q/DQ) vs FP32 on ONNX Runtime CPU",
        "",
        f"Generated by `python benchmarks/bench_int8.py` on {time.strftime('%Y-%m-%d %H:%M')}.",
        "",
        f"- CPU: {cpu_description()}; ONNX Runtime {onnxruntime.__version__}, {args.threads} intra-op threads, batch 1",
        f"- load average (1/5/15 min) before: {', '.join(f'{x:.1f}' for x in load_before)}; after: "
        f"{', '.join(f'{x:.1f}' for x in load_after)} (a shared machine inflates every latency; ratios are "
        "measured round-robin under the same load)",
        f"- calibration: {', '.join(f'`{m}` ({p} profile)' for p, m in methods.items())}, {samples} training images; weights int8 per-channel, activations "
        f"per-tensor; the first {float_convs} convolutions (6 = the stem and blocks 0-1, 15 = the stem and blocks 0-4), feature taps, "
        "CMLE projection, matching head and scoring head in float",
        *[f"- {n}" for n in notes],
        "",
        "## Accuracy (featurizer on ONNX Runtime + host BankScorer; pixel AUROC at the model input size)",
        "",
        "\"engine network\": what `edgecmg build --precision int8` hands TensorRT, the tensorrt-profile "
        "graph with its float layers and Q/DQ scales in float16, run by ONNX Runtime with graph optimisation off "
        "(which has no float16 convolution on a CPU and casts around such ops: the rows cover float16 rounding "
        "of tensors, weights and scales between ops, not float16 arithmetic inside them; no TensorRT here).",
        "",
        "\"good flagged / defects missed\": the verdicts at the threshold stored in the file, which an INT8 "
        "file takes over from its FP32 model (fit set it on FP32 scores); a difference from the fp32 row is a "
        "verdict that quantisation changed.",
        "",
        "| data | model | image AUROC | delta | pixel AUROC | delta | good flagged / defects missed |",
        "|---|---|---|---|---|---|---|",
        *accuracy_rows,
        "",
        "## Latency (ms per frame, median and p90 over all timed frames)",
        "",
        "| data | variant | median | p90 | speed-up vs FP32 |",
        "|---|---|---|---|---|",
        *latency_rows,
        "",
    ]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # Keep the hand-written reading of the tables that follows the generated part.
    if args.out.is_file():
        previous = args.out.read_text(encoding="utf-8")
        marker = previous.find(HAND_WRITTEN)
        if marker >= 0:
            text = text.rstrip() + "\n\n" + previous[marker:]
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
