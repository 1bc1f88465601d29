"""Anomaly-detection metrics: image AUROC, pixel AUROC, AUPRO and maximum F1 (numpy only).

Conventions (the ones MVTec AD and most anomaly-detection papers use):

- Label 1 / mask pixel ``True`` is an anomaly (the positive class); a higher score means
  "more anomalous".
- ``auroc`` is the area under the ROC curve with ties counted as half (the Mann-Whitney
  statistic ``U / (P * N)``), which is exactly what ``sklearn.metrics.roc_auc_score`` returns.
- ``pixel_auroc`` is the same statistic over every pixel of every image.
- ``aupro`` is the area under the per-region-overlap (PRO) curve up to a false-positive-rate
  limit (0.3 by default), divided by that limit (Bergmann et al., "The MVTec Anomaly Detection
  Dataset", IJCV 2021). Regions are the 8-connected components of each ground-truth mask; the
  FPR is taken over all normal pixels of all images, so images without a defect contribute
  only to the FPR.
- ``f1_max`` is the best F1 over all thresholds ``score >= t``.

Memory: the pixel metrics never build float64 copies of the maps nor an argsort of all pixels.
The maps are split image by image into the normal pixels' scores, sorted once, and the defect
pixels' scores (with their region for AUPRO); AUROC counts with chunked ``searchsorted`` and AUPRO
with histograms of the defect pixels alone. ``pixel_auroc`` and ``aupro`` take one copy of the normal
scores (the maps' own dtype, so about 1x the maps given as [N,H,W] arrays); ``pixel_metrics(...,
overwrite_maps=True)`` gathers them in the maps' own buffer instead, so it needs only the defect
pixels' scores and regions beyond the arrays given (about 8 bytes per defect pixel for float32 maps).
Lists of maps are stacked into one array first, a copy more.
"""
from __future__ import annotations

import logging
from typing import Any, NamedTuple, Optional, Sequence

import numpy as np

from edgecmg.errors import DataError

__all__ = ["auroc", "auroc_difference_interval", "pixel_auroc", "aupro", "pixel_metrics", "f1_max", "verdict_counts",
           "evaluate"]

_log = logging.getLogger("edgecmg")

# Elements processed per step when streaming through pixels (keeps int64 temporaries ~2 MB).
_CHUNK = 1 << 18


# --------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------
def _as_labels(labels: Any, name: str = "labels") -> np.ndarray:
    arr = np.asarray(labels)
    if arr.dtype == bool:
        return arr.reshape(-1)
    if arr.size and not np.isin(arr, (0, 1)).all():
        bad = np.unique(arr[~np.isin(arr, (0, 1))])[:5]
        raise DataError(
            f"{name} must be 0 (normal) or 1 (anomalous), got values like {bad.tolist()}; "
            "convert your labels to 0/1"
        )
    return arr.reshape(-1).astype(bool)


def _as_scores(scores: Any, name: str = "scores") -> np.ndarray:
    arr = np.asarray(scores)
    if not np.issubdtype(arr.dtype, np.floating):
        if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
            raise DataError(f"{name} must be numeric, got dtype {arr.dtype}")
        arr = arr.astype(np.float64)  # float32 would tie integers above 2**24
    if _has_nan(arr):
        raise DataError(f"{name} contain NaN values; fix the model output or drop those samples")
    return arr


def _has_nan(arr: np.ndarray) -> bool:
    """Whether ``arr`` holds a NaN, looked for in chunks: ``np.isnan(maps)`` whole would be a bool
    array as large as every map at once."""
    if arr.ndim > 1 and not arr.flags.c_contiguous:
        return any(_has_nan(part) for part in arr)
    flat = arr.reshape(-1)
    return any(np.isnan(flat[start:start + _CHUNK]).any() for start in range(0, flat.size, _CHUNK))


def _check_same_length(labels: np.ndarray, scores: np.ndarray) -> None:
    if labels.size != scores.size:
        raise DataError(
            f"labels and scores have different lengths ({labels.size} vs {scores.size}); "
            "pass one score per labelled sample"
        )
    if labels.size == 0:
        raise DataError("labels and scores are empty; evaluate at least one normal and one anomalous sample")


def _stacked(arrays: Sequence[Any], what: str) -> np.ndarray:
    """A list of per-image arrays as one [N,H,W] array; arrays of different sizes are a DataError naming
    the first that differs (numpy's own ValueError said only "all input arrays must have the same shape")."""
    arrays = [np.asarray(a) for a in arrays]
    for i, a in enumerate(arrays[1:], start=1):
        if a.shape != arrays[0].shape:
            raise DataError(f"{what} differ in size: #0 is {arrays[0].shape}, #{i} is {a.shape}; resize each to "
                            "its image's map size (or the model's input size) first")
    return np.stack(arrays)


def _as_masks_maps(masks: Any, maps: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return (bool masks [N,H,W], float maps [N,H,W]) without copying float maps."""
    if isinstance(masks, (list, tuple)):
        masks = _stacked(masks, "masks") if len(masks) else np.zeros((0, 0, 0), bool)
    if isinstance(maps, (list, tuple)):
        maps = _stacked(maps, "anomaly maps") if len(maps) else np.zeros((0, 0, 0), np.float32)
    m = np.asarray(masks)
    a = _as_scores(maps, "anomaly maps")
    if m.ndim == 2:
        m = m[None]
    if a.ndim == 2:
        a = a[None]
    if m.ndim != 3 or a.ndim != 3:
        raise DataError(
            f"masks and maps must be [N,H,W] (got {m.shape} and {a.shape}); stack one 2-D array per image"
        )
    if m.shape != a.shape:
        raise DataError(
            f"masks shape {m.shape} differs from maps shape {a.shape}; resize the anomaly maps to the "
            "mask size (e.g. cv2.resize with INTER_LINEAR) before evaluating"
        )
    if m.shape[0] == 0:
        raise DataError("no masks/maps given; pixel metrics need at least one image")
    if m.dtype != bool:
        m = m != 0
    return m, a


# --------------------------------------------------------------------------------------------
# AUROC
# --------------------------------------------------------------------------------------------
def _auc_u(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUROC via the Mann-Whitney statistic, ties counted as 1/2.

    Both classes are copied (in the scores' own dtype, so one copy of the scores in all) and
    sorted; the smaller class is then searched in the larger one in chunks. For a positive p
    among sorted negatives: ``#neg < p`` = left insertion index, ``#neg == p`` = right - left,
    so ``2U = sum(left + right)``; for a negative n among sorted positives,
    ``2U = sum(2P - left - right)``. Sorted needles keep ``searchsorted`` cache-friendly.
    """
    n_pos = int(np.count_nonzero(labels))
    _check_both_classes(n_pos, labels.size - n_pos)
    pos = scores[labels]
    pos.sort()
    neg = scores[~labels]
    neg.sort()
    return _auc_sorted(pos, neg)


def _check_both_classes(n_pos: int, n_neg: int) -> None:
    if n_pos == 0 or n_neg == 0:
        only = "normal (0)" if n_pos == 0 else "anomalous (1)"
        raise DataError(
            f"AUROC is undefined: all {n_pos + n_neg} samples are {only}; "
            "evaluate on a set that contains both normal and anomalous samples"
        )


def _auc_sorted(pos: np.ndarray, neg: np.ndarray) -> float:
    """:func:`_auc_u` of the ascending scores of the positives and of the negatives (both non-empty)."""
    n_pos, n_neg = pos.size, neg.size
    search_pos = n_pos <= n_neg
    haystack, needles = (neg, pos) if search_pos else (pos, neg)
    twice_u = 0
    for start in range(0, needles.size, _CHUNK):
        chunk = needles[start:start + _CHUNK]
        s = int(np.searchsorted(haystack, chunk, side="left").sum(dtype=np.int64))
        s += int(np.searchsorted(haystack, chunk, side="right").sum(dtype=np.int64))
        twice_u += s if search_pos else (2 * n_pos * chunk.size - s)
    return float(twice_u) / (2.0 * n_pos * n_neg)


def auroc(labels: Any, scores: Any) -> float:
    """Image-level area under the ROC curve.

    Args:
        labels: [N] 0 = normal, 1 = anomalous (bool accepted).
        scores: [N] anomaly scores, higher = more anomalous.

    Returns:
        ``U / (P * N)``, ties counted as one half; identical to
        ``sklearn.metrics.roc_auc_score(labels, scores)``.

    Raises:
        DataError: lengths differ, NaN scores, non-0/1 labels, or only one class present.
    """
    lab = _as_labels(labels)
    sc = _as_scores(scores).reshape(-1)
    _check_same_length(lab, sc)
    return _auc_u(lab, sc)


def auroc_difference_interval(labels: Any, scores_a: Any, scores_b: Any, *, level: float = 0.95,
                              rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Interval for AUROC(a) - AUROC(b) of two detectors scored on the same images: a paired
    bootstrap that redraws the normal and the anomalous images separately (so every redraw holds
    both classes, in the test set's proportions) and scores both detectors on each redraw; the
    ``level`` percentile interval of the ``rounds`` differences. An interval that holds 0 means the
    test set cannot tell the two apart.
    """
    lab = _as_labels(labels)
    a, b = _as_scores(scores_a).reshape(-1), _as_scores(scores_b).reshape(-1)
    _check_same_length(lab, a)
    _check_same_length(lab, b)
    if not 0.0 < level < 1.0 or rounds < 1:
        raise DataError(f"level={level} must be in (0, 1) and rounds={rounds} >= 1")
    positives, negatives = np.flatnonzero(lab), np.flatnonzero(~lab)
    if positives.size == 0 or negatives.size == 0:
        _auc_u(lab, a)  # raises the one-class error
    rng = np.random.default_rng(seed)
    differences = np.empty(rounds)
    for r in range(rounds):
        picked = np.concatenate([rng.choice(positives, positives.size), rng.choice(negatives, negatives.size)])
        differences[r] = _auc_u(lab[picked], a[picked]) - _auc_u(lab[picked], b[picked])
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(differences, [tail, 100.0 - tail])
    return float(low), float(high)


def pixel_auroc(masks: Any, maps: Any) -> float:
    """Pixel-level AUROC over all pixels of all images.

    Args:
        masks: [N,H,W] ground truth, nonzero / True = defect pixel.
        maps: [N,H,W] anomaly maps (float32 preferred; never up-cast).

    Raises:
        DataError: shapes differ, NaN in maps, or all pixels belong to one class.
    """
    m, a = _as_masks_maps(masks, maps)
    n_defect = int(np.count_nonzero(m))
    _check_both_classes(n_defect, m.size - n_defect)
    pixels = _split_pixels(m, a, regions=False, overwrite=False)
    pixels.defect.sort()
    return _auc_sorted(pixels.defect, pixels.normal)


class _Pixels(NamedTuple):
    """The pixels of [N,H,W] masks and maps as the pixel metrics use them."""

    normal: np.ndarray  # the normal pixels' scores, ascending
    defect: np.ndarray  # the defect pixels' scores, image after image, each image's in row-major order
    region: Optional[np.ndarray]  # per defect pixel: its region (an index into inverse_size)
    inverse_size: np.ndarray  # per region (8-connected component of a mask): 1 / its pixel count
    per_image: np.ndarray  # defect pixels per image


def _split_pixels(m: np.ndarray, a: np.ndarray, *, regions: bool, overwrite: bool) -> _Pixels:
    """Splits the maps ``a`` by the masks ``m`` image by image, without a temporary as large as all maps.

    ``regions``: also label each image's defect regions (AUPRO). ``overwrite``: gather the normal
    scores in the front of ``a``'s own buffer (its contents are lost) rather than in a new array;
    only a C-contiguous writable ``a`` is overwritten, any other is left as it is.
    """
    import cv2  # local import: only AUPRO's regions need OpenCV

    n_defect = int(np.count_nonzero(m))
    n_normal = m.size - n_defect
    in_place = overwrite and a.flags.c_contiguous and a.flags.writeable
    normal = a.reshape(-1)[:n_normal] if in_place else np.empty(n_normal, a.dtype)
    defect = np.empty(n_defect, a.dtype)
    region = np.empty(n_defect, np.int32 if n_defect < 2 ** 31 else np.int64) if regions else None
    inverse_sizes: list[np.ndarray] = []
    per_image = np.zeros(len(m), np.int64)
    written = taken = n_regions = 0
    for i, (mask_i, map_i) in enumerate(zip(m, a)):
        flat_mask, flat_map = mask_i.reshape(-1), map_i.reshape(-1)
        count = int(np.count_nonzero(flat_mask))
        if count:
            # Taken out before the normal scores are written: in place they may land on this image's own pixels.
            defect[taken:taken + count] = flat_map[flat_mask]
            if regions:
                n_lab, comp = cv2.connectedComponents(mask_i.astype(np.uint8), connectivity=8)
                comp = comp.reshape(-1)
                sizes = np.bincount(comp, minlength=n_lab).astype(np.float64)
                inverse_sizes.append(1.0 / sizes[1:])
                region[taken:taken + count] = comp[flat_mask] - 1 + n_regions
                n_regions += n_lab - 1
            taken += count
            kept = flat_map[~flat_mask]
        else:
            kept = flat_map
        # In place, ``written`` never passes this image's first pixel, so no image still to be read is
        # overwritten (numpy copies overlapping ranges as if through a buffer).
        normal[written:written + kept.size] = kept
        written += kept.size
        per_image[i] = count
    normal.sort()  # in place: no buffer the size of the maps
    inverse_size = np.concatenate(inverse_sizes) if inverse_sizes else np.zeros(0)
    return _Pixels(normal, defect, region, inverse_size, per_image)


# --------------------------------------------------------------------------------------------
# AUPRO
# --------------------------------------------------------------------------------------------
def _pro_thresholds(normal_sorted: np.ndarray, fpr_limit: float, num_thresholds: Optional[int]) -> np.ndarray:
    """Thresholds that sample FPR in [0, fpr_limit] (and one point past it) evenly.

    ``normal_sorted`` are the ascending normal-pixel scores. For each chosen value t, t itself
    and the next representable float above it are used, so the "strictly above t" corner of the
    exact step curve is not lost (a perfect map then scores exactly 1.0).
    """
    n = normal_sorted.size
    lo = int(np.floor(n * (1.0 - fpr_limit)))  # #(s >= s[lo]) >= n * fpr_limit
    lo = min(max(lo, 0), n - 1)
    if num_thresholds is None:
        picked = normal_sorted[lo:]
    else:
        idx = np.unique(np.round(np.linspace(lo, n - 1, num_thresholds)).astype(np.int64))
        picked = normal_sorted[idx]
    picked = np.unique(picked)
    above = np.nextafter(picked, np.array(np.inf, dtype=picked.dtype))
    # normal_sorted[0] (FPR = 1) keeps the curve defined all the way; np.unique sorts ascending.
    return np.unique(np.concatenate([normal_sorted[:1], picked, above]))


AUPRO_THRESHOLDS = 1000  # aupro's default num_thresholds, which pixel_metrics uses too


def aupro(
    masks: Any,
    maps: Any,
    fpr_limit: float = 0.3,
    num_thresholds: Optional[int] = AUPRO_THRESHOLDS,
) -> float:
    """Normalised area under the per-region-overlap curve up to ``fpr_limit`` (MVTec AD).

    For a threshold t, with prediction ``map >= t``:

    - PRO(t) = mean over all ground-truth regions r (8-connected components of each mask,
      ``cv2.connectedComponents``) of ``|pred ∩ r| / |r|``;
    - FPR(t) = ``|pred ∩ normal| / |normal|`` over the normal pixels of all images.

    The (FPR, PRO) points, starting at (0, 0), are joined linearly, the curve is cut at
    ``fpr_limit`` (interpolating the last segment) and the trapezoid area is divided by
    ``fpr_limit``, so a perfect map scores 1.0 and a constant map scores ``fpr_limit / 2``.

    Args:
        masks: [N,H,W] ground truth (nonzero = defect). Images without defect pixels add
            only to the FPR.
        maps: [N,H,W] anomaly maps, same shape.
        fpr_limit: integration limit in (0, 1].
        num_thresholds: how many normal-pixel quantiles sample FPR in [0, fpr_limit]
            (each with its "just above" twin); ``None`` uses every distinct normal score in
            that range, which is exact but slower.

    Raises:
        DataError: shape mismatch, NaN, no defect pixel or no normal pixel.
    """
    _check_aupro_args(fpr_limit, num_thresholds)
    m, a = _as_masks_maps(masks, maps)
    _check_aupro_defined(m)
    return _aupro(_split_pixels(m, a, regions=True, overwrite=False), float(fpr_limit), num_thresholds)


def _check_aupro_args(fpr_limit: float, num_thresholds: Optional[int]) -> None:
    if not 0.0 < float(fpr_limit) <= 1.0:
        raise DataError(f"fpr_limit={fpr_limit} must be in (0, 1]; MVTec AD uses 0.3")
    if num_thresholds is not None and int(num_thresholds) < 2:
        raise DataError(f"num_thresholds={num_thresholds} must be >= 2 (or None for exact)")


def _check_aupro_defined(m: np.ndarray) -> None:
    n_defect = int(np.count_nonzero(m))
    if n_defect == 0:
        raise DataError("AUPRO is undefined: the masks contain no defect pixel; evaluate on defect images with masks")
    if n_defect == m.size:
        raise DataError("AUPRO is undefined: every pixel is a defect pixel, so the FPR cannot be measured")


def _aupro(pixels: _Pixels, fpr_limit: float, num_thresholds: Optional[int]) -> float:
    """:func:`aupro` of split pixels (``regions=True``; both classes present)."""
    thresholds = _pro_thresholds(pixels.normal, fpr_limit, num_thresholds)
    n_normal = pixels.normal.size
    k = thresholds.size
    # Normal pixels scoring >= t_j, counted in the sorted normal scores.
    fp_at = n_normal - np.searchsorted(pixels.normal, thresholds, side="left")
    # pro_hist[j]: region shares of the defect pixels whose score lies in [t_{j-1}, t_j) (bin 0 = below
    # every threshold), summed image by image.
    pro_hist = np.zeros(k + 1, dtype=np.float64)
    start = 0
    for count in pixels.per_image.tolist():
        if count:
            part = slice(start, start + count)
            bins = np.searchsorted(thresholds, pixels.defect[part], side="right")
            pro_hist += np.bincount(bins, weights=pixels.inverse_size[pixels.region[part]], minlength=k + 1)
            start += count
    n_regions = pixels.inverse_size.size

    # Share of region pixels with score >= t_j is the sum of bins j+1..k (reverse cumulative sum).
    pro_at = np.cumsum(pro_hist[::-1])[::-1][1:]
    # Thresholds ascend, so walk them in reverse to get FPR ascending; prepend the (0, 0) origin.
    fpr = np.concatenate([[0.0], fp_at[::-1] / n_normal])
    pro = np.concatenate([[0.0], pro_at[::-1] / n_regions])
    pro = np.minimum(pro, 1.0)  # guard against float round-off in the weighted sums
    return _partial_area(fpr, pro, float(fpr_limit)) / float(fpr_limit)


def _partial_area(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area under the polyline (x ascending, may repeat) from x = 0 to ``limit``."""
    inside = int(np.searchsorted(x, limit, side="right"))  # points with x <= limit
    xs, ys = x[:inside], y[:inside]
    if inside < x.size and xs[-1] < limit:
        x0, x1, y0, y1 = x[inside - 1], x[inside], y[inside - 1], y[inside]
        y_lim = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        xs = np.append(xs, limit)
        ys = np.append(ys, y_lim)
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) * 0.5))


# --------------------------------------------------------------------------------------------
# F1
# --------------------------------------------------------------------------------------------
def f1_max(labels: Any, scores: Any) -> tuple[float, float]:
    """Maximum F1 over all thresholds, predicting "anomalous" when ``score >= threshold``.

    The candidate thresholds are the distinct scores (as in
    ``sklearn.metrics.precision_recall_curve``); F1 = 2 TP / (P + TP + FP). Among thresholds
    with the same best F1 the highest one is returned.

    Returns:
        ``(f1, threshold)``.

    Raises:
        DataError: lengths differ, NaN, non-0/1 labels, or no anomalous sample.
    """
    lab = _as_labels(labels)
    sc = _as_scores(scores).reshape(-1)
    _check_same_length(lab, sc)
    n_pos = int(np.count_nonzero(lab))
    if n_pos == 0:
        raise DataError("F1 is undefined: no anomalous (label 1) sample; include at least one defect")
    order = np.argsort(-sc, kind="stable")
    s_desc = sc[order]
    tp = np.cumsum(lab[order], dtype=np.int64)
    # Last index of every run of equal scores = one threshold each.
    last = np.flatnonzero(np.append(s_desc[1:] != s_desc[:-1], True))
    tp_t = tp[last]
    predicted = last + 1
    f1 = 2.0 * tp_t / (n_pos + predicted)
    best = int(np.argmax(f1))
    return float(f1[best]), float(s_desc[last[best]])


def verdict_counts(labels: Any, scores: Any, threshold: float) -> dict[str, int]:
    """{good_flagged, defects_missed} at ``threshold``, by ``Result.is_anomaly``'s rule (anomalous
    when ``score >= threshold``, or not finite): the errors a detector makes at one fixed threshold."""
    lab = _as_labels(labels)
    values = _as_scores(scores).reshape(-1)
    flagged = (values >= threshold) | ~np.isfinite(values)
    _check_same_length(lab, flagged)
    return {"good_flagged": int((flagged & ~lab).sum()), "defects_missed": int((~flagged & lab).sum())}


# --------------------------------------------------------------------------------------------
# all at once
# --------------------------------------------------------------------------------------------
def evaluate(
    labels: Any,
    scores: Any,
    masks: Optional[Any] = None,
    maps: Optional[Any] = None,
    *,
    fpr_limit: float = 0.3,
) -> dict[str, Optional[float]]:
    """All metrics in one dict.

    Args:
        labels: [N] 0/1 image labels.
        scores: [N] image scores.
        masks: ``None`` (no pixel metrics), an [N,H,W] array, or a length-N sequence whose
            entries are 2-D masks or ``None``. A ``None`` entry of a normal image (label 0)
            counts as an all-normal mask; a ``None`` entry of a defect image (mask unknown)
            leaves that image out of the pixel metrics (logged).
        maps: [N,H,W] anomaly maps (or a sequence of 2-D maps), required when masks are given.

    Returns:
        ``{"image_auroc", "pixel_auroc", "aupro", "f1_max", "f1_threshold"}``; the pixel
        entries are ``None`` without masks (or when no image with a known mask has a defect).
    """
    lab = _as_labels(labels)
    sc = _as_scores(scores).reshape(-1)
    _check_same_length(lab, sc)
    f1, thr = f1_max(lab, sc)
    out: dict[str, Optional[float]] = {
        "image_auroc": auroc(lab, sc),
        "pixel_auroc": None,
        "aupro": None,
        "f1_max": f1,
        "f1_threshold": thr,
    }
    if masks is None:
        return out
    if maps is None:
        raise DataError("masks were given without maps; pass the anomaly maps too (or neither)")
    if len(masks) != lab.size or len(maps) != lab.size:
        raise DataError(
            f"got {len(masks)} masks and {len(maps)} maps for {lab.size} labels; pass one of each per image"
        )
    out.update(pixel_metrics(*_select_pixel_inputs(lab, masks, maps), fpr_limit=fpr_limit))
    return out


def pixel_metrics(masks: Any, maps: Any, *, fpr_limit: float = 0.3,
                  overwrite_maps: bool = False) -> dict[str, Optional[float]]:
    """``{"pixel_auroc", "aupro"}`` of [N,H,W] masks and maps (every mask known; a normal image's is
    all False), both ``None`` (logged) when no mask has a defect pixel. The same figures as
    :func:`pixel_auroc` and :func:`aupro`, from one pass over the maps.

    overwrite_maps: the maps' buffer may be used to sort the normal pixels' scores (their contents
    are then lost), so the metrics need memory only for the defect pixels beyond what the masks and
    maps take; otherwise a copy of the normal scores is made.
    """
    # The masks stacked first (masks of different sizes raised numpy's ValueError at .any()); the maps
    # are checked only where there is something to measure, as before.
    if isinstance(masks, (list, tuple)) and len(masks):
        masks = _stacked(masks, "masks")
    if not np.asarray(masks).any():
        _log.warning("pixel metrics skipped: no image with a known mask contains a defect pixel")
        return {"pixel_auroc": None, "aupro": None}
    _check_aupro_args(fpr_limit, AUPRO_THRESHOLDS)  # as aupro() checked it when pixel_metrics called it
    m, a = _as_masks_maps(masks, maps)
    n_defect = int(np.count_nonzero(m))
    _check_both_classes(n_defect, m.size - n_defect)
    pixels = _split_pixels(m, a, regions=True, overwrite=overwrite_maps)
    area = _aupro(pixels, float(fpr_limit), AUPRO_THRESHOLDS)
    pixels.defect.sort()  # after AUPRO, which takes each defect pixel with its region
    return {"pixel_auroc": _auc_sorted(pixels.defect, pixels.normal), "aupro": area}


def _select_pixel_inputs(lab: np.ndarray, masks: Any, maps: Any) -> tuple[np.ndarray, np.ndarray]:
    """The [N,H,W] masks and maps of the images whose mask is known (none: two empty arrays)."""
    if isinstance(masks, np.ndarray) and masks.ndim == 3:
        return masks, maps
    keep_masks: list[np.ndarray] = []
    keep_maps: list[np.ndarray] = []
    dropped = 0
    for i, (mk, mp) in enumerate(zip(masks, maps)):
        mp = np.asarray(mp)
        if mk is None:
            if lab[i]:
                dropped += 1
                continue
            mk = np.zeros(mp.shape, dtype=bool)
        mk = np.asarray(mk)
        if mk.shape != mp.shape:
            raise DataError(
                f"image {i}: mask shape {mk.shape} differs from map shape {mp.shape}; resize the anomaly "
                "map to the mask size before evaluating"
            )
        keep_masks.append(mk != 0)
        keep_maps.append(mp)
    if dropped:
        _log.warning("pixel metrics: %d defect image(s) without a mask left out", dropped)
    if not keep_masks:
        return np.zeros((0, 0, 0), dtype=bool), np.zeros((0, 0, 0), dtype=np.float32)
    shapes = {k.shape for k in keep_masks}
    if len(shapes) > 1:
        raise DataError(
            f"masks have different sizes {sorted(shapes)}; resize masks and maps to one size before evaluating"
        )
    return np.stack(keep_masks), np.stack(keep_maps)
