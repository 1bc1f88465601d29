from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecmg.evaluation import pick_hardest, resize_mask


def test_resize_mask_keeps_a_one_pixel_crack_when_downscaling():
    mask = np.zeros((645, 256), bool)
    mask[300, 40:200] = True  # a one-pixel crack, as in KolektorSDD
    out = resize_mask(mask, (512, 192))  # (height, width)
    assert out.shape == (512, 192) and out.dtype == bool
    rows = np.flatnonzero(out.any(axis=1))
    assert 1 <= len(rows) <= 2 and abs(rows[0] - 300 * 512 / 645) <= 1.5
    assert abs(int(out[rows[0]].sum()) - 160 * 192 / 256) <= 3


def test_resize_mask_keeps_a_region_and_an_empty_mask():
    mask = np.zeros((100, 100), bool)
    mask[20:60, 30:70] = True
    assert resize_mask(mask, (50, 50)).sum() == 400
    empty = resize_mask(np.zeros((64, 64), bool), (32, 48))
    assert empty.shape == (32, 48) and not empty.any()


def test_pick_hardest_takes_the_lowest_defects_and_the_highest_good_parts():
    scores = {"a": (1, 0.9), "b": (1, 0.2), "c": (0, 0.7), "d": (1, 0.5), "e": (0, 0.1), "f": (0, 0.8), "g": (0, 0.7)}
    records = [{"file": name, "label": label, "score": score} for name, (label, score) in scores.items()]
    defects, goods = pick_hardest(records, per_group=2)
    assert [r["file"] for r in defects] == ["b", "d"]
    assert [r["file"] for r in goods] == ["f", "c"]  # c before g: equal scores keep their order
    defects, goods = pick_hardest([r for r in records if r["label"] == 0], per_group=9)
    assert defects == [] and [r["file"] for r in goods] == ["f", "c", "g", "e"]


def test_hardest_cases_keeps_each_group_on_its_own_row(small_artifact, kolektor_root):
    """One defect and three good parts: the defect's row is padded with blank cells, so no good part
    moves up into it; only that row carries a ground-truth outline."""
    from edgecmg.datasets import MVTecDataset
    from edgecmg.detector import Detector
    from edgecmg.evaluation import evaluate_detector, hardest_cases

    samples = MVTecDataset(kolektor_root).test_samples()
    chosen = [s for s in samples if s.label == 1][:1] + [s for s in samples if s.label == 0][:3]
    detector = Detector.load(small_artifact, backend="torch")
    records = evaluate_detector(detector, chosen, progress=False, per_image=True)["per_image"]
    sheet = hardest_cases(detector, chosen, records)
    cell_h = 320 + 4 + 3 * 18 + 4
    assert sheet.shape[0] == 2 * cell_h
    column_w = sheet.shape[1] // 3
    magenta = (sheet == np.array([255, 0, 255], np.uint8)).all(axis=2)
    assert magenta[:cell_h, :column_w].any() and not magenta[:, column_w:].any() and not magenta[cell_h:].any()
    # the two padded cells: an empty caption strip above a blank gray picture
    assert sheet[:60, column_w:].max() <= 40 and (sheet[64:cell_h - 4, column_w:] == 40).all()
    detector.threshold = 0.0  # the heat map's colour scale needs a positive threshold: nothing is drawn
    assert hardest_cases(detector, chosen, records) is None


def test_threshold_from_good_takes_a_folder_and_the_highest_score_at_quantile_1(small_artifact, kolektor_root,
                                                                                tmp_path, capsys):
    """A folder given as one string is listed, not read one character at a time (as it was)."""
    import shutil

    from edgecmg.detector import Detector
    from edgecmg.evaluation import threshold_from_good
    from edgecmg.imageio import read_image

    folder = tmp_path / "good frames"
    folder.mkdir()
    for path in sorted((kolektor_root / "test" / "good").iterdir())[:3]:
        shutil.copy(path, folder / path.name)
    detector = Detector.load(small_artifact, backend="torch")
    found = threshold_from_good(detector, str(folder), quantile=1.0, progress=False)
    scores = [detector.predict(read_image(p)).score for p in sorted(folder.iterdir())]
    assert found["images"] == 3 and found["threshold"] == pytest.approx(max(scores))
    assert found["flags"] == 1  # score >= threshold: the highest itself
    # the stored threshold counts its flags by the same rule: a score equal to it is flagged
    detector.threshold = found["threshold"]
    capsys.readouterr()
    again = threshold_from_good(detector, str(folder), quantile=1.0)  # stderr is no terminal here: no bar
    assert again["stored_threshold"] == found["threshold"] and again["stored_flags"] == 1
    assert "threshold:" not in capsys.readouterr().err
    threshold_from_good(detector, str(folder), quantile=1.0, progress=True)
    assert "threshold: 100%" in capsys.readouterr().err


def test_evaluation_whose_defective_images_all_fail_to_read_says_so(small_artifact, tmp_path):
    from edgecmg.datasets import Sample
    from edgecmg.detector import Detector
    from edgecmg.errors import DataError
    from edgecmg.evaluation import evaluate_detector

    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.full((64, 32, 3), 128, np.uint8))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    samples = [Sample(good, 0, "good"), Sample(broken, 1, "crack")]
    with pytest.raises(DataError, match=r"none of the 1 defective test image\(s\) could be read \(the first: .*broken"):
        evaluate_detector(Detector.load(small_artifact, backend="torch"), samples, progress=False)


def test_write_report_removes_an_earlier_hardest_png_it_does_not_redraw(tmp_path):
    """eval --overwrite into a folder whose hardest.png this run does not draw (no detector given, or
    a threshold <= 0): the earlier picture would describe another run, so it goes."""
    import json

    from edgecmg.evaluation import write_report

    stale = tmp_path / "hardest.png"
    stale.write_bytes(b"an earlier run's")
    records = [{"file": "a.png", "defect_type": "good", "label": 0, "score": 0.1, "is_anomaly": False},
               {"file": "b.png", "defect_type": "crack", "label": 1, "score": 0.9, "is_anomaly": True}]
    write_report(tmp_path, {"image_auroc": 1.0}, records, 0.5, "part")
    assert not stale.exists()
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"image_auroc": 1.0}
    assert (tmp_path / "scores.csv").read_text().splitlines()[2] == "b.png,crack,1,0.9,True"
    assert cv2.imread(str(tmp_path / "scores.png")) is not None


def test_a_defect_image_without_a_mask_is_left_out_of_the_pixel_metrics(small_artifact, kolektor_root, caplog):
    """Its pixels are unknown, not good: counted as good they would turn its defect into false alarms."""
    import dataclasses

    from edgecmg.datasets import MVTecDataset
    from edgecmg.detector import Detector
    from edgecmg.evaluation import evaluate_detector

    samples = MVTecDataset(kolektor_root).test_samples()
    defects = [s for s in samples if s.label == 1 and s.mask_path is not None][:3]
    known = [s for s in samples if s.label == 0][:2] + defects[:2]
    unmasked = dataclasses.replace(defects[2], mask_path=None)
    detector = Detector.load(small_artifact, backend="torch")
    with_it = evaluate_detector(detector, known + [unmasked], progress=False)
    without = evaluate_detector(detector, known, progress=False)
    assert with_it["images"] == 5 and with_it["pixel_auroc"] is not None
    for key in ("pixel_auroc", "aupro"):
        assert with_it[key] == pytest.approx(without[key]), key
    assert "1 defect image(s) without a mask left out" in caplog.text


def test_hardest_cases_captions_say_each_parts_verdict(small_artifact, kolektor_root, monkeypatch):
    """The caption under each heat map says whether the part was caught, missed, flagged or passed at
    the detector's threshold, and its score against it."""
    import edgecmg.visualize as visualize
    from edgecmg.datasets import MVTecDataset
    from edgecmg.detector import Detector
    from edgecmg.evaluation import evaluate_detector, hardest_cases

    samples = MVTecDataset(kolektor_root).test_samples()
    chosen = [s for s in samples if s.label == 1][:1] + [s for s in samples if s.label == 0][:1]
    detector = Detector.load(small_artifact, backend="torch")
    records = evaluate_detector(detector, chosen, progress=False, per_image=True)["per_image"]
    drawn = []
    real_sheet = visualize.contact_sheet
    monkeypatch.setattr(visualize, "contact_sheet",
                        lambda images, captions, **kw: drawn.append(captions) or real_sheet(images, captions, **kw))
    scores = [r["score"] for r in records]
    for threshold, verdicts in ((min(scores) / 2, ["defect, caught", "good, FLAGGED"]),
                                (max(scores) * 2, ["defect, MISSED", "good, passed"])):
        detector.threshold = threshold
        assert hardest_cases(detector, chosen, records) is not None
        captions = drawn[-1]
        assert [c.split("\n")[0] for c in captions] == verdicts
        assert captions[1].split("\n")[1] == f"{records[1]['score'] / threshold:.2f}x threshold"


def test_masks_that_look_inverted_are_named_in_one_warning_and_the_run_goes_on(small_artifact, kolektor_root,
                                                                                 tmp_path, caplog):
    """Four KolektorSDD defects whose masks were saved inverted (a black defect on white): eval keeps
    every image and its pixel metrics, and says once which masks, how many, and what to do; the two
    defects with their real masks are not named."""
    import logging

    from edgecmg.datasets import MVTecDataset, Sample
    from edgecmg.detector import Detector
    from edgecmg.evaluation import evaluate_detector

    samples = MVTecDataset(kolektor_root).test_samples()
    defects = [s for s in samples if s.label == 1][:6]
    inverted = []
    for sample in defects[2:]:
        truth = cv2.imread(str(sample.mask_path), cv2.IMREAD_GRAYSCALE)
        path = tmp_path / "defect" / sample.mask_path.name
        path.parent.mkdir(exist_ok=True)
        assert cv2.imwrite(str(path), 255 - truth)
        inverted.append(Sample(sample.path, 1, "defect", path))
    chosen = [s for s in samples if s.label == 0][:2] + defects[:2] + inverted
    caplog.set_level(logging.WARNING, logger="edgecmg")
    metrics = evaluate_detector(Detector.load(small_artifact, backend="torch"), chosen, progress=False)
    assert metrics["images"] == 8 and metrics["pixel_auroc"] is not None and metrics["masks_skipped"] == []
    assert metrics["masks_mostly_defect"] == [str(s.mask_path) for s in inverted]
    said = [r.getMessage() for r in caplog.records if "ground-truth mask" in r.getMessage()]
    assert len(said) == 1
    names = [f"defect/{s.mask_path.name}" for s in inverted]
    assert said[0].startswith("4 of 6 ground-truth mask(s) mark more than 50% of their image as defect")
    assert f"{', '.join(names[:3])} and 1 more" in said[0] and names[3] not in said[0]
    assert "Defects must be nonzero on a zero (black) background; invert these masks" in said[0]
    assert not any(s.mask_path.name in said[0] for s in defects[:2])


def test_compare_detectors_counts_the_verdicts_each_gives_and_names_the_ones_that_change(small_artifact,
                                                                                         kolektor_root, tmp_path):
    from edgecmg.detector import Detector
    from edgecmg.evaluation import compare_detectors
    from edgecmg.imageio import read_image

    good = sorted((kolektor_root / "test" / "good").iterdir())[:4]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with Detector.load(small_artifact, backend="torch") as reference:
        scores = [reference.predict(read_image(p)).score for p in good]
        # the candidate: the same model, its threshold between the second and third lowest score
        middle = sorted(scores)[1:3]
        with Detector.load(small_artifact, backend="torch", threshold=sum(middle) / 2) as candidate:
            reference.threshold = max(scores) + 1.0  # passes all four
            found = compare_detectors(reference, candidate, [*good, broken], progress=False)
    assert found["images"] == 4 and found["skipped"] == [str(broken)]
    assert (found["reference_flags"], found["candidate_flags"]) == (0, 2)
    high = [str(p) for p, s in zip(good, scores) if s >= sum(middle) / 2]
    assert found["newly_flagged"] == high and found["newly_passed"] == []
    assert found["max_change"] == 0.0 and found["median_change"] == 0.0  # one model: the scores are the same
    assert found["reference_backend"] == found["candidate_backend"] == "torch"
    from edgecmg.errors import DataError

    with pytest.raises(DataError, match="none of the 1 image"):
        with Detector.load(small_artifact, backend="torch") as detector:
            compare_detectors(detector, detector, [broken])


def _few_test_samples(kolektor_root):
    from edgecmg.datasets import MVTecDataset

    samples = MVTecDataset(kolektor_root).test_samples()
    return [s for s in samples if s.label == 0][:3] + [s for s in samples if s.label == 1 and s.mask_path][:3]


def test_pixel_metrics_that_run_out_of_memory_leave_the_image_metrics_and_say_what_they_needed(
        small_artifact, kolektor_root, monkeypatch, caplog):
    """Memory runs out at the very end, in the pixel metrics, after every image was judged: the image
    metrics and scores are kept, the pixel figures are None with the reason, and the warning says what
    they needed and what to change."""
    import logging

    import edgecmg.evaluation as evaluation
    from edgecmg.detector import Detector

    samples = _few_test_samples(kolektor_root)
    detector = Detector.load(small_artifact, backend="torch")
    whole = evaluation.evaluate_detector(detector, samples, progress=False, per_image=True)
    assert whole["pixel_auroc"] is not None and "pixel_metrics_error" not in whole

    def run_out(masks, maps, **kwargs):  # a real failed allocation, as a test set too large for the RAM meets it
        return np.empty(1 << 50, dtype=np.uint8)

    monkeypatch.setattr(evaluation, "pixel_metrics", run_out)
    caplog.set_level(logging.WARNING, logger="edgecmg")
    short = evaluation.evaluate_detector(detector, samples, progress=False, per_image=True)
    assert short["pixel_auroc"] is None and short["aupro"] is None
    for key in ("image_auroc", "f1_max", "images", "good_flagged", "defects_missed", "per_image", "pixel_metrics_over"):
        assert short[key] == whole[key], key
    h, w = detector.input_size
    error = short["pixel_metrics_error"]
    assert error.startswith("out of memory (Unable to allocate") and f"6 maps and masks of {h}x{w} took " in error
    said = [r.getMessage() for r in caplog.records if "pixel metrics left out" in r.getMessage()]
    assert len(said) == 1 and error in said[0]
    assert ("evaluate fewer test images per run, use a model fitted with a smaller --input-size, or run on a "
            "machine with more memory") in said[0]


def test_maps_too_large_to_set_aside_are_said_before_any_image_is_judged(small_artifact, kolektor_root, caplog):
    """The maps and masks are set aside before the first image: where that allocation fails (a memory
    limit, or a model whose input is too large for the test set), the warning comes at once, and the
    images are judged for the image metrics alone."""
    import logging

    from edgecmg.detector import Detector
    from edgecmg.evaluation import evaluate_detector

    class HugeInput:  # the real model, said to take 8M x 8M inputs: 6 maps need about 1.7 PB
        input_size = (1 << 23, 1 << 23)

        def __init__(self, real):
            self.real = real

        def __getattr__(self, name):
            return getattr(self.real, name)

    samples = _few_test_samples(kolektor_root)
    detector = Detector.load(small_artifact, backend="torch")
    judged = []  # per image judged: the warnings said by then

    def said():
        return [r.getMessage() for r in caplog.records if "pixel metrics left out" in r.getMessage()]

    detector.predict = lambda frame, _predict=detector.predict: judged.append(len(said())) or _predict(frame)
    caplog.set_level(logging.WARNING, logger="edgecmg")
    metrics = evaluate_detector(HugeInput(detector), samples, progress=False)
    assert judged == [1] * 6 and len(said()) == 1  # said once, before the first image
    assert (metrics["pixel_auroc"], metrics["aupro"]) == (None, None) and metrics["images"] == 6
    assert metrics["image_auroc"] == evaluate_detector(detector, samples, progress=False)["image_auroc"]
    error = metrics["pixel_metrics_error"]
    assert error.startswith("out of memory (Unable to allocate") and error in said()[0]
    assert "holding the anomaly maps and masks of 6 test images at 8388608x8388608 needs" in error
    assert "pixel_metrics_over" not in metrics


def _mini_mvtec(kolektor_root, root):
    """An MVTec folder of three good and three defective KolektorSDD test parts, with their masks."""
    import shutil

    for sample in _few_test_samples(kolektor_root):
        folder = root / "test" / sample.defect_type
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(sample.path, folder / sample.path.name)
        if sample.mask_path is not None:
            masks = root / "ground_truth" / sample.defect_type
            masks.mkdir(parents=True, exist_ok=True)
            shutil.copy(sample.mask_path, masks / sample.mask_path.name)
    (root / "train" / "good").mkdir(parents=True)
    return root


def test_evaluate_detector_takes_an_mvtec_root_or_dataset_as_well_as_samples(small_artifact, kolektor_root, tmp_path):
    """The SDK's own dataset, or its folder, failed with AttributeError / TypeError."""
    from edgecmg.datasets import MVTecDataset
    from edgecmg.detector import Detector
    from edgecmg.errors import DataError
    from edgecmg.evaluation import evaluate_detector

    root = _mini_mvtec(kolektor_root, tmp_path / "mini")
    with Detector.load(small_artifact, backend="torch") as detector:
        given = evaluate_detector(detector, MVTecDataset(root).test_samples(), progress=False)
        for other in (root, str(root), MVTecDataset(root)):
            found = evaluate_detector(detector, other, progress=False)
            assert found["image_auroc"] == given["image_auroc"] and found["pixel_auroc"] == given["pixel_auroc"]
        assert given["pixel_auroc"] is not None
        paths = [s.path for s in MVTecDataset(root).test_samples()]
        with pytest.raises(DataError, match=r"evaluation takes Samples .* not a PosixPath .*pass the dataset's root"):
            evaluate_detector(detector, paths, progress=False)


def test_a_sample_is_labelled_0_or_1_and_its_paths_are_paths():
    from edgecmg.datasets import Sample
    from edgecmg.errors import DataError

    sample = Sample("a/b.png", True, "crack", "gt/b_mask.png")
    assert sample.path == Path("a/b.png") and sample.label == 1 and type(sample.label) is int
    assert sample.mask_path == Path("gt/b_mask.png") and Sample("a.png", np.int64(0), "good").label == 0
    for label in ("good", 2, -1, 0.5, None):
        with pytest.raises(DataError, match=rf"Sample a.png: label={label!r}; give 0 for a good part, 1 for a defect"):
            Sample("a.png", label, "good")


def test_compare_and_threshold_read_a_folder_or_glob_given_as_one_string(small_artifact, kolektor_root, tmp_path):
    """compare_detectors("folder/") read the string as 39 one-character file names."""
    import shutil

    from edgecmg.detector import Detector
    from edgecmg.evaluation import compare_detectors

    for path in sorted((kolektor_root / "test" / "good").iterdir())[:3]:
        shutil.copy(path, tmp_path / path.name)
    with Detector.load(small_artifact, backend="torch") as detector:
        for given in (tmp_path, str(tmp_path), str(tmp_path / "*.jpg")):
            found = compare_detectors(detector, detector, given, progress=False)
            assert found["images"] == 3 and found["skipped"] == []


def test_samples_take_numeric_labels_and_records_of_the_users_own(small_artifact, kolektor_root, tmp_path):
    """pandas gives float labels where a column holds a NaN, and a namedtuple with Sample's fields is
    the natural record: both were refused after Sample began checking its label."""
    from collections import namedtuple

    import torch

    from edgecmg.datasets import MVTecDataset, Sample
    from edgecmg.detector import Detector
    from edgecmg.evaluation import evaluate_detector

    assert [Sample("a.png", label, "x").label for label in (1.0, np.float32(0), torch.tensor(1), np.bool_(True))] \
        == [1, 0, 1, 1]
    root = _mini_mvtec(kolektor_root, tmp_path / "mini")
    samples = MVTecDataset(root).test_samples()
    Record = namedtuple("Record", "path label")
    with Detector.load(small_artifact, backend="torch") as detector:
        given = evaluate_detector(detector, samples, progress=False)
        as_records = evaluate_detector(detector, [Record(str(s.path), float(s.label)) for s in samples], progress=False)
    assert as_records["image_auroc"] == given["image_auroc"] and as_records["pixel_auroc"] is None  # no masks given
