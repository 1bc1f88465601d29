"""`make demo`: fit a CMG detector on real solar-cell images (PyPI package elpv-dataset), evaluate it,
and print the metrics and the per-image latency.

Mono cells; defect probability 0 = normal, 1 = defect (the 1/3 and 2/3 cells are left out).
Leaves ``demo_out/`` (``--out DIR`` names another folder): the model file (try ``edgecmg predict
demo_out/elpv_mono.edgecmg ...``) and what ``edgecmg eval --out`` writes: ``metrics.json``,
``scores.csv``, ``scores.png`` (the histogram of every test cell's score against the threshold) and
``hardest.png`` (heat maps of the four defective cells scored lowest and the four normal cells
scored highest).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional

from edgecmg import artifact
from edgecmg.config import ModelConfig
from edgecmg.datasets import elpv_dataset
from edgecmg.detector import Detector
from edgecmg.errors import EdgeCMGError
from edgecmg.evaluation import evaluate_detector, write_report
from edgecmg.fileio import check_writable
from edgecmg.fit import fit


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo_out"),
                        help="folder for the model and the report (default: demo_out)")
    out = parser.parse_args(argv).out
    # edgecmg's own progress lines ("fitting on N images ...") where no progress bar shows (a log, CI)
    logging.basicConfig(format="%(message)s")
    logging.getLogger("edgecmg").setLevel(logging.INFO)
    try:
        check_writable(out / "elpv_mono.edgecmg", what="the demo's model file")  # before minutes of fitting
    except EdgeCMGError as exc:
        print(f"demo_elpv: error: {exc}", file=sys.stderr)
        return 2
    train, test = elpv_dataset("mono", seed=0)
    print(f"elpv mono: {len(train)} normal training cells, {len(test)} test cells "
          f"({sum(s.label for s in test)} defective)")
    config = ModelConfig(prompt="an electroluminescence image of a monocrystalline solar cell",
                         input_size=(256, 256))
    started = time.perf_counter()
    model, metadata = fit([s.path for s in train], config)
    fit_seconds = time.perf_counter() - started
    path = artifact.save(model, metadata, out / "elpv_mono.edgecmg")
    print(f"fitted in {fit_seconds:.1f} s -> {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    with Detector.load(path, backend="torch") as detector:
        metrics = evaluate_detector(detector, test, per_image=True)
        write_report(out, metrics, metrics.pop("per_image"), detector.threshold, "elpv mono",
                     detector=detector, samples=test)
        ran_on = f"{detector.backend}, {detector.device}, batch 1, {detector.input_size[0]}x{detector.input_size[1]}"
    print(json.dumps({k: metrics[k] for k in ("image_auroc", "f1_max", "good_flagged", "defects_missed",
                                                "latency_ms_mean", "latency_ms_p50", "latency_ms_p99", "images")},
                     indent=2))
    print(f"image AUROC {metrics['image_auroc']:.4f}; at the stored threshold {metrics['good_flagged']} good cells "
          f"flagged, {metrics['defects_missed']} defective ones missed; per-image latency ({ran_on}) "
          f"p50 {metrics['latency_ms_p50']:.1f} ms")
    print(f"scores of all test cells against the threshold: {out / 'scores.png'} (and scores.csv, metrics.json)")
    print(f"heat maps of the defective cells scored lowest and the normal cells scored highest: "
          f"{out / 'hardest.png'} (green = at the threshold, red = twice it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
