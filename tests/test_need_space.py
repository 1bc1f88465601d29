"""tools/need_space.py: make stops before pip or pytest runs out of disk, and says so with the numbers."""

import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "need_space.py"


def run(*args, env=None):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env)


def test_too_little_space_stops_with_the_disk_and_both_figures(tmp_path):
    done = run("1e9", "make test", str(tmp_path))
    assert done.returncode == 2
    assert "make test needs about 1e+09 GB free" in done.stderr
    named = re.search(r"free on the disk of (\S+);", done.stderr).group(1)
    assert named in (str(tmp_path), tempfile.gettempdir())
    assert re.search(r"it has \d+\.\d GB", done.stderr)


def test_enough_space_passes_quietly(tmp_path):
    done = run("0", "make test", str(tmp_path))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_the_temporary_folder_is_checked_too(tmp_path):
    # A TMPDIR on another disk counts: pip unpacks wheels there.
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a disk other than the test's temporary folder")
    spec = importlib.util.spec_from_file_location("need_space", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    old = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(shm)
    tempfile.tempdir = None
    try:
        assert module.folders_to_check(str(tmp_path)) == [str(tmp_path), str(shm)]
        assert module.folders_to_check(str(shm)) == [str(shm)]
    finally:
        if old is None:
            os.environ.pop("TMPDIR")
        else:
            os.environ["TMPDIR"] = old
        tempfile.tempdir = None


def test_a_missing_argument_prints_the_usage():
    done = run()
    assert done.returncode == 2
    assert "Usage: python tools/need_space.py GB WHAT [FOLDER]" in done.stderr


def test_every_environment_and_the_test_run_check_the_space_first():
    lines = (REPO / "Makefile").read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if re.search(r"-m venv |/bin/pytest ", line)]
    assert len(starts) >= 3
    for i in starts:
        recipe_start = i
        while lines[recipe_start - 1].startswith("\t"):
            recipe_start -= 1
        recipe_so_far = lines[recipe_start:i]
        assert any("tools/need_space.py" in line for line in recipe_so_far), (
            f"Makefile line {i + 1} runs without a space check before it: {lines[i]}"
        )
