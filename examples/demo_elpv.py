"""`make demo`: fit a CMG detector on real solar-cell images (PyPI package elpv-dataset), evaluate it,
and print the metrics and the per-image latency.

Mono cells; defect probability 0 = normal, 1 = defect (the 1/3 and 2/3 cells are left out).
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from edgecmg import artifact
from edgecmg.config import ModelConfig
from edgecmg.datasets import elpv_dataset
from edgecmg.detector import Detector
from edgecmg.evaluation import evaluate_detector
from edgecmg.fit import fit


def main() -> int:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    train, test = elpv_dataset("mono", seed=0)
    print(f"elpv mono: {len(train)} normal training cells, {len(test)} test cells "
          f"({sum(s.label for s in test)} defective)")
    config = ModelConfig(prompt="an electroluminescence image of a monocrystalline solar cell",
                         input_size=(256, 256))
    started = time.perf_counter()
    model, metadata = fit([s.path for s in train], config)
    fit_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        path = artifact.save(model, metadata, Path(tmp) / "elpv_mono.edgecmg")
        print(f"fitted in {fit_seconds:.1f} s -> {path.name} ({path.stat().st_size / 2**20:.1f} MiB)")
        detector = Detector.load(path, backend="torch")
        metrics = evaluate_detector(detector, test)
    print(json.dumps({k: metrics[k] for k in ("image_auroc", "f1_max", "latency_ms_mean", "latency_ms_p50",
                                                "latency_ms_p99", "images")}, indent=2))
    print(f"image AUROC {metrics['image_auroc']:.4f}; per-image latency (torch, CPU, batch 1, 256x256) "
          f"p50 {metrics['latency_ms_p50']:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
