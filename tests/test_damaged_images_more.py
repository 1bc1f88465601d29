"""Damaged and odd image files, continued: a decompression bomb in a format only OpenCV reads, FIFOs and
devices given as images, and the counts fit and eval give of the files they could not use."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgecmg.errors import DataError

# A fresh interpreter: OpenCV reads its pixel limit once, as cv2 loads, so only a process that has not
# loaded it yet shows what importing edgecmg does to it.
_READ_IN_A_CHILD = r"""
import json, os, re, sys
from edgecmg.errors import DataError
from edgecmg.imageio import read_image
try:
    read_image(sys.argv[1])
    said = None
except DataError as exc:
    said = str(exc)
import PIL.Image
print(json.dumps({"said": said, "limit": os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS"),
                  "pillow_refuses_over": 2 * PIL.Image.MAX_IMAGE_PIXELS,
                  # VmHWM: this process's own peak (ru_maxrss keeps the forking parent's, pytest's, across exec)
                  "peak_mb": int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1)) / 1024}))
"""


def _radiance_hdr(height: int, width: int) -> bytes:
    """A Radiance HDR file of black pixels, its scanlines run-length encoded (about 60 bytes per 1,000 pixels):
    Pillow cannot parse the format, OpenCV decodes it as float32."""
    runs, left = b"", width
    while left:
        count = min(127, left)
        runs += bytes([128 + count, 0])  # a run of `count` zeros
        left -= count
    scanline = bytes([2, 2, width >> 8, width & 255]) + runs * 4  # one run list per component, R G B E
    return b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y %d +X %d\n" % (height, width) + scanline * height


def _read_in_a_child(path: Path, **env: str) -> dict:
    environment = {key: value for key, value in os.environ.items() if key != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    done = subprocess.run([sys.executable, "-c", _READ_IN_A_CHILD, str(path)], capture_output=True, text=True,
                          timeout=300, env={**environment, **env}, cwd=path.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_bomb_in_a_format_pillow_cannot_parse_is_refused_before_opencv_decodes_it(tmp_path):
    """A 12.5 MB Radiance HDR named .png declaring 196 megapixels was read (4.66 GB peak, no warning):
    the pixel check parses headers with Pillow, which does not know the format, and OpenCV's own limit
    was 1,074 megapixels. Importing edgecmg sets OpenCV's limit to Pillow's refusal limit."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_radiance_hdr(13400, 13400))  # 179.6 megapixels, just over 2 * 89,478,485; 11 MB
    opencv_temp = tmp_path / "opencv_temp"  # where OpenCV's imdecode copies an HDR file to decode it
    opencv_temp.mkdir()
    got = _read_in_a_child(bomb, OPENCV_TEMP_PATH=str(opencv_temp))
    assert list(opencv_temp.iterdir()) == []  # refused before OpenCV: its copy was left there, 11 MB a read
    assert got["limit"] == str(got["pillow_refuses_over"]) == "178956970"
    assert got["said"] is not None and str(bomb) in got["said"], got["said"]
    assert "is too large to decode" in got["said"] and "178,956,970 pixels" in got["said"], got["said"]
    assert "OPENCV_IO_MAX_IMAGE_PIXELS higher" in got["said"]  # what lets a real picture this large through
    assert got["peak_mb"] < 1000, got  # refused from the header: decoded, it took over 4 GB


def test_a_pixel_limit_the_user_set_in_the_environment_is_kept(tmp_path):
    """setdefault: whoever set OPENCV_IO_MAX_IMAGE_PIXELS before importing edgecmg keeps their limit, and a
    file over it is refused as too large by name (it was "neither OpenCV nor Pillow recognises its format")."""
    small = tmp_path / "small.png"
    small.write_bytes(_radiance_hdr(100, 200))  # 20,000 pixels
    got = _read_in_a_child(small, OPENCV_IO_MAX_IMAGE_PIXELS="5000")
    assert got["limit"] == "5000"
    assert got["said"] is not None and str(small) in got["said"], got["said"]
    assert "is too large to decode" in got["said"] and "5,000 pixels" in got["said"], got["said"]
    raised = _read_in_a_child(small, OPENCV_IO_MAX_IMAGE_PIXELS="2000000000")
    assert raised["limit"] == "2000000000" and raised["said"] is None, raised


# Read in a child with a timeout: reading a FIFO waits for a writer and /dev/zero never ends, so a
# regression would hang the test run rather than fail it.
_READ_ODD_FILES = r"""
import sys
from edgecmg.errors import DataError
from edgecmg.imageio import load_images, read_image, read_image_size, read_mask
for path in sys.argv[1:]:
    for read in (read_image, read_mask, read_image_size):
        try:
            read(path)
            print(read.__name__, path, "READ")
        except DataError as exc:
            print(read.__name__, exc)
    print("load_images", load_images([path])[2])
"""


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not Path("/dev/zero").exists(), reason="FIFOs and /dev/zero: POSIX")
def test_a_fifo_or_a_device_given_as_an_image_is_named_and_never_opened(tmp_path):
    """`edgecmg predict m.edgecmg fifo.png` said "[Errno 20] Not a directory: 'fifo.png'", and a link to
    /dev/zero named x.png the same; read_image would wait on the FIFO for ever, or read /dev/zero without end."""
    import numpy as np
    from PIL import Image

    from edgecmg.imageio import list_images

    fifo, zero, good = tmp_path / "fifo.png", tmp_path / "zero.png", tmp_path / "good.png"
    os.mkfifo(fifo)
    zero.symlink_to("/dev/zero")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
    with pytest.raises(DataError, match=rf"^{re.escape(str(fifo))} is not a regular file \(a FIFO\); give image files "
                                        "or their folder$"):
        list_images(fifo)
    with pytest.raises(DataError, match=rf"^{re.escape(str(zero))} is not a regular file \(a link to /dev/zero, a "
                                        r"character device\); give image files or their folder$"):
        list_images(zero)
    # In a folder or a pattern they are left out, as before, and without being opened (a FIFO with no
    # writer would block the listing).
    assert list_images(tmp_path) == list_images(str(tmp_path / "*.png")) == [good]
    done = subprocess.run([sys.executable, "-c", _READ_ODD_FILES, str(fifo), str(zero)], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    said = done.stdout.splitlines()
    for name in ("read_image", "read_mask", "read_image_size"):
        assert f"{name} {fifo} is not a regular file (a FIFO); give image files or their folder" in said, said
        assert (f"{name} {zero} is not a regular file (a link to /dev/zero, a character device); give image files "
                "or their folder") in said, said
    assert sum(line.startswith("load_images [(PosixPath(") for line in said) == 2, said


def _truncated_jpeg(source: Path, target: Path) -> Path:
    """``source``'s first half: its header reads (Pillow gives its size), its pixels do not."""
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def test_too_few_images_are_counted_by_what_decodes_not_by_their_headers(kolektor_train, tmp_path):
    """Six unreadable files, four of them truncated JPEGs whose headers read, were "found 4 of the 6 given":
    fit counted the headers. Where too few headers read to fit on, those few are decoded before the count."""
    from edgecmg.config import ModelConfig
    from edgecmg.fit import fit

    for i, source in enumerate(kolektor_train[:4]):
        _truncated_jpeg(source, tmp_path / f"cut{i}.jpg")
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_text("not an image")
    with pytest.raises(DataError, match=rf"found 0 of the 6 given in {re.escape(str(tmp_path))}: the others could not "
                                        "be read or are copies of another"):
        fit(tmp_path, ModelConfig(prompt="a part", input_size=(64, 64)), progress=False)


def test_fit_says_of_how_many_given_it_fitted_on_when_it_left_some_out(kolektor_train, tmp_path, caplog):
    """fit said "fitting on 54 images", skipped 16 more as unreadable and 8 as copies, and ended with "fitted
    on 30 images": the line that closes the fit says how many of those given it used, and why not the rest."""
    from edgecmg.config import ModelConfig
    from edgecmg.fit import fit

    for source in kolektor_train[:8]:
        shutil.copy(source, tmp_path / source.name)
    _truncated_jpeg(kolektor_train[8], tmp_path / "zz_cut.jpg")  # its header reads: counted at the start
    shutil.copy(kolektor_train[0], tmp_path / "zz_copy.jpg")
    config = ModelConfig(prompt="a photo of a metal commutator", input_size=(64, 64), cmle=False, max_bank_size=50)
    with caplog.at_level(logging.INFO, logger="edgecmg"):
        _, metadata = fit(tmp_path, config, progress=False)
    said = [r.getMessage() for r in caplog.records]
    assert "fitting on 10 images at 64x64" in said  # their headers read: the pixels and copies are found later
    closing = [m for m in said if m.startswith("fitted on")]
    assert len(closing) == 1 and re.fullmatch(r"fitted on 8 images of the 10 given in [\d.]+ s \(bank \d+ x \d+\); "
                                              r"left out \(named above\): 1 unreadable, 1 as a copy of another",
                                              closing[0]), closing
    assert metadata["training"]["images"] == 8


def _kolektor_like(kolektor_root: Path, root: Path) -> Path:
    """An MVTec root: two good test parts; four defects, one unreadable without a mask (named to sort first),
    one readable without a mask, one with a damaged mask and one with its mask."""
    test, truth = kolektor_root / "test", kolektor_root / "ground_truth" / "defect"
    (root / "test" / "good").mkdir(parents=True)
    (root / "test" / "defect").mkdir()
    (root / "ground_truth" / "defect").mkdir(parents=True)
    for name in sorted(p.name for p in (test / "good").iterdir())[:2]:
        shutil.copy(test / "good" / name, root / "test" / "good" / name)
    (root / "test" / "defect" / "a_bad.jpg").write_text("<html>404</html>")
    for name in ("kos01_Part5", "kos02_Part6", "kos03_Part2"):
        shutil.copy(test / "defect" / f"{name}.jpg", root / "test" / "defect" / f"{name}.jpg")
    mask = (truth / "kos01_Part5_mask.png").read_bytes()
    (root / "ground_truth" / "defect" / "kos01_Part5_mask.png").write_bytes(mask[: len(mask) // 2])  # damaged
    shutil.copy(truth / "kos02_Part6_mask.png", root / "ground_truth" / "defect" / "kos02_Part6_mask.png")
    return root


def test_an_unreadable_test_image_is_not_counted_as_missing_its_mask(kolektor_root, tmp_path, caplog):
    """eval said "4 defect test image(s) have no mask ... looked for bad_bomb_png_15000_mask.png", counting
    test images it then skipped as unreadable."""
    from edgecmg.datasets import MVTecDataset

    root = _kolektor_like(kolektor_root, tmp_path / "parts")
    with caplog.at_level(logging.INFO, logger="edgecmg"):
        samples = MVTecDataset(root).test_samples()
    assert len(samples) == 6  # the unreadable one stays, for eval to skip and name
    said = [r.getMessage() for r in caplog.records if "no mask" in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].startswith(f"1 defect test image(s) have no mask under {root / 'ground_truth'}"), said
    assert f"looked for {root / 'ground_truth' / 'defect' / 'kos03_Part2_mask.png'}" in said[0]


def test_a_damaged_mask_is_named_as_damaged_not_counted_as_missing(small_artifact, kolektor_root, tmp_path, caplog):
    """eval's closing count said "3 defect image(s) without a mask" where two of the three masks were in
    place but damaged: those are named as such, and the count without a mask is of the missing ones."""
    from edgecmg.datasets import MVTecDataset
    from edgecmg.detector import Detector
    from edgecmg.evaluation import evaluate_detector

    root = _kolektor_like(kolektor_root, tmp_path / "parts")
    samples = MVTecDataset(root).test_samples()
    with Detector.load(small_artifact, backend="torch") as detector:
        metrics = evaluate_detector(detector, samples, progress=False)
    damaged = root / "ground_truth" / "defect" / "kos01_Part5_mask.png"
    assert metrics["skipped"] == [str(root / "test" / "defect" / "a_bad.jpg")]
    assert metrics["masks_skipped"] == [str(damaged)]
    assert metrics["pixel_metrics_over"]["defect_images_without_mask"] == 1  # kos03_Part2 alone
    assert metrics["pixel_metrics_over"]["defect_images_mask_unusable"] == 1  # counted apart, not lost
    assert metrics["pixel_metrics_over"]["defect_images"] == 1 and metrics["pixel_auroc"] is not None
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("pixel metrics: ")]
    assert said == [
        "pixel metrics: 1 defect image(s) without a mask left out",
        "pixel metrics: 1 defect image(s) left out whose mask is damaged or not the size of its image, not missing: "
        "defect/kos01_Part5_mask.png (each said above, all listed under masks_skipped); re-export those masks"], said


@pytest.mark.parametrize("module", ["edgecmg.detector", "edgecmg.stream.sources", "edgecmg.evaluation", "edgecmg.cli"])
def test_every_entry_point_sets_opencv_s_limit_before_cv2_loads(module):
    """These modules import cv2 before edgecmg.imageio: set there, the limit came too late for
    `from edgecmg import Detector` and `edgecmg stream`. The package's __init__ sets it first."""
    environment = {key: value for key, value in os.environ.items() if key != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    code = (f"import os; import {module}; from edgecmg import pixel_limit; "
            "print(os.environ.get('OPENCV_IO_MAX_IMAGE_PIXELS'), pixel_limit.OPENCV_PIXELS)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=environment, cwd=Path(__file__).parent)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["178956970", "178956970"], done.stdout  # (the CLI loads cv2 later, on use)



# A fresh interpreter again, as above: the program lowers Pillow's limit before importing edgecmg (OpenCV's
# is set from it then: twice 1,000 pixels) or sets OPENCV_IO_MAX_IMAGE_PIXELS itself, and may raise Pillow's
# afterwards (as the refusal of a file over it says to). Each argument is PATH=PILLOW_LIMIT: the file is read
# with Pillow's limit set so, and what read_image returned is saved beside it (PATH.npy).
_READ_UNDER_LIMITS = r"""
import json, os, sys
import numpy as np
from PIL import Image
if os.environ.get("LOWER_PILLOW_FIRST"):
    Image.MAX_IMAGE_PIXELS = 1000
from edgecmg.errors import DataError
from edgecmg.imageio import read_image
said = []
for item in sys.argv[1:]:
    path, limit = item.rsplit("=", 1)
    Image.MAX_IMAGE_PIXELS = None if limit == "None" else int(limit)
    try:
        np.save(path + ".npy", read_image(path))
        said.append(None)
    except DataError as exc:
        said.append(str(exc))
print(json.dumps({"limit": os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS"), "said": said}))
"""


def _read_under_limits(folder: Path, items: list[str], **env: str) -> dict:
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("OPENCV_IO_MAX_IMAGE_PIXELS", "LOWER_PILLOW_FIRST")}
    done = subprocess.run([sys.executable, "-c", _READ_UNDER_LIMITS, *items], capture_output=True, text=True,
                          timeout=300, env={**environment, **env}, cwd=folder)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _picture(path: Path):
    """Write a 100x100 picture (10,000 pixels) to ``path`` (its suffix picks the format); returns its pixels
    as Pillow reads them back, RGB."""
    import cv2
    import numpy as np
    from PIL import Image

    rgb = np.random.default_rng(7).integers(0, 256, (100, 100, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif"])
def test_a_picture_pillow_accepts_is_read_with_pillow_where_opencv_s_limit_refuses_it(tmp_path, suffix):
    """With OpenCV's limit (5,000 pixels) below a 10,000-pixel picture and Pillow's (its default) above it,
    read_image raised "too large to decode" without trying Pillow: OpenCV's refusal was final even for a file
    whose header Pillow had parsed and accepted. Pillow decodes it now."""
    import cv2
    import numpy as np

    path = tmp_path / f"picture{suffix}"
    pillow_rgb = _picture(path)
    got = _read_under_limits(tmp_path, [f"{path}=89478485"], OPENCV_IO_MAX_IMAGE_PIXELS="5000")
    assert got["limit"] == "5000"
    assert got["said"] == [None], got["said"]
    read = np.load(f"{path}.npy")
    assert read.dtype == np.uint8 and read.shape == (100, 100, 3)
    assert np.array_equal(read, pillow_rgb)
    if suffix != ".jpg":  # lossless: the same pixels OpenCV reads in this process, whose limit lets it
        assert np.array_equal(read, cv2.imread(str(path))[:, :, ::-1])


def test_raising_pillow_s_limit_after_import_lets_a_large_picture_through_as_its_refusal_says(tmp_path):
    """The reviewer's case: a program lowered PIL.Image.MAX_IMAGE_PIXELS (to 1,000) before importing edgecmg,
    so OpenCV's limit became 2,000 pixels. A 10,000-pixel PNG is refused by Pillow's limit, its message saying
    that raising PIL.Image.MAX_IMAGE_PIXELS lets it through; raised (or turned off), OpenCV still refused it and
    read_image said "too large to decode". A Radiance HDR, which Pillow cannot size, is still refused by OpenCV's
    limit whatever Pillow's, its message naming the environment variable."""
    import numpy as np

    png = tmp_path / "picture.png"
    pillow_rgb = _picture(png)
    hdr = tmp_path / "picture.hdr.png"
    hdr.write_bytes(_radiance_hdr(100, 100))
    got = _read_under_limits(tmp_path, [f"{png}=1000", f"{png}=1000000", f"{png}=None", f"{hdr}=None"],
                             LOWER_PILLOW_FIRST="1")
    assert got["limit"] == "2000"
    refused, raised, turned_off, hdr_said = got["said"]
    assert refused is not None and "is too large to decode" in refused, refused
    assert "raising PIL.Image.MAX_IMAGE_PIXELS lets a real picture this large through" in refused
    assert raised is None and turned_off is None, got["said"]
    assert np.array_equal(np.load(f"{png}.npy"), pillow_rgb)
    assert hdr_said is not None and "is too large to decode" in hdr_said and "2,000 pixels" in hdr_said, hdr_said
    assert "setting OPENCV_IO_MAX_IMAGE_PIXELS higher in the environment before Python starts" in hdr_said
    assert "raising PIL.Image.MAX_IMAGE_PIXELS does not" in hdr_said
