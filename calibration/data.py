"""Calibration images: a deterministic subset of a folder, read and resized like fit() does."""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from edgecmg.errors import DataError, name_some
from edgecmg.imageio import IMAGE_EXTENSIONS, list_images, read_image, resize_to_input, subfolders_with_images
from edgecmg.progress import show_progress
from edgecmg.result import INPUT_NAME

log = logging.getLogger("edgecmg")

# Calibration images a run typically uses (samples' own check says so too): a count asked for above
# this is not repeated back as advice when the folder holds fewer.
TYPICAL_SAMPLES_MIN, TYPICAL_SAMPLES_MAX = 64, 512


def select_images(data_dir: str | Path, samples: int, seed: int = 0) -> list[Path]:
    """Up to ``samples`` image files of ``data_dir`` (its images, else those of its sub-folders; of an
    MVTec root, its train/good), a seeded random subset in sorted order, so the same folder always
    gives the same images."""
    return select_with_spares(data_dir, samples, seed)[0]


def select_with_spares(data_dir: str | Path | Sequence[str | Path], samples: int, seed: int = 0, *,
                       report: bool = True) -> tuple[list[Path], list[Path]]:
    """``select_images``' choice, and the folder's other images in a seeded order: the spares that
    stand in for chosen files that turn out unreadable, so calibration still sees ``samples``.
    ``data_dir``: a folder (an MVTec root: its train/good), a glob pattern, or image paths.
    report: log what the draw reads, leaves out or finds short; off for a second draw of the same
    folder (calibrate's check), whose first draw has said it all already."""
    info, warning = (log.info, log.warning) if report else (_unsaid, _unsaid)
    if samples < 1:
        raise DataError(f"samples={samples} (--samples): calibrate on at least 1 image ({TYPICAL_SAMPLES_MIN}-"
                        f"{TYPICAL_SAMPLES_MAX} is typical)")
    if not isinstance(data_dir, (str, Path)):
        given = [Path(item) for item in data_dir]
        paths = [path for path in given if path.is_file()]  # the data's fingerprint stats every file
        if len(paths) < len(given):
            missing = [str(path) for path in given if not path.is_file()]
            warning("calibration: %d of the %d paths given are not files and are left out: %s",
                        len(missing), len(given), name_some(missing, 3))
        if not paths:
            raise DataError("no calibration images given: pass a folder, a glob or paths of image files of good parts")
        return _choose(paths, samples, seed, "the image list", warning)
    folder = Path(data_dir).expanduser()
    if (folder / "train" / "good").is_dir():
        # An MVTec root: the ranges come from the normal parts fit() used, not from the test defects
        # and ground-truth masks that a walk of every sub-folder would pick up.
        info("%s is an MVTec-layout root: calibrating on its train/good images", folder)
        folder = folder / "train" / "good"
    try:
        paths = list_images(folder)
        nested = subfolders_with_images(folder) if folder.is_dir() else []  # a glob: what it matches was asked for
        if nested:  # a folder's own images win: say which images are not read, rather than drop them unsaid
            info("calibration: %s holds images of its own, so its sub-folders (%s) are not read; give a folder "
                     "of sub-folders only, or a glob (%s/**/*.png), to calibrate on those too", folder,
                     name_some(nested, 3), folder)
    except DataError:
        if not folder.is_dir():
            raise
        try:
            paths = list_images(str(folder / "**" / "*"))  # MVTec-style roots: images live in sub-folders
        except DataError:  # its message would name a pattern the caller never wrote
            raise DataError(f"no image files in {folder} or its sub-folders (looked for "
                            f"{', '.join(sorted(IMAGE_EXTENSIONS))}); calibrate on a folder of images of good "
                            "parts") from None
    return _choose(paths, samples, seed, str(folder), warning)


def _unsaid(*_args) -> None:
    """A log call that says nothing: select_with_spares' notes when ``report`` is off."""


def _choose(paths: list[Path], samples: int, seed: int, where: str, warning) -> tuple[list[Path], list[Path]]:
    if len(paths) < samples:
        # Ranges from a few frames may miss what the line shows later, and INT8 scores drift from FP32
        # (64 images were too few for the tensorrt profile on KolektorSDD: README, INT8 section).
        if samples <= TYPICAL_SAMPLES_MAX:
            warning("calibration: %s holds %d images, fewer than the %d asked for; the activation ranges come "
                    "from those %d: add images of good parts (%d or more) if INT8 scores drift from FP32",
                    where, len(paths), samples, len(paths), samples)
        else:  # a count far above what calibration needs (--samples 1000000) is not advice to echo back
            more = (f": add images of good parts ({TYPICAL_SAMPLES_MIN}-{TYPICAL_SAMPLES_MAX} are typical) if INT8 "
                    "scores drift from FP32" if len(paths) < TYPICAL_SAMPLES_MAX // 2 else "")
            warning("calibration: %s holds %d images, fewer than asked for; the activation ranges come from the %d "
                    "found%s", where, len(paths), len(paths), more)
    if len(paths) <= samples:
        return paths, []
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(paths), samples, replace=False))
    rest = sorted(set(range(len(paths))) - set(chosen))
    return [paths[i] for i in chosen], [paths[i] for i in rng.permutation(rest)]


def fingerprint(paths: Sequence[Path]) -> str:
    """SHA-256 over the name, size and modification time of each file: changes when the data does."""
    digest = hashlib.sha256()
    for p in paths:
        # The name's bytes as the file system holds them: a name that is not UTF-8 (Latin-1 "caf\xe9.jpg")
        # is a str with surrogates that .encode() refused; for the others these are their UTF-8 bytes,
        # as before, so existing caches keep their fingerprints.
        digest.update(os.fsencode(p.name) + f"\0{_size_and_time(p)}\n".encode())
    return digest.hexdigest()


def _size_and_time(path: Path) -> str:
    """The file's size and modification time; a broken link's own (reading it reports it by name and
    skips it: it must not end the run here first), or nothing for a file gone meanwhile."""
    for stat in (path.stat, path.lstat):
        try:
            info = stat()
        except OSError:
            continue
        return f"{info.st_size}\0{info.st_mtime_ns}"
    return "gone"


def load_frame(path: Path, size: tuple[int, int]) -> np.ndarray:
    """uint8 RGB [H, W, 3] at the model's input size (the resize fit() and the detectors use)."""
    return resize_to_input(read_image(path), size)


class ImageFolderReader:
    """ONNX Runtime calibration data reader over image files: one uint8 frame per ``get_next``.

    Implements the ``CalibrationDataReader`` protocol (``get_next`` returns ``{input: batch}`` or
    ``None`` at the end); an unreadable file is skipped with a warning and the next of ``spares``
    read in its place; ``used`` counts the frames handed out; a tqdm bar counts images.
    """

    def __init__(self, paths: Sequence[Path], input_size: tuple[int, int], *, spares: Sequence[Path] = (),
                 input_name: str = INPUT_NAME, progress: Optional[bool] = None, desc: str = "calibration") -> None:
        self.paths = list(paths)
        self.spares = list(spares)
        self.input_size = tuple(input_size)
        self.input_name = input_name
        self.progress = show_progress(progress)
        self.desc = desc
        self.used = 0
        self._bar = None
        self._index = 0
        self._spare_index = 0

    def __len__(self) -> int:
        return len(self.paths)

    def rewind(self) -> None:
        self._index = 0
        self._spare_index = 0
        self.used = 0
        self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        from edgecmg.progress import tqdm

        if self._bar is None and self._index == 0:
            self._bar = tqdm(total=len(self.paths), desc=self.desc, unit="img", disable=not self.progress)
        while self._index < len(self.paths):
            path = self.paths[self._index]
            self._index += 1
            frame = self._read(path)
            while frame is None and self._spare_index < len(self.spares):
                self._spare_index += 1
                frame = self._read(self.spares[self._spare_index - 1])
            if self._bar is not None:
                self._bar.update(1)
            if frame is None:
                continue
            self.used += 1
            return {self.input_name: frame[None]}
        self._close()
        if self.used == 0:
            raise DataError(f"none of the {len(self.paths)} calibration images could be read")
        return None

    def _read(self, path: Path) -> Optional[np.ndarray]:
        try:
            return load_frame(path, self.input_size)
        except DataError as exc:
            log.warning("calibration: skipped %s: %s", path, exc)
            return None
