"""Core figures of the README: accuracy ablation (baseline, +CMER, +CMLE, CMG) on KolektorSDD and elpv
mono, the baseline on the finer "s8" feature layout, fit time, and per-image latency of the torch
path on this CPU.

    python benchmarks/bench_core.py --out benchmarks/results/core.md [--seeds 3]

With ``--seeds N`` the four ablation rows are repeated for seeds 1..N-1 (the fit's hold-out and
coreset draws; for elpv also the train/test split) and a second table gives each variant's spread
and the per-seed difference CMG - baseline, so a gap can be told apart from seed noise, with the
95% paired-bootstrap interval of each seed's image-AUROC difference (the test images redrawn), so
it can be told apart from the test set's own noise.

CMER only gates the image score (the bank is the same), so one fit per CMLE setting is evaluated
with CMER on and off; this gives the same numbers as four separate fits, in half the time.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch

from edgecmg.config import ModelConfig
from edgecmg.datasets import MVTecDataset, elpv_dataset
from edgecmg.detector import Detector
from edgecmg.evaluation import evaluate_detector
from edgecmg.fit import fit
from edgecmg.metrics import auroc_difference_interval
from edgecmg.model.layouts import DEFAULT_LAYOUT
from edgecmg.stream.environment import environment_info

from data_paths import KOLEKTOR  # benchmarks/ is on sys.path when a script here runs


VARIANTS = {(False, False): "baseline", (True, False): "+CMER", (False, True): "+CMLE", (True, True): "CMG (CMER + CMLE)"}


def datasets(seed: int = 0):
    kolektor = MVTecDataset(KOLEKTOR)  # fixed split: the seed moves only the fit's own draws
    yield ("KolektorSDD", [s.path for s in kolektor.train_samples()], kolektor.test_samples(),
           ModelConfig(prompt="a photo of a metal commutator", max_side=512, seed=seed))
    train, test = elpv_dataset("mono", seed=seed)
    yield ("elpv mono", [s.path for s in train], test,
           ModelConfig(prompt="an electroluminescence image of a monocrystalline solar cell", input_size=(256, 256),
                       seed=seed))


def fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _images(record: dict) -> str:
    """The images a fit used, and the files offered where fit left some out (copies of others, unreadable files)."""
    used, offered = record["train_images"], record["train_files"]
    return f"{used} img" if used == offered else f"{used} of {offered} img"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="benchmarks/results/core.md")
    parser.add_argument("--seeds", type=int, default=1, help="repeat the ablation for seeds 0..N-1 (default 1)")
    args = parser.parse_args()
    rows, records = [], []
    image_scores = {}  # (dataset, seed, variant) -> (labels, image scores) on that seed's test images
    for name, train, test, base_config in datasets():
        # (features, CMLE, CMER settings evaluated on that fit): the four ablation rows on the
        # default layout, then the baseline on the finer "s8" layout at the same input size.
        fits = [("s16", False, (False, True)), ("s16", True, (False, True)), ("s8", False, (False,))]
        for features, use_cmle, cmer_settings in fits:
            config = replace(base_config, features=features, cmle=use_cmle)
            for label, metadata, fit_s, metrics in evaluate_fit(train, test, config, cmer_settings):
                if features != DEFAULT_LAYOUT:
                    label += f", {features} features"
                image_scores[(name, 0, label)] = metrics["image_scores"]
                record = {"dataset": name, "variant": label, "features": features, "seed": 0, "fit_s": fit_s,
                          "train_images": metadata["training"]["images"], "train_files": len(train),
                          "input_size": metadata["input_size"],
                          **{k: metrics[k] for k in ("image_auroc", "pixel_auroc", "aupro", "f1_max",
                                                     "latency_ms_p50", "latency_ms_mean")}}
                records.append(record)
                rows.append(f"| {name} | {label} | {fmt(record['image_auroc'])} | {fmt(record['pixel_auroc'])} | "
                            f"{fmt(record['aupro'])} | {fmt(record['f1_max'])} | "
                            f"{record['input_size'][0]}x{record['input_size'][1]} | {fit_s:.0f} s "
                            f"({_images(record)}) | {record['latency_ms_p50']:.1f} |")
                print(rows[-1], flush=True)
                write_table(Path(args.out), rows, records, image_scores)  # after every row: a partial run reports
    for seed in range(1, args.seeds):
        for name, train, test, base_config in datasets(seed):
            for use_cmle in (False, True):
                config = replace(base_config, cmle=use_cmle)
                for label, _, _, metrics in evaluate_fit(train, test, config, (False, True)):
                    image_scores[(name, seed, label)] = metrics["image_scores"]
                    records.append({"dataset": name, "variant": label, "features": DEFAULT_LAYOUT, "seed": seed,
                                    **{k: metrics[k] for k in ("image_auroc", "pixel_auroc", "aupro", "f1_max")}})
                    print(name, seed, label, fmt(metrics["image_auroc"]), fmt(metrics["pixel_auroc"]), flush=True)
            write_table(Path(args.out), rows, records, image_scores)
    print(Path(args.out).read_text())
    return 0


def evaluate_fit(train, test, config: ModelConfig, cmer_settings):
    """One fit, evaluated with CMER off and/or on: yields (variant label, metadata, fit seconds, metrics)."""
    started = time.perf_counter()
    model, metadata = fit(train, replace(config, cmer=True), progress=False)  # margins fitted; toggled below
    fit_s = time.perf_counter() - started
    for use_cmer in cmer_settings:
        model.scorer.use_cmer = use_cmer
        metrics = evaluate_detector(Detector.from_model(model, metadata), test, progress=False, per_image=True)
        records = metrics.pop("per_image")
        metrics["image_scores"] = ([r["label"] for r in records], [r["score"] for r in records])
        yield VARIANTS[(use_cmer, config.cmle)], metadata, fit_s, metrics


def write_table(out: Path, rows: list[str], records: list[dict], image_scores: dict) -> None:
    env = environment_info()
    table = "\n".join([
        f"Measured by `benchmarks/bench_core.py` on {env.get('device')} ({env.get('cpu_cores', '?')} cores), "
        f"torch {torch.__version__}, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}. "
        "Latency: torch backend, batch 1, end to end (resize, network, kNN, map, CMER).",
        "",
        "| dataset | variant | image AUROC | pixel AUROC | AUPRO@30% | F1-max | input | fit | latency p50 (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        *seed_spread(records, image_scores),
    ])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table + "\n")
    out.with_suffix(".json").write_text(json.dumps({"environment": env, "rows": records}, indent=2, default=str))


def seed_spread(records: list[dict], image_scores: dict) -> list[str]:
    """Mean, spread and CMG - baseline per seed, over the default-layout rows of every seed run, and
    each seed's 95% paired-bootstrap interval of the image-AUROC difference."""
    seeds = sorted({r["seed"] for r in records})
    if len(seeds) < 2:
        return []
    lines = ["", f"Spread over seeds {', '.join(map(str, seeds))} (default layout): mean, then min..max; "
                 "the last rows give CMG - baseline seed by seed.", "",
             "| dataset | variant | seeds | image AUROC | pixel AUROC |", "|---|---|---|---|---|"]
    default = [r for r in records if r["features"] == DEFAULT_LAYOUT]
    for name in dict.fromkeys(r["dataset"] for r in default):
        for variant in VARIANTS.values():
            rows = [r for r in default if r["dataset"] == name and r["variant"] == variant]
            cells = [spread([r[k] for r in rows]) for k in ("image_auroc", "pixel_auroc")]
            lines.append(f"| {name} | {variant} | {len(rows)} | {cells[0]} | {cells[1]} |")
        by_seed = {(r["seed"], r["variant"]): r for r in default if r["dataset"] == name}
        deltas = {k: [by_seed[(s, "CMG (CMER + CMLE)")][k] - by_seed[(s, "baseline")][k]
                      for s in seeds if (s, "baseline") in by_seed and (s, "CMG (CMER + CMLE)") in by_seed
                      and by_seed[(s, "baseline")][k] is not None]
                  for k in ("image_auroc", "pixel_auroc")}
        lines.append(f"| {name} | CMG - baseline, per seed | {len(deltas['image_auroc'])} | "
                     f"{' / '.join(f'{d:+.4f}' for d in deltas['image_auroc'])} | "
                     f"{' / '.join(f'{d:+.4f}' for d in deltas['pixel_auroc']) or 'n/a'} |")
        intervals = []
        for s in seeds:
            cmg, base = image_scores.get((name, s, "CMG (CMER + CMLE)")), image_scores.get((name, s, "baseline"))
            if cmg and base:
                low, high = auroc_difference_interval(cmg[0], cmg[1], base[1], seed=s)
                intervals.append(f"{low:+.4f}..{high:+.4f}")
        if intervals:
            lines.append(f"| {name} | CMG - baseline, 95% interval per seed (test images redrawn) | "
                         f"{len(intervals)} | {' / '.join(intervals)} | n/a |")
    return lines


def spread(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    return f"{sum(values) / len(values):.4f} ({min(values):.4f}..{max(values):.4f})"


if __name__ == "__main__":
    raise SystemExit(main())
