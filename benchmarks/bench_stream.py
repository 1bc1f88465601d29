"""Streaming overhead: a 1,000-frame video through ``Detector.stream(policy="all")`` against
back-to-back ``predict`` calls on pre-decoded frames and a serial read-then-predict loop.

    python benchmarks/bench_stream.py --out benchmarks/results/stream.md

The video is written here with OpenCV (MJPG in AVI, which every OpenCV build decodes) from the
KolektorSDD test images, placed on a camera-sized canvas that drifts a little per frame, so
decoding costs what it costs on a real camera recording. The model is fitted on the KolektorSDD
training images (or pass ``--model``). Each variant sees the same 1,000 frames in the same order:

- predict loop: every frame decoded into memory first, then ``predict(frame)`` back to back
  (the ceiling: no decoding in the timed region);
- serial loop: ``VideoCapture.read`` -> RGB -> ``predict``, one after the other (what a user writes
  without a pipeline);
- stream: ``for r in det.stream(video, policy="all")`` (decode, colour conversion and resize to
  the model size in the capture thread, overlapping inference).

The three loops run ``--rounds`` times in turn (predict, serial, stream, predict, ...) and the table
reports each loop's median round, with the range of the ratios over the rounds: on a shared
machine one slow stretch would otherwise decide a single-pass comparison.

Figures to reach (issue 5): the stream loses no frame, its throughput is within 10% of the predict
loop, and >= 1.3x the serial loop.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from bench_backends import KOLEKTOR, fit_kolektor  # the same benchmark model (benchmarks/ is on sys.path)
from edgecmg.datasets import MVTecDataset
from edgecmg.detector import Detector
from edgecmg.imageio import read_image
from edgecmg.stream.environment import environment_info


def write_video(path: Path, images: list[np.ndarray], n_frames: int, size: tuple[int, int], fps: float = 30.0) -> Path:
    """``n_frames`` frames of ``size`` (width, height): the images in turn on a grey canvas, shifted a
    few pixels per frame (a static picture would make decoding unrealistically cheap)."""
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write MJPG video to {path}")
    try:
        for i in range(n_frames):
            image = images[i % len(images)]
            scale = height / image.shape[0]
            part = cv2.resize(image, (max(1, int(image.shape[1] * scale)), height), interpolation=cv2.INTER_AREA)
            canvas = np.full((height, width, 3), 96, np.uint8)
            x = (width - part.shape[1]) // 2 + (i % 16) - 8
            canvas[:, x:x + part.shape[1]] = part
            writer.write(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


def decode_all(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


def run_predict_loop(det: Detector, frames: list[np.ndarray]) -> dict:
    started = time.perf_counter()
    for frame in tqdm(frames, desc="predict loop", unit="frame", leave=False):
        det.predict(frame)
    elapsed = time.perf_counter() - started
    return {"frames": len(frames), "seconds": elapsed}


def run_serial_loop(det: Detector, video: Path) -> dict:
    cap = cv2.VideoCapture(str(video))
    n = 0
    started = time.perf_counter()
    with tqdm(desc="serial loop", unit="frame", leave=False) as bar:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            det.predict(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            n += 1
            bar.update()
    elapsed = time.perf_counter() - started
    cap.release()
    return {"frames": n, "seconds": elapsed}


def run_stream(det: Detector, video: Path, max_queue: int) -> dict:
    n = 0
    indices = []
    started = time.perf_counter()
    with det.stream(str(video), policy="all", max_queue=max_queue) as results:
        for result in tqdm(results, desc="stream", unit="frame", leave=False):
            indices.append(result.frame_index)
            n += 1
        stats = results.stats.to_dict()
    elapsed = time.perf_counter() - started
    in_order = indices == sorted(indices) and len(set(indices)) == len(indices)
    return {"frames": n, "seconds": elapsed, "dropped": stats["frames_dropped"], "in_order": in_order,
            "latency_ms": stats.get("latency_ms"), "capture_wait_ms": stats.get("capture_wait_ms")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="fitted model (*.edgecmg / *.onnx); default: fit one on KolektorSDD")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--video-size", type=int, nargs=2, default=(1280, 720), metavar=("W", "H"))
    parser.add_argument("--input-size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"),
                        help="model input size when fitting here")
    parser.add_argument("--max-queue", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--rounds", type=int, default=3, help="times each loop runs (interleaved); medians reported")
    parser.add_argument("--out", default="benchmarks/results/stream.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="edgecmg-bench-stream-") as tmp:
        tmp = Path(tmp)
        model_path = Path(args.model) if args.model else fit_kolektor(tmp / "kolektor.edgecmg", tuple(args.input_size))
        test_images = [read_image(s.path) for s in MVTecDataset(KOLEKTOR).test_samples()]
        video = write_video(tmp / "line.avi", test_images, args.frames, tuple(args.video_size))
        frames = decode_all(video)
        if len(frames) != args.frames:
            raise SystemExit(f"{video} decodes to {len(frames)} frames, expected {args.frames}")
        det = Detector.load(model_path, backend=args.backend)
        for frame in frames[:10]:  # warm-up (allocator, kernels, caches)
            det.predict(frame)
        rounds = []
        for _ in tqdm(range(args.rounds), desc="rounds", unit="round", leave=False):
            rounds.append({"predict": run_predict_loop(det, frames), "serial": run_serial_loop(det, video),
                           "stream": run_stream(det, video, args.max_queue)})
        del frames  # 1,000 decoded 720p frames are 2.7 GB
        info = {"model": str(model_path), "backend": det.backend, "input_size": list(det.input_size),
                "video": {"frames": args.frames, "size": list(args.video_size), "codec": "MJPG"},
                "threads": args.threads, "rounds": args.rounds, "environment": environment_info()}
        det.close()

    def median_round(name: str) -> dict:
        ordered = sorted((r[name] for r in rounds), key=lambda r: r["seconds"])
        return ordered[len(ordered) // 2]

    predict, serial, stream = median_round("predict"), median_round("serial"), median_round("stream")
    fps = {name: r["frames"] / r["seconds"] for name, r in
           (("predict", predict), ("serial", serial), ("stream", stream))}
    # The stream's throughput over another loop's, within each round (the loops of one round ran
    # minutes apart, not hours): the checks use the median of these, never medians of different rounds.
    round_ratios = {b: sorted((r["stream"]["frames"] / r["stream"]["seconds"]) / (r[b]["frames"] / r[b]["seconds"])
                              for r in rounds) for b in ("predict", "serial")}
    ratio = {b: statistics.median(values) for b, values in round_ratios.items()}
    lossless = all(r["stream"]["frames"] == args.frames and r["stream"]["dropped"] == 0 and r["stream"]["in_order"]
                   for r in rounds)
    checks = {
        "stream lost no frame": lossless,
        "stream within 10% of predict loop": ratio["predict"] >= 0.9,
        "stream >= 1.3x serial loop": ratio["serial"] >= 1.3,
    }
    record = {**info, "predict_loop": predict, "serial_loop": serial, "stream": stream, "fps": fps, "checks": checks,
              "round_ratios": round_ratios, "all_rounds": rounds}
    env = info["environment"]
    lines = [
        f"Measured by `benchmarks/bench_stream.py` on {env.get('device') or env.get('cpu')} "
        f"({env.get('cpu_cores')} CPU cores), torch {env.get('torch')}, "
        f"{args.threads} torch threads, backend {det.backend}, model input {det.input_size[0]}x{det.input_size[1]}, "
        f"{args.frames}-frame {args.video_size[0]}x{args.video_size[1]} MJPG video, {time.strftime('%Y-%m-%d')}; "
        f"median of {args.rounds} interleaved rounds per loop.",
        "",
        "| loop | frames judged | seconds | frames/s | vs predict loop | vs serial loop |",
        "|---|---|---|---|---|---|",
    ]
    for name, label, r in (("predict", "predict() on pre-decoded frames", predict),
                           ("serial", "read -> predict, serial", serial),
                           ("stream", 'stream(policy="all")', stream)):
        lines.append(f"| {label} | {r['frames']} | {r['seconds']:.1f} | {fps[name]:.1f} | "
                     f"{fps[name] / fps['predict']:.2f}x | {fps[name] / fps['serial']:.2f}x |")
    rp, rs = round_ratios["predict"], round_ratios["serial"]
    lines += ["", "Stream: " + ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in checks.items()) +
              f"; frames dropped {stream['dropped']}. Stream throughput within each round (the checks use the "
              f"median): {ratio['predict']:.3f}x the predict loop ({rp[0]:.3f}-{rp[-1]:.3f}), "
              f"{ratio['serial']:.3f}x the serial loop ({rs[0]:.3f}-{rs[-1]:.3f}). The table's ratios compare "
              "each loop's median round."]
    if stream.get("latency_ms"):
        lat = stream["latency_ms"]
        lines.append(f"Stream capture-to-result latency: p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms "
                     f"(frames wait in the queue of {args.max_queue}: policy \"all\" trades latency for completeness).")
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2, default=str))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
