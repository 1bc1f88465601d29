"""``stream --save`` on a full disk: the overlay video's read-back check (OverlayVideo.close) must
refuse a Matroska or AVI file cut short, not only an .mp4 without its index."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from edgecmg.commands.stream import OverlayVideo, video_holds_frames

FRAMES = 20


def _frame(i: int) -> np.ndarray:
    """An RGB frame of noise (so each frame costs the encoder some kilobytes) with its number drawn."""
    import cv2

    frame = np.random.default_rng(i).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    cv2.putText(frame, str(i), (10, 50), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
    return frame


def _write(path: str, frames: int = FRAMES) -> OverlayVideo:
    video = OverlayVideo(path, 25.0)
    for i in range(frames):
        video.write(_frame(i), i)
    return video


@pytest.mark.parametrize("suffix", [".mkv", ".avi", ".mp4"])
def test_a_whole_video_passes_the_check(tmp_path, suffix):
    path = str(tmp_path / f"whole{suffix}")
    video = _write(path)
    video.close()  # raises OutputError if the check refused it
    assert video.frames_written == FRAMES
    assert video_holds_frames(path, FRAMES)
    assert not video_holds_frames(path, FRAMES + 1)  # one frame more than the file holds


@pytest.mark.parametrize("suffix", [".mkv", ".avi", ".mp4"])
def test_a_video_cut_short_with_its_header_filled_in_fails_the_check(tmp_path, suffix):
    path = tmp_path / f"cut{suffix}"
    _write(str(path)).close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert not video_holds_frames(str(path), FRAMES)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a named pipe")
def test_a_matroska_video_cut_short_before_its_header_was_filled_in_fails_the_check(tmp_path):
    """What a full disk left in the audit (exit 0, 6 of 20 frames readable): the muxer could not go
    back to write the segment's size, duration and index. The muxer writes the same file to a pipe,
    which it cannot seek back in either; the file is the first half of what came through it."""
    import cv2

    pipe = tmp_path / "pipe.mkv"
    os.mkfifo(pipe)
    received = bytearray()

    def drain() -> None:
        with open(pipe, "rb") as f:
            while chunk := f.read(65536):
                received.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    writer = cv2.VideoWriter(str(pipe), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (128, 96))
    assert writer.isOpened(), "this OpenCV cannot write MPEG-4 into a .mkv"
    for i in range(FRAMES):
        writer.write(_frame(i))
    writer.release()
    reader.join(timeout=60)
    assert not reader.is_alive() and received

    cut = tmp_path / "cut.mkv"
    cut.write_bytes(bytes(received[: len(received) // 2]))
    readable = cv2.VideoCapture(str(cut))
    assert readable.isOpened() and readable.read()[0], "the cut file's first frames read (Matroska survives a cut)"
    readable.release()
    assert not video_holds_frames(str(cut), FRAMES)

