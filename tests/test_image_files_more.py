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


@pytest.mark.parametrize("key, suffix, frame, fine, said", [
    # 12-bit data in a 16-bit file: read 65535 -> 255, nearly black
    ("low_bit_file", ".png", np.arange(40 * 100, dtype=np.uint16).reshape(40, 100), lambda frame: frame * 16,
     "is a 16-bit image with values up to 3999 only"),
    # raw counts in a float file: read as 0..1 and clipped, nearly white
    ("float_range_file", ".tiff", np.linspace(0, 4095, 40 * 30, dtype=np.float32).reshape(40, 30),
     lambda frame: frame / 4095, "holds floating-point values from 0 to 4095: float images are read as 0..1 and "
                                 "clipped"),
])
def test_a_file_outside_its_types_usual_range_is_named_once(tmp_path, caplog, monkeypatch, key, suffix, frame, fine,
                                                             said):
    monkeypatch.setitem(imageio._said, key, False)
    first, second = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
    assert cv2.imwrite(str(first), frame) and cv2.imwrite(str(second), frame)
    caplog.set_level(logging.WARNING, logger="edgecmg")
    imageio.read_image(first)
    imageio.read_image(second)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and messages[0].startswith(f"{first} {said}"), messages
    monkeypatch.setitem(imageio._said, key, False)
    caplog.clear()
    assert cv2.imwrite(str(first), fine(frame))  # in the type's usual range: nothing to say
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
