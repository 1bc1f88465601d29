"""``edgecmg capture``: frames of a source saved as PNG, exactly as the stream reads them."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from edgecmg.cli import main
from edgecmg.commands.capture import next_frame_number
from edgecmg.imageio import read_image
from edgecmg.stream import open_source


def _frames_as_stream_reads_them(source) -> list[np.ndarray]:
    with open_source(str(source)) as src:
        return [frame.image for frame in src]


def test_every_nth_frame_of_a_video_is_saved_losslessly(video_file, tmp_path, capsys):
    video = video_file(12)
    out = tmp_path / "good"
    assert main(["capture", str(video), "-o", str(out), "--frames", "4", "--step", "3", "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"frame_{i:06d}.png" for i in range(4)]
    decoded = _frames_as_stream_reads_them(video)
    for i, index in enumerate((0, 3, 6, 9)):  # the stream's own pixels: PNG loses nothing
        assert np.array_equal(read_image(out / f"frame_{i:06d}.png"), decoded[index])
    # on stdout, as other commands' results are, so -q keeps it
    assert capsys.readouterr().out == f"saved 4 frames of {video} to {out} (frame_000000.png to frame_000003.png)\n"


def test_a_second_capture_adds_frames_and_a_short_source_is_said(video_file, tmp_path, caplog, capsys):
    video = video_file(5)
    out = tmp_path / "good"
    assert main(["capture", str(video), "-o", str(out), "--frames", "1", "-q"]) == 0
    assert main(["capture", str(video), "-o", str(out), "--frames", "1", "-q"]) == 0
    printed = capsys.readouterr().out
    assert f"saved 1 frame of {video} to {out} (frame_000000.png)" in printed
    assert f"saved 1 frame of {video} to {out} (frame_000001.png)" in printed
    (out / "notes.txt").write_text("kept")
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        assert main(["capture", str(video), "-o", str(out), "--frames", "9", "-q"]) == 0
    assert sorted(p.name for p in out.glob("frame_*.png")) == [f"frame_{i:06d}.png" for i in range(7)]
    assert (out / "notes.txt").read_text() == "kept"
    assert f"{video} ended after 5 of the 9 frames asked for" in caplog.text
    decoded = _frames_as_stream_reads_them(video)
    assert np.array_equal(read_image(out / "frame_000002.png"), decoded[0])  # numbering goes on after 0 and 1


def test_next_frame_number_follows_the_highest_frame(tmp_path):
    assert next_frame_number(tmp_path) == 0
    for name in ("frame_000004.png", "frame_000012.png", "frame_7.jpg", "frame_x.png", "frame_000099.png.tmp"):
        (tmp_path / name).write_bytes(b"")
    assert next_frame_number(tmp_path) == 13


def test_an_image_folder_is_read_like_the_stream_reads_it(image_folder, tmp_path, caplog):
    """Gray and 16-bit images come out as the stream's 8-bit RGB; the corrupt one is skipped."""
    out = tmp_path / "copied"
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        assert main(["capture", str(image_folder), "-o", str(out), "--frames", "50", "-q"]) == 0
    saved = sorted(out.iterdir())
    decoded = _frames_as_stream_reads_them(image_folder)
    assert len(saved) == len(decoded) == 6
    assert all(np.array_equal(read_image(p), d) for p, d in zip(saved, decoded))
    assert "img_06_corrupt.png" in caplog.text


def test_image_files_an_unquoted_glob_expanded_to_are_read_in_their_order(image_folder, tmp_path, capsys):
    """`capture parts/*.png -o DIR` reaches capture as several arguments (argparse refused them):
    read as stream reads them, the files in the order given; a word that is not an image is named."""
    files = [image_folder / "img_02.png", image_folder / "img_00.png", image_folder / "img_04_gray.png"]
    out = tmp_path / "copied"
    assert main(["capture", *map(str, files), "-o", str(out), "-q"]) == 0
    saved = sorted(out.iterdir())
    assert [p.name for p in saved] == ["frame_000000.png", "frame_000001.png", "frame_000002.png"]
    assert all(np.array_equal(read_image(p), read_image(f)) for p, f in zip(saved, files))
    assert main(["capture", str(files[0]), str(image_folder / "notes.txt"), "-o", str(tmp_path / "x")]) == 2
    assert "notes.txt is not an image file: capture reads one source" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("flags, message", [(["--frames", "0"], "--frames 0: give how many frames"),
                                            (["--step", "0"], "--step 0: give 1 to save every frame")])
def test_bad_counts_are_refused_before_anything_opens(flags, message, tmp_path, capsys):
    assert main(["capture", "0", "-o", str(tmp_path / "out"), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_missing_source_leaves_no_folder_and_capture_flags_off_a_camera_are_said(video_file, tmp_path, capsys,
                                                                                    caplog):
    out = tmp_path / "a" / "b"
    assert main(["capture", str(tmp_path / "nope.mp4"), "-o", str(out)]) == 2
    assert "no such file or folder" in capsys.readouterr().err and not (tmp_path / "a").exists()
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        assert main(["capture", str(video_file(2)), "-o", str(out), "--capture-size", "640", "480", "-q"]) == 0
    assert "--capture-size is asked of cameras and csi:// sensors" in caplog.text and "so it has no effect" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        assert main(["capture", str(video_file(2)), "-o", str(out), "--capture-fps", "5", "-q"]) == 0
    assert "--capture-fps is asked of cameras and csi:// sensors;" in caplog.text
    assert "--realtime" not in caplog.text  # capture has no such flag


def test_a_source_one_frame_short_is_said(video_file, tmp_path, caplog):
    video = video_file(5)
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        assert main(["capture", str(video), "-o", str(tmp_path / "out"), "--frames", "6", "-q"]) == 0
    assert f"{video} ended after 5 of the 6 frames asked for" in caplog.text


def test_a_broken_link_among_image_files_is_skipped_and_named_and_no_bar_goes_to_a_log(image_folder, tmp_path,
                                                                                     caplog, capsys):
    """A link whose target was deleted, among the files an unquoted glob expanded to, is an unreadable
    image (skipped and named, as stream skips it), not a mistyped name that refuses the whole list.
    Without -q, stderr not being a terminal (a log), no progress bar is drawn into it."""
    import re

    link = tmp_path / "gone.png"
    link.symlink_to(tmp_path / "deleted.png")
    files = [image_folder / "img_00.png", link, image_folder / "img_02.png"]
    out = tmp_path / "copied"
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        assert main(["capture", *map(str, files), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["frame_000000.png", "frame_000001.png"]
    assert "gone.png" in caplog.text
    assert not re.search(r"capture:\s+\d+%", capsys.readouterr().err)


@pytest.mark.parametrize("command", ["capture", "stream"])
def test_a_folder_source_names_its_sub_folders_of_images_it_does_not_read(command, kolektor_root, small_artifact,
                                                                          tmp_path, caplog, monkeypatch):
    """A folder source is read without its sub-folders (one part at the top, two in a/): capture and
    stream name those that hold images, with the quoted glob that reads them."""
    good = sorted((kolektor_root / "test" / "good").iterdir())[:3]
    folder = tmp_path / "onlysub"
    (folder / "a").mkdir(parents=True)
    for place, path in zip((folder, folder / "a", folder / "a"), good):
        (place / path.name).symlink_to(path)
    monkeypatch.chdir(tmp_path)  # stream writes its summary beside its --jsonl
    argv = (["capture", str(folder), "-o", str(tmp_path / "out"), "--frames", "5", "-q"] if command == "capture"
            else ["stream", str(folder), "-m", str(small_artifact), "--backend", "torch", "--jsonl",
                  str(tmp_path / "frames.jsonl"), "-q"])
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        assert main(argv) == 0
    assert (f"{folder}: the images in its sub-folder a are not read (a folder's own images are, not its "
            f"sub-folders'); to include them, pass a quoted glob such as '{folder / '**' / '*.jpg'}'") in caplog.text
    if command == "capture":
        assert [p.name for p in (tmp_path / "out").iterdir()] == ["frame_000000.png"]
    else:
        assert len((tmp_path / "frames.jsonl").read_text().splitlines()) == 1
