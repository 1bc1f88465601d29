"""Sources as users bring them (an audit of stream with ~40 real videos and folders): a video file
served over HTTP, image sequences, folders holding videos, animations, estimated frame counts."""
from __future__ import annotations

import functools
import http.server
import logging
import threading

import cv2
import numpy as np
import pytest
from conftest import make_bgr, write_video

from edgecmg.config import StreamConfig
from edgecmg.errors import MissingSourceError, StreamError
from edgecmg.stream.sources import open_source


def _all_frames(source, limit: int = 100) -> list:
    frames = []
    while len(frames) < limit:
        frame = source.read()
        if frame is None:
            break
        frames.append(frame)
    source.close()
    return frames


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_folder(tmp_path):
    """A local HTTP server over tmp_path: yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_QuietHandler, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_video_file_served_over_http_is_read_once_to_its_end(tmp_path, http_folder):
    """Read as a live camera it never ended: each end of the file was an outage, and each reconnect
    replayed it from frame 0 (3,401 frames captured of an 18-frame clip in 120 s, most dropped)."""
    write_video(tmp_path / "clip.avi", 12, "MJPG")
    source = open_source(f"{http_folder}/clip.avi", config=StreamConfig())
    assert source.is_live is False
    frames = _all_frames(source)
    # each once, in order: frame i is green i x 7 all over (read away from its drawn number)
    assert [round(float(f.image[40:, 50:, 1].mean()) / 7) for f in frames] == list(range(12))
    assert source.reconnects == 0
    # live=True keeps a URL live whatever it names; a URL of no video file is live as before
    assert open_source(f"{http_folder}/clip.avi", config=StreamConfig(), live=True).is_live is True


def test_an_image_folder_streams_in_natural_order(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in (0, 1, 2, 10, 11):  # unpadded numbers: lexical order puts img_10 before img_2
        assert cv2.imwrite(str(folder / f"img_{i}.png"), make_bgr(i))
    frames = _all_frames(open_source(str(folder), config=StreamConfig()))
    assert [f.source.rsplit("/", 1)[1] for f in frames] == ["img_0.png", "img_1.png", "img_2.png", "img_10.png",
                                                            "img_11.png"]


def test_a_printf_style_sequence_pattern_gets_the_glob_that_reads_it(tmp_path):
    with pytest.raises(MissingSourceError, match=r"for a numbered sequence of images pass a glob: "
                                                 r"'.*seq/frame_\*\.png' \(quoted\)"):
        open_source(str(tmp_path / "seq" / "frame_%04d.png"), config=StreamConfig())


def test_video_files_in_a_folder_are_named(tmp_path, caplog):
    folder = tmp_path / "clips"
    folder.mkdir()
    write_video(folder / "line1.mp4", 3, "mp4v")
    with pytest.raises(StreamError, match=r"clips holds no image files but video file\(s\), line1.mp4: give one as "
                                          r"the source \(edgecmg stream .*clips/line1.mp4\)"):
        open_source(str(folder), config=StreamConfig())
    assert cv2.imwrite(str(folder / "still.png"), make_bgr(1))
    caplog.set_level(logging.WARNING, logger="edgecmg")
    assert len(_all_frames(open_source(str(folder), config=StreamConfig()))) == 1
    assert "its video file(s) line1.mp4 are not read (a folder's images are)" in caplog.text


def test_an_animation_says_only_its_first_frame_is_judged(tmp_path, caplog):
    from PIL import Image

    path = tmp_path / "anim.gif"
    frames = [Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)) for i in range(5)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    caplog.set_level(logging.WARNING, logger="edgecmg")
    assert len(_all_frames(open_source(str(path), config=StreamConfig()))) == 1
    assert f"{path} holds 5 frames (an animation or a multi-page file): only its first is judged" in caplog.text
    assert f"(ffmpeg -i '{path}' out.mp4)" in caplog.text  # the whole path: it runs from any folder


def test_a_short_read_of_a_container_without_a_frame_index_is_said_as_maybe_truncated(tmp_path, caplog):
    whole = write_video(tmp_path / "clip.mkv", 40, "MJPG")
    data = whole.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    caplog.set_level(logging.WARNING, logger="edgecmg")
    read = _all_frames(open_source(str(cut), config=StreamConfig()))
    assert 0 < len(read) < 36
    assert (f"ended after {len(read)} of about 40 frames (its duration x frame rate: this container holds no frame "
            "count); the file may be truncated") in caplog.text


def test_an_empty_video_file_and_a_git_lfs_pointer_are_named_as_such(tmp_path):
    empty = tmp_path / "line.mp4"
    empty.write_bytes(b"")
    with pytest.raises(StreamError, match=r"line.mp4 is empty \(0 bytes\): a recording that never started"):
        open_source(str(empty), config=StreamConfig())
    empty.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"ab" * 32 + b"\nsize 9000\n")
    with pytest.raises(StreamError, match=r"line.mp4 is a Git LFS pointer, not the file itself"):
        open_source(str(empty), config=StreamConfig())


def test_time_stamps_with_fractions_stream_in_time_order_and_a_fifo_is_not_read_ahead(tmp_path):
    """Frames saved as f"{time.time()}.png": a time stamp's fraction is a fraction (the digit-run order
    put .5 before .25); and the Git LFS check returns at once on a FIFO named as a video (opening it to
    read waited for a writer, and took the container's first bytes from it)."""
    import os

    from edgecmg.magic import git_lfs_pointer

    folder = tmp_path / "stamps"
    folder.mkdir()
    for stamp in ("1733600000.5", "1733600000.25", "1733600001.0"):
        assert cv2.imwrite(str(folder / f"{stamp}.png"), make_bgr(1))
    frames = _all_frames(open_source(str(folder), config=StreamConfig()))
    assert [f.source.rsplit("/", 1)[1] for f in frames] == ["1733600000.25.png", "1733600000.5.png",
                                                            "1733600001.0.png"]
    fifo = tmp_path / "live.mp4"
    os.mkfifo(fifo)
    assert git_lfs_pointer(fifo) == ""
