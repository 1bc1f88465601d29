"""What stream and capture refuse before they run, and what a stream that fails at once leaves behind:
an output that would damage the model or a source, the model and the source swapped, a model given to
capture, a capture into the folder it reads, OpenCV's own warnings ahead of a missing camera's error."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgecmg.cli import main

EDGECMG = str(Path(sys.executable).parent / "edgecmg")


def _frames(kolektor_root: Path, folder: Path, count: int = 2) -> Path:
    """``count`` real KolektorSDD good test images, linked into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted((kolektor_root / "test" / "good").iterdir())[:count]:
        os.symlink(path, folder / path.name)
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (links as their targets), by path: what a run left there."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"<folder>")
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def no_model_load(monkeypatch):
    """Detector.load made to fail the test: a refusal must come before the model loads."""
    from edgecmg.detector import Detector

    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before the outputs were refused")

    monkeypatch.setattr(Detector, "load", load)


# --- 1. --jsonl and --report that name the model, a model, an image or a source ---------------------------------


@pytest.mark.parametrize("flag, name, expected", [
    ("--jsonl", "MODEL", "--jsonl {model} is the model being run (-m {model}); give the records a file of their own "
                         "(e.g. frames.jsonl)"),
    ("--jsonl", "other.edgecmg", "--jsonl {out}: that names a model file (.edgecmg), and the records would be "
                                 "appended to it; give the records a file of their own (e.g. frames.jsonl)"),
    ("--jsonl", "k.onnx", "--jsonl {out}: that names a model file (.onnx)"),
    ("--jsonl", "part.ENGINE", "--jsonl {out}: that names a model file (.engine)"),
    ("--jsonl", "img.jpg", "--jsonl {out}: that names an image file (.jpg), and the records would be appended to it; "
                           "give the records a file of their own (e.g. frames.jsonl)"),
    ("--jsonl", "line.mp4", "--jsonl {out}: that names a video file (.mp4)"),
    ("--jsonl", "LINK", "--jsonl {out} is the model being run (-m {model}); give the records a file of their own "
                        "(e.g. frames.jsonl)"),
    ("--jsonl", "SOURCE", "--jsonl {out} is the source being read ({source}); give the output another name"),
    ("--report", "img.jpg", "--report {out}: that names an image file (.jpg), and --report takes the folder the "
                            "summary is written into; give the summary a folder of its own (e.g. report/)"),
    ("--report", "MODEL", "--report {model} is the model being run (-m {model}); give the summary a folder of its "
                          "own (e.g. report/)"),
    ("--report", "part.onnx", "--report {out}: that names a model file (.onnx)"),
    ("--report", "SOURCE", "--report {out} is the source being read ({source}); give the output another name"),
])
def test_stream_refuses_records_or_a_report_that_would_damage_a_file(small_artifact, kolektor_root, tmp_path, capsys,
                                                                     no_model_load, flag, name, expected):
    """`stream SRC -m k.edgecmg --jsonl k.edgecmg` appended its records to the model being run and exited 0;
    every later load of the model failed. A --jsonl or --report that names a model, an image or a video,
    the -m file itself (another name of it too) or a source is one error line, exit 2, before the model
    loads, and nothing is written."""
    model = tmp_path / "k.edgecmg"
    model.write_bytes(small_artifact.read_bytes())
    (tmp_path / "k.onnx").write_bytes(b"an onnx model")
    (tmp_path / "img.jpg").write_bytes(b"a photo")
    source = _frames(kolektor_root, tmp_path / "frames")
    out = {"MODEL": model, "SOURCE": source, "LINK": tmp_path / "k.jsonl"}.get(name, tmp_path / name)
    if name == "LINK":  # a hard link: another name of the model file
        os.link(model, out)
    before = _files(tmp_path)
    assert main(["-q", "stream", str(source), "-m", str(model), "--backend", "torch", flag, str(out)]) == 2
    err = capsys.readouterr().err
    assert expected.format(model=model, out=out, source=source) in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert _files(tmp_path) == before  # the model, the images and the source as they were; nothing new


# --- 2. the model and the source swapped --------------------------------------------------------------------------


def test_stream_with_the_model_and_source_swapped_shows_them_swapped_back(small_artifact, kolektor_root, tmp_path,
                                                                          capsys, no_model_load):
    """`stream k.edgecmg -m small/good` was told "(edgecmg stream SOURCE -m small/good)": the same mistake.
    The command shown puts the -m argument as the source and the model after -m."""
    source = _frames(kolektor_root, tmp_path / "frames")
    assert main(["-q", "stream", str(small_artifact), "-m", str(source)]) == 2
    err = capsys.readouterr().err
    assert (f"edgecmg stream: error: {small_artifact} is a model file, not a source: stream takes the model by -m "
            f"(edgecmg stream {source} -m {small_artifact})") in err, err
    # with no -m, and with a model after -m too, the source stays to be given
    assert main(["-q", "stream", str(small_artifact)]) == 2
    assert f"(edgecmg stream SOURCE -m {small_artifact})" in capsys.readouterr().err
    assert main(["-q", "stream", str(small_artifact), "-m", str(tmp_path / "other.onnx")]) == 2
    assert f"(edgecmg stream SOURCE -m {tmp_path / 'other.onnx'})" in capsys.readouterr().err


# --- 3. capture given a model -------------------------------------------------------------------------------------


def test_capture_given_a_model_says_it_is_one(small_artifact, tmp_path, capsys):
    """`capture k.edgecmg -o d` said the model was a video OpenCV could not decode."""
    out = tmp_path / "d"
    assert main(["-q", "capture", str(small_artifact), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert (f"edgecmg capture: error: {small_artifact} is a model file, not a source: capture saves a camera's or a "
            f"video's frames and takes no model (edgecmg capture SOURCE -o {out})") in err, err
    assert "OpenCV" not in err and not out.exists()
    assert main(["-q", "capture", str(small_artifact), "0", "-o", str(out)]) == 2
    assert f"(edgecmg capture 0 -o {out})" in capsys.readouterr().err


# --- 4. what a failed run leaves behind ---------------------------------------------------------------------------


def test_a_stream_that_fails_before_judging_a_frame_leaves_nothing_behind(small_artifact, kolektor_root, tmp_path,
                                                                          capsys):
    """`stream fake.png -m k.edgecmg --jsonl s.jsonl` (a text file named .png, the only source) exited 2
    and left an empty s.jsonl and stream_summary.{json,csv,md}: a summary of a run that never started,
    which replaced the row of the stream's last real run. Now the error line is all it leaves: no
    records file, no summary, no folder it made for --jsonl, --report or --save. Records and a summary
    already there are kept as they were."""
    fake = tmp_path / "fake.png"
    fake.write_text("not an image\n")
    before = _files(tmp_path)
    assert main(["-q", "stream", str(fake), "-m", str(small_artifact), "--backend", "torch", "--jsonl",
                 str(tmp_path / "s.jsonl")]) == 2
    captured = capsys.readouterr()
    assert "none of the 1 image(s) could be decoded" in captured.err
    assert "frames_yielded" not in captured.out  # no summary of nothing printed either
    assert _files(tmp_path) == before
    assert main(["-q", "stream", str(fake), "-m", str(small_artifact), "--backend", "torch",
                 "--jsonl", str(tmp_path / "new" / "s.jsonl"), "--report", str(tmp_path / "rep" / "sub"),
                 "--save", str(tmp_path / "vid" / "o.mp4")]) == 2
    capsys.readouterr()
    assert _files(tmp_path) == before  # the folders made for the outputs are gone too

    # A stream that judged frames keeps its records and summary; a failed start after it changes neither.
    logs = tmp_path / "logs"
    jsonl = logs / "frames.jsonl"
    assert main(["-q", "stream", str(_frames(kolektor_root, tmp_path / "frames", 1)), "-m", str(small_artifact),
                 "--backend", "torch", "--jsonl", str(jsonl)]) == 0
    capsys.readouterr()
    kept = _files(logs)
    assert json.loads((logs / "stream_summary.json").read_text())["rows"][0]["frames_yielded"] == 1
    assert main(["-q", "stream", str(fake), "-m", str(small_artifact), "--backend", "torch", "--jsonl",
                 str(jsonl)]) == 2
    capsys.readouterr()
    assert _files(logs) == kept


def test_a_stream_stopped_before_its_first_frame_still_writes_its_summary(small_artifact, kolektor_root, tmp_path,
                                                                          monkeypatch):
    """Ctrl-C (or SIGTERM) is how a camera run is stopped: its summary is written even before the first
    frame, and names its records file, which is kept. Only a run that fails leaves nothing."""
    from edgecmg.commands import stream as stream_command

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(stream_command, "judge_frames", interrupted)
    jsonl = tmp_path / "frames.jsonl"
    assert main(["-q", "stream", str(_frames(kolektor_root, tmp_path / "frames", 1)), "-m", str(small_artifact),
                 "--backend", "torch", "--jsonl", str(jsonl)]) == 130
    (row,) = json.loads((tmp_path / "stream_summary.json").read_text())["rows"]
    assert (row["ended"], row["frames_yielded"], row["records"]) == ("interrupted (Ctrl-C)", 0, str(jsonl.resolve()))
    assert jsonl.read_text() == ""


def test_capture_refuses_an_output_folder_inside_its_source(kolektor_root, tmp_path, capsys):
    """`capture small/good -o small/good` saved its frames among the images it read: the next capture
    or fit read them back as parts."""
    source = _frames(kolektor_root, tmp_path / "good")
    before = _files(tmp_path)
    for out in (source,):  # a folder inside it is fine: the source folder is read without its sub-folders
        assert main(["-q", "capture", str(source), "-o", str(out), "--frames", "1"]) == 2
        err = capsys.readouterr().err
        assert f"edgecmg capture: error: -o/--out {out}: this command reads {source}, so the next run" in err, err
    assert _files(tmp_path) == before


# --- 5. a missing camera: edgecmg's error alone -------------------------------------------------------------------


def _absent_camera_index() -> int:
    index = 97
    if os.path.exists(f"/dev/video{index}"):
        pytest.skip(f"/dev/video{index} exists here")
    return index


def _opencv_log_levels():
    """cv2.utils.logging, or a skip: OpenCV 4.11's wheel (the oldest stack's) has no such binding, and
    the command line then leaves OpenCV's warnings as they are (nothing can hold them back once cv2 is
    imported: OPENCV_LOG_LEVEL is read when it loads)."""
    import cv2

    levels = getattr(getattr(cv2, "utils", None), "logging", None)
    if levels is None or not hasattr(levels, "getLogLevel"):
        pytest.skip(f"OpenCV {cv2.__version__} has no cv2.utils.logging to hold its warnings with")
    return levels


@pytest.mark.skipif(sys.platform != "linux", reason="V4L2 cameras: what OpenCV says elsewhere differs")
@pytest.mark.parametrize("command", ["capture", "stream"])
def test_a_missing_camera_is_edgecmgs_error_alone(small_artifact, tmp_path, command):
    """`capture 0` with no camera printed OpenCV's two "[ WARN:0@0.013] ... can't open camera by index"
    lines ahead of edgecmg's error; with -v they are kept (debug)."""
    _opencv_log_levels()
    index = str(_absent_camera_index())
    env = {name: value for name, value in os.environ.items() if name != "OPENCV_LOG_LEVEL"}
    args = ["-o", str(tmp_path / "frames")] if command == "capture" else ["-m", str(small_artifact), "--backend",
                                                                          "torch"]
    done = subprocess.run([EDGECMG, command, index, *args], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"edgecmg {command}: error: cannot open camera source "
                                                   f"camera:{index}"), done.stderr
    if command == "capture":
        verbose = subprocess.run([EDGECMG, "-v", command, index, *args], capture_output=True, text=True,
                                 cwd=tmp_path, env=env, timeout=300)
        assert verbose.returncode == 2 and "cannot open camera source" in verbose.stderr, verbose.stderr


def test_opencv_log_is_held_at_errors_by_the_command_line_alone_and_put_back(monkeypatch):
    """The command line holds OpenCV's log at errors while stream or capture runs and puts its level
    back after, leaving it alone with -v or an OPENCV_LOG_LEVEL of the user's; the library never
    touches it (a process-wide setting: another thread's warnings, or a level set meanwhile, are not
    the library's to drop)."""
    import cv2

    from edgecmg.commands import opencv_warnings_held
    from edgecmg.config import StreamConfig
    from edgecmg.errors import StreamError
    from edgecmg.stream.sources import open_source

    levels = _opencv_log_levels()
    seen = []

    class NoCamera:
        def __init__(self, *args, **kwargs):
            seen.append(levels.getLogLevel())

        def isOpened(self):  # noqa: N802 (OpenCV's spelling)
            return False

        def release(self):
            pass

    monkeypatch.setattr(cv2, "VideoCapture", NoCamera)
    monkeypatch.delenv("OPENCV_LOG_LEVEL", raising=False)
    previous = levels.getLogLevel()
    try:
        levels.setLogLevel(levels.LOG_LEVEL_WARNING)
        with pytest.raises(StreamError, match="cannot open camera source camera:0"):
            open_source(0, StreamConfig())
        assert seen == [levels.LOG_LEVEL_WARNING]  # the library left it alone
        with opencv_warnings_held(verbose=False):
            assert levels.getLogLevel() == levels.LOG_LEVEL_ERROR
        assert levels.getLogLevel() == levels.LOG_LEVEL_WARNING  # put back
        with opencv_warnings_held(verbose=True):
            assert levels.getLogLevel() == levels.LOG_LEVEL_WARNING
        monkeypatch.setenv("OPENCV_LOG_LEVEL", "INFO")
        with opencv_warnings_held(verbose=False):
            assert levels.getLogLevel() == levels.LOG_LEVEL_WARNING
    finally:
        levels.setLogLevel(previous)
