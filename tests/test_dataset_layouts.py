"""Other benchmarks' dataset layouts, built from real KolektorSDD images: read right, or refused with
what to change, never scored wrongly without a word (an audit of fit and eval on MVTec AD 2, MVTec
LOCO, VisA, BTAD and KolektorSDD 2 layouts found each of these silent)."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecmg.datasets import MVTecDataset
from edgecmg.errors import DataError


def _copy(files, folder: Path, rename=lambda name: name) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(f, folder / rename(f.name))) for f in files]


def _layout(kolektor_root: Path, root: Path, good="good", test="test", masks="ground_truth") -> Path:
    """An MVTec-like layout of 3 train, 2 good test and 2 defect test images with their masks."""
    _copy(sorted((kolektor_root / "train" / "good").iterdir())[:3], root / "train" / "good")
    _copy(sorted((kolektor_root / "test" / "good").iterdir())[:2], root / test / good)
    defects = sorted((kolektor_root / "test" / "defect").iterdir())[:2]
    _copy(defects, root / test / "defect")
    _copy([kolektor_root / "ground_truth" / "defect" / f"{d.stem}_mask.png" for d in defects],
          root / (masks if masks else test + "/ground_truth") / "defect")
    return root


@pytest.mark.parametrize("folder", ["ground_truth", "masks"])
def test_masks_moved_into_test_are_refused_rather_than_scored_as_defects(kolektor_root, tmp_path, folder):
    root = _layout(kolektor_root, tmp_path / "d", masks=f"test/{folder}")
    with pytest.raises(DataError, match=rf"test/{folder} is a folder of masks inside test/.*move it next to test/ "
                                        rf"as .*d/ground_truth"):
        MVTecDataset(root).test_samples()


@pytest.mark.parametrize("name", ["ok", "normal", "Good"])
def test_a_test_folder_of_good_parts_named_otherwise_is_refused_rather_than_counted_as_defects(kolektor_root,
                                                                                                tmp_path, name):
    root = _layout(kolektor_root, tmp_path / "d", good=name)
    with pytest.raises(DataError, match=rf"test/{name}: only test/good holds good parts.*rename the folder to good"):
        MVTecDataset(root).test_samples()


def test_mvtec_ad_2_is_read_from_test_public_with_its_masks_inside_it(kolektor_root, tmp_path):
    root = tmp_path / "ad2"
    _layout(kolektor_root, root, test="test_public", masks="test_public/ground_truth")
    (root / "test_public" / "defect").rename(root / "test_public" / "bad")
    (root / "test_public" / "ground_truth" / "defect").rename(root / "test_public" / "ground_truth" / "bad")
    samples = MVTecDataset(root).test_samples()
    assert [(s.label, s.defect_type) for s in samples] == [(1, "bad"), (1, "bad"), (0, "good"), (0, "good")]
    assert all(s.mask_path is not None and s.mask_path.parent == root / "test_public" / "ground_truth" / "bad"
               for s in samples if s.label)
    assert MVTecDataset(root).defect_types() == ["bad"]


def test_mvtec_locos_folder_of_masks_per_image_is_named(kolektor_root, tmp_path, caplog):
    root = _layout(kolektor_root, tmp_path / "loco")
    for mask in sorted((root / "ground_truth" / "defect").iterdir()):
        folder = mask.parent / mask.name[:-len("_mask.png")]
        folder.mkdir()
        mask.rename(folder / "000.png")
    caplog.set_level(logging.WARNING, logger="edgecmg")
    samples = MVTecDataset(root).test_samples()
    assert [s.mask_path for s in samples if s.label] == [None, None]
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and said[0].startswith("2 defect test image(s) have a folder of masks rather than a mask "
                                                 "file") and "the MVTec LOCO layout" in said[0], said


def test_masks_saved_beside_their_images_are_neither_judged_nor_trained_on(kolektor_root, tmp_path, caplog):
    from edgecmg.fit import training_images

    root = _layout(kolektor_root, tmp_path / "d", masks=None)
    shutil.rmtree(root / "test" / "ground_truth")
    defects = sorted((root / "test" / "defect").iterdir())
    for image in defects:  # KolektorSDD 2's <name>_GT.png beside <name>.jpg
        mask = kolektor_root / "ground_truth" / "defect" / f"{image.stem}_mask.png"
        shutil.copy(mask, image.parent / f"{image.stem}_GT.png")
    caplog.set_level(logging.WARNING, logger="edgecmg")
    samples = MVTecDataset(root).test_samples()
    assert sorted(s.path for s in samples if s.label) == defects
    assert "2 file(s) named as masks of the images beside them are not judged" in caplog.text
    train = root / "train" / "good"
    image = sorted(train.iterdir())[0]
    shutil.copy(kolektor_root / "ground_truth" / "defect" / f"{defects[0].stem}_mask.png",
                train / f"{image.stem}_label.png")
    caplog.clear()
    assert [p.name for p in training_images(train)] == sorted(p.name for p in train.iterdir()
                                                               if "_label" not in p.name)
    assert f"1 file(s) named as masks of the images beside them are not trained on: {train / image.stem}_label.png" \
        in caplog.text


def test_fit_names_training_images_taken_from_a_datasets_defects_or_masks(kolektor_root, tmp_path, caplog):
    from edgecmg.fit import training_images

    root = _layout(kolektor_root, tmp_path / "d")
    caplog.set_level(logging.WARNING, logger="edgecmg")
    assert len(training_images(str(root / "train" / "good"))) == 3 and not caplog.records
    every = training_images(str(root / "**" / "*.*"))  # the glob a generic hint once suggested
    assert len(every) == 9
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and said[0].startswith("4 of the 9 training images are in a dataset's folders of defects "
                                                 "or masks"), said
    caplog.clear()
    training_images(root / "test" / "defect")
    assert "2 of the 2 training images" in caplog.text
    caplog.clear()
    visa = tmp_path / "candle" / "Data"  # VisA as it comes: Images/Normal, Images/Anomaly, Masks/Anomaly
    _copy(sorted((kolektor_root / "test" / "good").iterdir())[:2], visa / "Images" / "Normal")
    _copy(sorted((kolektor_root / "test" / "defect").iterdir())[:2], visa / "Images" / "Anomaly")
    _copy(sorted((kolektor_root / "ground_truth" / "defect").iterdir())[:2], visa / "Masks" / "Anomaly")
    assert len(training_images(visa / "Images" / "Normal")) == 2 and not caplog.records
    training_images(str(visa / "**" / "*.png"))
    assert "2 of the 2 training images are in a dataset's folders of defects or masks" in caplog.text
    with pytest.raises(DataError, match=r"holds no image files of its own, only sub-folders that do \(Images, "
                                        r"Masks\).*pass the one that holds good parts only"):
        training_images(visa)


def test_fit_refuses_a_folder_of_categories_and_names_btads_train_ok(kolektor_root, tmp_path):
    from edgecmg.fit import training_images

    for category in ("bottle", "cable"):
        _layout(kolektor_root, tmp_path / "mvtec" / category)
    with pytest.raises(DataError, match=r"a folder of categories \(bottle, cable\): fit one model per category; "
                                        r"pass one category folder"):
        training_images(tmp_path / "mvtec")
    btad = _layout(kolektor_root, tmp_path / "btad")
    (btad / "train" / "good").rename(btad / "train" / "ok")
    with pytest.raises(DataError, match=r"no train/good folder.*\(train/ holds ok: rename the folder of good parts "
                                        r"to good\)"):
        training_images(btad)


def _rgba(colour: int, alpha: np.ndarray) -> np.ndarray:
    image = np.full(alpha.shape + (4,), colour, np.uint8)
    image[:, :, 3] = alpha
    return image


@pytest.mark.parametrize("colour", [0, 255])
def test_an_rgba_mask_of_one_colour_is_read_by_its_alpha(tmp_path, colour):
    from edgecmg.imageio import read_mask

    alpha = np.zeros((20, 30), np.uint8)
    alpha[5:9, 10:20] = 255
    path = tmp_path / "overlay.png"
    assert cv2.imwrite(str(path), _rgba(colour, alpha))
    assert np.array_equal(read_mask(path), alpha > 0)
    drawn = _rgba(0, np.full((20, 30), 255, np.uint8))  # opaque, the defect in colour: read by colour
    drawn[2:4, 3:6, 2] = 255
    assert cv2.imwrite(str(path), drawn)
    assert read_mask(path).sum() == 6


def test_an_empty_mask_of_a_defect_is_named_and_listed(small_artifact, kolektor_root, tmp_path, caplog):
    from edgecmg.datasets import Sample
    from edgecmg.detector import Detector
    from edgecmg.evaluation import evaluate_detector

    samples = MVTecDataset(kolektor_root).test_samples()
    defects = [s for s in samples if s.label][:3]
    empty = tmp_path / "defect" / defects[2].mask_path.name
    empty.parent.mkdir()
    assert cv2.imwrite(str(empty), np.zeros(cv2.imread(str(defects[2].mask_path)).shape[:2], np.uint8))
    chosen = [s for s in samples if not s.label][:2] + defects[:2] + [Sample(defects[2].path, 1, "defect", empty)]
    caplog.set_level(logging.WARNING, logger="edgecmg")
    metrics = evaluate_detector(Detector.load(small_artifact, backend="torch"), chosen, progress=False)
    assert metrics["masks_empty"] == [str(empty)] and metrics["pixel_auroc"] is not None
    said = [r.getMessage() for r in caplog.records if "marks no defect pixel" in r.getMessage()]
    assert said == [f"1 defect test image(s) have a mask that marks no defect pixel: defect/{empty.name} (all listed "
                    "under masks_empty in the metrics); this run's pixel metrics take their pixels as defect-free; "
                    "draw the defect in them (nonzero on a zero background), or remove them to leave those images "
                    "out"]


def test_eval_says_the_masks_were_unusable_rather_than_missing(small_artifact, kolektor_root, tmp_path, capsys):
    from edgecmg.cli import main

    root = _layout(kolektor_root, tmp_path / "d")
    for mask in (root / "ground_truth" / "defect").iterdir():  # half size: named in a warning and left out
        image = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)
        assert cv2.imwrite(str(mask), cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2)))
    assert main(["-q", "eval", str(small_artifact), str(root), "--backend", "torch"]) == 0
    out = capsys.readouterr().out
    assert "pixel_auroc: n/a (no usable masks: see masks_skipped)" in out and "(no masks)" not in out


def test_a_pattern_whose_extension_is_in_the_other_case_names_the_one_that_matches(kolektor_root, tmp_path):
    from edgecmg.imageio import list_images

    _copy(sorted((kolektor_root / "test" / "good").iterdir())[:2], tmp_path / "Normal",
          rename=lambda name: name.rsplit(".", 1)[0] + ".JPG")  # VisA's upper-case extension
    with pytest.raises(DataError, match=r"no image files match the pattern .*\*\.jpg.*; '.*Normal/\*\.JPG' matches 2 "
                                        r"image file\(s\): patterns are case-sensitive"):
        list_images(str(tmp_path / "Normal" / "*.jpg"))
    with pytest.raises(DataError, match=r"check the pattern$"):  # nothing in either case: no hint
        list_images(str(tmp_path / "Normal" / "*.png"))


def test_visas_own_layout_is_named_with_how_to_lay_it_out(kolektor_root, tmp_path):
    visa = tmp_path / "candle"
    _copy(sorted((kolektor_root / "test" / "good").iterdir())[:2], visa / "Data" / "Images" / "Normal")
    with pytest.raises(DataError, match=r"in VisA's own layout \(Data/Images, Data/Masks\): lay it out as MVTec by "
                                        r"VisA's split_csv/1cls.csv"):
        MVTecDataset(visa)


def test_masks_in_a_folder_not_named_ground_truth_are_pointed_at(kolektor_root, tmp_path, caplog):
    root = _layout(kolektor_root, tmp_path / "d", masks="masks")
    caplog.set_level(logging.WARNING, logger="edgecmg")
    samples = MVTecDataset(root).test_samples()
    assert [s.mask_path for s in samples if s.label] == [None, None]
    said = [r.getMessage() for r in caplog.records]
    assert said == [f"no ground_truth/ folder under {root}, but {root / 'masks'} holds folders named as its defect "
                    "types: the defect test images get no masks, and pixel metrics are not taken; if it holds the "
                    "masks, rename it to ground_truth"]


def test_review_followups_on_layouts(kolektor_root, tmp_path, caplog, monkeypatch):
    """A folder of per-day sub-folders gets the glob; a folder fit may not enter (lost+found) is passed
    over, not a PermissionError; a copy of test/ beside it is not taken for masks; a good part's
    file named as another's mask is not said to have its masks under ground_truth/good."""
    from pathlib import Path

    from edgecmg.fit import training_images

    days = tmp_path / "days"
    for day in ("day1", "day2"):
        _copy(sorted((kolektor_root / "train" / "good").iterdir())[:1], days / day)
    with pytest.raises(DataError, match=r"where every sub-folder holds good parts only \(one a day, say\), a glob "
                                        r"such as '.*days/\*\*/\*\.png'"):
        training_images(days)
    shelf = tmp_path / "shelf"
    _copy(sorted((kolektor_root / "train" / "good").iterdir())[:8], shelf)
    (shelf / "lost+found").mkdir()
    real_is_dir = Path.is_dir

    def no_entry(path):  # what Python 3.11 does for a folder it may not enter (tests run as root here)
        if path.parent.name == "lost+found":  # the folder itself is listed; what is inside it is not
            raise PermissionError(13, "Permission denied", str(path))
        return real_is_dir(path)

    monkeypatch.setattr(Path, "is_dir", no_entry)
    assert len(training_images(shelf)) == 8
    monkeypatch.undo()
    root = _layout(kolektor_root, tmp_path / "d", masks="masks")
    shutil.copytree(root / "test", root / "test_old")
    caplog.set_level(logging.WARNING, logger="edgecmg")
    MVTecDataset(root).test_samples()
    assert f"but {root / 'masks'} holds folders" in caplog.text and "test_old" not in caplog.text
    caplog.clear()
    good = root / "test" / "good"
    first = sorted(good.iterdir())[0]
    shutil.copy(first, good / f"{first.stem}_label{first.suffix}")
    MVTecDataset(root).test_samples()
    said = [r.getMessage() for r in caplog.records if "named as masks" in r.getMessage()]
    assert len(said) == 1 and said[0].endswith(f"({first.stem}_label{first.suffix})"), said
