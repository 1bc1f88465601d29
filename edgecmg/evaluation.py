"""Evaluate a detector on labelled samples: metrics plus per-image latency."""
from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import cv2
import numpy as np

from edgecmg import __version__
from edgecmg.config import ModelConfig
from edgecmg.datasets import MVTecDataset, Sample, sample_mask
from edgecmg.detector import Detector
from edgecmg.errors import ConfigError, DataError, EdgeCMGError, name_some, out_of_memory
from edgecmg.fileio import atomic_write_bytes, json_text, spreadsheet_cell
from edgecmg.thresholds import FEW_THRESHOLD_IMAGES, threshold_from_scores
from edgecmg.imageio import list_images, read_image
from edgecmg.metrics import auroc, evaluate, pixel_metrics, verdict_counts
from edgecmg.progress import show_progress, tqdm

log = logging.getLogger("edgecmg")

SCORE_FIELDS = ["file", "defect_type", "label", "score", "is_anomaly"]  # scores.csv's columns, one row an image
_TRUTH_RGB = (255, 0, 255)  # ground-truth outlines: magenta, absent from the JET heat map
_CELL_HEIGHT = 320  # pixels per picture in hardest.png
#: A ground-truth mask whose defect covers more than this fraction of its image is taken to be inverted:
#: real defects are small (at most 1% of a KolektorSDD image), and a mask drawn as a black defect on a
#: white background reads as defect everywhere but the defect.
MOSTLY_DEFECT = 0.5
_NAMED_MASKS = 3  # masks named in that warning; the rest are counted


def _named_masks(paths: Sequence[str]) -> str:
    """The first few mask files of ``paths`` as defect type/name, the rest counted (eval's warnings)."""
    return name_some([f"{Path(p).parent.name}/{Path(p).name}" for p in paths], _NAMED_MASKS)
#: What eval holds per test image with a mask, in bytes per pixel of the model's input: its anomaly map
#: (float32, 4 bytes) and mask (1 byte), kept for the pixel metrics, which then need little more (their
#: normal scores are sorted in the maps' own memory). Measured from eval's peak RSS (2-core x86 VM, ONNX
#: Runtime): 5.09 bytes per pixel between 2,000 and 5,000 KolektorSDD test images at 416x160, 5.20 between
#: 500 and 2,000 at 800x320 (before the metrics sorted in place: 10.1).
EVAL_BYTES_PER_PIXEL = 5.2
_HELD_BYTES_PER_PIXEL = 5  # what the arrays themselves take: the float32 map and the bool mask
_PIXEL_METRICS_ADVICE = ("evaluate fewer test images per run, use a model fitted with a smaller --input-size, or "
                         "run on a machine with more memory")


def eval_memory_per_image(input_size: tuple[int, int]) -> float:
    """Bytes eval holds per test image with a mask, for a model whose input is ``input_size`` (h, w)."""
    height, width = input_size
    return EVAL_BYTES_PER_PIXEL * height * width


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Boolean mask resized to ``size`` = (height, width), as :func:`edgecmg.imageio.resize_to_input`.

    A pixel counts as defective when the defect covers any part of it (area resampling, then > 0),
    so one-pixel cracks survive the downscale to the model size; nearest neighbour can drop them.
    """
    height, width = size
    return cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA) > 0


#: The ``schema`` of evaluate_detector's metrics (eval --json, metrics.json) and of threshold_from_good's
#: result (threshold --json); docs/outputs.md lists their keys.
EVAL_SCHEMA = "edgecmg.eval.v1"
THRESHOLD_SCHEMA = "edgecmg.threshold.v1"


def evaluate_detector(detector: Detector, samples: Sequence[Sample] | MVTecDataset | str | Path, *,
                      progress: Optional[bool] = None, per_image: bool = False,
                      on_record: Optional[Callable[[dict], None]] = None) -> dict:
    """Image AUROC, pixel AUROC, AUPRO (30% FPR), F1-max and per-image latency (ms) over ``samples``:
    :class:`Sample` s, or an MVTec-layout dataset (its root folder, or an :class:`MVTecDataset`), whose
    test images are then judged.

    Unreadable images are skipped and listed under ``skipped``; an unreadable or mis-sized mask under
    ``masks_skipped`` (its image keeps its image score). Pixel metrics are None without masks. Masks
    whose defect covers more than half their image, most likely inverted, are used as they are, named
    in one warning and listed under ``masks_mostly_defect``; a defect image's mask that marks no pixel
    at all is used too (its pixels count as defect-free), named and listed under ``masks_empty``.
    Where memory runs out for the pixel metrics (the maps and masks take :data:`EVAL_BYTES_PER_PIXEL`
    per pixel of the model's input, per test image), they are None and ``pixel_metrics_error`` says
    why (warned); the image metrics are kept.
    ``defect_types``: which kinds of defect the detector finds (:func:`per_defect_type`).
    per_image: also return ``per_image``, one {file, defect_type, label, score, is_anomaly} per image.
    on_record: called with each of those records as its image is judged (eval --out writes them to
        disk at once, so a stopped run keeps what it judged).
    progress: a progress bar; by default where it can be seen (a terminal or a notebook), not in a log.
    Raises DataError before judging any image when ``samples`` are all good or all defective: image
    AUROC and F1 need both.
    """
    samples = samples_to_evaluate(samples)
    check_both_labels(samples)
    labels, scores, latencies, skipped, records = [], [], [], [], []
    masks_skipped: list[str] = []
    mostly_defect: list[str] = []  # masks read from files whose defect covers most of the image
    empty_defect_masks: list[str] = []  # masks of defect images that mark no defect pixel
    masks_read = 0
    has_masks = any(s.mask_path is not None for s in samples)
    height, width = detector.input_size
    # Pixel metrics need every map at once: rows are filled in place (a list stacked at the end was
    # held twice, and 3,000 test images peaked at 3.4 GB). A defect image whose mask is unknown
    # takes no row: only its image score counts.
    rows = len(samples) if has_masks else 0
    pixel_error = None  # why the pixel metrics could not be taken, where memory ran out
    try:
        maps = np.empty((rows, height, width), np.float32)
        masks = np.zeros((rows, height, width), bool)
    except MemoryError as exc:  # said now, before the images are judged; the image metrics still are
        pixel_error = _pixel_memory_error(exc, f"holding the anomaly maps and masks of {rows} test images at "
                                               f"{height}x{width} needs {rows * height * width * _HELD_BYTES_PER_PIXEL / 1e6:.0f} "
                                               f"MB ({height * width * _HELD_BYTES_PER_PIXEL / 1e6:.2f} MB each)")
        has_masks, rows = False, 0
        maps, masks = np.empty((0, height, width), np.float32), np.zeros((0, height, width), bool)
    filled, unknown_masks, defect_rows = 0, 0, 0
    unusable_masks: list[str] = []  # the masks of defect images that were found but could not be used
    for sample in tqdm(samples, desc="eval", unit="img", disable=not show_progress(progress)):
        try:
            frame = read_image(sample.path)
        except DataError as exc:
            log.warning("skipped: %s", exc)
            skipped.append(str(sample.path))
            continue
        start = time.perf_counter()
        result = detector.predict(frame)
        latencies.append((time.perf_counter() - start) * 1e3)
        labels.append(sample.label)
        scores.append(result.score)
        records.append({"file": str(sample.path), "defect_type": sample.defect_type, "label": int(sample.label),
                        "score": float(result.score), "is_anomaly": bool(result.is_anomaly)})
        if on_record is not None:
            on_record(records[-1])
        if has_masks:
            try:
                mask = sample_mask(sample, frame.shape[:2])
            except DataError as exc:
                # The image keeps its image-level score. A good part's pixels are defect-free whatever
                # its mask file holds, so only a defective image leaves the pixel metrics.
                log.warning("mask skipped, %s: %s", "a good part counts as defect-free" if sample.label == 0
                            else "pixel metrics leave this image out", exc)
                masks_skipped.append(str(sample.mask_path))
                if sample.label:
                    unusable_masks.append(str(sample.mask_path))
                    continue
                mask = None
            if mask is None and sample.label:  # no mask file: its pixels are unknown
                unknown_masks += 1
                continue
            if mask is not None and sample.mask_path is not None:
                # Measured at the mask's own resolution: resize_mask grows a defect by up to a pixel.
                masks_read += 1
                if np.count_nonzero(mask) > MOSTLY_DEFECT * mask.size:
                    mostly_defect.append(str(sample.mask_path))
                elif sample.label and not mask.any():
                    empty_defect_masks.append(str(sample.mask_path))
            # Parts differ slightly in size; pixel metrics are taken at the model's input size.
            if mask is not None:
                masks[filled] = resize_mask(mask, detector.input_size)
            maps[filled] = cv2.resize(result.anomaly_map, (width, height), interpolation=cv2.INTER_LINEAR)
            filled += 1
            defect_rows += sample.label
    for label, kind in ((0, "good"), (1, "defective")):
        given = [s for s in samples if s.label == label]
        if given and label not in labels:  # else metrics would only say "labels are empty"
            raise DataError(f"none of the {len(given)} {kind} test image(s) could be read (the first: {given[0].path}; "
                            "each is named in the warnings above): AUROC needs good and defective images; replace "
                            "or re-export them")
    # schema: what a script checks before it reads the keys (docs/outputs.md); it changes when a key is
    # renamed, removed or changes meaning, not when one is added.
    metrics = {"schema": EVAL_SCHEMA, "edgecmg": __version__, **evaluate(labels, scores)}
    if mostly_defect:
        warn_mostly_defect_masks(mostly_defect, masks_read)
    if empty_defect_masks:
        # An empty mask passes for a defect-free image in the pixel metrics: 3 of 8 KolektorSDD masks
        # zeroed raised pixel AUROC from 0.83 to 0.89 without a word.
        log.warning("%d defect test image(s) have a mask that marks no defect pixel: %s (all listed under masks_empty "
                    "in the metrics); this run's pixel metrics take their pixels as defect-free; draw the defect "
                    "in them (nonzero on a zero background), or remove them to leave those images out",
                    len(empty_defect_masks), _named_masks(empty_defect_masks))
    if has_masks:
        # A damaged mask is there to be fixed, a missing one to be made: counted as "without a mask", the
        # damaged ones sent people looking for masks that were in place.
        if unknown_masks:
            log.warning("pixel metrics: %d defect image(s) without a mask left out", unknown_masks)
        if unusable_masks:
            named = _named_masks(unusable_masks)
            log.warning("pixel metrics: %d defect image(s) left out whose mask is damaged or not the size of its "
                        "image, not missing: %s (each said above, all listed under masks_skipped); re-export those "
                        "masks", len(unusable_masks), named)
        if filled:
            log.info("pixel metrics over %d maps of %dx%d (height x width)", filled, height, width)
        try:  # None for both (said) without a defect pixel; the maps are no longer needed, so sorted in place
            metrics.update(pixel_metrics(masks[:filled], maps[:filled], overwrite_maps=True))
        except Exception as exc:
            if isinstance(exc, EdgeCMGError) or not out_of_memory(exc):
                raise
            defect_pixels = int(np.count_nonzero(masks[:filled]))
            held = filled * height * width * _HELD_BYTES_PER_PIXEL
            pixel_error = _pixel_memory_error(
                exc, f"{filled} maps and masks of {height}x{width} took {held / 1e6:.0f} MB and their metrics "
                     f"need about {defect_pixels * 8 / 1e6:.0f} MB more ({defect_pixels} defect pixels)")
        del maps, masks  # no longer needed: the report and hardest.png come next
        # What the pixel figures cover and how they were taken: a report read later must say so.
        metrics["pixel_metrics_over"] = {
            "images": filled, "defect_images": defect_rows, "defect_images_without_mask": unknown_masks,
            "defect_images_mask_unusable": len(unusable_masks),
            "resolution": f"{height}x{width}, the model's input: maps resized to it, masks area-resampled "
                          "(a pixel is a defect's where the defect covers any of it)"}
    latency = np.asarray(latencies)
    metrics.update({
        "threshold": float(detector.threshold), **verdict_counts(labels, scores, detector.threshold),
        "defect_types": per_defect_type(records),
        "images": len(labels), "skipped": skipped, "masks_skipped": masks_skipped,
        "masks_mostly_defect": mostly_defect, "masks_empty": empty_defect_masks, "backend": detector.backend,
        "precision": detector.precision,
        "latency_ms_mean": float(latency.mean()), "latency_ms_p50": float(np.percentile(latency, 50)),
        "latency_ms_p99": float(np.percentile(latency, 99)),
    })
    if pixel_error is not None:
        metrics.update({"pixel_auroc": None, "aupro": None, "pixel_metrics_error": pixel_error})
    if per_image:
        metrics["per_image"] = records
    return metrics


def _pixel_memory_error(exc: BaseException, needed: str) -> str:
    """Warns that the pixel metrics are left out for want of memory (``needed``: what they needed) and
    returns the reason, for ``pixel_metrics_error`` in the metrics."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    error = f"out of memory ({reason}): {needed}"
    log.warning("pixel metrics left out (pixel_auroc and aupro are null; image AUROC, F1 and the scores are "
                "kept): %s. For pixel metrics, %s", error, _PIXEL_METRICS_ADVICE)
    return error


def warn_mostly_defect_masks(paths: Sequence[str], masks_read: int) -> None:
    """One warning for the ground-truth masks (``paths``, of ``masks_read`` read) whose defect covers
    more than :data:`MOSTLY_DEFECT` of their image: almost certainly inverted. Said, not refused: the
    image scores are right whatever the masks hold, and only the pixel metrics are off."""
    named = _named_masks(paths)
    log.warning("%d of %d ground-truth mask(s) mark more than %d%% of their image as defect, so are most likely "
                "inverted (a white background around a black defect): %s (all listed under masks_mostly_defect "
                "in the metrics). Defects must be nonzero on a zero (black) background; invert these masks "
                "(255 - mask) and run eval again: this run's pixel metrics take them as they are",
                len(paths), masks_read, round(MOSTLY_DEFECT * 100), named)


def samples_to_evaluate(given: Sequence[Sample] | MVTecDataset | str | Path) -> list[Sample]:
    """The samples to evaluate: ``given`` itself (a sequence of :class:`Sample`), or the test samples of
    an MVTec-layout dataset (an :class:`MVTecDataset`, or its root folder). Anything else is a
    DataError that names what was given and what to pass (a list of paths has no labels)."""
    if isinstance(given, (str, Path)):
        given = MVTecDataset(given)
    if isinstance(given, MVTecDataset):
        return given.test_samples()
    samples = [_as_sample(item) for item in given]
    odd = next((item for item in samples if not isinstance(item, Sample)), None)
    if odd is not None:
        raise DataError(f"evaluation takes Samples (edgecmg.datasets.Sample(path, label, defect_type, mask_path)) "
                        f"or an MVTec-layout folder, not a {type(odd).__name__} ({odd!r:.80}): wrap each image as "
                        "Sample(path, 0 or 1, 'good' or its defect type), or pass the dataset's root folder")
    return samples


def _as_sample(item: object) -> object:
    """A record of the user's own with Sample's fields (a namedtuple, a dataclass: at least ``path``
    and ``label``) as a Sample; anything else as it is, for the caller to name."""
    if isinstance(item, Sample) or not (hasattr(item, "path") and hasattr(item, "label")):
        return item
    kind = getattr(item, "defect_type", None)
    return Sample(item.path, item.label, kind if kind else ("good" if item.label == 0 else "defect"),
                  getattr(item, "mask_path", None))


def check_both_labels(samples: Sequence[Sample]) -> None:
    """A DataError, said before any image is judged, when ``samples`` lack good or defective images:
    every figure eval reports compares the two, so the run would end in "undefined" after judging
    them all."""
    if not samples:
        raise DataError("no test images given: evaluate on good and defective images")
    if all(s.label == 0 for s in samples):
        folder = samples[0].path.parent
        raise DataError(f"all {len(samples)} test images are good parts (the first: {samples[0].path}): eval "
                        "measures how well defects are found, so it needs defect images too (an MVTec root's "
                        "test/<defect type>/ folders, with ground_truth/ masks for the pixel metrics); to check good "
                        f"parts alone, `edgecmg threshold MODEL {folder}` says how many the threshold flags, and "
                        f"`edgecmg predict MODEL {folder} -o DIR` judges each one")
    if all(s.label == 1 for s in samples):
        raise DataError(f"all {len(samples)} test images are defects (the first: {samples[0].path}): eval compares "
                        "their scores with those of good parts, so it needs good images too (an MVTec root's "
                        "test/good/); add good parts the model was not fitted on")


def per_defect_type(records: Sequence[dict]) -> dict[str, dict]:
    """Per kind of defect (MVTec ``test/<type>``) in ``records`` (evaluate_detector's per-image
    records): {images, image_auroc, missed}, its parts' image AUROC against every good part (None
    without good parts) and how many of them the detector passed. The overall figures can hide a
    kind the detector never finds."""
    good = [r["score"] for r in records if r["label"] == 0]
    out = {}
    for kind in sorted({r["defect_type"] for r in records if r["label"] == 1}):
        defects = [r for r in records if r["label"] == 1 and r["defect_type"] == kind]
        scores = [r["score"] for r in defects]
        out[kind] = {"images": len(defects),
                     "image_auroc": auroc([0] * len(good) + [1] * len(scores), good + scores) if good else None,
                     "missed": sum(not r["is_anomaly"] for r in defects)}
    return out


def _readable(paths: Sequence[str | Path], desc: str, progress: Optional[bool],
              skipped: list[str]) -> Iterator[tuple[str | Path, np.ndarray]]:
    """(path, frame) of each readable image of ``paths``, with a ``desc`` progress bar; an unreadable
    one is warned about and its path added to ``skipped``."""
    for path in tqdm(paths, desc=desc, unit="img", disable=not show_progress(progress)):
        try:
            frame = read_image(path)
        except DataError as exc:
            log.warning("skipped: %s", exc)
            skipped.append(str(path))
            continue
        yield path, frame


def _image_list(paths: str | Path | Sequence[str | Path]) -> Sequence[str | Path]:
    """``paths`` as image files: one folder or glob pattern is listed (:func:`list_images`), not taken
    for a sequence of one-character file names."""
    return list_images(paths) if isinstance(paths, (str, Path)) else paths


def threshold_from_good(detector: Detector, paths: str | Path | Sequence[str | Path],
                        quantile: float = ModelConfig.threshold_quantile, *, progress: Optional[bool] = None) -> dict:
    """A threshold set on good images the model has not seen, by fit's rule: the ``quantile`` of their
    image scores, so about 1 - quantile of such parts are flagged, leaving out (and naming) images
    that score far above the rest (see :func:`edgecmg.thresholds.threshold_from_scores`). For frames from the line's own
    capture pipeline, or an INT8 file, whose scores sit apart from those fit set the stored threshold
    on. Images fit trained on score low (their patches are in the memory bank) and would set it too low.

    Returns {schema, edgecmg (the version), threshold, quantile, images, skipped, left_out, stored_threshold,
    stored_flags (of these images), flags (at the new threshold), score_p50, score_max, backend}. Raises DataError when no image reads.

    paths: image files, or one folder or glob pattern (as :func:`edgecmg.imageio.list_images` takes).
    """
    if not 0.0 < quantile <= 1.0:
        raise ConfigError(f"quantile={quantile} (--quantile) must be in (0, 1] (0.99: about 1 good part in 100 "
                          "flagged; 1: the highest of their scores)")
    paths = _image_list(paths)
    scores, names, skipped = [], [], []
    for path, frame in _readable(paths, "threshold", progress, skipped):
        scores.append(detector.predict(frame).score)
        names.append(str(path))
    if not scores:
        raise DataError(f"none of the {len(paths)} good image(s) could be read: no threshold can be set")
    # The q quantile of fewer than 1 / (1 - q) scores is their maximum (the 0.99 quantile needs 100
    # images to be more), and under 20 any quantile is a rough guess (fit's rule for its held-out set).
    enough = FEW_THRESHOLD_IMAGES if quantile == 1.0 else max(FEW_THRESHOLD_IMAGES, int(np.ceil(1 / (1 - quantile))))
    if len(scores) < enough:
        log.warning("the threshold is set on %d good image(s): the %g quantile of fewer than %d scores is about "
                    "their highest, which it then flags; judge %d or more for a threshold to rely on",
                    len(scores), quantile, enough, enough)
    values = np.asarray(scores)
    threshold, left_out = threshold_from_scores(values, quantile, names)
    return {"schema": THRESHOLD_SCHEMA, "edgecmg": __version__, "threshold": threshold, "quantile": quantile,
            "images": len(scores), "skipped": skipped, "left_out": left_out,
            "stored_threshold": float(detector.threshold),
            "stored_flags": int((values >= detector.threshold).sum()), "flags": int((values >= threshold).sum()),
            "score_p50": float(np.median(values)), "score_max": float(values.max()), "backend": detector.backend}


def compare_detectors(reference: Detector, candidate: Detector, paths: str | Path | Sequence[str | Path], *,
                      progress: Optional[bool] = None) -> dict:
    """How far ``candidate``'s image scores move from ``reference``'s on the same images, and which
    verdicts change: an INT8 file against the FP32 model it was calibrated from, before it is deployed
    (a calibration whose ranges clip what good parts show flags them all, with nothing else to say so).

    Each detector judges at its own threshold (an INT8 file keeps its model's). Returns {images,
    skipped, reference_threshold, candidate_threshold, reference_flags, candidate_flags, newly_flagged,
    newly_passed (image paths), max_change, median_change (absolute score differences),
    reference_backend, candidate_backend}. Raises DataError when no image reads.

    paths: image files, or one folder or glob pattern (as :func:`edgecmg.imageio.list_images` takes).
    """
    paths = _image_list(paths)
    changes, skipped, newly_flagged, newly_passed = [], [], [], []
    reference_flags = candidate_flags = 0
    for path, frame in _readable(paths, "compare", progress, skipped):
        before, after = reference.predict(frame), candidate.predict(frame)
        reference_flags += before.is_anomaly
        candidate_flags += after.is_anomaly
        if after.is_anomaly and not before.is_anomaly:
            newly_flagged.append(str(path))
        elif before.is_anomaly and not after.is_anomaly:
            newly_passed.append(str(path))
        changes.append(abs(after.score - before.score))  # NaN where either is: max and median say so
    if not changes:
        raise DataError(f"none of the {len(paths)} image(s) to compare could be read")
    values = np.asarray(changes, dtype=np.float64)
    return {"images": len(changes), "skipped": skipped,
            "reference_threshold": float(reference.threshold), "candidate_threshold": float(candidate.threshold),
            "reference_flags": int(reference_flags), "candidate_flags": int(candidate_flags),
            "newly_flagged": newly_flagged, "newly_passed": newly_passed,
            "max_change": float(values.max()), "median_change": float(np.median(values)),
            "reference_backend": reference.backend, "candidate_backend": candidate.backend}


def pick_hardest(records: list[dict], per_group: int = 4) -> tuple[list[dict], list[dict]]:
    """The ``per_group`` defective records scored lowest (lowest first) and the ``per_group`` good
    ones scored highest (highest first); ties keep the records' order."""
    defects = sorted((r for r in records if r["label"] == 1), key=lambda r: r["score"])
    goods = sorted((r for r in records if r["label"] == 0), key=lambda r: -r["score"])
    return defects[:per_group], goods[:per_group]


def hardest_cases(detector: Detector, samples: Sequence[Sample], records: list[dict], per_group: int = 4
                  ) -> Optional[np.ndarray]:
    """Heat maps of the defective images scored lowest (top row) and the good images scored highest
    (bottom row): where the detector errs first, or would at a stricter or looser threshold. Each
    defect's ground-truth outline is drawn in magenta beside the map's white threshold contour.
    ``records``: evaluate_detector's ``per_image``. A group of fewer than ``per_group`` is padded with
    blank cells; an empty group leaves its row out. Returns uint8 RGB, or None when there is nothing
    to draw (no image, or a threshold <= 0, which the heat map's colour scale cannot take).
    """
    from edgecmg.visualize import contact_sheet

    if not detector.threshold > 0:  # the heat map's colour scale is set by the threshold
        log.warning("hardest.png not drawn: the threshold %g is not positive", detector.threshold)
        return None
    by_file = {str(sample.path): sample for sample in samples}
    rows = [_hardest_row(detector, [by_file[r["file"]] for r in group]) for group in pick_hardest(records, per_group)]
    rows = [row for row in rows if row[0]]
    if not rows:
        return None
    columns = max(len(overlays) for overlays, _ in rows)
    overlays, captions = [], []
    for row_overlays, row_captions in rows:  # a short row is padded, so each group keeps its own row
        blank = np.full_like(row_overlays[0], 40)
        overlays += row_overlays + [blank] * (columns - len(row_overlays))
        captions += row_captions + [""] * (columns - len(row_captions))
    return contact_sheet(overlays, captions, columns=columns, cell_height=_CELL_HEIGHT)


def _hardest_row(detector: Detector, samples: list[Sample]) -> tuple[list[np.ndarray], list[str]]:
    """hardest_cases' overlays and captions of one group of samples."""
    from edgecmg.visualize import overlay_heatmap

    overlays, captions = [], []
    for sample in samples:
        try:
            frame = read_image(sample.path)
        except DataError as exc:  # changed on disk since it was scored
            log.warning("left out of the hardest cases: %s", exc)
            continue
        result = detector.predict(frame)
        # Scaled to the sheet's cell height before the outline is drawn, so the outline stays crisp.
        height, width = frame.shape[:2]
        size = (max(1, round(width * _CELL_HEIGHT / height)), _CELL_HEIGHT)
        # No label in the picture: shrunk to the cell it was 4-pixel type repeating the caption above it.
        overlay = cv2.resize(overlay_heatmap(frame, result.anomaly_map, result.threshold), size,
                             interpolation=cv2.INTER_AREA)
        try:
            mask = sample_mask(sample, frame.shape[:2]) if sample.label == 1 else None
        except DataError as exc:
            log.warning("drawn without its outline: %s", exc)
            mask = None
        if mask is not None and mask.any():
            outline = resize_mask(mask, size[::-1]).astype(np.uint8)
            contours, _ = cv2.findContours(outline, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(overlay, contours, -1, _TRUTH_RGB, thickness=1)
        if sample.label == 1:
            verdict = "defect, caught" if result.is_anomaly else "defect, MISSED"
        else:
            verdict = "good, FLAGGED" if result.is_anomaly else "good, passed"
        overlays.append(overlay)
        captions.append(f"{verdict}\n{result.score / detector.threshold:.2f}x threshold\n{sample.path.name}")
    return overlays, captions


def write_report(out: Path, metrics: dict, records: list[dict], threshold: float, data_name: str, *,
                 detector: Optional[Detector] = None, samples: Optional[Sequence[Sample]] = None,
                 written: Optional[list[str]] = None) -> None:
    """metrics.json, scores.csv (``records``: evaluate_detector's ``per_image``) and scores.png, the
    histogram of good and defective image scores against ``threshold``, into the folder ``out``; with
    ``detector`` and ``samples`` (those evaluated) also hardest.png (:func:`hardest_cases`).
    written: a list each file's name is added to once it is whole, so that a caller can say what a
    report that failed part-way (a full disk) left."""
    from edgecmg.visualize import save_png, score_histogram

    written = [] if written is None else written
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "metrics.json", (json_text(metrics, indent=2) + "\n").encode("utf-8"),
                       what="the report", sync=False)
    written.append("metrics.json")
    rows = io.StringIO(newline="")  # whole before it is written, as every file edgecmg writes
    writer = csv.DictWriter(rows, fieldnames=SCORE_FIELDS)
    writer.writeheader()
    writer.writerows({key: spreadsheet_cell(value) for key, value in record.items()} for record in records)
    # A file name that is not UTF-8 (caf\xe9.jpg from Latin-1, legal on Linux) as metrics.json and stream's
    # reports write it, caf\udce9.jpg: its raw byte would make the whole file unreadable to a UTF-8 reader.
    atomic_write_bytes(out / "scores.csv", rows.getvalue().encode("utf-8", "backslashreplace"), what="the report",
                       sync=False)
    written.append("scores.csv")
    auroc = metrics.get("image_auroc")
    title = f"{data_name}: {len(records)} test images" + ("" if auroc is None else f", image AUROC {auroc:.4f}")
    good = [r["score"] for r in records if r["label"] == 0]
    defective = [r["score"] for r in records if r["label"] == 1]
    if records:
        save_png(out / "scores.png", score_histogram(good, defective, threshold, title=title))
        written.append("scores.png")
    sheet = None
    if detector is not None and samples is not None and records:
        sheet = hardest_cases(detector, samples, records)
    if sheet is not None:
        save_png(out / "hardest.png", sheet)
        written.append("hardest.png")
    else:
        (out / "hardest.png").unlink(missing_ok=True)  # an earlier run's (eval --overwrite) would describe it
    log.info("eval report: %s (%s)", out, ", ".join(written))
