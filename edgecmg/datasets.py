"""Datasets: the MVTec AD folder layout, and the real elpv solar-cell images as a demo set.

MVTec layout (one category per root)::

    root/train/good/*.png                       normal training images
    root/test/good/*.png                        normal test images
    root/test/<defect type>/*.png               defective test images
    root/ground_truth/<defect type>/<name>_mask.png   optional pixel masks

A defect image without a mask file gets ``mask_path=None``; metrics then leave it out of the
pixel-level scores (see :func:`edgecmg.metrics.evaluate`).

MVTec AD 2 is read as it comes: without ``test/``, its labelled ``test_public/<good|bad>`` is the test
set and ``test_public/ground_truth/<type>/`` holds the masks.
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from edgecmg.distributions import extra_install_hint
from edgecmg.errors import ConfigError, DataError, MissingFileError, name_some
from edgecmg.imageio import (IMAGE_EXTENSIONS, list_images, masks_beside_images, read_image_size, read_mask,
                              subfolder_names, subfolders_with_images)

__all__ = ["Sample", "MVTecDataset", "sample_mask", "elpv_dataset", "materialize_mvtec"]

_log = logging.getLogger("edgecmg")

PathLike = Union[str, Path]
GOOD = "good"
_LAYOUT_HINT = (
    "expected the MVTec layout train/good, test/<type>, ground_truth/<type>/<name>_mask.png"
)
AD2_TEST = "test_public"  # MVTec AD 2's labelled test set, its masks inside it (ground_truth/)
# test/ folders whose name says "good part" in another dataset's words (BTAD's ok, "normal", a
# capital G): taken as a defect type, their good parts would count as defects in every metric.
_GOOD_ALIASES = {"ok", "normal", "nominal", "good", "defect_free", "no_defect", "nodefect", "non_defective"}
# test/ folders named as masks are: taken as a defect type, the masks would be scored as defect images.
_MASK_FOLDER_NAMES = {"ground_truth", "groundtruth", "gt", "masks", "mask"}


@dataclass(frozen=True)
class Sample:
    """One image of a dataset.

    path: the image file.
    label: 0 = good, 1 = defect.
    defect_type: ``"good"`` or the defect folder name.
    mask_path: pixel mask of a defect image, or ``None`` (good images, or mask not available).
    """

    path: Path
    label: int
    defect_type: str
    mask_path: Optional[Path] = None

    def __post_init__(self) -> None:
        # Checked here, where a sample is made, rather than as a bare int() failure half-way through
        # an evaluation; paths given as str become Paths (eval names their folders).
        try:  # any number that is 0 or 1: bools, numpy scalars, pandas' floats (a column with a NaN), 0-d tensors
            label = float(self.label) if not isinstance(self.label, (str, bytes)) else None
        except (TypeError, ValueError):
            label = None
        if label not in (0.0, 1.0):
            raise DataError(f"Sample {self.path}: label={self.label!r}; give 0 for a good part, 1 for a defect")
        object.__setattr__(self, "label", int(label))
        object.__setattr__(self, "path", Path(self.path))
        if self.mask_path is not None:
            object.__setattr__(self, "mask_path", Path(self.mask_path))


def sample_mask(sample: Sample, shape: tuple[int, int]) -> Optional[np.ndarray]:
    """Ground-truth mask of ``sample`` as ``bool [H, W]``.

    Good samples get an all-False mask of ``shape``; a defect sample without a mask gets
    ``None`` (unknown), which :func:`edgecmg.metrics.evaluate` leaves out of pixel metrics.

    Raises:
        DataError: the mask file is unreadable, or its size differs from ``shape``.
    """
    if sample.mask_path is None:
        return np.zeros(shape, dtype=bool) if sample.label == 0 else None
    mask = read_mask(sample.mask_path)
    if mask.shape != tuple(shape):
        raise DataError(
            f"mask {sample.mask_path} is {mask.shape[0]}x{mask.shape[1]} but its image {sample.path} is "
            f"{shape[0]}x{shape[1]} (height x width); masks must have the size of their image"
        )
    return mask


def _reads(image: Path) -> bool:
    """Whether ``image``'s header reads (eval names one that does not as unreadable); only called on
    defect images without a mask, and from the header alone: listing samples decodes nothing."""
    try:
        read_image_size(image)
    except DataError:
        return False
    return True


def _find_mask(gt_dir: Path, stem: str) -> Optional[Path]:
    """``<stem>_mask.png`` first (MVTec), then ``<stem>_mask.<ext>``, then ``<stem>.<ext>``; the
    extension in any case (``_mask.PNG``), as images are listed."""
    first = gt_dir / f"{stem}_mask.png"
    if first.is_file():
        return first
    for base in (f"{stem}_mask", stem):
        for ext in sorted(IMAGE_EXTENSIONS):
            cand = gt_dir / f"{base}{ext}"
            if cand.is_file():
                return cand
    if gt_dir.is_dir():  # a camera's or Windows tool's upper-case extension, looked for last (a listing)
        by_name = {path.name.lower(): path for path in gt_dir.iterdir() if path.is_file()}
        for base in (f"{stem}_mask", stem):
            for ext in sorted(IMAGE_EXTENSIONS):
                if f"{base}{ext}".lower() in by_name:
                    return by_name[f"{base}{ext}".lower()]
    return None


class MVTecDataset:
    """One category in the MVTec AD layout (see the module docstring).

    The root is checked on construction; ``train_samples`` / ``test_samples`` check their own
    part, so a test-only folder can still be evaluated.
    """

    def __init__(self, root: PathLike) -> None:
        self.root = Path(root).expanduser()
        if not self.root.exists():
            raise MissingFileError(f"dataset folder not found: {self.root}; check the path")
        if not self.root.is_dir():
            raise DataError(f"{self.root} is a file, not a dataset folder; {_LAYOUT_HINT}")
        if not any((self.root / part).is_dir() for part in ("train", "test", AD2_TEST)):
            subdirs = sorted(d.name for d in self.root.iterdir() if d.is_dir() and (d / "train").is_dir())
            hint = ""
            parent = self.root.resolve().parent
            if self.root.resolve().name in ("train", "test", "ground_truth") and (parent / "test").is_dir():
                hint = f"; {self.root} is a part of one, pass the folder above it: {parent}"
            elif subdirs:
                hint = (
                    f"; {self.root} looks like a folder of categories ({name_some(subdirs, 5)}), "
                    "pass one category folder"
                )
            elif (self.root / "Data" / "Images").is_dir():
                hint = (f"; {self.root} is in VisA's own layout (Data/Images, Data/Masks): lay it out as MVTec by "
                        "VisA's split_csv/1cls.csv (its train rows in train/good; test rows in test/good or "
                        "test/bad, their masks in ground_truth/bad), e.g. with edgecmg.datasets.materialize_mvtec")
            raise DataError(f"no train/ or test/ folder under {self.root}: {_LAYOUT_HINT}{hint}")

    def __repr__(self) -> str:
        return f"MVTecDataset({str(self.root)!r})"

    def train_samples(self) -> list[Sample]:
        """Normal training images, ``root/train/good/*``, sorted by name."""
        good = self.root / "train" / GOOD
        if not good.is_dir():
            raise DataError(f"no train/good folder under {self.root}: {_LAYOUT_HINT}")
        try:
            paths = list_images(good)
        except DataError as exc:
            raise DataError(f"no training images in {good}: {_LAYOUT_HINT}") from exc
        return [Sample(p, 0, GOOD, None) for p in paths]

    def defect_types(self) -> list[str]:
        """Sub-folder names of ``test/`` other than ``good``, sorted."""
        return [t for t in self._test_types() if t != GOOD]

    def _test_dir(self) -> Path:
        """``test/``; without it, MVTec AD 2's ``test_public/`` where there is one."""
        test = self.root / "test"
        if not test.is_dir() and (self.root / AD2_TEST).is_dir():
            return self.root / AD2_TEST
        return test

    def _mask_root(self) -> Path:
        test = self._test_dir()
        return test / "ground_truth" if test.name == AD2_TEST else self.root / "ground_truth"

    def _test_types(self) -> list[str]:
        test = self._test_dir()
        if not test.is_dir():
            raise DataError(f"no test folder under {self.root}: {_LAYOUT_HINT}")
        types = sorted(d.name for d in test.iterdir() if d.is_dir() and not d.name.startswith("."))
        if test.name == AD2_TEST:
            return [t for t in types if t != "ground_truth"]
        masks = [t for t in types if t.lower() in _MASK_FOLDER_NAMES]
        if masks:
            raise DataError(f"{test / masks[0]} is a folder of masks inside test/, where each folder is a kind of "
                            f"test image: its masks would be scored as defect images; move it next to test/ as "
                            f"{self.root / 'ground_truth'} (one sub-folder of masks per defect type)")
        good_alike = [t for t in types if t.lower() in _GOOD_ALIASES and t != GOOD]
        if good_alike:
            raise DataError(f"{test / good_alike[0]}: only test/{GOOD} holds good parts; every other folder of test/ "
                            f"is a defect type, and its images would count as defects; if they are good parts, "
                            f"rename the folder to {GOOD} (or move its images into test/{GOOD})")
        return types

    def test_samples(self) -> list[Sample]:
        """Test images of every ``test/<type>`` folder: ``good`` -> label 0, others -> label 1.

        Sorted by type, then name. Masks are looked up as
        ``ground_truth/<type>/<name>_mask.png`` (also ``<name>_mask.<ext>`` and ``<name>.<ext>``);
        missing masks give ``mask_path=None``. Empty type folders are skipped with a warning.
        """
        types = self._test_types()
        test = self._test_dir()
        if not types:
            raise DataError(f"test folder {test} has no sub-folders: {_LAYOUT_HINT}")
        samples: list[Sample] = []
        unmatched: list[tuple[Path, Path]] = []  # (defect image without a mask, where its mask was looked for)
        gt_root = self._mask_root()
        for dtype in types:
            folder = test / dtype
            nested = subfolders_with_images(folder)
            if nested:  # said, as fit and calibrate say it: eval reads each test/<type> folder's own images
                _log.warning("test folder %s: its sub-folders %s hold images, which are not evaluated; move them "
                             "into %s (or a test/<type> folder of their own)", folder, name_some(nested, 3), folder)
            try:
                paths = list_images(folder)
            except DataError:
                _log.warning("test folder %s has no images; skipped", folder)
                continue
            beside = masks_beside_images(paths)
            if beside:  # KolektorSDD's <name>_label.bmp, KolektorSDD 2's <name>_GT.png: each was judged as an image
                _log.warning("test folder %s: %d file(s) named as masks of the images beside them are not judged "
                             "(%s)%s", folder, len(beside), name_some([b.name for b in beside], 3),
                             "" if dtype == GOOD else f"; eval reads masks from {gt_root / dtype}")
                paths = sorted(set(paths) - set(beside))
            label = 0 if dtype == GOOD else 1
            gt_dir = gt_root / dtype
            for p in paths:
                mask = None
                if label == 1:
                    mask = _find_mask(gt_dir, p.stem) if gt_dir.is_dir() else None
                    if mask is None:
                        unmatched.append((p, gt_dir / f"{p.stem}_mask.png"))
                samples.append(Sample(p, label, dtype, mask))
        if not samples:
            raise DataError(f"no test images under {test}: {_LAYOUT_HINT}")
        if unmatched and gt_root.is_dir():
            # ground_truth/ is there, so masks were meant: say where they were looked for. Only for images
            # that read: eval skips an unreadable one as such, and counted here it was a mask missing twice
            # (eval's "4 defect test image(s) have no mask: looked for bad_bomb_png_15000_mask.png", an image
            # it then refused as too large). Their headers are read, then: only where masks are missing.
            unmatched = [(image, looked_for) for image, looked_for in unmatched if _reads(image)]
            per_image = [image for image, looked_for in unmatched if (looked_for.parent / image.stem).is_dir()]
            if per_image:  # MVTec LOCO: ground_truth/<type>/<image's stem>/000.png, ...: one folder per image
                _log.warning("%d defect test image(s) have a folder of masks rather than a mask file (%s; the MVTec "
                             "LOCO layout): not read, pixel metrics skip them; merge each folder's masks into one "
                             "<name>_mask.png beside it", len(per_image), gt_root / per_image[0].parent.name /
                             per_image[0].stem)
                unmatched = [(image, looked_for) for image, looked_for in unmatched if image not in per_image]
            if unmatched:
                folders = sorted(d.name for d in gt_root.iterdir() if d.is_dir())
                _log.warning("%d defect test image(s) have no mask under %s, pixel metrics skip them: looked for %s "
                             "(also <name>_mask.<ext> and <name>.<ext>); ground_truth/ holds the folders: %s",
                             len(unmatched), gt_root, unmatched[0][1], ", ".join(folders) or "none")
        elif unmatched:
            # Not read to count them (no masks were meant): the unreadable ones are named when eval reads them.
            defect_types = {dtype for dtype in types if dtype != GOOD}
            # named as masks are (a copy of test/ beside it, test_old/, is not pointed at)
            elsewhere = [d for d in sorted(gt_root.parent.iterdir()) if d.is_dir()
                         and any(word in d.name.lower() for word in ("mask", "gt", "label", "annot", "truth"))
                         and defect_types & subfolder_names(d)]
            if elsewhere:  # masks/<defect type>/: meant as masks, said where -q hides an info line
                _log.warning("no ground_truth/ folder under %s, but %s holds folders named as its defect types: the "
                             "defect test images get no masks, and pixel metrics are not taken; if it holds the "
                             "masks, rename it to ground_truth", self.root, elsewhere[0])
            else:
                _log.info("no ground_truth/ folder under %s: the defect test images have no masks, and pixel metrics "
                          "are not taken", self.root)
        return samples


# --------------------------------------------------------------------------------------------
# elpv
# --------------------------------------------------------------------------------------------
_ELPV_TYPES = ("mono", "poly", "any")


def _elpv_data_dir() -> Path:
    try:
        import elpv_dataset  # type: ignore[import-not-found]
    except ImportError as exc:
        raise DataError(
            "the elpv demo data needs the PyPI package 'elpv-dataset'; install it with "
            + extra_install_hint("demo")
        ) from exc
    data = Path(elpv_dataset.__file__).resolve().parent / "data"
    if not (data / "labels.csv").is_file():
        raise DataError(f"elpv-dataset is installed but {data / 'labels.csv'} is missing; reinstall elpv-dataset")
    return data


def elpv_dataset(
    cell_type: str = "mono",
    seed: int = 0,
    train_fraction: float = 0.5,
) -> tuple[list[Sample], list[Sample]]:
    """Real electroluminescence solar-cell images (elpv, Buerhop-Lutz et al. / Deitsch et al.).

    Built from the installed PyPI package ``elpv-dataset`` (``elpv_dataset/data/labels.csv``:
    path, defect probability in {0, 1/3, 2/3, 1}, type mono/poly; 300x300 8-bit gray PNGs).
    Normal = probability 0, defect = probability 1; the uncertain 1/3 and 2/3 cells are
    dropped. A seeded random ``train_fraction`` of the normal cells is the training set; the
    remaining normal cells and all defect cells are the test set (``defect_type`` "good" /
    "defect"). No pixel masks.

    Counts (elpv-dataset 1.0.0.post1, 2,624 cells):

    ============  ======  ======  =======  =========================  =====================
    cell_type     normal  defect  dropped  train (0.5)                test (0.5)
    ============  ======  ======  =======  =========================  =====================
    ``"mono"``    588     313     173      294 normal                 294 normal + 313 defect
    ``"poly"``    920     402     228      460 normal                 460 normal + 402 defect
    ``"any"``     1508    715     401      754 normal                 754 normal + 715 defect
    ============  ======  ======  =======  =========================  =====================

    Raises:
        ConfigError: bad ``cell_type`` or ``train_fraction``.
        DataError: the package is not installed or its files are missing.
    """
    if cell_type not in _ELPV_TYPES:
        raise ConfigError(f"cell_type={cell_type!r} must be one of {', '.join(_ELPV_TYPES)}")
    if not 0.0 < float(train_fraction) < 1.0:
        raise ConfigError(f"train_fraction={train_fraction} must be strictly between 0 and 1 (e.g. 0.5)")
    data = _elpv_data_dir()
    normal: list[Path] = []
    defect: list[Path] = []
    labels_csv = data / "labels.csv"
    for lineno, line in enumerate(labels_csv.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise DataError(f"{labels_csv}:{lineno}: expected 'path probability type', got {line!r}; reinstall elpv-dataset")
        rel, prob_text, kind = parts
        if cell_type != "any" and kind != cell_type:
            continue
        prob = float(prob_text)
        if abs(prob) < 1e-6:
            normal.append(data / rel)
        elif abs(prob - 1.0) < 1e-6:
            defect.append(data / rel)
    if not normal or not defect:
        raise DataError(f"{labels_csv} lists no usable {cell_type} cells; reinstall elpv-dataset")
    n_train = int(round(float(train_fraction) * len(normal)))
    if not 1 <= n_train < len(normal):
        raise ConfigError(
            f"train_fraction={train_fraction} leaves {n_train} of {len(normal)} normal cells for training; "
            "choose a fraction that keeps some for both training and test"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(normal))
    train_idx = set(order[:n_train].tolist())
    train = [Sample(p, 0, GOOD, None) for i, p in enumerate(normal) if i in train_idx]
    test = [Sample(p, 0, GOOD, None) for i, p in enumerate(normal) if i not in train_idx]
    test += [Sample(p, 1, "defect", None) for p in defect]
    return train, test


# --------------------------------------------------------------------------------------------
# writing a layout
# --------------------------------------------------------------------------------------------
_MARKER = ".edgecmg_materialized"


def _link_or_copy(src: Path, dst: Path) -> str:
    try:
        os.symlink(src.resolve(), dst)
        return "link"
    except (OSError, NotImplementedError):
        shutil.copy2(src, dst)
        return "copy"


def _unique_name(folder_names: set[str], name: str) -> str:
    if name not in folder_names:
        return name
    stem, suffix = os.path.splitext(name)
    i = 1
    while f"{stem}_{i}{suffix}" in folder_names:
        i += 1
    return f"{stem}_{i}{suffix}"


def materialize_mvtec(
    train: Sequence[Sample],
    test: Sequence[Sample],
    out_dir: PathLike,
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``train`` / ``test`` samples as an MVTec layout of symlinks (copies where links fail).

    Good samples go to ``train/good`` or ``test/good``, defects to ``test/<defect_type>`` and
    their masks to ``ground_truth/<defect_type>/<name>_mask<ext>``; clashing names get a
    ``_1``, ``_2`` suffix. The result can be passed to ``MVTecDataset`` and the CLI
    (``edgecmg fit DIR``, ``edgecmg eval DIR``).

    ``out_dir`` must be missing or empty, or (with ``overwrite=True``) a folder written by an
    earlier call, whose train/test/ground_truth folders are then replaced.

    Raises:
        DataError: ``out_dir`` holds other files, a sample file is missing, or no training sample.
    """
    out = Path(out_dir)
    if not train:
        raise DataError("materialize_mvtec needs at least one training sample")
    if any(s.label != 0 for s in train):
        raise DataError("training samples must all be good (label 0); move defective samples to the test list")
    if out.exists():
        if not out.is_dir():
            raise DataError(f"{out} is a file; pass a folder path for the MVTec layout")
        if any(out.iterdir()):
            if not overwrite:
                raise DataError(f"{out} is not empty; pass an empty folder, or overwrite=True to rebuild an earlier one")
            if not (out / _MARKER).is_file():
                raise DataError(
                    f"{out} is not empty and was not written by materialize_mvtec; refusing to overwrite it, "
                    "pass an empty folder"
                )
            for part in ("train", "test", "ground_truth"):
                target = out / part
                if target.is_symlink() or target.is_file():
                    target.unlink()
                elif target.is_dir():
                    shutil.rmtree(target)
    out.mkdir(parents=True, exist_ok=True)
    (out / _MARKER).write_text("MVTec layout written by edgecmg.datasets.materialize_mvtec\n")

    used: dict[Path, set[str]] = {}
    modes = {"link": 0, "copy": 0}

    def place(src: Path, folder: Path, name: str) -> str:
        if not src.is_file():
            raise DataError(f"sample file not found: {src}; the source dataset changed, rebuild the sample lists")
        folder.mkdir(parents=True, exist_ok=True)
        names = used.setdefault(folder, set())
        name = _unique_name(names, name)
        names.add(name)
        modes[_link_or_copy(src, folder / name)] += 1
        return name

    for s in train:
        place(s.path, out / "train" / GOOD, s.path.name)
    for s in test:
        dtype = GOOD if s.label == 0 else (s.defect_type if s.defect_type != GOOD else "defect")
        name = place(s.path, out / "test" / dtype, s.path.name)
        if s.mask_path is not None and s.label == 1:
            stem = os.path.splitext(name)[0]
            place(s.mask_path, out / "ground_truth" / dtype, f"{stem}_mask{s.mask_path.suffix.lower()}")
    _log.info(
        "wrote MVTec layout to %s: %d train, %d test (%d links, %d copies)",
        out, len(train), len(test), modes["link"], modes["copy"],
    )
    return out
