"""Frames as users hand them over by mistake or from other libraries: Pillow's 32-bit "I" mode and
big-endian arrays, raw YUV camera buffers, None from a failed cv2.imread, VideoCapture.read()'s pair,
a stack of gray frames, 8-bit data in uint16; and what pickling a Detector says about process pools."""
import logging

import cv2
import numpy as np
import pytest

from edgecmg import imageio
from edgecmg.detector import Detector
from edgecmg.errors import DataError
from edgecmg.imageio import read_image, to_rgb_uint8


@pytest.fixture(scope="module")
def detector(small_artifact):
    det = Detector.load(small_artifact, backend="torch")
    yield det
    det.close()


@pytest.fixture
def part(kolektor_root):
    return read_image(sorted((kolektor_root / "test" / "good").iterdir())[0])


@pytest.fixture
def fresh_notes(monkeypatch):
    """The once-per-process notes of edgecmg.imageio, not yet given in this test."""
    for key in imageio._said:
        monkeypatch.setitem(imageio._said, key, False)


def _gray(shape=(40, 50), top=256):
    return np.random.default_rng(0).integers(0, top, shape)


@pytest.mark.parametrize("suffix", [".pgm", ".png"])
@pytest.mark.parametrize("data", ["8-bit values", "full range"])
def test_a_pillow_image_of_a_16_bit_file_converts_as_the_file_is_read(tmp_path, suffix, data, fresh_notes):
    """Pillow opens 16-bit PGMs (and 16-bit PNGs in some versions) in mode "I", int32; read_image decodes
    the same file as uint16 and scales 65535 -> 255, dark ones too."""
    from PIL import Image

    values = (_gray() if data == "8-bit values" else _gray(top=65536)).astype(np.uint16)
    path = tmp_path / f"frame{suffix}"
    assert cv2.imwrite(str(path), values)
    with Image.open(path) as im:
        assert np.array_equal(to_rgb_uint8(im), read_image(path)), im.mode
    # The same data in mode "I" however Pillow opens the file
    as_i = Image.fromarray(values.astype(np.int32))
    assert as_i.mode == "I" and np.array_equal(to_rgb_uint8(as_i), read_image(path))


def test_a_pillow_mode_i_image_beyond_16_bits_converts_as_its_file_is_read(tmp_path):
    from PIL import Image

    values = np.random.default_rng(1).integers(-5, 2**31 - 1, (20, 30)).astype(np.int32)
    path = tmp_path / "wide.tif"
    Image.fromarray(values).save(path)
    with Image.open(path) as im:
        assert im.mode == "I"
        got = to_rgb_uint8(im)
    assert np.array_equal(got, read_image(path)) and got.max() > 200


def test_big_endian_arrays_are_read_as_their_dtype(fresh_notes):
    from PIL import Image

    values = (_gray() * 257).astype(np.uint16)
    want = to_rgb_uint8(values)
    assert np.array_equal(to_rgb_uint8(values.astype(">u2")), want)
    as_pil = Image.frombytes("I;16B", values.shape[::-1], values.astype(">u2").tobytes())  # a raw sensor dump
    assert np.array_equal(to_rgb_uint8(as_pil), want)
    eight = _gray()
    assert np.array_equal(to_rgb_uint8(eight.astype(">i4")), to_rgb_uint8(eight.astype(np.uint8)))
    assert np.array_equal(to_rgb_uint8((eight / 255).astype(">f4")), to_rgb_uint8(eight.astype(np.uint8)))


def test_8_bit_values_in_uint16_are_said_to_look_8_bit_once(fresh_notes, caplog):
    eight = _gray().astype(np.uint8)
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        assert int(to_rgb_uint8(eight.astype(np.uint16)).max()) == 1  # scaled as 16-bit, as before
        to_rgb_uint8(eight.astype(np.uint16))
    assert caplog.text.count("a 16-bit frame holds values up to 255 only: they look 8-bit") == 1
    assert "pass frame.astype(np.uint8)" in caplog.text and "frame << 4" not in caplog.text


def test_a_two_channel_uint8_array_is_read_as_gray_and_alpha_saying_once_how_to_convert_yuyv(fresh_notes, caplog):
    from PIL import Image

    frame = np.dstack([_gray(), _gray()[::-1]]).astype(np.uint8)
    gray, alpha = frame[..., 0].astype(np.float32), frame[..., 1].astype(np.float32)
    composited = np.rint(gray * (alpha / 255.0)).astype(np.uint8)
    as_pil = Image.fromarray(frame)
    assert as_pil.mode == "LA"
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        assert np.array_equal(to_rgb_uint8(as_pil), np.dstack([composited] * 3))
        assert caplog.text == ""  # a Pillow LA image is gray + alpha by its mode
        assert np.array_equal(to_rgb_uint8(frame), np.dstack([composited] * 3))
        to_rgb_uint8(frame)
    assert caplog.text.count("a 40x50x2 uint8 frame is read as gray + alpha; if it is a packed YUYV (YUY2) camera "
                             "buffer, convert it first: cv2.cvtColor(frame, cv2.COLOR_YUV2RGB_YUY2)") == 1


def test_a_planar_yuv_buffer_is_named_in_the_stretch_warning(detector, part, caplog):
    """An I420 / NV12 buffer is (3H/2) x W, one channel: 2/3 of its height matches the training
    images. A colour frame of that shape, or a gray one off by another factor, gets no such hint."""
    trained = detector.metadata["training"]["aspect_hw"]
    w = 120
    h = 2 * round(w * trained / 2)  # even, as 4:2:0 needs
    rgb = cv2.resize(part, (w, h), interpolation=cv2.INTER_AREA)
    i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
    assert i420.shape == (h * 3 // 2, w)
    tinted = (cv2.resize(part, (w + 2, (h + 2) * 3 // 2)) * np.array([1, .6, .2])).astype(np.uint8)  # colour
    other = cv2.resize(part[..., 0], (w + 4, 2 * (h + 4)))  # gray, but twice as tall
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        for frame in (i420, tinted, other):
            caplog.clear()
            detector.predict(frame)
            warnings = [r.getMessage() for r in caplog.records if "stretches the part" in r.getMessage()]
            assert len(warnings) == 1
            hinted = "if this is a raw YUV (I420/NV12) camera buffer" in warnings[0]
            assert hinted == (frame is i420), frame.shape
        caplog.clear()
        detector.predict(i420)  # once per frame size, as the stretch warning
    assert "stretches" not in caplog.text


def test_none_from_a_failed_imread_is_named_as_such(detector, part):
    said = r"None \(what cv2\.imread returns for a file it cannot read: check the path\)"
    with pytest.raises(DataError, match=rf"predict\(\) takes an image array, got {said}"):
        detector.predict(None)
    with pytest.raises(DataError, match=rf"frame 1 is not an image array: got {said}"):
        detector.predict_batch([part, None])


@pytest.mark.parametrize("pair", [lambda f: (True, f), lambda f: (np.bool_(True), f), lambda f: (False, None)])
def test_the_pair_videocapture_read_returns_is_told_to_be_unpacked(detector, part, pair):
    unpack = r"the \(ok, frame\) pair cv2\.VideoCapture\.read\(\) returns; unpack it: ok, frame = cap\.read\(\), " \
             r"then predict\(frame, bgr=True\)"
    with pytest.raises(DataError, match=rf"predict\(\) takes one frame, got {unpack}"):
        detector.predict(pair(part))
    with pytest.raises(DataError, match=rf"frame 0 is not an image array: got {unpack}"):
        detector.predict_batch([pair(part)])
    with pytest.raises(DataError, match=rf"predict_batch takes a list of frames, got {unpack}"):
        detector.predict_batch(pair(part))


def test_a_stack_of_gray_frames_is_told_how_to_pass_it(detector, part):
    gray = np.ascontiguousarray(part[..., 0])
    stack = np.stack([gray] * 3)
    with pytest.raises(DataError, match=r"for one frame use predict\(frame\); for N gray frames pass a list "
                                        r"\(list\(x\)\) or x\[\.\.\., None\]"):
        detector.predict_batch(stack)
    with pytest.raises(DataError, match=r"for one frame use predict\(frame\)$"):
        detector.predict_batch(part)  # H x W x 3: one frame, not three gray ones
    scores = [r.score for r in detector.predict_batch(stack[..., None])]
    assert scores == pytest.approx([r.score for r in detector.predict_batch(list(stack))], rel=1e-4)


def test_pickling_a_detector_says_to_load_it_in_spawned_workers(detector):
    import pickle

    with pytest.raises(TypeError) as info:
        pickle.dumps(detector)
    assert 'multiprocessing.get_context("spawn")' in str(info.value)
    assert 'ProcessPoolExecutor(mp_context=multiprocessing.get_context("spawn"))' in str(info.value)
    assert "a worker's torch runs on one thread" in str(info.value)
