"""Frame sources: real video files and image folders, normalisation, CSI, reconnects."""
from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgecmg.config import StreamConfig
from edgecmg.errors import ConfigError, StreamError
from edgecmg.stream import (
    CaptureSource,
    Frame,
    ImageFilesSource,
    IterableSource,
    csi_pipeline,
    open_source,
    to_rgb_uint8,
)


# ---------------------------------------------------------------------------- video files
@pytest.mark.parametrize("fourcc,ext", [("mp4v", ".mp4"), ("MJPG", ".avi")])
def test_video_file_reads_every_frame_as_rgb(video_file, fourcc, ext):
    path = video_file(n=15, fourcc=fourcc, ext=ext)
    with open_source(path) as src:
        assert isinstance(src, CaptureSource) and not src.is_live
        assert src.name == str(path)
        frames = list(src)
    assert [f.index for f in frames] == list(range(15))
    assert src.frames_read == 15 and src.corrupt_skipped == 0 and src.reconnects == 0
    img = frames[0].image
    assert img.dtype == np.uint8 and img.shape == (48, 64, 3) and img.flags["C_CONTIGUOUS"]
    # Written as BGR with blue=200, red=30: after BGR->RGB, channel 0 is red, channel 2 blue.
    assert abs(int(np.median(img[20:, 40:, 0])) - 30) < 25
    assert abs(int(np.median(img[20:, 40:, 2])) - 200) < 25
    stamps = [f.timestamp for f in frames]
    assert stamps == sorted(stamps) and abs(stamps[0] - time.time()) < 60
    assert all(f.source == str(path) for f in frames)
    assert src.closed and src.read() is None


def test_a_truncated_recording_is_reported_when_it_ends(video_file, tmp_path, caplog):
    whole = video_file(n=80, fourcc="MJPG", ext=".avi")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])  # the tail lost, e.g. a full disk
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        with open_source(whole) as src:
            assert len(list(src)) == 80
        assert "truncated" not in caplog.text
        with open_source(cut) as src:
            read = len(list(src))
    assert 0 < read < 78  # OpenCV decodes up to the cut and ends as if the file were whole
    assert f"{cut}: ended after {read} of the 80 frames its container lists" in caplog.text
    # Looping checks each pass and says it once; a whole file looped is never reported.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        for path, frames in ((whole, 2 * 80 + 1), (cut, 3 * read + 1)):
            with open_source(path, StreamConfig(loop=True)) as src:
                assert [src.read().index for _ in range(frames)] == list(range(frames))
    assert [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()] == [
        f"{cut}: ended after {read} of the 80 frames its container lists; the file looks truncated or damaged "
        "(check it plays to the end, or copy it again)"
    ]


def test_frame_rate_is_the_files_own_and_unknown_for_folders_and_sequences(video_file, image_folder):
    with open_source(video_file(n=3, fourcc="MJPG", ext=".avi", fps=12.5)) as src:
        assert src.frame_rate == pytest.approx(12.5, abs=0.01)
    with open_source(image_folder) as src:
        assert src.frame_rate is None
    with open_source([np.zeros((4, 4, 3), np.uint8)]) as src:
        assert src.frame_rate is None


def test_text_file_renamed_mp4_is_a_stream_error_naming_it(tmp_path):
    bogus = tmp_path / "not_a_video.mp4"
    bogus.write_text("hello, I am a text file\n" * 20)
    with pytest.raises(StreamError, match="not_a_video.mp4"):
        open_source(bogus)


def test_empty_video_file_is_a_stream_error(tmp_path):
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises(StreamError, match="empty.avi"):
        open_source(str(empty))


def test_missing_path_is_a_stream_error(tmp_path):
    with pytest.raises(StreamError, match="no such file or folder"):
        open_source(tmp_path / "nope.mp4")


def test_video_loop_restarts_the_file(video_file):
    path = video_file(n=5, fourcc="MJPG", ext=".avi")
    src = open_source(path, StreamConfig(loop=True))
    try:
        indices = [src.read().index for _ in range(12)]
    finally:
        src.close()
    assert indices == list(range(12))


def test_a_looped_video_that_reopens_empty_ends_instead_of_reopening_forever(video_file, scripted_opener,
                                                                            fake_capture):
    # The file played once, then every reopen gives a capture that opens but decodes nothing (the
    # file was truncated meanwhile): one reopen that yields no frame ends the stream.
    path = video_file(n=3, fourcc="MJPG", ext=".avi")
    opener = scripted_opener([fake_capture([0, 1, 2])] + [fake_capture([]) for _ in range(5)])
    src = open_source(path, StreamConfig(loop=True), opener=opener)
    try:
        assert [src.read().index for _ in range(3)] == [0, 1, 2]
        assert src.read() is None
    finally:
        src.close()
    assert len(opener.targets) == 2  # the first open and one reopen, not one per pass


def test_file_url_is_a_path(video_file):
    path = video_file(n=3, fourcc="MJPG", ext=".avi")
    with open_source("file://" + str(path)) as src:
        assert len(list(src)) == 3


# ---------------------------------------------------------------------------- image folders
def test_image_folder_skips_and_counts_the_corrupt_file(image_folder, caplog):
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        with open_source(image_folder) as src:
            assert isinstance(src, ImageFilesSource) and not src.is_live
            frames = list(src)
    assert len(frames) == 6  # 4 colour + gray + 16-bit; the corrupt file and notes.txt are not frames
    assert src.corrupt_skipped == 1
    assert [f.index for f in frames] == list(range(6))
    # Each frame names its own file (the JSON lines of `edgecmg stream` carry it), not the folder.
    assert [Path(f.source).name for f in frames] == ["img_00.png", "img_01.jpg", "img_02.png", "img_03.jpg",
                                                     "img_04_gray.png", "img_05_16bit.png"]
    assert any("img_06_corrupt.png" in r.getMessage() for r in caplog.records)
    for f in frames:
        assert f.image.dtype == np.uint8 and f.image.shape == (48, 64, 3)
    gray, sixteen = frames[4].image, frames[5].image
    assert (gray == 128).all()
    assert (sixteen == 255).all()
    assert abs(int(frames[0].image[10, 10, 2]) - 200) <= 2  # blue stays blue (RGB order)


def test_image_glob_and_single_image(image_folder):
    with open_source(str(image_folder / "*.jpg")) as src:
        assert len(list(src)) == 2
    with open_source(image_folder / "img_00.png") as src:
        assert len(list(src)) == 1


def test_folder_of_only_corrupt_images_fails_at_the_end(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"garbage")
    (folder / "b.jpg").write_bytes(b"more garbage")
    src = open_source(folder)
    with pytest.raises(StreamError, match="none of the 2 image"):
        src.read()
    src.close()


def test_empty_folder_and_unmatched_glob_fail_at_open(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(StreamError, match="no image files"):
        open_source(tmp_path / "empty")
    with pytest.raises(StreamError, match="no image files match"):
        open_source(str(tmp_path / "*.png"))


def test_image_folder_loop_and_realtime(image_folder):
    src = open_source(image_folder, StreamConfig(loop=True, realtime=True, capture_fps=100.0))
    t0 = time.perf_counter()
    try:
        frames = [src.read() for _ in range(13)]
    finally:
        src.close()
    elapsed = time.perf_counter() - t0
    # Seven files a pass, the seventh corrupt: an index is the file's position, the skipped one counted.
    assert [f.index for f in frames] == [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 14]
    assert Path(frames[6].source).name == "img_00.png" and Path(frames[12].source).name == "img_00.png"
    assert elapsed >= 0.10  # 13 frames paced at 100 fps: at least 12 periods of 10 ms
    assert src.corrupt_skipped >= 2  # counted again on the second pass


def test_realtime_pacing_resyncs_after_a_stalled_consumer():
    """A consumer that stalls for several frame periods gets the next frame at once and the rest at the
    frame rate again, not a burst of catch-up frames (no camera delivers one)."""
    frames = [np.full((4, 4, 3), i, np.uint8) for i in range(8)]
    src = open_source(frames, StreamConfig(realtime=True, capture_fps=10.0))  # a 100 ms period
    try:
        src.read()
        time.sleep(0.6)  # six periods
        t0 = time.perf_counter()
        src.read()
        first = time.perf_counter() - t0
        src.read()
        src.read()
        elapsed = time.perf_counter() - t0
    finally:
        src.close()
    assert first < 0.08  # the frame after the stall: due at once, not a period later (slack for a busy machine)
    assert elapsed >= 0.18  # the two after it: one period each (a burst would take ~0 s)


# ---------------------------------------------------------------------------- iterables
@pytest.mark.parametrize(
    "frame,expected",
    [
        (np.full((4, 5), 7, np.uint8), 7),
        (np.full((4, 5, 1), 9, np.uint8), 9),
        (np.full((4, 5, 3), 65535, np.uint16), 255),
        (np.full((4, 5, 3), 257 * 10, np.uint16), 10),
        (np.dstack([np.full((4, 5, 3), 50, np.uint8), np.full((4, 5), 255, np.uint8)]), 50),  # opaque RGBA
        (np.full((4, 5, 3), 1.0, np.float32), 255),
        (np.full((4, 5), True), 255),
        (np.full((4, 5, 3), 12, np.int64), 12),
    ],
)
def test_iterable_frames_are_normalised_to_uint8_rgb(frame, expected):
    with open_source([frame]) as src:
        (f,) = list(src)
    assert f.image.dtype == np.uint8 and f.image.shape == (4, 5, 3)
    assert (f.image == expected).all()


def test_rgba_keeps_colour_order_and_bgr_is_swapped():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 255
    assert (to_rgb_uint8(rgba)[..., 0] == 255).all()
    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[..., 0] = 200
    assert (to_rgb_uint8(bgr, bgr=True)[..., 2] == 200).all()


def test_a_constant_fourth_channel_is_padding_and_dropped(tmp_path):
    """BGRx camera formats carry a padding byte, often 0: compositing it as alpha made the frame black."""
    from PIL import Image

    from edgecmg.imageio import read_image

    bgrx = np.zeros((4, 5, 4), np.uint8)
    bgrx[..., :3] = (10, 20, 30)
    np.testing.assert_array_equal(to_rgb_uint8(bgrx, bgr=True), np.broadcast_to([30, 20, 10], (4, 5, 3)))
    Image.fromarray(bgrx[..., [2, 1, 0, 3]], "RGBA").save(tmp_path / "x.png")  # the same rule for files
    np.testing.assert_array_equal(read_image(tmp_path / "x.png"), to_rgb_uint8(bgrx, bgr=True))


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_a_translucent_frame_is_composited_as_its_file_is_read(tmp_path, mode):
    """predict(array) and fit / predict(file) must see the same pixels: both composite onto black."""
    from PIL import Image

    from edgecmg.imageio import read_image

    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (6, 7, 4 if mode == "RGBA" else 2), dtype=np.uint8)
    Image.fromarray(array, mode).save(tmp_path / "frame.png")
    np.testing.assert_array_equal(to_rgb_uint8(array), read_image(tmp_path / "frame.png"))
    bgra = array[:, :, [2, 1, 0, 3]] if mode == "RGBA" else array
    np.testing.assert_array_equal(to_rgb_uint8(bgra, bgr=mode == "RGBA"), read_image(tmp_path / "frame.png"))


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("bgr", [False, True])
def test_channel_conversion_matches_numpy_on_strided_views(channels, bgr):
    # OpenCV does the conversion (speed); numpy indexing is the oracle, on a non-contiguous view.
    rng = np.random.default_rng(channels)
    full = rng.integers(0, 256, (9, 14, channels), dtype=np.uint8)
    if channels == 4:
        full[:, :, 3] = 255  # opaque, as a camera's: dropped (a translucent frame is composited, above)
    view = full[1::2, ::3] if channels > 1 else full[1::2, ::3, 0]
    got = to_rgb_uint8(view, bgr=bgr)
    if channels == 1:
        want = np.repeat(view[:, :, None], 3, axis=2)
    else:
        want = view[:, :, 2::-1] if bgr else view[:, :, :3]
    assert got.flags.c_contiguous and got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)


def test_iterable_frames_are_copied_so_a_reused_buffer_is_safe():
    buf = np.zeros((3, 3, 3), np.uint8)

    def producer():
        for i in range(3):
            buf[:] = i
            yield buf

    frames = list(open_source(producer()))
    assert [int(f.image[0, 0, 0]) for f in frames] == [0, 1, 2]


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.zeros((4, 5, 5), np.uint8), "not an image"),
        (np.full((4, 5, 3), 2.0, np.float32), r"\[0, 1\]"),
        (np.full((4, 5, 3), 300, np.int32), "0..255"),
        (np.zeros((0, 5, 3), np.uint8), "no pixels"),
    ],
)
def test_a_bad_item_in_an_iterable_is_skipped_named_and_counted(bad, match, caplog):
    """One bad buffer from a camera SDK must not stop an inspection line."""
    src = open_source([np.zeros((4, 4, 3), np.uint8), bad, np.ones((4, 4, 3), np.uint8)])
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        frames = list(src)
    assert [int(f.image[0, 0, 0]) for f in frames] == [0, 1] and src.corrupt_skipped == 1
    assert re.search(f"skipping item 1, not a usable frame: .*{match}", caplog.text)
    with pytest.raises(StreamError, match=r"none of its 2 item\(s\) was a usable frame"):
        list(open_source([bad, bad]))


def test_paths_in_a_list_are_read_as_image_files(tmp_path, caplog):
    import cv2

    paths = []
    for value in (10, 20):
        paths.append(tmp_path / f"{value}.png")
        cv2.imwrite(str(paths[-1]), np.full((4, 4, 3), value, np.uint8))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    src = open_source([str(paths[0]), tmp_path / "broken.png", paths[1]])
    assert isinstance(src, ImageFilesSource)
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        assert [int(f.image[0, 0, 0]) for f in src] == [10, 20]
    assert src.corrupt_skipped == 1 and "broken.png" in caplog.text
    mixed = open_source([np.zeros((4, 4, 3), np.uint8), "a.png"])  # a path among frames: a mistake, said so
    mixed.read()
    with pytest.raises(StreamError, match="item 1 is the path 'a.png', not a frame"):
        mixed.read()


def test_none_items_are_skipped_and_counted():
    src = open_source([np.zeros((2, 2, 3), np.uint8), None, np.ones((2, 2, 3), np.uint8)])
    frames = list(src)
    assert len(frames) == 2 and src.corrupt_skipped == 1


def test_iterator_that_raises_is_a_stream_error():
    def broken():
        yield np.zeros((2, 2, 3), np.uint8)
        raise OSError("camera SDK lost the device")

    src = open_source(broken())
    src.read()
    with pytest.raises(StreamError, match="raised OSError.*lost the device"):
        src.read()


def test_iterable_live_flag_and_loop_rules():
    frames = [np.zeros((2, 2, 3), np.uint8)] * 2
    assert open_source(frames).is_live is False
    assert open_source(frames, live=True).is_live is True
    src = open_source(frames, StreamConfig(loop=True))
    assert [src.read().index for _ in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(ConfigError, match="re-iterable"):
        open_source(iter(frames), StreamConfig(loop=True))


def test_four_dimensional_array_is_a_sequence_but_a_single_frame_is_ambiguous():
    stack = np.zeros((3, 4, 4, 3), np.uint8)
    assert len(list(open_source(stack))) == 3
    with pytest.raises(StreamError, match="ambiguous"):
        open_source(np.zeros((4, 4, 3), np.uint8))


@pytest.mark.parametrize("bad, message", [(True, "is a bool"), (3.5, "from a float"), (object(), "from a object"),
                                          (b"/dev/video0", "source is bytes"), ("", "empty string")])
def test_unusable_source_values_are_rejected(bad, message):
    with pytest.raises(StreamError, match=message):
        open_source(bad)


def test_unsupported_url_scheme(tmp_path):
    with pytest.raises(StreamError, match="unsupported URL scheme 'ftp'"):
        open_source("ftp://example.com/video.mp4")


# ---------------------------------------------------------------------------- cameras, URLs, GStreamer, CSI
def test_camera_index_and_digit_string_use_the_opener(scripted_opener, fake_capture):
    opener = scripted_opener([fake_capture([1, 2]), fake_capture([1, 2])])
    src = open_source(2, opener=opener)
    assert src.is_live and src.name == "camera:2"
    src.close()
    src = open_source("2", opener=opener)
    src.close()
    assert opener.targets == [2, 2]
    assert opener.made[0].released and opener.made[1].released


def test_missing_camera_names_the_device():
    with pytest.raises(StreamError, match="/dev/video7"):
        open_source(7, StreamConfig(reconnect_attempts=0))


@pytest.fixture
def v4l2_node(tmp_path):
    """A real video4linux device node (character major 81) with no camera behind it."""
    import os
    import stat

    node = tmp_path / "video9"
    try:
        os.mknod(node, stat.S_IFCHR | 0o600, os.makedev(81, 9))
    except (PermissionError, AttributeError, OSError) as exc:
        pytest.skip(f"cannot make a device node here ({exc})")
    return node


def test_a_v4l2_device_path_is_a_live_camera_not_a_file(v4l2_node, tmp_path, scripted_opener, fake_capture):
    """/dev/video0 (or its udev name, a symlink) is a camera: live, so reconnected and judged
    latest-first, rather than a video file read to its end."""
    link = tmp_path / "usb-cam-video-index0"
    link.symlink_to(v4l2_node)
    opener = scripted_opener([fake_capture([1, 2])])
    src = open_source(str(link), opener=opener)
    assert src.is_live and src.kind == "camera" and src.name == f"camera:{link}"
    assert opener.targets == [str(link)]
    src.close()
    with pytest.raises(StreamError, match=f"that {v4l2_node} exists .*csi://N', not its /dev/video node.*"
                                          "v4l2-ctl --list-devices"):
        open_source(str(v4l2_node), StreamConfig(reconnect_attempts=0))  # OpenCV's own opener: no camera there


@pytest.mark.skipif(not Path("/dev/null").is_char_device(), reason="needs a character device (/dev/null)")
def test_a_device_that_is_not_a_camera_is_refused():
    with pytest.raises(StreamError, match="/dev/null is a device, but not a V4L2 camera"):
        open_source("/dev/null")


def test_the_camera_opener_asks_v4l2_for_the_camera_and_its_mode(monkeypatch, caplog):
    """No camera here: OpenCV's VideoCapture is replaced by one that records what it is asked and
    delivers 1280 x 720 at 30 fps whatever it is asked."""
    import cv2

    from edgecmg.stream import sources

    made = []

    class Camera:
        def __init__(self, target, backend=None):
            self.target, self.backend, self.props = target, backend, {}
            made.append(self)

        def isOpened(self):  # noqa: N802 - OpenCV's name
            return True

        def set(self, prop, value):
            self.props[prop] = value
            return prop != cv2.CAP_PROP_FPS  # as a backend that cannot set the rate answers

        def get(self, prop):
            return {cv2.CAP_PROP_FRAME_WIDTH: 1280.0, cv2.CAP_PROP_FRAME_HEIGHT: 720.0,
                    cv2.CAP_PROP_FPS: 30.0}.get(prop, 0.0)

        def getBackendName(self):  # noqa: N802 - OpenCV's name
            return "V4L2"

    monkeypatch.setattr(cv2, "VideoCapture", Camera)
    monkeypatch.setattr(sources, "_opencv_has_backend", lambda backend: backend == cv2.CAP_V4L2)
    opener = sources._default_opener("camera", StreamConfig(capture_size=(1920, 1080), capture_fps=60.0))
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        opener(0)
        opener(0)  # a reconnect: asked again, said once
    assert [(c.target, c.backend) for c in made] == [(0, cv2.CAP_V4L2)] * 2
    assert made[0].props == {cv2.CAP_PROP_BUFFERSIZE: 1, cv2.CAP_PROP_FRAME_WIDTH: 1920,
                             cv2.CAP_PROP_FRAME_HEIGHT: 1080, cv2.CAP_PROP_FPS: 60.0} == made[1].props
    assert caplog.text.count("camera 0 delivers width 1280 (asked 1920), height 720 (asked 1080), fps 30 (asked 60) "
                             "(OpenCV's V4L2 backend did not take every request)") == 1
    monkeypatch.setattr(sources, "_opencv_has_backend", lambda backend: False)  # no V4L2: OpenCV's own choice
    sources._default_opener("camera", StreamConfig())(3)
    assert (made[-1].target, made[-1].backend) == (3, None) and cv2.CAP_PROP_FRAME_WIDTH not in made[-1].props


def test_csi_sensors_get_a_read_timeout_where_opencv_takes_one(monkeypatch):
    """A hung nvargus-daemon blocks an unbounded read for good. OpenCV's GStreamer backend takes open
    and read timeouts from 4.7 on and refuses to open with them before, so older ones get none; a
    pipeline of the user's own keeps OpenCV's (30 s from 4.7: a triggered camera may be silent for long)."""
    import cv2

    from edgecmg.stream import sources

    made = []

    def capture(target, backend=None, params=None):
        made.append((target, backend, params))

    monkeypatch.setattr(cv2, "VideoCapture", capture)
    config = StreamConfig(timeout_s=2.5)
    timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 2500, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 2500]
    for version, expected in [("4.8.0", timeouts), ("4.10.0-dev", timeouts), ("5.1.0", timeouts),
                              ("4.5.4", None), ("4.6.0", None), ("unknown", None)]:
        monkeypatch.setattr(cv2, "__version__", version)
        sources._default_opener("csi", config)("nvarguscamerasrc ! appsink")
        assert made[-1] == ("nvarguscamerasrc ! appsink", cv2.CAP_GSTREAMER, expected), version
    monkeypatch.setattr(cv2, "__version__", "4.8.0")
    sources._default_opener("gstreamer", config)("v4l2src ! appsink")
    assert made[-1] == ("v4l2src ! appsink", cv2.CAP_GSTREAMER, None)
    sources._default_opener("network", config)("rtsp://cam/1")  # FFmpeg's: bounded on every version
    assert made[-1] == ("rtsp://cam/1", cv2.CAP_FFMPEG, timeouts)


def test_asked_capture_mode_that_is_not_delivered_is_said(video_file, caplog):
    """Drivers fall back to their nearest mode silently; the stream says what it got. A video file
    (whose size and rate cannot be set) stands in for a camera without that mode."""
    import cv2

    from edgecmg.stream.sources import _ask_capture_mode

    cap = cv2.VideoCapture(str(video_file(5, fps=25.0)))  # 64 x 48 at 25 fps
    try:
        with caplog.at_level(logging.WARNING, logger="edgecmg"):
            assert _ask_capture_mode(cap, 0, StreamConfig(capture_size=(64, 48), capture_fps=25.0)) is False
        assert caplog.text == ""
        with caplog.at_level(logging.WARNING, logger="edgecmg"):
            assert _ask_capture_mode(cap, 0, StreamConfig(capture_size=(1920, 48), capture_fps=30.0)) is True
            assert _ask_capture_mode(cap, 0, StreamConfig(capture_size=(1920, 48)), quiet=True) is True
    finally:
        cap.release()
    assert caplog.text.count("camera 0 delivers width 64 (asked 1920), fps 25 (asked 30)") == 1
    assert "height" not in caplog.text and "MJPG" in caplog.text


def test_camera_that_opens_but_delivers_nothing(scripted_opener, fake_capture):
    with pytest.raises(StreamError, match="delivered no frame"):
        open_source(0, opener=scripted_opener([fake_capture([])]))


def test_network_url_name_masks_the_password(scripted_opener, fake_capture):
    opener = scripted_opener([fake_capture([0, 1])])
    src = open_source("rtsp://admin:s3cret@10.0.0.5:554/stream1", opener=opener)
    assert src.is_live
    assert "s3cret" not in src.name and "admin:***@10.0.0.5:554" in src.name
    assert opener.targets == ["rtsp://admin:s3cret@10.0.0.5:554/stream1"]  # the real URL is used
    src.close()


def test_gstreamer_pipeline_string_without_gstreamer_support_explains():
    with pytest.raises(StreamError, match="GStreamer"):
        open_source("videotestsrc num-buffers=5 ! videoconvert ! appsink")


def test_gstreamer_pipeline_is_live_through_the_opener(scripted_opener, fake_capture):
    pipe = "rtspsrc location=rtsp://cam/x latency=0 ! decodebin ! videoconvert ! appsink"
    opener = scripted_opener([fake_capture([0, 1])])
    src = open_source(pipe, opener=opener)
    assert src.is_live and src.name == "gstreamer:rtspsrc" and opener.targets == [pipe]
    src.close()


def test_csi_pipeline_string():
    s = csi_pipeline(1, 1920, 1080, 30, flip_method=2)
    assert s.startswith("nvarguscamerasrc sensor-id=1 ! ")
    assert "video/x-raw(memory:NVMM), width=(int)1920, height=(int)1080, format=(string)NV12" in s
    assert "framerate=(fraction)30/1" in s
    assert "nvvidconv flip-method=2 ! video/x-raw, width=(int)1920, height=(int)1080, format=(string)BGRx" in s
    assert "videoconvert ! video/x-raw, format=(string)BGR ! appsink drop=1" in s
    assert s.index("NV12") < s.index("nvvidconv") < s.index("BGRx") < s.index("videoconvert") < s.index("appsink")
    assert "framerate=(fraction)30000/1001" in csi_pipeline(0, fps=29.97)
    assert "width=(int)640, height=(int)360, format=(string)BGRx" in csi_pipeline(0, output_size=(640, 360))


@pytest.mark.parametrize(
    "kwargs", [dict(sensor_id=-1), dict(sensor_id="0"), dict(width=0), dict(fps=0), dict(flip_method=9)]
)
def test_csi_pipeline_rejects_bad_values(kwargs):
    with pytest.raises(ConfigError):
        csi_pipeline(**kwargs)


def test_csi_url_builds_the_pipeline_for_the_opener(scripted_opener, fake_capture):
    opener = scripted_opener([fake_capture([0, 1]), fake_capture([0, 1])])
    src = open_source("csi://1?width=1920&height=1080&fps=60&flip=2", opener=opener)
    assert src.is_live and src.name.startswith("csi://1")
    src.close()
    assert opener.targets[0] == csi_pipeline(1, 1920, 1080, 60, 2)
    open_source("csi://0", StreamConfig(capture_size=(640, 480), capture_fps=15), opener=opener).close()
    assert opener.targets[1] == csi_pipeline(0, 640, 480, 15)
    with pytest.raises(StreamError, match="sensor id"):
        open_source("csi://left", opener=opener)
    with pytest.raises(StreamError, match="unknown option"):
        open_source("csi://0?exposure=3", opener=opener)


# ---------------------------------------------------------------------------- reconnects
def test_live_source_recovers_after_a_failure(scripted_opener, fake_capture, helpers, caplog):
    # cap 1 plays ids 0..4 then fails; the first reopen fails; the second plays 5..9 then ends
    # the stream by raising (like a dropped TCP connection); the budget then runs out.
    opener = scripted_opener([
        fake_capture(range(0, 5)),
        fake_capture(opened=False),
        fake_capture(range(5, 10), end="raise"),
    ])
    cfg = StreamConfig(reconnect_attempts=3, reconnect_backoff_s=0.005)
    with caplog.at_level(logging.INFO, logger="edgecmg"):
        src = open_source("rtsp://cam/live", cfg, opener=opener)
        got = []
        with pytest.raises(StreamError, match=r"could not be reopened after 3 attempt"):
            while True:
                got.append(src.read())
    # The probe frame (id 0) of a live source is discarded; everything else arrives once, in order.
    assert [helpers.frame_id(f.image) for f in got] == list(range(1, 10))
    assert [f.index for f in got] == list(range(9))
    assert src.reconnects == 1
    # 1 initial open + 2 tries to recover the first outage + 3 failed tries for the second.
    assert len(opener.targets) == 6
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "reconnecting" in messages and "reconnected on attempt 2/3" in messages
    assert "simulated network error" in str(caplog.text) or "raised RuntimeError" in messages
    assert all(c.released for c in opener.made)
    src.close()


def test_reconnect_back_off_is_exponential(scripted_opener, fake_capture):
    opener = scripted_opener([fake_capture([0, 1])])
    src = open_source(0, StreamConfig(reconnect_attempts=3, reconnect_backoff_s=0.02), opener=opener)
    src.read()
    t0 = time.perf_counter()
    with pytest.raises(StreamError):
        src.read()
    assert time.perf_counter() - t0 >= 0.02 + 0.04 + 0.08 - 0.005
    src.close()


def test_reconnect_back_off_doubles_up_to_its_cap(scripted_opener, fake_capture, monkeypatch):
    from edgecmg.stream.sources import _MAX_BACKOFF_S

    src = open_source(0, StreamConfig(reconnect_attempts=8, reconnect_backoff_s=1.0),
                      opener=scripted_opener([fake_capture([0, 1])]))
    waits = []
    monkeypatch.setattr(src, "_wait", lambda seconds: waits.append(seconds) or True)  # no real sleep
    src.read()
    with pytest.raises(StreamError, match=r"after 8 attempt\(s\) over 121\.0s of back-off"):
        src.read()
    src.close()
    assert _MAX_BACKOFF_S == 30.0
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_zero_reconnect_attempts_fail_at_the_first_error(scripted_opener, fake_capture):
    src = open_source(0, StreamConfig(reconnect_attempts=0), opener=scripted_opener([fake_capture([0])]))
    with pytest.raises(StreamError, match=r"after 0 attempt.*--reconnect-attempts N.*StreamConfig\(reconnect_attempts="):
        src.read()


def test_default_reconnects_wait_out_about_a_minute():
    # an IP camera's reboot; the CLI's --reconnect-attempts defaults to the same
    from edgecmg.cli import build_parser
    from edgecmg.stream.sources import _MAX_BACKOFF_S

    cfg = StreamConfig()
    waits = [min(cfg.reconnect_backoff_s * 2 ** k, _MAX_BACKOFF_S) for k in range(cfg.reconnect_attempts)]
    assert 55 <= sum(waits) <= 90
    args = build_parser().parse_args(["stream", "0", "-m", "m.edgecmg"])
    assert args.reconnect_attempts == cfg.reconnect_attempts


def test_close_interrupts_a_reconnect_back_off(scripted_opener, fake_capture):
    src = open_source(0, StreamConfig(reconnect_attempts=3, reconnect_backoff_s=30.0),
                      opener=scripted_opener([fake_capture([0])]))
    result = {}

    def reader():
        result["frame"] = src.read()

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.1)  # the reader is now sleeping in the 30 s back-off
    t0 = time.perf_counter()
    src.close()
    t.join(5)
    assert not t.is_alive() and time.perf_counter() - t0 < 2.0
    assert result["frame"] is None and src.closed


def test_file_source_is_not_reconnected_and_a_raising_read_is_an_error(scripted_opener, fake_capture, video_file):
    path = video_file(n=2, fourcc="MJPG", ext=".avi")
    src = open_source(path, opener=scripted_opener([fake_capture([0, 1, 2], end="raise")]))
    assert [helpers_id for helpers_id in (src.read().index, src.read().index, src.read().index)] == [0, 1, 2]
    with pytest.raises(StreamError, match="decoding failed after 3 frames"):
        src.read()
    src.close()


def test_frame_is_a_frozen_record():
    f = Frame(np.zeros((1, 1, 3), np.uint8), 0, 1.0, "x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.index = 2  # type: ignore[misc]
    assert isinstance(open_source([f.image]), IterableSource)


def test_damaged_frame_in_a_video_is_skipped_and_counted_not_the_end(video_file, caplog):
    # A real MJPG recording with one frame's JPEG wiped: OpenCV fails that one read and decodes the rest.
    path = video_file(n=12, fourcc="MJPG", ext=".avi")
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i:i + 3] == b"\xff\xd8\xff"]
    assert len(starts) == 12
    data[starts[5]:starts[6] - 16] = bytes(starts[6] - 16 - starts[5])
    path.write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="edgecmg"):
        src = open_source(path)
        frames = list(src)
    assert len(frames) == 11
    assert [f.index for f in frames] == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]  # the frame's number in the file
    assert src.corrupt_skipped == 1
    assert "skipped 1 undecodable frame(s) after frame 4" in caplog.text


def test_existing_paths_with_an_exclamation_mark_are_files_not_pipelines(video_file, image_folder, tmp_path):
    folder = tmp_path / "run!2"
    folder.mkdir()
    video = video_file(n=3, fourcc="MJPG", ext=".avi").rename(folder / "line.avi")
    with open_source(str(video)) as src:
        assert src.kind == "file" and len(list(src)) == 3
    images = image_folder.rename(tmp_path / "fold!er")
    with open_source(str(images)) as src:
        assert isinstance(src, ImageFilesSource)


def test_a_looped_sequence_with_no_usable_item_ends_instead_of_spinning(caplog):
    bad = np.zeros((0, 4, 3), np.uint8)
    with pytest.raises(StreamError, match=r"none of its 3 item\(s\) was a usable frame \(2 not a frame, 1 None\)"):
        list(open_source([bad, None, bad], StreamConfig(loop=True)))
    source = open_source([np.zeros((4, 4, 3), np.uint8), bad], StreamConfig(loop=True))
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        frames = [source.read() for _ in range(5)]  # five passes over one good item
    source.close()
    assert len(frames) == 5 and caplog.text.count("skipping item 1") == 1  # said once, not every pass


class _Camera:
    """A capture that takes every request and then delivers ``delivered`` (0: the backend cannot tell)."""

    def __init__(self, delivered):
        self.delivered = delivered

    def set(self, prop, value):
        return True

    def get(self, prop):
        return self.delivered.get(prop, 0.0)

    def getBackendName(self):  # noqa: N802 - OpenCV's name
        return "V4L2"


def test_a_mode_within_1_percent_or_that_the_backend_cannot_tell_is_not_said(caplog):
    import cv2

    from edgecmg.stream.sources import _ask_capture_mode

    config = StreamConfig(capture_size=(1920, 1080), capture_fps=30.0)
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        assert _ask_capture_mode(_Camera({}), 0, config) is False  # every get() answers 0
        assert _ask_capture_mode(_Camera({cv2.CAP_PROP_FRAME_WIDTH: 1920.0, cv2.CAP_PROP_FRAME_HEIGHT: 1080.0,
                                          cv2.CAP_PROP_FPS: 29.97}), 0, config) is False  # NTSC's 30
        assert caplog.text == ""
        assert _ask_capture_mode(_Camera({cv2.CAP_PROP_FRAME_WIDTH: 1920.0, cv2.CAP_PROP_FRAME_HEIGHT: 1080.0,
                                          cv2.CAP_PROP_FPS: 28.0}), 0, config) is True
    assert "camera 0 delivers fps 28 (asked 30)" in caplog.text and "width" not in caplog.text


def test_a_negative_camera_index_is_refused():
    with pytest.raises(StreamError, match="camera index -1 must be >= 0"):
        open_source(-1)


def test_a_missing_camera_names_its_csi_twin():
    with pytest.raises(StreamError, match=r"/dev/video7 exists.*csi://7"):
        open_source(7, StreamConfig(reconnect_attempts=0))


def test_opencv_backends_are_asked_by_their_own_id(monkeypatch):
    import cv2

    from edgecmg.stream import sources

    monkeypatch.setattr(cv2.videoio_registry, "hasBackend", lambda backend: backend == cv2.CAP_V4L2)
    assert sources._opencv_has_backend(cv2.CAP_V4L2) is True
    assert sources.opencv_has_gstreamer() is False


def test_a_camera_device_path_that_is_not_there_is_named_as_a_camera():
    """/dev/video3 missing (unplugged, or not yet enumerated when a service starts) was "no such file
    or folder ... pass a video file"."""
    for path in ("/dev/video97", "/dev/v4l/by-id/usb-missing-video-index0"):
        with pytest.raises(StreamError, match=f"camera {path} is not present: unplugged.*v4l2-ctl --list-devices"):
            open_source(path)


def test_csi_timeouts_start_with_opencv_4_7_itself(monkeypatch):
    """4.7 is the first OpenCV whose GStreamer backend takes the timeouts: its own releases get them
    too (a Jetson's JetPack 6 ships 4.8, but a self-built 4.7 is common on JetPack 5)."""
    import cv2

    from edgecmg.stream import sources

    made = []
    monkeypatch.setattr(cv2, "VideoCapture", lambda target, backend=None, params=None: made.append(params))
    config = StreamConfig(timeout_s=1.0)
    for version, expected in [("4.7.0", [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 1000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 1000]),
                              ("4.6.9", None), ("3.9.0", None)]:
        monkeypatch.setattr(cv2, "__version__", version)
        sources._default_opener("csi", config)("nvarguscamerasrc ! appsink")
        assert made[-1] == expected, version


def test_a_missing_path_under_dev_that_is_no_camera_node_is_a_missing_file():
    """Only /dev/video* and /dev/v4l/* name cameras: frames in a RAM folder (/dev/shm) that is not
    there are a missing folder, not an unplugged camera."""
    with pytest.raises(StreamError, match="no such file or folder: /dev/shm/edgecmg-no-such-frames"):
        open_source("/dev/shm/edgecmg-no-such-frames")
