"""Image files as cameras and tools write them (an audit of 110 variants against a reference decode):
the header's range of a PGM/PPM, float files outside [0, 1], HEIC, extensions a folder used to pass over."""
from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from edgecmg import imageio
from edgecmg.errors import DataError


def _pgm(path, pixels: np.ndarray, top: int) -> None:
    """A binary PGM (P5) with the maximum ``top`` in its header and a comment, as a camera SDK writes it."""
    height, width = pixels.shape
    body = pixels.astype(">u2").tobytes() if top > 255 else pixels.astype(np.uint8).tobytes()
    path.write_bytes(f"P5\n# camera 7\n{width} {height}\n{top}\n".encode() + body)


@pytest.mark.parametrize("top", [100, 255, 4095, 65535])
def test_a_pgm_is_read_by_the_maximum_its_header_gives(tmp_path, top):
    counts = np.linspace(0, top, 40 * 30).astype(np.uint16).reshape(40, 30)
    _pgm(tmp_path / "frame.pgm", counts, top)
    image = imageio.read_image(tmp_path / "frame.pgm")
    expected = np.rint(counts / top * 255)
    assert image.shape == (40, 30, 3) and np.abs(image[:, :, 0] - expected).max() <= 1  # was 0..16 at 4095


def test_a_float_file_outside_0_to_1_is_named_once(tmp_path, caplog, monkeypatch):
    monkeypatch.setitem(imageio._said, "float_range_file", False)
    counts = np.linspace(0, 4095, 40 * 30, dtype=np.float32).reshape(40, 30)
    first, second = tmp_path / "raw.tiff", tmp_path / "raw2.tiff"
    assert cv2.imwrite(str(first), counts) and cv2.imwrite(str(second), counts)
    caplog.set_level(logging.WARNING, logger="edgecmg")
    imageio.read_image(first)
    imageio.read_image(second)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and said[0].startswith(f"{first} holds floating-point values from 0 to 4095: float images "
                                                 "are read as 0..1 and clipped"), said
    monkeypatch.setitem(imageio._said, "float_range_file", False)
    caplog.clear()
    assert cv2.imwrite(str(first), counts / 4095)  # in [0, 1]: nothing to say
    imageio.read_image(first)
    assert not caplog.records


def test_a_heic_photo_is_named_as_a_format_not_read_here_rather_than_corrupt(tmp_path):
    path = tmp_path / "IMG_0001.jpg"  # a phone's photo, renamed
    path.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200))
    with pytest.raises(DataError, match=r"IMG_0001.jpg: HEIC/HEIF \(a phone's photo format\) is not read here; "
                                        r"convert it to JPEG or PNG"):
        imageio.read_image(path)


def test_jpeg_files_named_jfif_or_jpe_are_listed_and_read(tmp_path):
    frame = np.full((20, 30, 3), 128, np.uint8)
    for name in ("a.jfif", "b.jpe", "c.jpg"):
        assert cv2.imencode(".jpg", frame)[1].tofile(str(tmp_path / name)) is None
    listed = imageio.list_images(tmp_path)
    assert [p.name for p in listed] == ["a.jfif", "b.jpe", "c.jpg"]
    assert all(imageio.read_image(p).shape == (20, 30, 3) for p in listed)
