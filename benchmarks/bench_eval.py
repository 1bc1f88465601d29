"""The README's `eval --out` walkthrough, run as the README prints it: fit KolektorSDD with the
defaults, evaluate on its test parts with the torch backend, and put the figures and both pictures
where the README takes them from.

    python benchmarks/bench_eval.py

Runs ``edgecmg fit ../shared/data/kolektorsdd --prompt "a photo of a metal commutator" -o
kolektor.edgecmg`` and ``edgecmg eval kolektor.edgecmg ../shared/data/kolektorsdd --out report
--backend torch`` (through ``edgecmg.cli.main``, in a temporary folder), then copies the report's
scores.png and hardest.png to docs/eval_scores_kolektor.png and docs/eval_hardest_kolektor.png and
writes the sentence of figures under them to benchmarks/results/eval_kolektor.md.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
import time
from pathlib import Path

from data_paths import KOLEKTOR, REPO  # benchmarks/ is on sys.path when a script here runs
from edgecmg.cli import main as edgecmg_cli
from edgecmg.evaluation import pick_hardest
from edgecmg.stream.environment import environment_info

PROMPT = "a photo of a metal commutator"


def lowest_defects(scores_csv: Path) -> tuple[list[str], int]:
    """File stems of the defective parts hardest.png's top row shows (the lowest-scored), and how
    many of them the stored threshold misses."""
    with scores_csv.open(newline="") as handle:
        records = [{**row, "label": int(row["label"]), "score": float(row["score"])} for row in csv.DictReader(handle)]
    lowest, _ = pick_hardest(records)
    return [Path(r["file"]).stem for r in lowest], sum(r["is_anomaly"] == "False" for r in lowest)


def summary(metrics: dict, lowest: list[str], missed_lowest: int, env: dict) -> str:
    return (
        f"Written by `benchmarks/bench_eval.py` on {env.get('cpu')} ({env.get('cpu_cores')} cores), torch "
        f"{env.get('torch')}, {time.strftime('%Y-%m-%d')}: image AUROC {metrics['image_auroc']:.4f}, pixel AUROC "
        f"{metrics['pixel_auroc']:.4f}, AUPRO {metrics['aupro']:.4f} over {metrics['images']} test parts; at the "
        f"stored threshold ({metrics['threshold']:.3f}) {metrics['good_flagged']} good parts flagged and "
        f"{metrics['defects_missed']} of {sum(t['images'] for t in metrics['defect_types'].values())} defects "
        f"missed. The four defects scored lowest: {', '.join(lowest)} ({missed_lowest} of them missed).\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=KOLEKTOR)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "eval_kolektor.md")
    parser.add_argument("--docs", type=Path, default=REPO / "docs", help="where the two pictures go")
    args = parser.parse_args()
    if not (args.data / "train" / "good").is_dir():
        raise SystemExit(f"KolektorSDD not found at {args.data}: put ../shared/data beside the repo or pass --data")

    with tempfile.TemporaryDirectory(prefix="edgecmg-bench-eval-") as tmp:
        tmp = Path(tmp)
        model, report = tmp / "kolektor.edgecmg", tmp / "report"
        for command in (["fit", str(args.data), "--prompt", PROMPT, "-o", str(model)],
                        ["eval", str(model), str(args.data), "--out", str(report), "--backend", "torch"]):
            code = edgecmg_cli(command)
            if code != 0:
                raise SystemExit(f"edgecmg {' '.join(command)} exited with {code}")
        metrics = json.loads((report / "metrics.json").read_text())
        lowest, missed_lowest = lowest_defects(report / "scores.csv")
        args.docs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(report / "scores.png", args.docs / "eval_scores_kolektor.png")
        shutil.copyfile(report / "hardest.png", args.docs / "eval_hardest_kolektor.png")
    text = summary(metrics, lowest, missed_lowest, environment_info())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
