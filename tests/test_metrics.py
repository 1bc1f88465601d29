"""Metrics against scikit-learn (the oracle) and against hand-built AUPRO cases."""
from __future__ import annotations

import logging
import tracemalloc

import cv2
import numpy as np
import pytest
from sklearn.metrics import precision_recall_curve, roc_auc_score

from edgecmg.errors import DataError, EdgeCMGError
from edgecmg.metrics import aupro, auroc, evaluate, f1_max, pixel_auroc


def _tied_data(seed: int, n: int, pos_rate: float, levels: int, dtype=np.float64):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < pos_rate).astype(int)
    labels[0], labels[1] = 0, 1  # both classes always present
    scores = rng.integers(0, levels, n) + 0.7 * labels * rng.random(n)
    return labels, np.round(scores, 1).astype(dtype)


# ------------------------------------------------------------------ AUROC
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n,pos_rate", [(7, 0.5), (200, 0.1), (1000, 0.8)])
@pytest.mark.parametrize("levels", [2, 5, 1000])
def test_auroc_matches_sklearn_with_ties(seed, n, pos_rate, levels):
    labels, scores = _tied_data(seed, n, pos_rate, levels)
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_auroc_all_tied_is_half_and_inputs_flexible():
    assert auroc([0, 1, 1, 0], [3, 3, 3, 3]) == pytest.approx(0.5)
    assert auroc(np.array([False, True]), np.array([1, 2], dtype=np.int64)) == 1.0
    assert auroc([1, 0], [np.inf, -np.inf]) == 1.0


@pytest.mark.parametrize(
    "labels,scores,match",
    [
        ([0, 0, 0], [0.1, 0.2, 0.3], "only one class|all 3 samples"),
        ([1, 1], [0.1, 0.2], "anomalous"),
        ([0, 1, 2], [0.1, 0.2, 0.3], "0 \\(normal\\) or 1"),
        ([0, 1], [0.1, np.nan], "NaN"),
        ([0, 1, 1], [0.1, 0.2], "different lengths"),
        ([], [], "empty"),
    ],
)
def test_auroc_errors(labels, scores, match):
    with pytest.raises(DataError, match=match):
        auroc(labels, scores)


def test_errors_share_the_base_class():
    with pytest.raises(EdgeCMGError):
        auroc([0, 0], [1, 2])


# ------------------------------------------------------------------ pixel AUROC
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 1])
def test_pixel_auroc_matches_sklearn(dtype, seed):
    rng = np.random.default_rng(seed)
    masks = rng.random((5, 17, 23)) < 0.15
    maps = (np.round(rng.random(masks.shape) * 8) + masks * rng.random(masks.shape) * 3).astype(dtype)
    expected = roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_auroc(masks, maps) == pytest.approx(expected, abs=1e-10)
    assert pixel_auroc(masks.astype(np.uint8) * 255, maps) == pytest.approx(expected, abs=1e-10)
    # list of 2-D arrays is accepted too
    assert pixel_auroc(list(masks), list(maps)) == pytest.approx(expected, abs=1e-10)


def test_pixel_auroc_streams_more_than_one_chunk():
    # > 2**20 pixels, with many more positives than negatives (sorts the negatives).
    rng = np.random.default_rng(3)
    masks = rng.random((3, 512, 700)) < 0.7
    maps = (rng.integers(0, 50, masks.shape) + masks * 5).astype(np.float32)
    assert pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-9)


def test_pixel_auroc_does_not_make_float64_copies():
    rng = np.random.default_rng(0)
    maps = rng.random((40, 256, 640), dtype=np.float32)
    masks = np.zeros(maps.shape, bool)
    masks[:, 100:120, 200:260] = True
    tracemalloc.start()
    try:
        pixel_auroc(masks, maps)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # one float32 copy split by class is expected; a float64 copy alone would be 2x maps.nbytes
    assert peak < 1.5 * maps.nbytes


def test_pixel_metrics_sort_in_the_maps_own_memory_when_allowed_with_the_same_figures():
    """eval's end-of-run step: the maps (40 of 256x640 here) are no longer needed, so the normal pixels'
    scores are sorted in their own buffer; the metrics then take little beyond the defect pixels. The
    figures are those of pixel_auroc and aupro (bit for bit) and scikit-learn's."""
    from edgecmg.metrics import pixel_metrics

    rng = np.random.default_rng(4)
    maps = np.round(rng.random((40, 256, 640), dtype=np.float32) * 200) / 200  # ties across classes
    masks = np.zeros(maps.shape, bool)
    masks[::3, 100:120, 200:260] = True  # every third image holds one region...
    masks[1::3, 10:14, 7:9] = masks[1::3, 30, 30] = True  # ...others two, some none
    maps[masks] += 0.3
    expected = {"pixel_auroc": pixel_auroc(masks, maps), "aupro": aupro(masks, maps)}
    assert expected["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    kept = maps.copy()
    assert pixel_metrics(masks, kept) == expected and np.array_equal(kept, maps)  # by default maps are left as given
    tracemalloc.start()
    try:
        assert pixel_metrics(masks, kept, overwrite_maps=True) == expected
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The defect pixels' scores and regions (0.14 MB) and one image's temporaries (about 2.7 MB in all),
    # against 26 MB of maps; a copy of the scores split by class was 1x the maps, a NaN check 0.25x more.
    assert peak < 0.15 * maps.nbytes, (peak, maps.nbytes)


def test_pixel_auroc_shape_mismatch_says_resize():
    with pytest.raises(DataError, match="resize"):
        pixel_auroc(np.zeros((2, 8, 8), bool), np.zeros((2, 4, 4), np.float32))


# ------------------------------------------------------------------ F1
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("levels", [3, 10000])
def test_f1_max_matches_sklearn(seed, levels):
    labels, scores = _tied_data(seed, 300, 0.3, levels)
    precision, recall, _ = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1_ref = np.nanmax(2 * precision * recall / (precision + recall))
    f1, thr = f1_max(labels, scores)
    assert f1 == pytest.approx(f1_ref, abs=1e-12)
    pred = scores >= thr
    tp = np.sum(pred & (labels == 1))
    assert 2 * tp / (pred.sum() + labels.sum()) == pytest.approx(f1, abs=1e-12)


def test_f1_max_simple_cases():
    assert f1_max([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == (1.0, 0.8)
    f1, thr = f1_max([1, 1], [0.5, 0.5])
    assert (f1, thr) == (1.0, 0.5)
    with pytest.raises(DataError, match="no anomalous"):
        f1_max([0, 0], [1, 2])


def test_f1_max_among_tied_best_thresholds_returns_the_highest():
    # >= 4: 1 of 1 flagged is a defect, 1 of 2 found (F1 2/3); >= 1: all 4 flagged, both found (F1 2/3)
    f1, thr = f1_max([1, 0, 0, 1], [4, 3, 2, 1])
    assert f1 == pytest.approx(2 / 3) and thr == 4.0
    f1, thr = f1_max([1, 0, 0, 1], [1, 2, 3, 4])  # the same scores in the other order
    assert f1 == pytest.approx(2 / 3) and thr == 4.0


# ------------------------------------------------------------------ AUPRO
def _aupro_bruteforce(masks, maps, limit):
    """Exact reference: every distinct score is a threshold; loops, no histograms."""
    regions = []
    for i, m in enumerate(masks):
        n, comp = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
        regions += [(i, comp == r) for r in range(1, n)]
    normal = ~masks
    pts = [(0.0, 0.0)]
    for t in np.unique(maps)[::-1]:
        pred = maps >= t
        fpr = np.sum(pred & normal) / np.sum(normal)
        pro = np.mean([np.sum(pred[i] & r) / np.sum(r) for i, r in regions])
        pts.append((fpr, pro))
    x, y = np.array(pts).T
    keep = x <= limit
    xs, ys = list(x[keep]), list(y[keep])
    if xs[-1] < limit:
        j = int(np.argmax(x > limit))
        xs.append(limit)
        ys.append(y[j - 1] + (y[j] - y[j - 1]) * (limit - x[j - 1]) / (x[j] - x[j - 1]))
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # trapz before numpy 2.0
    return trapezoid(ys, xs) / limit


def _blobs(seed, n=6, h=20, w=24):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, h, w), bool)
    for i in range(n - 2):  # the last two images have no defect
        for _ in range(rng.integers(1, 3)):
            y, x = rng.integers(0, h - 4), rng.integers(0, w - 4)
            masks[i, y:y + rng.integers(1, 5), x:x + rng.integers(1, 5)] = True
    maps = np.round(rng.random(masks.shape) * 20 + masks * rng.random(masks.shape) * 12).astype(np.float32)
    return masks, maps


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("limit", [0.3, 0.05, 1.0])
def test_aupro_exact_mode_matches_bruteforce(seed, limit):
    masks, maps = _blobs(seed)
    ref = _aupro_bruteforce(masks, maps, limit)
    assert aupro(masks, maps, fpr_limit=limit, num_thresholds=None) == pytest.approx(ref, abs=1e-9)
    assert aupro(masks, maps, fpr_limit=limit) == pytest.approx(ref, abs=1e-9)  # few distinct values: exact too


def test_aupro_continuous_scores_close_to_exact():
    rng = np.random.default_rng(5)
    masks, _ = _blobs(5, n=6, h=24, w=30)
    maps = (rng.random(masks.shape) + masks * 0.6).astype(np.float32)
    exact = aupro(masks, maps, num_thresholds=None)
    assert exact == pytest.approx(_aupro_bruteforce(masks, maps, 0.3), abs=1e-9)
    assert aupro(masks, maps, num_thresholds=200) == pytest.approx(exact, abs=5e-3)


def test_aupro_perfect_constant_and_inverted_maps():
    masks, _ = _blobs(0)
    assert aupro(masks, masks.astype(np.float32)) == pytest.approx(1.0)
    assert aupro(masks, np.full(masks.shape, 0.5, np.float32)) == pytest.approx(0.15)  # fpr_limit / 2
    assert aupro(masks, np.full(masks.shape, 0.5, np.float32), fpr_limit=0.1) == pytest.approx(0.05)
    assert aupro(masks, (~masks).astype(np.float32)) == pytest.approx(0.0)


def test_aupro_averages_regions_not_pixels():
    masks = np.zeros((1, 30, 30), bool)
    masks[0, 2:12, 2:12] = True  # big region, 100 px
    masks[0, 20, 20] = True  # tiny region, 1 px
    maps = np.zeros(masks.shape, np.float32)
    maps[0, 20, 20] = 1.0  # only the tiny region is found
    # points (0,0) (0,0.5) (1,1): PRO(0.3) = 0.65, area = 0.3 * (0.5 + 0.65) / 2
    assert aupro(masks, maps) == pytest.approx(0.3 * 1.15 / 2 / 0.3)
    # diagonal neighbours are one region (8-connectivity): a fully found diagonal pair -> 1.0
    diag = np.zeros((1, 10, 10), bool)
    diag[0, 3, 3] = diag[0, 4, 4] = True
    half = np.zeros(diag.shape, np.float32)
    half[0, 3, 3] = 1.0
    # one region half covered: (0,0) (0,0.5) (1,1) as above
    assert aupro(diag, half) == pytest.approx(0.575)


def test_aupro_normal_images_only_add_false_positives():
    masks, _ = _blobs(1)
    perfect = masks.astype(np.float32)
    noisy_normal = perfect.copy()
    noisy_normal[-1] = 1.0  # a defect-free image lit up everywhere
    assert aupro(masks, perfect) == pytest.approx(1.0)
    assert aupro(masks, noisy_normal) < 1.0
    # dropping that image again restores the perfect score
    assert aupro(masks[:-1], noisy_normal[:-1]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "masks,maps,kwargs,match",
    [
        (np.zeros((2, 5, 5), bool), np.zeros((2, 5, 5)), {}, "no defect pixel"),
        (np.ones((2, 5, 5), bool), np.zeros((2, 5, 5)), {}, "every pixel"),
        (np.ones((2, 5, 5), bool), np.zeros((2, 5, 4)), {}, "resize"),
        (np.ones((2, 5, 5), bool), np.zeros((2, 5, 5)), {"fpr_limit": 0}, "fpr_limit"),
        (np.ones((2, 5, 5), bool), np.zeros((2, 5, 5)), {"num_thresholds": 1}, "num_thresholds"),
    ],
)
def test_aupro_errors(masks, maps, kwargs, match):
    with pytest.raises(DataError, match=match):
        aupro(masks, maps, **kwargs)


# ------------------------------------------------------------------ evaluate
def test_evaluate_without_masks():
    labels, scores = _tied_data(0, 50, 0.4, 10)
    out = evaluate(labels, scores)
    assert set(out) >= {"image_auroc", "pixel_auroc", "aupro", "f1_max"}
    assert out["pixel_auroc"] is None and out["aupro"] is None
    assert out["image_auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert out["f1_max"] == f1_max(labels, scores)[0]


def test_evaluate_with_masks_and_unknown_masks(caplog):
    masks, maps = _blobs(2)
    labels = masks.reshape(len(masks), -1).any(axis=1).astype(int)
    scores = maps.reshape(len(maps), -1).max(axis=1)
    full = evaluate(labels, scores, masks, maps)
    assert full["pixel_auroc"] == pytest.approx(pixel_auroc(masks, maps))
    assert full["aupro"] == pytest.approx(aupro(masks, maps))
    # Sequence form: good images may have None (all normal); a defect image with None is left out.
    seq = [None if lab == 0 else m for lab, m in zip(labels, masks)]
    assert evaluate(labels, scores, seq, list(maps))["aupro"] == pytest.approx(full["aupro"])
    seq[0] = None
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        part = evaluate(labels, scores, seq, list(maps))
    assert "without a mask" in caplog.text
    assert part["aupro"] == pytest.approx(aupro(masks[1:], maps[1:]))


def test_masks_without_a_defect_pixel_give_no_pixel_metrics_and_say_so(caplog):
    from edgecmg.metrics import pixel_metrics

    masks, maps = _blobs(3)
    clean = np.zeros_like(masks)  # every image's mask known, none with a defect pixel
    labels = np.r_[1, np.zeros(len(masks) - 1, int)]
    scores = maps.reshape(len(maps), -1).max(axis=1)
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        assert pixel_metrics(clean, maps) == {"pixel_auroc": None, "aupro": None}
    assert "no image with a known mask contains a defect pixel" in caplog.text
    for given in (clean, list(clean)):  # an [N,H,W] array, or one mask per image
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="edgecmg"):
            out = evaluate(labels, scores, given, maps)
        assert out["pixel_auroc"] is None and out["aupro"] is None
        assert out["image_auroc"] == pytest.approx(auroc(labels, scores))
        assert "no image with a known mask contains a defect pixel" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgecmg"):  # the defect images' masks unknown
        out = evaluate(np.r_[np.ones(len(maps) - 1, int), 0], scores, [None] * len(maps), maps)
    assert out["pixel_auroc"] is None and out["aupro"] is None
    assert f"{len(maps) - 1} defect image(s) without a mask left out" in caplog.text
    assert caplog.text.count("no image with a known mask contains a defect pixel") == 1


def test_evaluate_argument_errors():
    with pytest.raises(DataError, match="without maps"):
        evaluate([0, 1], [0.1, 0.2], masks=np.zeros((2, 4, 4), bool))
    with pytest.raises(DataError, match="one of each per image"):
        evaluate([0, 1], [0.1, 0.2], masks=np.zeros((1, 4, 4), bool), maps=np.zeros((1, 4, 4)))


def test_large_integer_scores_are_not_tied_by_float32():
    scores = np.array([16777216, 16777217], dtype=np.int32)  # equal in float32
    assert auroc([0, 1], scores) == 1.0 == roc_auc_score([0, 1], scores)


def test_verdict_counts_follow_result_is_anomaly():
    from edgecmg.metrics import verdict_counts

    labels, scores = [0, 0, 1, 1, 0, 1], [0.1, 0.5, 0.5, 0.2, 0.9, 0.7]
    # at 0.5: good 0.5 and 0.9 flagged (>= counts), defect 0.2 missed
    assert verdict_counts(labels, scores, 0.5) == {"good_flagged": 2, "defects_missed": 1}
    assert verdict_counts(labels, scores, 1.0) == {"good_flagged": 0, "defects_missed": 3}
    with pytest.raises(DataError, match="different lengths"):
        verdict_counts([0, 1], [0.1], 0.5)


def test_auroc_difference_interval_holds_the_difference_and_tells_noise_from_a_gap():
    from edgecmg.errors import DataError
    from edgecmg.metrics import auroc, auroc_difference_interval

    rng = np.random.default_rng(3)
    labels = np.r_[np.zeros(200, int), np.ones(40, int)]
    strong = rng.normal(size=240) + 2.5 * labels
    weak = rng.normal(size=240) + 0.5 * labels
    near = strong + rng.normal(scale=0.05, size=240)  # the same detector up to noise
    low, high = auroc_difference_interval(labels, strong, weak)
    assert 0 < low <= auroc(labels, strong) - auroc(labels, weak) <= high  # a real gap: 0 outside
    low, high = auroc_difference_interval(labels, strong, near)
    assert low <= 0 <= high and high - low < 0.05
    assert auroc_difference_interval(labels, strong, strong) == (0.0, 0.0)
    assert auroc_difference_interval(labels, strong, weak, seed=1) != auroc_difference_interval(labels, strong, weak)
    wide = auroc_difference_interval(labels, strong, weak, level=0.99)
    narrow = auroc_difference_interval(labels, strong, weak, level=0.5)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]
    with pytest.raises(DataError, match="all 240 samples are normal"):
        auroc_difference_interval(np.zeros(240, int), strong, weak)
    with pytest.raises(DataError, match="level=1.5"):
        auroc_difference_interval(labels, strong, weak, level=1.5)


def test_auroc_difference_interval_redraws_keep_each_class_count(monkeypatch):
    """Every bootstrap redraw holds the test set's normal and anomalous counts: redrawn from all images
    at once, a redraw could miss the rare class (AUROC undefined) and the interval would come from
    other proportions than the test set's."""
    import edgecmg.metrics as metrics

    counts = []
    real = metrics._auc_u

    def spy(labels, scores):
        counts.append((int(labels.sum()), int((~labels).sum())))
        return real(labels, scores)

    monkeypatch.setattr(metrics, "_auc_u", spy)
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(27, int), np.ones(3, int)]
    a, b = rng.normal(size=30) + labels, rng.normal(size=30)
    metrics.auroc_difference_interval(labels, a, b, rounds=200)
    assert len(counts) == 400 and set(counts) == {(3, 27)}


def test_pixel_metrics_refuses_an_fpr_limit_outside_0_to_1_as_aupro_does():
    from edgecmg.metrics import pixel_metrics

    masks, _ = _blobs(0)
    maps = masks.astype(np.float32)
    for call in (lambda: aupro(masks, maps, fpr_limit=1.5), lambda: pixel_metrics(masks, maps, fpr_limit=1.5)):
        with pytest.raises(DataError, match=r"fpr_limit=1.5 must be in \(0, 1\]"):
            call()
