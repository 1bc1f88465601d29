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
                                                                                tmp_path):
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
