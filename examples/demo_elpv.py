"""`make demo`: fit a CMG detector on real solar-cell images (PyPI package elpv-dataset), evaluate it,
and print the metrics and the per-image latency.

Mono cells; defect probability 0 = normal, 1 = defect (the 1/3 and 2/3 cells are left out).
Leaves ``demo_out/``: the model file (try ``edgecmg predict demo_out/elpv_mono.edgecmg ...``),
``overlays.png``, heat maps of four defective and four normal test cells, and what
``edgecmg eval --out`` writes: ``metrics.json``, ``scores.csv`` and ``scores.png``, the histogram of
every test cell's score against the threshold.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from edgecmg import artifact
from edgecmg.config import ModelConfig
from edgecmg.datasets import elpv_dataset
from edgecmg.detector import Detector
from edgecmg.evaluation import evaluate_detector, write_report
from edgecmg.fit import fit
from edgecmg.imageio import read_image
from edgecmg.visualize import contact_sheet, save_png

OUT = Path("demo_out")


def main() -> int:
    train, test = elpv_dataset("mono", seed=0)
    print(f"elpv mono: {len(train)} normal training cells, {len(test)} test cells "
          f"({sum(s.label for s in test)} defective)")
    config = ModelConfig(prompt="an electroluminescence image of a monocrystalline solar cell",
                         input_size=(256, 256))
    started = time.perf_counter()
    model, metadata = fit([s.path for s in train], config)
    fit_seconds = time.perf_counter() - started
    path = artifact.save(model, metadata, OUT / "elpv_mono.edgecmg")
    print(f"fitted in {fit_seconds:.1f} s -> {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    detector = Detector.load(path, backend="torch")
    metrics = evaluate_detector(detector, test, per_image=True)
    sheet = save_png(OUT / "overlays.png", overlay_sheet(detector, test))
    write_report(OUT, metrics, metrics.pop("per_image"), detector.threshold, "elpv mono")
    print(json.dumps({k: metrics[k] for k in ("image_auroc", "f1_max", "latency_ms_mean", "latency_ms_p50",
                                                "latency_ms_p99", "images")}, indent=2))
    print(f"image AUROC {metrics['image_auroc']:.4f}; per-image latency (torch, CPU, batch 1, 256x256) "
          f"p50 {metrics['latency_ms_p50']:.1f} ms")
    print(f"heat maps of 4 defective and 4 normal test cells: {sheet} (green = at the threshold, red = twice it)")
    print(f"scores of all test cells against the threshold: {OUT / 'scores.png'} (and scores.csv, metrics.json)")
    return 0


def overlay_sheet(detector: Detector, test: list) -> "np.ndarray":
    """Overlays of four defective and four normal test cells (a seeded pick), captioned with the truth."""
    rng = np.random.default_rng(0)
    picks = []
    for label, name in ((1, "defective"), (0, "normal")):
        samples = [s for s in test if s.label == label]
        picks += [(samples[i], name) for i in sorted(rng.choice(len(samples), 4, replace=False))]
    overlays = [detector.predict(read_image(sample.path)).overlay() for sample, _ in picks]
    return contact_sheet(overlays, [f"{name}: {sample.path.name}" for sample, name in picks], columns=4)


if __name__ == "__main__":
    sys.exit(main())
