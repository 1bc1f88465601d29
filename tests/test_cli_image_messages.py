"""The commands that read image files name a damaged one in edgecmg's own line alone: OpenCV's log and
Pillow's warnings about it are held back unless -v."""
import os
import subprocess

import numpy as np

from test_cli_refusals_stream import EDGECMG, _opencv_log_levels


def test_commands_reading_images_name_a_damaged_file_alone(small_artifact, tmp_path):
    """predict on a truncated TIFF printed four "[ERROR:0@...] global grfmt_tiff.cpp ... TIFF_Error" lines
    of OpenCV's and a Pillow UserWarning beside edgecmg's own line naming the file and why it is
    skipped; with -v they are kept."""
    import cv2

    _opencv_log_levels()
    frame = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    whole = tmp_path / "whole.tif"
    assert cv2.imwrite(str(whole), frame)
    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "cut.tif").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    env = {name: value for name, value in os.environ.items() if name != "OPENCV_LOG_LEVEL"}
    runs = {}
    for flags in ([], ["-v"]):
        runs[bool(flags)] = subprocess.run(
            [EDGECMG, *flags, "predict", str(small_artifact), str(folder / "cut.tif"), "--out",
             str(tmp_path / f"out{len(flags)}")], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    quiet, verbose = runs[False], runs[True]
    assert quiet.returncode == 1 and "skipped: cannot decode image" in quiet.stderr, quiet.stderr
    assert "TIFF" not in quiet.stderr and "[ERROR" not in quiet.stderr and "UserWarning" not in quiet.stderr, \
        quiet.stderr
    assert "TIFF" in verbose.stderr, verbose.stderr  # OpenCV's own lines, kept with -v: what the test holds back
