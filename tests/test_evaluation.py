import numpy as np

from edgecmg.evaluation import pick_hardest, resize_mask


def test_resize_mask_keeps_a_one_pixel_crack_when_downscaling():
    mask = np.zeros((645, 256), bool)
    mask[300, 40:200] = True  # a one-pixel crack, as in KolektorSDD
    out = resize_mask(mask, (192, 512))
    assert out.shape == (512, 192) and out.dtype == bool
    rows = np.flatnonzero(out.any(axis=1))
    assert 1 <= len(rows) <= 2 and abs(rows[0] - 300 * 512 / 645) <= 1.5
    assert abs(int(out[rows[0]].sum()) - 160 * 192 / 256) <= 3


def test_resize_mask_keeps_a_region_and_an_empty_mask():
    mask = np.zeros((100, 100), bool)
    mask[20:60, 30:70] = True
    assert resize_mask(mask, (50, 50)).sum() == 400
    assert not resize_mask(np.zeros((64, 64), bool), (32, 48)).any()


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
