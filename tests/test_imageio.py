"""Image reading: every pixel layout to uint8 RGB, masks to bool, folders, and bad files."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from edgecmg.errors import DataError
from edgecmg.imageio import (IMAGE_EXTENSIONS, list_images, load_images, read_image, read_image_size, read_mask,
                             resize_to_input)



def _rgb(h=6, w=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path: Path, arr: np.ndarray, mode=None) -> Path:
    (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(path)
    return path


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif"])
def test_rgb_channel_order_is_rgb(tmp_path, ext):
    rgb = _rgb()
    out = read_image(_save(tmp_path / f"a{ext}", rgb))
    assert out.dtype == np.uint8 and out.shape == (6, 5, 3)
    np.testing.assert_array_equal(out, rgb)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = _rgb()[:, :, 0]
    out = read_image(_save(tmp_path / "g.png", gray))
    assert out.shape == (6, 5, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


def test_rgba_is_composited_onto_black(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[..., 3] = [[255, 0], [128, 255]]
    out = read_image(_save(tmp_path / "a.png", rgba))
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out[0, 0], (200, 100, 50))
    np.testing.assert_array_equal(out[0, 1], (0, 0, 0))
    np.testing.assert_allclose(out[1, 0], np.array((200, 100, 50)) * 128 / 255, atol=1)


def test_sixteen_bit_png_and_tiff_scale_by_dtype_max(tmp_path):
    arr = np.array([[0, 257, 65535], [32768, 1000, 65280]], dtype=np.uint16)
    png = tmp_path / "d.png"
    Image.fromarray(arr).save(png)
    tif = tmp_path / "d.tif"
    cv2.imwrite(str(tif), arr)
    expected = np.rint(arr / 257.0).astype(np.uint8)
    for p in (png, tif):
        out = read_image(p)
        assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
        np.testing.assert_array_equal(out[:, :, 0], expected)


def test_a_sixteen_bit_array_converts_as_its_png_file_reads(tmp_path):
    """to_rgb_uint8 (frames from a 16-bit camera) and read_image (the same pixels saved as a 16-bit
    PNG) round every value the same way, to the nearest 8-bit level: x / 257 rounded, not truncated
    (1000 -> 4, 32768 -> 128, 65280 -> 254)."""
    from edgecmg.imageio import to_rgb_uint8

    every = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    path = tmp_path / "every.png"
    assert cv2.imwrite(str(path), every)
    converted = to_rgb_uint8(every)
    np.testing.assert_array_equal(converted, read_image(path))
    np.testing.assert_array_equal(converted[:, :, 0], np.rint(every / 257.0).astype(np.uint8))
    assert [int(converted.reshape(-1, 3)[v, 0]) for v in (1000, 32768, 65280)] == [4, 128, 254]


def test_sixteen_bit_colour_tiff(tmp_path):
    rgb16 = (_rgb().astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "c.tif"), rgb16[:, :, ::-1].copy())  # OpenCV writes BGR
    np.testing.assert_array_equal(read_image(tmp_path / "c.tif"), _rgb())


def test_palette_image_uses_its_palette(tmp_path):
    idx = np.array([[0, 1], [2, 1]], np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (253 * 3))
    im.save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")
    np.testing.assert_array_equal(out[0, 0], (255, 0, 0))
    np.testing.assert_array_equal(out[0, 1], (0, 255, 0))
    np.testing.assert_array_equal(out[1, 0], (0, 0, 255))


def test_unicode_path(tmp_path):
    folder = tmp_path / "données_画像"
    folder.mkdir()
    rgb = _rgb()
    p = folder / "pièce ü.png"
    Image.fromarray(rgb).save(p)
    np.testing.assert_array_equal(read_image(p), rgb)
    assert list_images(folder) == [p]


def test_pillow_fallback_when_opencv_cannot_decode(tmp_path, monkeypatch):
    rgb = _rgb()
    idx = np.array([[0, 1], [1, 0]], np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    pal = Image.fromarray(idx, "P")
    pal.putpalette([10, 20, 30, 40, 50, 60] + [0] * (254 * 3))
    pal.save(tmp_path / "p.gif")
    Image.fromarray(np.array([[0, 65535]], np.uint16)).save(tmp_path / "d.png")
    monkeypatch.setattr(cv2, "imdecode", lambda *a, **k: None)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "p.gif")[0, 1], (40, 50, 60))
    np.testing.assert_array_equal(read_image(tmp_path / "d.png")[0, :, 0], (0, 255))


def test_pillow_fallback_scales_int32_sixteen_bit_and_composites_gray_alpha(tmp_path, monkeypatch):
    """Pillow opens a 16-bit PGM in its int32 "I" mode: scaled by 65535, not by int32's maximum
    (which would make every pixel 0), to the levels a 16-bit frame converts to; a gray + alpha PNG
    is composited onto black as to_rgb_uint8 does."""
    from edgecmg.imageio import to_rgb_uint8

    every = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    (tmp_path / "d.pgm").write_bytes(b"P5\n256 256\n65535\n" + every.astype(">u2").tobytes())
    la = np.stack([np.array([[200, 90, 17], [255, 0, 128]], np.uint8),
                   np.array([[255, 128, 40], [0, 77, 200]], np.uint8)], axis=-1)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    with Image.open(tmp_path / "d.pgm") as im:
        assert im.mode == "I"  # the branch under test: int32 pixels holding 16-bit values
    monkeypatch.setattr(cv2, "imdecode", lambda *a, **k: None)
    sixteen = read_image(tmp_path / "d.pgm")
    assert sixteen[0, 0].tolist() == [0, 0, 0] and sixteen[-1, -1].tolist() == [255, 255, 255]
    np.testing.assert_array_equal(sixteen, to_rgb_uint8(every))  # every value as a 16-bit frame converts
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), to_rgb_uint8(la))
    assert read_image(tmp_path / "la.png")[0, 0, 0] == 200 and read_image(tmp_path / "la.png")[1, 0, 0] == 0


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda d: d / "missing.png", "not found"),
        (lambda d: d, "is a folder"),
        (lambda d: _write(d / "empty.png", b""), "empty"),
        (lambda d: _write(d / "junk.png", b"this is not a png at all"), "corrupt"),
    ],
)
def test_bad_files_raise_data_error_naming_the_file(tmp_path, make, match):
    path = make(tmp_path)
    for reader in (read_image, read_image_size):  # the header reader fails as the full read does
        with pytest.raises(DataError, match=match) as info:
            reader(path)
        assert str(path) in str(info.value)


def test_read_image_size_reads_headers_as_read_image_reads_pixels(tmp_path, monkeypatch):
    """The size fit chooses its model size from, for every layout, without decoding; a file Pillow
    cannot parse falls back to the full read (OpenCV's, here a PGM Pillow is made to refuse)."""
    files = [_save(tmp_path / "c.png", _rgb(7, 11)), _save(tmp_path / "g.jpg", _rgb(9, 4)[..., 0]),
             _save(tmp_path / "d.tif", np.zeros((5, 13), np.uint16)), _save(tmp_path / "a.png", np.zeros((3, 8, 4), np.uint8))]
    cv2.imwrite(str(tmp_path / "p.pgm"), np.zeros((6, 10), np.uint8))
    files.append(tmp_path / "p.pgm")
    for path in files:
        assert read_image_size(path) == read_image(path).shape[:2], path.name
    monkeypatch.setattr(Image, "open", lambda *a, **k: (_ for _ in ()).throw(OSError("refused")))
    assert read_image_size(tmp_path / "p.pgm") == (6, 10)


def _png_header(width: int, height: int) -> bytes:
    """A PNG of only a header declaring ``width`` x ``height`` 8-bit gray pixels (and no pixel data)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IEND", b""))


def test_a_header_declaring_a_huge_picture_is_refused_before_decoding(tmp_path, monkeypatch, caplog):
    """74 bytes that declare 30000x30000 pixels: OpenCV, which decodes first, would allocate for them
    (a real such PNG took 18.5 GB); Pillow's decompression-bomb limit is checked first, for every
    reader, and load_images skips the file by name."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(30000, 30000))

    def no_decoding(*args, **kwargs):
        raise AssertionError("the file was decoded")

    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    for reader in (read_image, read_image_size, read_mask):
        with pytest.raises(DataError, match=r"bomb\.png is too large to decode \(Image size \(900000000 pixels\)"):
            reader(bomb)
    monkeypatch.undo()
    good = _save(tmp_path / "good.png", _rgb())
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        images, ok, skipped = load_images([bomb, good])
    assert ok == [good] and [p for p, _ in skipped] == [bomb] and "bomb.png" in caplog.text


def test_an_image_past_pillows_warning_limit_is_read_and_named_in_edgecmgs_words(kolektor_root, tmp_path,
                                                                                 monkeypatch, caplog):
    """Between Pillow's limit and twice it (89 to 179 megapixels by default) Pillow printed its own
    DecompressionBombWarning, with a path into its source, for images then judged normally. A real
    KolektorSDD part (500 x 1240: 0.62 megapixels) against a limit lowered to 0.4: read, with one
    edgecmg line naming the file and its megapixels, and no Pillow warning, also for a file OpenCV
    cannot decode (Pillow decodes it) and for a mask. Past twice the limit, the refusal says what a
    command line can do."""
    import warnings

    part = tmp_path / "part.jpg"  # a path of this test's own: each file is named once a process
    part.symlink_to(sorted((kolektor_root / "test" / "good").iterdir())[0])
    width, height = Image.open(part).size  # KolektorSDD parts are about 0.16 megapixels
    as_gif = tmp_path / "part.gif"  # OpenCV decodes no GIF: Pillow does
    Image.open(part).convert("L").save(as_gif)
    mask = _save(tmp_path / "mask.png", np.zeros((height, width), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", int(width * height * 0.7))
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING, logger="edgecmg"):
        for path in (part, as_gif):
            assert read_image(path).shape == (height, width, 3)
        assert read_image(part).shape == (height, width, 3)  # said once a file
        assert not read_mask(mask).any()
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)], \
        [str(w.message) for w in caught]
    said = [r.getMessage() for r in caplog.records if r.name == "edgecmg"]
    megapixels = f"{width * height / 1e6:.2g}"
    for path in (part, as_gif, mask):
        assert [line for line in said if line.startswith(f"{path} is a {megapixels}-megapixel image (width {width}, "
                                                         f"height {height}): it is read in full")] != [], said
    assert len(said) == 3 and all("megapixels are refused (Pillow's decompression-bomb limit)" in line
                                  for line in said), said

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", int(width * height * 0.4))
    with pytest.raises(DataError, match="downscale it or cut it into tiles first and judge those") as refused:
        read_image(part)
    assert "raising PIL.Image.MAX_IMAGE_PIXELS" in str(refused.value) and "from Python" in str(refused.value)


def test_truncated_png_is_a_data_error(tmp_path):
    full = _save(tmp_path / "full.png", _rgb(64, 64)).read_bytes()
    (tmp_path / "cut.png").write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match="cut.png"):
        read_image(tmp_path / "cut.png")


def test_read_mask(tmp_path):
    m = np.zeros((4, 5), np.uint8)
    m[1, 2] = 255
    m[3, 0] = 1
    out = read_mask(_save(tmp_path / "m.png", m))
    assert out.dtype == bool and out.shape == (4, 5)
    np.testing.assert_array_equal(out, m != 0)
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 3] = 255  # opaque alpha must not make every pixel a defect
    rgba[2, 2, 0] = 255
    out = read_mask(_save(tmp_path / "m4.png", rgba))
    assert out.sum() == 1 and out[2, 2]
    with pytest.raises(DataError, match="not found"):
        read_mask(tmp_path / "nope.png")


@pytest.mark.parametrize("ext", [".png", ".gif", ".bmp", ".tif"])
def test_a_palette_mask_is_read_by_its_index_not_its_colour(tmp_path, ext):
    """A paint tool's mask with palette [white, red, black]: index 0 (white) is the background, indices
    1 and 2 are defects, the black one too. Read by colour, as OpenCV expands it, the white background
    made every pixel but the black defect a defect."""
    idx = np.zeros((40, 60), np.uint8)
    idx[5:9, 10:20] = 1
    idx[30:33, 40:44] = 2
    im = Image.fromarray(idx, "P")
    im.putpalette([255, 255, 255, 255, 0, 0, 0, 0, 0])
    im.save(tmp_path / f"m{ext}")
    out = read_mask(tmp_path / f"m{ext}")
    assert out.dtype == bool and out.shape == (40, 60)
    np.testing.assert_array_equal(out, idx != 0)


def test_a_palette_mask_ignores_transparency_and_reads_voc_class_indices(tmp_path):
    """A VOC / labelme class mask (index 0 black, classes 1 and 2 in colour) gives every class as a
    defect; a transparent background index (tRNS) is still the background."""
    idx = np.zeros((20, 30), np.uint8)
    idx[2:5, 3:9] = 1
    idx[10:12, 20:25] = 2
    voc = Image.fromarray(idx, "P")
    voc.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0])
    voc.save(tmp_path / "voc.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "voc.png"), idx != 0)
    clear = Image.fromarray(idx, "P")
    clear.putpalette([255, 255, 255, 255, 0, 0, 0, 0, 255])
    clear.save(tmp_path / "clear.png", transparency=0)
    assert Image.open(tmp_path / "clear.png").mode == "P"  # a palette image, not RGBA
    np.testing.assert_array_equal(read_mask(tmp_path / "clear.png"), idx != 0)


def test_list_images_folder_glob_and_file(tmp_path):
    names = ["b.png", "a.JPG", "c.tiff", "notes.txt", ".hidden.png"]
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.png").write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png", "c.tiff"]
    assert [p.name for p in list_images(str(tmp_path / "*.png"))] == ["b.png"]
    assert [p.name for p in list_images(str(tmp_path / "**" / "*.png"))] == ["b.png", "d.png"]
    assert list_images(tmp_path / "b.png") == [tmp_path / "b.png"]
    assert ".png" in IMAGE_EXTENSIONS and ".jpg" in IMAGE_EXTENSIONS


def test_a_folder_or_file_whose_name_has_glob_characters_is_taken_as_it_is(tmp_path):
    """Camera software names folders "run[1]" or "shots*": an existing path is listed, not matched
    as a pattern (which would look for "run1" and find nothing)."""
    folder = tmp_path / "run[1]"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"x")
    (tmp_path / "run1").mkdir()  # what the pattern run[1] would match instead
    (tmp_path / "run1" / "other.png").write_bytes(b"x")
    assert list_images(folder) == [folder / "a.png"]
    assert list_images(str(folder / "a.png")) == [folder / "a.png"]
    assert [p.name for p in list_images(str(tmp_path / "run[1]" / "*.png"))] == ["other.png"]  # a real pattern


def test_list_images_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        list_images(tmp_path / "nope")
    with pytest.raises(DataError, match="no image files in"):
        list_images(tmp_path)
    with pytest.raises(DataError, match="match the pattern"):
        list_images(str(tmp_path / "*.png"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="image extension"):
        list_images(tmp_path / "notes.txt")


def test_load_images_skips_and_reports(tmp_path, caplog):
    good = [_save(tmp_path / f"{i}.png", _rgb(seed=i)) for i in range(3)]
    bad = tmp_path / "1b.png"
    bad.write_bytes(b"garbage")
    calls = []
    paths = [good[0], bad, good[1], tmp_path / "gone.png", good[2]]
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        images, ok, skipped = load_images(paths, on_error=lambda p, why: calls.append(p))
    assert ok == good and len(images) == 3
    np.testing.assert_array_equal(images[1], _rgb(seed=1))
    assert [p for p, _ in skipped] == [bad, tmp_path / "gone.png"] == calls
    assert "1b.png" in caplog.text and "2 of 5" in caplog.text
    # a folder is expanded with list_images
    images, ok, skipped = load_images(tmp_path)
    assert len(ok) == 3 and [p for p, _ in skipped] == [bad]


def test_broken_symlink_is_reported_by_name_not_dropped(tmp_path, caplog):
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.full((8, 8, 3), 90, np.uint8))
    (tmp_path / "link.png").symlink_to(tmp_path / "moved-away.png")
    paths = list_images(tmp_path)
    assert [p.name for p in paths] == ["good.png", "link.png"]
    frames, read, skipped = load_images(paths)
    assert read == [good] and len(frames) == 1
    assert skipped[0][0].name == "link.png" and "symbolic link to" in skipped[0][1]
    assert "moved-away.png, which does not exist" in skipped[0][1]


def test_link_loops_are_named_and_a_recursive_pattern_lists_each_file_once(tmp_path, caplog):
    """A '**' pattern follows links to folders: a link to the parent listed one image 41 times, and a
    pair of links pointing at each other was reported as a link 'which does not exist'."""
    cv2.imwrite(str(tmp_path / "a.png"), np.full((8, 8, 3), 90, np.uint8))
    (tmp_path / "sub").symlink_to(tmp_path)
    (tmp_path / "b.png").symlink_to(tmp_path / "c.png")
    (tmp_path / "c.png").symlink_to(tmp_path / "b.png")
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        paths = list_images(str(tmp_path / "**" / "*.png"))
    assert paths == [tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"]
    assert "lead to files already matched (through symbolic links); each file is read once" in caplog.text
    with pytest.raises(DataError, match=r"b.png is a symbolic link that leads back to itself \(a loop through"):
        read_image(tmp_path / "b.png")


def test_real_kolektor_image_and_mask(kolektor_root):
    img = read_image(kolektor_root / "test" / "defect" / "kos01_Part5.jpg")
    mask = read_mask(kolektor_root / "ground_truth" / "defect" / "kos01_Part5_mask.png")
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert mask.shape == img.shape[:2] and mask.dtype == bool and 0 < mask.sum() < mask.size


# --------------------------------------------------------------------------------------------
# resize_to_input: the one resize between a picture and the model
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, size", [
    ((720, 1280, 3), (256, 256)),   # halved once, then area-resized
    ((1080, 1920, 3), (256, 256)),  # halved twice
    ((250, 625, 3), (96, 256)),     # odd sides: straight area resize
    ((300, 300, 3), (256, 256)),    # less than 2x: straight area resize
])
def test_resize_to_input_matches_a_plain_area_resize(shape, size):
    rng = np.random.default_rng(0)
    # a smooth picture plus noise, like a camera frame
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    base = (127 + 100 * np.sin(xx / 37.0) * np.cos(yy / 23.0))[..., None]
    frame = np.clip(base + rng.normal(0, 8, shape), 0, 255).astype(np.uint8)
    got = resize_to_input(frame, size)
    want = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    assert got.shape == (*size, 3) and got.dtype == np.uint8 and got.flags.c_contiguous
    # Not bit-identical (the halving rounds to uint8, and its boxes sit on a 2-pixel grid), but
    # the same picture: PSNR above 45 dB against the single area resize even with sensor noise.
    mse = np.mean((got.astype(float) - want.astype(float)) ** 2)
    assert mse == 0 or 10 * np.log10(255.0 ** 2 / mse) > 45


def test_resize_to_input_leaves_a_frame_of_the_right_size_alone():
    frame = np.arange(32 * 48 * 3, dtype=np.uint8).reshape(32, 48, 3)
    np.testing.assert_array_equal(resize_to_input(frame, (32, 48)), frame)


def test_detector_fit_and_calibration_share_the_resize(small_artifact, kolektor_root, tmp_path):
    # fit, calibration and Detector.prepare must feed the model the same pixels
    from edgecmg.calibration.data import load_frame
    from edgecmg.detector import Detector
    from edgecmg.fit import _Training

    source = read_image(sorted((kolektor_root / "test" / "defect").iterdir())[0])
    path = tmp_path / "odd.png"
    cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(source[:511, :197]), cv2.COLOR_RGB2BGR))
    frame = read_image(path)
    detector = Detector.load(small_artifact, backend="torch")
    size = tuple(detector.input_size)
    assert frame.shape[:2] == (511, 197) != size
    want = resize_to_input(frame, size)
    np.testing.assert_array_equal(_Training([path]).read_at(size, show=False)[0], want)
    np.testing.assert_array_equal(load_frame(path, size), want)
    np.testing.assert_array_equal(detector.prepare(frame), want)


def test_jpeg_mask_is_not_grown_by_compression_ringing(kolektor_root, tmp_path):
    """A 0/255 mask saved as JPEG has small nonzero values around every edge; read as 'nonzero', a
    KolektorSDD mask came out with about twice its defect area, which moved pixel AUROC and AUPRO."""
    png = kolektor_root / "ground_truth" / "defect" / "kos01_Part5_mask.png"
    truth = read_mask(png)
    cv2.imwrite(str(tmp_path / "m.jpg"), cv2.imread(str(png), cv2.IMREAD_GRAYSCALE))
    cv2.imwrite(str(tmp_path / "m3.jpg"), cv2.imread(str(png), cv2.IMREAD_COLOR))
    for name in ("m.jpg", "m3.jpg"):
        out = read_mask(tmp_path / name)
        assert abs(int(out.sum()) - int(truth.sum())) <= 0.1 * truth.sum()
        assert (out & truth).sum() >= 0.9 * truth.sum()
    small = np.zeros((16, 16), np.uint8)
    small[4:8, 4:8] = 1  # a 0/1 mask: still found
    cv2.imwrite(str(tmp_path / "one.jpg"), small, [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert read_mask(tmp_path / "one.jpg")[4:8, 4:8].all()


def test_sixteen_bit_data_holding_twelve_bits_is_said_once(monkeypatch, caplog):
    """Mono12 in uint16 (an industrial camera's usual format) is scaled as 16-bit: nearly black."""
    import logging

    from edgecmg import imageio
    from edgecmg.imageio import to_rgb_uint8

    for key in ("eight_bits_in_sixteen", "low_bit_camera"):
        monkeypatch.setitem(imageio._said, key, False)
    full = np.full((8, 8), 60000, np.uint16)
    twelve_bit = np.full((8, 8), 4095, np.uint16)
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        to_rgb_uint8(full)
        to_rgb_uint8(np.zeros((8, 8), np.uint16))  # black: nothing to say
        assert caplog.text == ""
        assert int(to_rgb_uint8(twelve_bit).max()) == 16  # what that scale gives
        to_rgb_uint8(twelve_bit)
    assert caplog.text.count("a 16-bit frame holds values up to 4095 only") == 1
    assert "frame << 4 for 12-bit data" in caplog.text

    # The other mistake is still said after this one (they shared one flag: the second was silent).
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        to_rgb_uint8(np.full((8, 8), 200, np.uint16))
        to_rgb_uint8(np.full((8, 8), 200, np.uint16))
    assert caplog.text.count("they look 8-bit (an 8-bit image cast to uint16?)") == 1


def test_a_float_frame_off_its_range_by_rounding_is_clipped_not_refused():
    from edgecmg.errors import DataError
    from edgecmg.imageio import to_rgb_uint8

    frame = np.array([[1.0 + 1e-6, -1e-7], [0.5, 1.0]], np.float32)  # after x / x.max() and the like
    np.testing.assert_array_equal(to_rgb_uint8(frame)[..., 0], [[255, 0], [128, 255]])
    for off in (1.002, -0.002, 255.0):
        with pytest.raises(DataError, match=r"float frame must hold finite values in \[0, 1\]"):
            to_rgb_uint8(np.array([[off, 0.5]], np.float32))


def test_a_tensor_with_its_negative_bit_set_is_read_as_its_values():
    import torch

    from edgecmg.imageio import to_rgb_uint8

    negated = torch._neg_view(torch.full((4, 5), -0.5))  # a lazily negated view: its values are 0.5
    assert negated.is_neg()
    np.testing.assert_array_equal(to_rgb_uint8(negated), np.full((4, 5, 3), 128, np.uint8))


@pytest.mark.parametrize("mode", ["P", "PA", "1", "CMYK", "YCbCr", "HSV", "L", "LA", "RGBA", "I;16"])
def test_a_pillow_image_converts_as_its_file_reads(tmp_path, mode):
    """A Pillow image in memory is converted by its mode as read_image converts a file: a palette
    image's indices, a CMYK image's four bytes or a YCbCr image's planes are no RGB(A) pixels."""
    from edgecmg.imageio import to_rgb_uint8

    rgb = np.random.default_rng(3).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    base = Image.fromarray(rgb)
    im = base.convert("RGBA").convert("PA") if mode == "PA" else base.convert(mode)
    if mode == "P":
        im.info.pop("transparency", None)
    # The file read_image decodes with Pillow (OpenCV lacks most of these modes): the reference pixels.
    path = tmp_path / ("a.tif" if mode in ("CMYK", "YCbCr", "HSV", "I;16") else "a.png")
    try:
        im.save(path)
        from_file = read_image(path)
    except (OSError, ValueError):  # a mode the format cannot hold: Pillow's own conversion is the reference
        from_file = to_rgb_uint8(np.asarray(im.convert("RGBA" if mode in ("PA", "LA") else "RGB")))
    converted = to_rgb_uint8(im)
    assert converted.shape == (12, 10, 3) and converted.dtype == np.uint8
    np.testing.assert_allclose(converted.astype(int), from_file.astype(int), atol=1)
    if mode in ("P", "CMYK", "YCbCr", "HSV"):
        assert np.abs(converted.astype(int) - to_rgb_uint8(np.asarray(im)).astype(int)).max() > 10  # the old reading


def test_frames_that_are_no_image_are_refused_saying_what_they_are():
    from edgecmg.imageio import to_rgb_uint8

    frame = np.full((8, 9), 0.5, np.float32)
    frame[1, 2] = np.nan
    frame[3, 4] = np.inf
    with pytest.raises(DataError, match=r"got 2 NaN or infinite value\(s\) among its 72; replace them"):
        to_rgb_uint8(frame)
    with pytest.raises(DataError, match=r"must hold real numbers, got dtype complex64; pass np.abs"):
        to_rgb_uint8(np.ones((4, 4), np.complex64))
    for batch in (np.zeros((1, 6, 5, 3), np.uint8), np.zeros((2, 3, 6, 5), np.uint8)):
        with pytest.raises(DataError, match=r"looks like a batch of \d frame\(s\): pass one \(x\[0\]\), or all of "
                                            "them to predict_batch"):
            to_rgb_uint8(batch)
    with pytest.raises(DataError, match="looks channels-first") as refused:
        to_rgb_uint8(np.zeros((3, 6, 5), np.uint8))
    assert "batch" not in str(refused.value)
    with pytest.raises(DataError, match=r"read_image takes a file path \(str or pathlib.Path\), got ndarray of "
                                        r"shape \(4, 4, 3\); an array is converted with to_rgb_uint8"):
        read_image(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match=r"read_image takes a file path \(str or pathlib.Path\), got 3 \(int\)$"):
        read_image(3)


def test_name_some_names_the_first_and_counts_the_rest():
    """Every "these files were left out" message: a line, however many there are."""
    from edgecmg.errors import name_some

    assert name_some([], 3) == ""
    assert name_some(["a", "b"], 3) == "a, b"
    assert name_some(["a", "b", "c"], 3) == "a, b, c"
    assert name_some([f"f{i}.png" for i in range(5000)], 3) == "f0.png, f1.png, f2.png and 4997 more"
    assert name_some([Path("x/y.png")], 1) == str(Path("x/y.png"))


def test_bgr_must_be_a_bool():
    """bgr="yes" (or "rgb") ran as True: a colour part then scores with its channels swapped."""
    from edgecmg.errors import ConfigError
    from edgecmg.imageio import to_rgb_uint8

    frame = np.zeros((4, 4, 3), np.uint8)
    frame[..., 2] = 200
    assert to_rgb_uint8(frame, bgr=np.bool_(True))[0, 0, 0] == 200 and to_rgb_uint8(frame, bgr=False)[0, 0, 2] == 200
    for odd in ("rgb", 1, None):
        with pytest.raises(ConfigError, match=rf"bgr={odd!r}: give True for OpenCV's BGR order"):
            to_rgb_uint8(frame, bgr=odd)


def test_a_leading_tilde_is_the_home_folder_where_images_are_read(tmp_path, monkeypatch):
    """Detector.load("~/m.edgecmg") and stream("~/x.jpg") took it; read_image and lists did not."""
    from edgecmg.datasets import MVTecDataset
    from edgecmg.fit import training_images
    from edgecmg.imageio import list_images, read_image, read_image_size

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "parts" / "train" / "good").mkdir(parents=True)
    (tmp_path / "parts" / "test" / "good").mkdir(parents=True)
    image = np.full((6, 8, 3), 90, np.uint8)
    for folder in ("train/good", "test/good"):
        cv2.imwrite(str(tmp_path / "parts" / folder / "a.png"), image)
    assert read_image("~/parts/train/good/a.png").shape == (6, 8, 3)
    assert read_image_size(Path("~/parts/train/good/a.png")) == (6, 8)
    want = [tmp_path / "parts" / "train" / "good" / "a.png"]
    assert list_images("~/parts/train/good") == want and list_images("~/parts/train/*/*.png") == want
    assert training_images("~/parts") == want
    assert MVTecDataset("~/parts").root == tmp_path / "parts"


def test_a_model_or_range_cache_given_as_an_image_is_named_for_what_it_is(tmp_path):
    """fit k.edgecmg, calibrate --data k.edgecmg and bench --images k.onnx said "rename it"."""
    from edgecmg.errors import DataError
    from edgecmg.imageio import list_images

    for name, said in (("k.edgecmg", "is a model file (.edgecmg), not an image"),
                       ("k.ONNX", "is a model file (.ONNX), not an image"),
                       ("k.int8.calib.json", "is calibrate's activation-range cache, not an image"),
                       ("notes.txt", "does not have an image extension")):
        (tmp_path / name).write_bytes(b"x")
        with pytest.raises(DataError, match=re.escape(f"{tmp_path / name} {said}")):
            list_images(tmp_path / name)
