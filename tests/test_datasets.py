"""Dataset layouts: MVTec folders (synthetic and the real KolektorSDD), elpv split, materialising."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecmg import datasets
from edgecmg.datasets import MVTecDataset, Sample, elpv_dataset, materialize_mvtec, sample_mask
from edgecmg.errors import ConfigError, DataError
from edgecmg.imageio import read_image


try:
    import elpv_dataset as _elpv_pkg  # noqa: F401

    HAVE_ELPV = True
except ImportError:
    HAVE_ELPV = False
needs_elpv = pytest.mark.skipif(not HAVE_ELPV, reason="PyPI package elpv-dataset is not installed")


def _img(path: Path, value: int = 128, shape=(8, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)
    return path


def _make_mvtec(root: Path) -> Path:
    for i in range(3):
        _img(root / "train" / "good" / f"{i:03d}.png")
    _img(root / "test" / "good" / "000.png")
    _img(root / "test" / "crack" / "000.png")
    _img(root / "test" / "crack" / "001.png")
    _img(root / "test" / "scratch" / "000.png")
    mask = np.zeros((8, 10), np.uint8)
    mask[2:4, 3:6] = 255
    Image.fromarray(mask).save(_img(root / "ground_truth" / "crack" / "000_mask.png"))
    _img(root / "ground_truth" / "scratch" / "000.png", 255)  # non-MVTec mask name, still found
    (root / "test" / "empty_type").mkdir()
    return root


# ------------------------------------------------------------------ MVTec layout
def test_a_mask_with_an_upper_case_extension_is_found(tmp_path):
    """Images ending in .JPG were found and their `_mask.PNG` masks not: the pixel metrics said n/a."""
    root = tmp_path / "cat"
    _img(root / "train" / "good" / "000.png")
    _img(root / "test" / "good" / "000.png")
    _img(root / "test" / "crack" / "000.JPG")
    _img(root / "test" / "crack" / "001.png")
    _img(root / "ground_truth" / "crack" / "000_mask.PNG", 255)
    _img(root / "ground_truth" / "crack" / "001.Png", 255)
    masks = {s.path.name: s.mask_path for s in MVTecDataset(root).test_samples() if s.label}
    assert masks["000.JPG"].name == "000_mask.PNG" and masks["001.png"].name == "001.Png"


def test_images_in_sub_folders_of_a_test_type_are_named_not_dropped_unsaid(tmp_path, caplog):
    root = _make_mvtec(tmp_path / "cat")
    _img(root / "test" / "crack" / "batch2" / "010.png")
    with caplog.at_level("WARNING", logger="edgecmg"):
        names = [s.path.name for s in MVTecDataset(root).test_samples()]
    assert "010.png" not in names
    assert f"test folder {root / 'test' / 'crack'}: its sub-folders batch2 hold images, which are not evaluated" \
        in caplog.text


def test_mvtec_synthetic_layout(tmp_path):
    ds = MVTecDataset(_make_mvtec(tmp_path / "cat"))
    train = ds.train_samples()
    assert [s.path.name for s in train] == ["000.png", "001.png", "002.png"]
    assert all(s.label == 0 and s.defect_type == "good" and s.mask_path is None for s in train)
    test = ds.test_samples()
    assert [(s.defect_type, s.path.name, s.label) for s in test] == [
        ("crack", "000.png", 1),
        ("crack", "001.png", 1),
        ("good", "000.png", 0),
        ("scratch", "000.png", 1),
    ]
    masks = {(s.defect_type, s.path.name): s.mask_path for s in test}
    assert masks[("crack", "000.png")].name == "000_mask.png"
    assert masks[("crack", "001.png")] is None  # mask missing -> None
    assert masks[("good", "000.png")] is None
    assert masks[("scratch", "000.png")].name == "000.png"
    assert ds.defect_types() == ["crack", "empty_type", "scratch"]
    with pytest.raises(AttributeError):
        test[0].label = 0  # frozen


def test_sample_mask(tmp_path):
    ds = MVTecDataset(_make_mvtec(tmp_path / "cat"))
    by_name = {(s.defect_type, s.path.name): s for s in ds.test_samples()}
    m = sample_mask(by_name[("crack", "000.png")], (8, 10))
    assert m.dtype == bool and m.sum() == 6
    assert not sample_mask(by_name[("good", "000.png")], (8, 10)).any()
    assert sample_mask(by_name[("crack", "001.png")], (8, 10)) is None
    with pytest.raises(DataError, match=r"is 8x10 but its image .* is 9x10 \(height x width\); masks must have the "
                                        "size of their image"):
        sample_mask(by_name[("crack", "000.png")], (9, 10))
    with pytest.raises(DataError, match="size of their image"):  # the same height, another width
        sample_mask(by_name[("crack", "000.png")], (8, 12))


def test_defect_types_named_like_good_are_defects_and_hidden_folders_are_not_types(tmp_path):
    """MVTec has defect types such as metal_nut's "gray_stroke" and carpet's "glue": only test/good is
    good. A hidden folder (.ipynb_checkpoints, a sync tool's) is no defect type at all."""
    root = _make_mvtec(tmp_path / "cat")
    _img(root / "test" / "glue" / "000.png")
    _img(root / "test" / ".ipynb_checkpoints" / "000.png")
    ds = MVTecDataset(root)
    assert ds.defect_types() == ["crack", "empty_type", "glue", "scratch"]
    labels = {(s.defect_type, s.path.name): s.label for s in ds.test_samples()}
    assert labels[("glue", "000.png")] == 1 and labels[("good", "000.png")] == 0
    assert len(labels) == 5 and not any(kind.startswith(".") for kind, _ in labels)


def test_mvtec_errors_explain_the_layout(tmp_path):
    root = _make_mvtec(tmp_path / "part")
    with pytest.raises(DataError, match=r"test is a part of one, pass the folder above it: .*part$"):
        MVTecDataset(root / "test")  # eval DATA/test for eval DATA
    with pytest.raises(FileNotFoundError, match="not found"):  # a MissingFileError, also a DataError
        MVTecDataset(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        MVTecDataset(tmp_path / "file.txt")
    with pytest.raises(DataError, match="expected the MVTec layout"):
        MVTecDataset(tmp_path)
    # a folder of categories gets a hint
    _make_mvtec(tmp_path / "multi" / "bottle")
    with pytest.raises(DataError, match="pass one category folder"):
        MVTecDataset(tmp_path / "multi")
    # test-only folder: constructing works, train_samples explains
    only_test = tmp_path / "only_test"
    _img(only_test / "test" / "good" / "a.png")
    ds = MVTecDataset(only_test)
    assert len(ds.test_samples()) == 1
    with pytest.raises(DataError, match="no train/good folder under .*train/good, test/<type>"):
        ds.train_samples()
    # empty train/good
    (tmp_path / "empty_train" / "train" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match="no training images"):
        MVTecDataset(tmp_path / "empty_train").train_samples()
    with pytest.raises(DataError, match="no test folder"):
        MVTecDataset(tmp_path / "empty_train").test_samples()


def test_real_kolektorsdd_counts(kolektor_root):
    ds = MVTecDataset(kolektor_root)
    train, test = ds.train_samples(), ds.test_samples()
    assert len(train) == 261
    assert sum(s.label == 0 for s in test) == 87
    defects = [s for s in test if s.label == 1]
    assert len(defects) == 52 and ds.defect_types() == ["defect"]
    assert all(s.mask_path is not None and s.mask_path.name == f"{s.path.stem}_mask.png" for s in defects)
    img = read_image(defects[0].path)
    mask = sample_mask(defects[0], img.shape[:2])
    assert mask.any()


def test_no_real_kolektorsdd_mask_looks_inverted(kolektor_root):
    """Eval names masks whose defect covers more than MOSTLY_DEFECT of their image as inverted; the
    real KolektorSDD masks, thin cracks of at most about 1% of their image, are far from it."""
    from edgecmg.evaluation import MOSTLY_DEFECT

    defects = [s for s in MVTecDataset(kolektor_root).test_samples() if s.label == 1]
    assert len(defects) == 52
    covered = [np.count_nonzero(m) / m.size
               for m in (sample_mask(s, read_image(s.path).shape[:2]) for s in defects)]
    assert 0 < min(covered) and max(covered) < 0.02 < MOSTLY_DEFECT


# ------------------------------------------------------------------ elpv
@needs_elpv
def test_elpv_mono_split_counts_and_determinism():
    train, test = elpv_dataset("mono", seed=0)
    assert len(train) == 294
    assert sum(s.label == 0 for s in test) == 294 and sum(s.label == 1 for s in test) == 313
    assert all(s.label == 0 and s.mask_path is None for s in train)
    assert {s.defect_type for s in test} == {"good", "defect"}
    assert not {s.path for s in train} & {s.path for s in test}
    assert all(s.path.is_file() for s in train[:5] + test[-5:])
    again, _ = elpv_dataset("mono", seed=0)
    other, _ = elpv_dataset("mono", seed=1)
    assert again == train and {s.path for s in other} != {s.path for s in train}
    img = read_image(train[0].path)
    assert img.shape == (300, 300, 3)


@needs_elpv
def test_elpv_other_types_and_fraction():
    train, test = elpv_dataset("poly", train_fraction=0.25)
    assert len(train) == 230 and len(test) == 690 + 402
    train, test = elpv_dataset("any")
    assert len(train) == 754 and len(test) == 754 + 715


def test_elpv_bad_arguments():
    with pytest.raises(ConfigError, match="cell_type"):
        elpv_dataset("amorphous")
    with pytest.raises(ConfigError, match="train_fraction"):
        elpv_dataset(train_fraction=1.0)


def test_elpv_missing_package_says_how_to_install(block_import):
    block_import("elpv_dataset")
    with pytest.raises(DataError, match="pip install"):
        elpv_dataset()


# ------------------------------------------------------------------ materialize
def test_materialize_roundtrip_with_symlinks(tmp_path):
    src = MVTecDataset(_make_mvtec(tmp_path / "src"))
    train, test = src.train_samples(), src.test_samples()
    # a clashing file name within one folder gets a suffix
    clash = _img(tmp_path / "elsewhere" / "000.png", 7)
    train = train + [Sample(clash, 0, "good", None)]
    out = materialize_mvtec(train, test, tmp_path / "out")
    ds = MVTecDataset(out)
    assert [s.path.name for s in ds.train_samples()] == ["000.png", "000_1.png", "001.png", "002.png"]
    got = ds.test_samples()
    assert [(s.defect_type, s.label, s.mask_path is not None) for s in got] == [
        (s.defect_type, s.label, s.mask_path is not None) for s in test
    ]
    assert (out / "train" / "good" / "000.png").is_symlink()
    assert read_image(out / "train" / "good" / "000_1.png")[0, 0, 0] == 7


def test_materialize_falls_back_to_copies(tmp_path, monkeypatch):
    src = MVTecDataset(_make_mvtec(tmp_path / "src"))

    def no_symlinks(*args, **kwargs):
        raise OSError("symlinks not permitted")

    monkeypatch.setattr(datasets.os, "symlink", no_symlinks)
    out = materialize_mvtec(src.train_samples(), src.test_samples(), tmp_path / "out")
    f = out / "ground_truth" / "crack" / "000_mask.png"
    assert f.is_file() and not f.is_symlink()


def test_materialize_refuses_foreign_folders_and_rebuilds_its_own(tmp_path):
    src = MVTecDataset(_make_mvtec(tmp_path / "src"))
    train, test = src.train_samples(), src.test_samples()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(DataError, match="not empty"):
        materialize_mvtec(train, test, foreign)
    with pytest.raises(DataError, match="refusing"):
        materialize_mvtec(train, test, foreign, overwrite=True)
    assert (foreign / "precious.txt").read_text() == "keep me"

    out = materialize_mvtec(train, test, tmp_path / "out")
    with pytest.raises(DataError, match="overwrite=True"):
        materialize_mvtec(train, test, out)
    materialize_mvtec(train[:1], test, out, overwrite=True)
    assert len(MVTecDataset(out).train_samples()) == 1  # old links are gone
    with pytest.raises(DataError, match="label 0"):
        materialize_mvtec(test, test, tmp_path / "x")
    with pytest.raises(DataError, match="not found"):
        materialize_mvtec([Sample(tmp_path / "ghost.png", 0, "good")], [], tmp_path / "y")


@needs_elpv
def test_materialize_elpv_for_the_cli(tmp_path):
    train, test = elpv_dataset("mono")
    out = materialize_mvtec(train[:4], test[:2] + test[-2:], tmp_path / "elpv")
    ds = MVTecDataset(out)
    assert len(ds.train_samples()) == 4
    assert [s.defect_type for s in ds.test_samples()] == ["defect", "defect", "good", "good"]
    assert os.path.samefile(ds.train_samples()[0].path, train[0].path)


def test_masks_not_found_under_an_existing_ground_truth_say_where_they_were_looked_for(kolektor_root, tmp_path,
                                                                                        caplog):
    """ground_truth/Defect beside test/defect (or masks named *_gt.png) left every defect without a mask:
    eval printed pixel AUROC n/a after one INFO line that said neither where masks were looked for nor
    what ground_truth/ held."""
    root = tmp_path / "parts"
    for name in ("kos01_Part5", "kos02_Part6"):
        _link(kolektor_root / "test" / "defect" / f"{name}.jpg", root / "test" / "defect" / f"{name}.jpg")
        _link(kolektor_root / "ground_truth" / "defect" / f"{name}_mask.png",
              root / "ground_truth" / "Defect" / f"{name}_mask.png")
    samples = MVTecDataset(root).test_samples()
    assert [s.mask_path for s in samples] == [None, None]
    assert "2 defect test image(s) have no mask under" in caplog.text
    assert f"looked for {root / 'ground_truth' / 'defect' / 'kos01_Part5_mask.png'}" in caplog.text
    assert "ground_truth/ holds the folders: Defect" in caplog.text
    assert all(r.levelname == "WARNING" for r in caplog.records if "no mask" in r.message)


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src)
