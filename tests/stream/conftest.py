"""Shared fixtures for the stream tests: real video files, image folders, scripted captures."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest


def make_bgr(i: int, h: int = 48, w: int = 64) -> np.ndarray:
    """A BGR frame whose pixel (0, 0, 0) carries its id and whose colour is known (B high, R low)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :, 0] = 200  # blue in BGR
    img[:, :, 1] = (i * 7) % 256
    img[:, :, 2] = 30  # red in BGR
    img[0, 0, 0] = i % 256
    return img


def write_video(path: Path, n: int, fourcc: str, fps: float = 25.0, size=(64, 48)) -> Path:
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), f"this OpenCV cannot write {fourcc}"
    for i in range(n):
        frame = make_bgr(i, h, w)
        cv2.putText(frame, str(i), (5, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture
def video_file(tmp_path):
    """Factory: video_file(n=20, fourcc="mp4v", ext=".mp4") -> path of a real encoded video."""

    def make(n: int = 20, fourcc: str = "mp4v", ext: str = ".mp4", fps: float = 25.0) -> Path:
        return write_video(tmp_path / f"clip_{fourcc}_{n}{ext}", n, fourcc, fps)

    return make


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Folder: 4 good colour PNG/JPGs, one gray PNG, one 16-bit PNG, one corrupt PNG, one .txt."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(4):
        ext = ".png" if i % 2 == 0 else ".jpg"
        assert cv2.imwrite(str(folder / f"img_{i:02d}{ext}"), make_bgr(i))
    assert cv2.imwrite(str(folder / "img_04_gray.png"), np.full((48, 64), 128, np.uint8))
    assert cv2.imwrite(str(folder / "img_05_16bit.png"), np.full((48, 64, 3), 65535, np.uint16))
    (folder / "img_06_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (folder / "notes.txt").write_text("not an image, ignored")
    return folder


class FakeCapture:
    """cv2.VideoCapture stand-in playing scripted BGR frames.

    After its frames it either returns (False, None) (``end="fail"``) or raises (``end="raise"``);
    ``opened=False`` makes isOpened() report failure.
    """

    def __init__(self, ids=(), *, opened: bool = True, end: str = "fail", delay_s: float = 0.0) -> None:
        self.ids = list(ids)
        self.opened = opened
        self.end = end
        self.delay_s = delay_s
        self.released = False
        self.reads = 0

    def isOpened(self) -> bool:  # noqa: N802
        return self.opened and not self.released

    def read(self):
        self.reads += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.ids:
            return True, make_bgr(self.ids.pop(0), 8, 8)
        if self.end == "raise":
            raise RuntimeError("simulated network error")
        return False, None

    def release(self) -> None:
        self.released = True


class ScriptedOpener:
    """An opener returning the scripted captures in order, then never-opening ones."""

    def __init__(self, captures) -> None:
        self.captures = list(captures)
        self.targets: list = []
        self.made: list[FakeCapture] = []
        self.lock = threading.Lock()

    def __call__(self, target) -> FakeCapture:
        with self.lock:
            self.targets.append(target)
            cap = self.captures.pop(0) if self.captures else FakeCapture(opened=False)
            self.made.append(cap)
            return cap


@pytest.fixture
def scripted_opener():
    return ScriptedOpener


@pytest.fixture
def fake_capture():
    return FakeCapture


def frame_id(image: np.ndarray) -> int:
    """Id written by make_bgr, read back from an RGB image (B is channel 2 after conversion)."""
    return int(image[0, 0, 2])


def capture_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("edgecmg-capture")]


@pytest.fixture(autouse=True)
def no_leaked_capture_threads():
    """Every stream test must leave no capture thread behind."""
    yield
    deadline = time.monotonic() + 2.0
    while capture_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    leaked = capture_threads()
    assert not leaked, f"leaked capture threads: {leaked}"


@pytest.fixture
def helpers():
    class H:
        pass

    H.frame_id = staticmethod(frame_id)
    H.capture_threads = staticmethod(capture_threads)
    H.make_bgr = staticmethod(make_bgr)
    return H
