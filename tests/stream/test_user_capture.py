"""A capture the user opened and configured (cv2.VideoCapture or any object whose read() returns (ok,
frame)) streams through the same CaptureSource as edgecmg's own; missing source paths are also
FileNotFoundErrors."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgecmg.config import StreamConfig
from edgecmg.errors import ConfigError, EdgeCMGError, MissingSourceError, StreamError
from edgecmg.stream import CaptureSource, open_source


def images(source) -> list[np.ndarray]:
    with source:
        return [frame.image for frame in source]


# ---------------------------------------------------------------------------- the user's own capture
def test_an_opened_video_capture_reads_as_its_file_and_is_left_open(video_file):
    path = video_file(n=12, fourcc="MJPG", ext=".avi")
    cap = cv2.VideoCapture(str(path))
    try:
        source = open_source(cap)
        assert isinstance(source, CaptureSource) and not source.is_live  # a recording: its frame count says so
        assert source.name.startswith("capture:") and source.frame_rate == pytest.approx(25.0)
        mine = images(source)
        assert source.closed and cap.isOpened()  # the capture is the user's: edgecmg does not release it
        by_path = images(open_source(path))
        assert len(mine) == len(by_path) == 12
        assert all(np.array_equal(a, b) for a, b in zip(mine, by_path))
        # Written as BGR with blue=200, red=30: after BGR->RGB, channel 0 is red, channel 2 blue.
        assert abs(int(np.median(mine[0][20:, 40:, 0])) - 30) < 25
        assert abs(int(np.median(mine[0][20:, 40:, 2])) - 200) < 25
    finally:
        cap.release()


def test_a_detector_streams_a_configured_capture_as_it_streams_the_file(small_artifact, video_file):
    from edgecmg.detector import Detector

    path = video_file(n=6, fourcc="MJPG", ext=".avi")
    det = Detector.load(small_artifact, backend="torch")
    cap = cv2.VideoCapture(str(path))
    try:
        cap.set(cv2.CAP_PROP_CONVERT_RGB, 1)  # configured with set(), as a camera's exposure or FOURCC would be
        with det.stream(cap) as run:
            mine = list(run)
        assert cap.isOpened()
        with det.stream(str(path)) as run:
            by_path = list(run)
    finally:
        cap.release()
        det.close()
    assert [r.frame_index for r in mine] == [r.frame_index for r in by_path] == list(range(6))
    assert [r.score for r in mine] == pytest.approx([r.score for r in by_path])
    assert run.stats.frames_dropped == 0


def test_a_live_capture_is_read_again_not_released_and_a_dead_one_ends_in_a_stream_error(fake_capture, helpers,
                                                                                      caplog):
    cap = fake_capture([0, 1, 2, 3])  # no get(): no frame count, so live, as a camera
    source = open_source(cap, StreamConfig(reconnect_attempts=2, reconnect_backoff_s=0.01))
    assert source.is_live
    # A live source's first frame, read at open, is stale by the time it is consumed: dropped.
    assert [helpers.frame_id(source.read().image) for _ in range(3)] == [1, 2, 3]
    with pytest.raises(StreamError, match=r"could not be read again.*2 attempt.*cannot reopen a capture it was given"):
        source.read()
    assert cap.reads > 5 and not cap.released  # read again after each back-off, never released
    source.close()
    assert not cap.released
    assert "reading it again" in caplog.text


def test_a_live_capture_that_recovers_goes_on(fake_capture, helpers):
    class Hiccup:
        """read() fails twice in the middle (a triggered camera's read timeout), then delivers again."""

        def __init__(self):
            self.script = [0, 1, None, None, 2, 3]

        def read(self):  # the only method: any object with read() -> (ok, frame) is a capture
            item = self.script.pop(0) if self.script else None
            return (False, None) if item is None else (True, helpers.make_bgr(item, 8, 8))

    source = open_source(Hiccup(), StreamConfig(reconnect_attempts=3, reconnect_backoff_s=0.01))
    assert source.is_live and source.name == "capture:Hiccup"
    assert [helpers.frame_id(source.read().image) for _ in range(3)] == [1, 2, 3]
    assert source.reconnects == 1
    source.close()


def test_a_closed_capture_and_wrong_options_are_refused(fake_capture, video_file, scripted_opener):
    with pytest.raises(StreamError, match="capture:FakeCapture.*isOpened"):
        open_source(fake_capture([0], opened=False))
    cap = cv2.VideoCapture(str(video_file(n=3, fourcc="MJPG", ext=".avi")))
    try:
        with pytest.raises(ConfigError, match="loop.*pass the file's path"):
            open_source(cap, StreamConfig(loop=True))
        with pytest.raises(ConfigError, match="opener"):
            open_source(cap, opener=scripted_opener([]))
        with pytest.raises(ConfigError, match="bgr=True is for frames passed in memory"):
            open_source(cap, bgr=True)
        assert cap.isOpened()
    finally:
        cap.release()


# ---------------------------------------------------------------------------- missing paths
@pytest.mark.parametrize("name, said", [
    ("nope.mp4", "no such file or folder: .*nope.mp4; pass a video file"),
    ("no_folder/", "no such file or folder: .*no_folder; pass a video file"),
    ("file://{tmp}/gone.avi", "no such file or folder: .*gone.avi"),
])
def test_a_missing_source_path_is_also_a_file_not_found_error(tmp_path, name, said):
    source = name.format(tmp=tmp_path) if "{tmp}" in name else str(tmp_path / name)
    with pytest.raises(FileNotFoundError, match=said) as caught:
        open_source(source)
    exc = caught.value
    assert isinstance(exc, MissingSourceError) and isinstance(exc, StreamError) and isinstance(exc, EdgeCMGError)
    assert str(exc) == exc.args[0] and str(tmp_path) in str(exc)
    for kind in (StreamError, FileNotFoundError, OSError):
        try:
            open_source(source)
        except kind:
            pass


def test_a_missing_camera_node_is_a_missing_source_but_an_unmatched_glob_is_not(tmp_path):
    with pytest.raises(MissingSourceError, match="camera /dev/video97 is not present"):
        open_source("/dev/video97")
    with pytest.raises(StreamError, match="no image files match") as caught:
        open_source(str(tmp_path / "*.png"))
    assert not isinstance(caught.value, FileNotFoundError)


def test_missing_source_error_is_built_from_one_message():
    exc = MissingSourceError("no such file or folder: /x.mp4; pass a video file")
    assert str(exc) == "no such file or folder: /x.mp4; pass a video file"
    assert exc.args == ("no such file or folder: /x.mp4; pass a video file",)
    assert MissingSourceError.__mro__.index(StreamError) < MissingSourceError.__mro__.index(FileNotFoundError)
