"""benchmarks/bench_core.py's seed-spread table: means, ranges and per-seed CMG - baseline."""
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import bench_core  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)


def _rows(seed, image, pixel, cmg_image, cmg_pixel, dataset="K"):
    base = dict(dataset=dataset, features="s16", seed=seed)
    return [dict(base, variant="baseline", image_auroc=image, pixel_auroc=pixel),
            dict(base, variant="+CMER", image_auroc=image, pixel_auroc=pixel),
            dict(base, variant="+CMLE", image_auroc=cmg_image, pixel_auroc=cmg_pixel),
            dict(base, variant="CMG (CMER + CMLE)", image_auroc=cmg_image, pixel_auroc=cmg_pixel)]


def test_spread_reports_mean_range_and_deltas_per_seed():
    records = _rows(0, 0.90, 0.91, 0.93, 0.90) + _rows(1, 0.88, 0.92, 0.87, 0.925)
    records.append(dict(dataset="K", variant="baseline", features="s8", seed=0, image_auroc=0.1, pixel_auroc=0.1))
    lines = bench_core.seed_spread(records, {})
    baseline = next(line for line in lines if line.startswith("| K | baseline |"))
    assert baseline == "| K | baseline | 2 | 0.8900 (0.8800..0.9000) | 0.9150 (0.9100..0.9200) |"  # s8 row left out
    deltas = next(line for line in lines if "CMG - baseline, per seed" in line)
    assert deltas == "| K | CMG - baseline, per seed | 2 | +0.0300 / -0.0100 | -0.0100 / +0.0050 |"


def test_spread_without_pixel_masks_and_with_one_seed():
    records = _rows(0, 0.95, None, 0.94, None, dataset="E") + _rows(1, 0.96, None, 0.97, None, dataset="E")
    lines = bench_core.seed_spread(records, {})
    assert "| E | CMG (CMER + CMLE) | 2 | 0.9550 (0.9400..0.9700) | n/a |" in lines
    assert "| E | CMG - baseline, per seed | 2 | -0.0100 / +0.0100 | n/a |" in lines
    assert bench_core.seed_spread(_rows(0, 0.9, 0.9, 0.9, 0.9), {}) == []  # one seed: no spread table


def test_spread_gives_each_seeds_bootstrap_interval_of_the_image_auroc_difference():
    from edgecmg.metrics import auroc_difference_interval

    records = _rows(0, 0.90, 0.91, 0.93, 0.90) + _rows(1, 0.88, 0.92, 0.87, 0.925)
    labels = [0, 0, 0, 0, 1, 1, 1]
    scores = {(seed, variant): (labels, values) for seed, variant, values in (
        (0, "baseline", [0.1, 0.5, 0.3, 0.2, 0.4, 0.9, 0.6]), (0, "CMG (CMER + CMLE)", [0.1, 0.2, 0.3, 0.2, 0.4, 0.9, 0.6]),
        (1, "baseline", [0.3, 0.2, 0.1, 0.4, 0.5, 0.6, 0.7]), (1, "CMG (CMER + CMLE)", [0.3, 0.2, 0.1, 0.8, 0.5, 0.6, 0.7]))}
    lines = bench_core.seed_spread(records, {("K", seed, variant): value for (seed, variant), value in scores.items()})
    row = next(line for line in lines if "95% interval per seed" in line)
    expected = [auroc_difference_interval(labels, scores[(s, "CMG (CMER + CMLE)")][1], scores[(s, "baseline")][1],
                                          seed=s) for s in (0, 1)]
    assert row == ("| K | CMG - baseline, 95% interval per seed (test images redrawn) | 2 | "
                   + " / ".join(f"{low:+.4f}..{high:+.4f}" for low, high in expected) + " | n/a |")


def test_the_image_count_names_the_files_fit_left_out():
    assert bench_core._images({"train_images": 254, "train_files": 261}) == "254 of 261 img"
    assert bench_core._images({"train_images": 294, "train_files": 294}) == "294 img"
