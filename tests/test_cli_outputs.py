"""What predict, bench and eval write when things around them go wrong: a full disk, a reader of stdout
gone away, an output folder reached from another working directory, a test set of one kind."""
import errno
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

import edgecmg
from edgecmg.cli import main

EDGECMG = str(Path(sys.executable).parent / "edgecmg")


def _images(kolektor_root: Path, kind: str, count: int, folder: Path) -> list[Path]:
    """``count`` real KolektorSDD test images of ``kind`` (good, defect), linked into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    links = []
    for path in sorted((kolektor_root / "test" / kind).iterdir())[:count]:
        os.symlink(path, folder / path.name)
        links.append(folder / path.name)
    return links


def _whole_lines(path: Path) -> list[dict]:
    """Every line of a JSON-lines file, each of which must be a whole record."""
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n"), f"{path} ends in half a line: {text[-80:]!r}"
    return [json.loads(line) for line in text.splitlines()]


# --- bench: the report is written whatever happens to stdout ------------------------------------------------


@pytest.mark.parametrize("unbuffered", [False, True])
def test_bench_writes_its_report_when_the_reader_of_its_output_is_gone(small_artifact, tmp_path, unbuffered):
    """`edgecmg bench M | head -1`: the reader leaves while backends are still to be timed. The lines
    stop, the timing goes on and the report files are written; the exit status says the output was
    cut short (141, as for any command), with no traceback. Buffered, as a shell's pipe is, the
    interpreter's own flush at exit met the broken pipe (exit 120); unbuffered (PYTHONUNBUFFERED=1,
    as under many service managers) the first line did, which ended the run with no report."""
    pytest.importorskip("onnxruntime")
    out = tmp_path / "bench"
    read_end, write_end = os.pipe()
    os.close(read_end)  # gone before the first line: every line bench prints meets a broken pipe
    env = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    try:
        done = subprocess.run([EDGECMG, "bench", str(small_artifact), "--backends", "torch", "onnxruntime",
                               "--frames", "3", "--warmup", "1", "-o", str(out), "-q"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path, timeout=600)
    finally:
        os.close(write_end)
    assert done.returncode == 141, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    report = json.loads((out / "bench.json").read_text())
    assert [row["backend"] for row in report["rows"]] == ["torch", "onnxruntime"]
    for name in ("bench.csv", "bench.md", "bench_latency.png"):
        assert (out / name).stat().st_size > 0, name


def test_bench_backends_are_checked_and_lower_cased_before_anything_is_timed(small_artifact, tmp_path, capsys,
                                                                             caplog):
    from edgecmg.cli import build_parser

    parsed = build_parser().parse_args(["bench", "m.edgecmg", "--backends", "TORCH", "OnnxRuntime"])
    assert parsed.backends == ["torch", "onnxruntime"]
    out = tmp_path / "bench"
    with pytest.raises(SystemExit) as refused:  # a typo among them: nothing is timed, no folder made
        main(["-q", "bench", str(small_artifact), "--backends", "torch", "tensorrtt", "--out", str(out)])
    assert refused.value.code == 2
    assert "argument --backends: invalid choice: 'tensorrtt'" in capsys.readouterr().err and not out.exists()
    # One model and a backend that cannot run it (TensorRT runs engines and ONNX files, on any machine):
    # named and skipped, as with several models, and the others timed and written.
    with caplog.at_level("WARNING", logger="edgecmg"):
        assert main(["-q", "bench", str(small_artifact), "--backends", "TORCH", "tensorrt", "--frames", "2",
                     "--warmup", "0", "--out", str(out)]) == 0
    why = f"tensorrt on {small_artifact}: tensorrt does not run .edgecmg files"
    assert f"skipping {why}" in caplog.text
    report = json.loads((out / "bench.json").read_text())
    assert [(row["model"], row["backend"]) for row in report["rows"]] == [(small_artifact.name, "torch")]
    assert report["environment"]["skipped"] == [why]  # the report says why its row is missing


# --- predict: results.jsonl and skipped.jsonl on a full disk -------------------------------------------------


def _disk_fills_during_the_second_write(monkeypatch, target: Path) -> None:
    """os.write as a disk that fills up while ``target``'s second record is written: the first is
    taken whole, of the second only what fitted (half), and the next write is refused with ENOSPC.
    Other files are written as usual. A real disk cannot be filled safely in a test; this is the OS
    call predict's record files are written with."""
    real_write = os.write
    calls = []

    def write(fd, data):
        try:
            ours = os.path.samestat(os.fstat(fd), os.stat(target))
        except OSError:
            ours = False
        if not ours:
            return real_write(fd, data)
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, data)
        if len(calls) == 2:
            return real_write(fd, bytes(data[:len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("full", ["results.jsonl", "skipped.jsonl"])
def test_predict_on_a_full_disk_names_the_file_and_leaves_only_whole_lines(small_artifact, kolektor_root, tmp_path,
                                                                         capsys, monkeypatch, full):
    images = tmp_path / "in"
    _images(kolektor_root, "good", 4, images)
    for name in ("broken_a.png", "broken_b.png", "broken_c.png"):  # sorted first: skipped.jsonl fills first
        (images / name).write_bytes(b"\x89PNG not really")
    out = tmp_path / "out"
    _disk_fills_during_the_second_write(monkeypatch, out / full)
    assert main(["-q", "predict", str(small_artifact), str(images), "--out", str(out), "--backend", "torch",
                 "--overlays", "none"]) == 2
    err = capsys.readouterr().err
    what = "the results" if full == "results.jsonl" else "the list of unreadable files"
    assert f"edgecmg predict: error: cannot write {what} {out / full}: the disk is full" in err, err
    assert "the 1 record(s) written before are kept, each whole" in err, err
    records = _whole_lines(out / full)
    assert len(records) == 1 and all("file" in record for record in records)


def test_predict_past_a_real_file_size_limit_keeps_whole_lines(small_artifact, kolektor_root, tmp_path):
    """The same with the kernel cutting the write short: RLIMIT_FSIZE lets a write take what fits under
    the limit, then refuses the rest (EFBIG), as a disk filling up does (ENOSPC)."""
    pytest.importorskip("resource")  # POSIX
    images = tmp_path / "in"
    _images(kolektor_root, "good", 8, images)  # eight records of about 400 bytes
    out = tmp_path / "out"
    limit = 1500
    launch = (f"import os, resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
              f"os.execv(sys.argv[1], sys.argv[1:])")
    done = subprocess.run([sys.executable, "-c", launch, EDGECMG, "predict", str(small_artifact), str(images),
                           "--out", str(out), "--backend", "torch", "--overlays", "none", "-q"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 2, done.stderr
    assert f"edgecmg predict: error: cannot write the results {out / 'results.jsonl'}:" in done.stderr
    records = _whole_lines(out / "results.jsonl")
    assert 1 <= len(records) < 8 and (out / "results.jsonl").stat().st_size <= limit


# --- predict --overwrite: the earlier overlays go, from any working directory ---------------------------------


def test_predict_overwrite_removes_the_earlier_overlays_from_another_folder_and_after_a_move(
        small_artifact, kolektor_root, tmp_path, monkeypatch):
    images = _images(kolektor_root, "good", 2, tmp_path / "in")
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    base = ["-q", "predict", str(small_artifact), *map(str, images), "--backend", "torch"]
    monkeypatch.chdir(first)
    assert main([*base, "--out", "out"]) == 0
    out = first / "out"
    overlays = [record["overlay"] for record in _whole_lines(out / "results.jsonl")]
    # recorded as --out was given, as "file" is: from where the command ran, they open
    assert overlays == [os.path.join("out", f"{path.stem}_overlay.png") for path in images]
    assert all(os.path.isfile(path) for path in overlays)
    monkeypatch.chdir(second)  # the same folder, by another path from another folder
    assert main([*base, "--out", os.path.join("..", "first", "out"), "--overlays", "none", "--overwrite"]) == 0
    assert sorted(path.name for path in out.iterdir()) == ["predict_run.json", "results.jsonl"]
    # the folder moved between two runs
    assert main([*base, "--out", str(out), "--overwrite"]) == 0
    moved = tmp_path / "moved"
    out.rename(moved)
    assert main([*base, "--out", str(moved), "--overlays", "none", "--overwrite"]) == 0
    assert sorted(path.name for path in moved.iterdir()) == ["predict_run.json", "results.jsonl"]


def test_predict_resume_judges_only_what_a_stopped_run_left_and_keeps_its_work(small_artifact, kolektor_root,
                                                                             tmp_path, monkeypatch, capsys, caplog):
    """Stopped (Ctrl-C) at the third verdict of five, then a record cut short as a killed run leaves
    it: --resume, from another folder and with the inputs named another way, judges the three left
    once each, appends to results.jsonl, and keeps the earlier records, unreadable files and overlays
    as they were. An image of a name already judged, from another folder, gets an overlay of its own."""
    from edgecmg import fileio

    images = tmp_path / "in"
    links = _images(kolektor_root, "good", 5, images)
    (images / "broken.png").write_bytes(b"\x89PNG not really")  # sorted first: skipped.jsonl
    real_write = fileio.JsonLinesFile.write

    def stop_at_the_third_verdict(self, record):
        if self.path.name == "results.jsonl" and self.records == 2:
            raise KeyboardInterrupt
        real_write(self, record)

    monkeypatch.chdir(tmp_path)  # the first run names its inputs and --out relative to here
    monkeypatch.setattr(fileio.JsonLinesFile, "write", stop_at_the_third_verdict)
    assert main(["-q", "predict", str(small_artifact), "in", "--out", "out", "--backend", "torch"]) == 130
    monkeypatch.setattr(fileio.JsonLinesFile, "write", real_write)
    out = tmp_path / "out"
    first = _whole_lines(out / "results.jsonl")
    assert [r["file"] for r in first] == [os.path.join("in", p.name) for p in links[:2]]
    overlays = {r["overlay"]: os.stat(out / Path(r["overlay"]).name) for r in first}
    assert os.path.isfile(out / f"{links[2].stem}_overlay.png")  # saved, but its record never written
    with open(out / "results.jsonl", "ab") as results:  # then killed while writing the third record
        results.write(json.dumps({"file": os.path.join("in", links[2].name)}).encode()[:25])
    earlier = (out / "results.jsonl").read_bytes()
    earlier_whole = earlier[:earlier.rindex(b"\n") + 1]
    unreadable = (out / "skipped.jsonl").read_bytes()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    base = ["predict", str(small_artifact), "--out", str(out), "--backend", "torch", "--resume"]  # no -q: info lines
    assert main([*base, str(images)]) == 0
    assert "3 images judged, 0 skipped (3 done before, kept)" in capsys.readouterr().out
    assert "its last line was cut short" in caplog.text
    assert "3 of the 6 image(s) given are done already" in caplog.text
    records = _whole_lines(out / "results.jsonl")
    assert (out / "results.jsonl").read_bytes().startswith(earlier_whole)
    assert [os.path.basename(r["file"]) for r in records] == [p.name for p in links[:5]]
    assert [r["frame_index"] for r in records] == [1, 2, 3, 4, 5]  # positions among the inputs, "broken" first
    assert (out / "skipped.jsonl").read_bytes() == unreadable  # not read again
    for overlay, stat in overlays.items():  # the earlier overlays, untouched
        assert os.stat(out / Path(overlay).name).st_mtime_ns == stat.st_mtime_ns
    assert all(os.path.isfile(out / Path(r["overlay"]).name) for r in records)

    # nothing left: said, nothing written; then an image named as one judged, from another folder
    assert main([*base, str(images)]) == 0
    assert "0 images judged, 0 skipped (6 done before, kept)" in capsys.readouterr().out
    assert len(_whole_lines(out / "results.jsonl")) == 5
    other = tmp_path / "other"
    other.mkdir()
    os.symlink(sorted((kolektor_root / "test" / "good").iterdir())[5], other / links[0].name)
    assert main([*base, str(other / links[0].name)]) == 0
    records = _whole_lines(out / "results.jsonl")
    assert len(records) == 6 and records[-1]["file"] == str(other / links[0].name)
    names = [Path(r["overlay"]).name for r in records]
    assert len(set(names)) == 6 and names[-1] == f"{links[0].stem}_1_overlay.png"
    # a third of that name, from a third folder: the next free number, not the _1 just taken
    third = tmp_path / "third"
    third.mkdir()
    os.symlink(sorted((kolektor_root / "test" / "good").iterdir())[6], third / links[0].name)
    assert main([*base, str(third / links[0].name)]) == 0
    names = [Path(r["overlay"]).name for r in _whole_lines(out / "results.jsonl")]
    assert len(set(names)) == 7 and names[-1] == f"{links[0].stem}_2_overlay.png"
    assert os.stat(out / names[0]).st_mtime_ns == overlays[os.path.join("out", names[0])].st_mtime_ns


def test_predict_resume_refuses_another_model_or_threshold_and_overwrite(small_artifact, kolektor_root, tmp_path,
                                                                         capsys, caplog):
    from edgecmg import artifact

    images = [str(path) for path in _images(kolektor_root, "good", 3, tmp_path / "in")]
    out = tmp_path / "out"

    def predict(*flags, model=small_artifact, inputs=images[:2]):
        return main(["-q", "predict", str(model), *inputs, "--out", str(out), "--backend", "torch", "--overlays",
                     "none", *flags])

    assert predict() == 0
    run = json.loads((out / "predict_run.json").read_text())
    assert run["model"] == str(small_artifact.resolve()) and len(run["model_sha256"]) == 64
    assert (run["schema"], run["edgecmg"]) == ("edgecmg.predict_run.v1", edgecmg.__version__)
    earlier = (out / "results.jsonl").read_bytes()
    capsys.readouterr()

    assert predict("--resume", "--overwrite") == 2
    assert "--resume continues the earlier run in --out and --overwrite replaces it" in capsys.readouterr().err
    # another model file (the same threshold, another header): refused, whatever its name
    other = artifact.save_with_threshold(small_artifact, tmp_path / "other.edgecmg", run["threshold"], {"by": "test"})
    assert predict("--resume", model=other) == 2
    err = capsys.readouterr().err
    assert f"--resume: the earlier run in {out} judged with {small_artifact.resolve()} (SHA-256 " in err, err
    assert f"not {other}" in err
    # the same model at another threshold
    assert predict("--resume", "--threshold", "1e6") == 2
    err = capsys.readouterr().err
    assert f"judged at threshold {run['threshold']}, and this one would judge at 1e+06; add --threshold " \
           f"{run['threshold']} to continue it" in err, err
    assert predict("--resume", "--threshold", repr(run["threshold"] * 1.001)) == 2  # 0.1% off mixes verdicts too
    assert (out / "results.jsonl").read_bytes() == earlier
    # a run from before --resume (no predict_run.json): its records' threshold is checked, the model is not
    (out / "predict_run.json").unlink()
    assert predict("--resume", "--threshold", "1e6") == 2
    assert f"judged at threshold {run['threshold']}," in capsys.readouterr().err  # the records' own, unrounded
    assert predict("--resume", inputs=images) == 0
    assert "1 image judged, 0 skipped (2 done before, kept)" in capsys.readouterr().out
    assert "left no readable predict_run.json" in caplog.text
    assert json.loads((out / "predict_run.json").read_text())["model_sha256"] == run["model_sha256"]
    assert [r["file"] for r in _whole_lines(out / "results.jsonl")] == images


def test_overwrite_deletes_only_overlay_names_inside_out(tmp_path):
    """A record's overlay is looked for by its name in --out; a name predict never gives an overlay
    (an edited record) and a file outside --out are left alone."""
    from edgecmg.commands.predict import remove_earlier_overlays

    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    for path in (out / "a_overlay.png", out / "notes.txt", elsewhere / "a_overlay.png"):
        path.write_bytes(b"kept?")
    records = [{"overlay": str(elsewhere / "a_overlay.png")}, {"overlay": str(out / "notes.txt")}, {"overlay": None}]
    (out / "results.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    remove_earlier_overlays(out)
    assert sorted(path.name for path in out.iterdir()) == ["notes.txt", "results.jsonl"]
    assert (elsewhere / "a_overlay.png").read_bytes() == b"kept?"


# --- eval: a test set of one kind is refused before any image is judged -------------------------------------


@pytest.mark.parametrize("kind", ["good", "defect"])
def test_eval_refuses_a_test_set_of_one_kind_before_judging_it(small_artifact, kolektor_root, tmp_path, capsys,
                                                               monkeypatch, kind):
    from edgecmg.detector import Detector

    root = tmp_path / "part"
    _images(kolektor_root, kind, 3, root / "test" / kind)
    judged = []
    predict = Detector.predict

    def counted(self, *args, **kwargs):
        judged.append(1)
        return predict(self, *args, **kwargs)

    monkeypatch.setattr(Detector, "predict", counted)
    out = tmp_path / "report"
    assert main(["-q", "eval", str(small_artifact), str(root), "--out", str(out), "--backend", "torch"]) == 2
    err = capsys.readouterr().err
    if kind == "good":
        assert "all 3 test images are good parts" in err and "it needs defect images too" in err
        assert f"`edgecmg threshold MODEL {root / 'test' / 'good'}`" in err  # what checks good parts alone
    else:
        assert "all 3 test images are defects" in err and "it needs good images too" in err
    assert judged == [] and not out.exists()


def test_stream_jsonl_on_a_full_disk_keeps_only_whole_records(small_artifact, kolektor_root, tmp_path, capsys,
                                                              monkeypatch):
    """stream's --jsonl filling the disk left half a record (`..."kept_mas`), which the next run's
    appends then kept for good: cut back to the last whole line, the error naming the file."""
    images = tmp_path / "in"
    _images(kolektor_root, "good", 4, images)
    jsonl = tmp_path / "frames.jsonl"
    jsonl.write_text('{"frame_index": 0, "earlier": "run"}\n')
    _disk_fills_during_the_second_write(monkeypatch, jsonl)
    assert main(["-q", "stream", str(images), "-m", str(small_artifact), "--backend", "torch", "--jsonl",
                 str(jsonl)]) == 2
    err = capsys.readouterr().err
    assert f"edgecmg stream: error: cannot write the --jsonl records {jsonl}: the disk is full" in err, err
    records = _whole_lines(jsonl)
    assert [r.get("earlier") for r in records] == ["run", None] and records[1]["frame_index"] == 0


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_a_save_video_cut_short_by_the_disk_is_an_error_naming_it(small_artifact, kolektor_root, tmp_path, suffix):
    """OpenCV's video writer says nothing of failed writes: a full disk left an .mp4 without its index
    (or an empty .mkv) and exit 0. RLIMIT_FSIZE cuts the writes short as a disk filling up does."""
    pytest.importorskip("resource")
    images = tmp_path / "in"
    _images(kolektor_root, "good", 8, images)
    video = tmp_path / f"out{suffix}"
    launch = ("import os, resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000)); "
              "os.execv(sys.argv[1], sys.argv[1:])")
    done = subprocess.run([sys.executable, "-c", launch, EDGECMG, "stream", str(images), "-m", str(small_artifact),
                           "--backend", "torch", "--save", str(video), "-q"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 2, done.stderr
    assert f"edgecmg stream: error: the overlay video {video} was not written whole" in done.stderr, done.stderr


# --- stream --save: what the video is written from, at and over ------------------------------------------------


def _video(kolektor_root: Path, path: Path, count: int = 6) -> Path:
    import cv2

    from edgecmg.imageio import read_image

    frames = [read_image(p) for p in sorted((kolektor_root / "test" / "good").iterdir())[:count]]
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    for frame in frames:
        writer.write(cv2.cvtColor(cv2.resize(frame, (w, h)), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_an_output_that_is_the_source_is_refused(small_artifact, kolektor_root, tmp_path, capsys):
    """`--save line.avi --overwrite` on the recording line.avi replaced it with its own overlays."""
    video = _video(kolektor_root, tmp_path / "line.avi")
    before = video.read_bytes()
    for flag in ("--save", "--jsonl"):
        assert main(["-q", "stream", str(video), "-m", str(small_artifact), "--backend", "torch", flag, str(video),
                     "--overwrite"]) == 2
        assert f"{flag} {video} is the source being read ({video}); give the output another name" in \
            capsys.readouterr().err
    assert video.read_bytes() == before


def test_save_scales_frames_past_the_encoders_limit_and_plays_at_the_realtime_pace(small_artifact, kolektor_root,
                                                                                 tmp_path, capsys):
    """A line-scan frame of 9000x200 failed as "OpenCV could not open it"; a folder paced at 5 fps was
    written as a 25 fps video, playing five times too fast."""
    import cv2

    from edgecmg.imageio import read_image

    folder = tmp_path / "scans"
    folder.mkdir()
    part = read_image(sorted((kolektor_root / "test" / "good").iterdir())[0])
    for i in range(3):
        wide = cv2.resize(part, (9000, 200), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"scan_{i}.png"), cv2.cvtColor(wide, cv2.COLOR_RGB2BGR))
    video = tmp_path / "scans.avi"
    assert main(["-q", "stream", str(folder), "-m", str(small_artifact), "--backend", "torch", "--realtime",
                 "--capture-fps", "5", "--save", str(video)]) == 0, capsys.readouterr().err
    check = cv2.VideoCapture(str(video))
    try:
        size = (check.get(cv2.CAP_PROP_FRAME_WIDTH), check.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = check.get(cv2.CAP_PROP_FPS)
    finally:
        check.release()
    assert size == (4096, 92) and fps == pytest.approx(5.0)


def test_a_recording_played_at_a_cameras_pace_is_batched_as_a_camera_is():
    """--realtime --batch 4: each batch waited for four paced frames (latency p99 317 ms against 4)."""
    import numpy as np

    from edgecmg.config import StreamConfig
    from edgecmg.stream import StreamPipeline

    frames = [np.full((8, 8, 3), i, np.uint8) for i in range(12)]
    sizes = []
    pipe = StreamPipeline(frames, StreamConfig(realtime=True, capture_fps=20.0, batch=4))
    with pipe:
        for _ in pipe.run(lambda batch, pre: sizes.append(len(batch)) or [f.index for f in batch]):
            pass
    assert pipe.config.policy == "latest" and sum(sizes) + pipe.stats.frames_dropped == 12
    assert max(sizes) < 4, sizes  # taken as they come, 50 ms apart


# --- stream: a stop signal and the records ------------------------------------------------------------------


@pytest.mark.parametrize("where", ["counted", "handed over", "writing the record"])
def test_a_stop_signal_anywhere_after_a_frame_is_counted_leaves_its_record(small_artifact, kolektor_root, tmp_path,
                                                                           monkeypatch, where):
    """A SIGTERM after the pipeline counted a judged frame (stats.frames_yielded) but before the command
    held stops to write that frame's record ended the run there: the summary counted the frame, the
    --jsonl and --save had no record of it. The signal is raised (signal.raise_signal runs its handler
    before returning) at the second frame: just after its count, just after it reached the command,
    and while its record is written (held until the overlay is saved, as before)."""
    import signal

    import cv2

    from edgecmg.commands import stream as stream_command
    from edgecmg.stream import pipeline

    images = tmp_path / "in"
    _images(kolektor_root, "good", 4, images)
    jsonl, video = tmp_path / "frames.jsonl", tmp_path / "frames.avi"
    seen = []

    def stop_at_the_second(function):
        def wrapped(*args, **kwargs):
            out = function(*args, **kwargs)
            seen.append(1)
            if len(seen) == 2:
                signal.raise_signal(signal.SIGTERM)
            return out
        return wrapped

    if where == "counted":  # StreamStats._yielded, the count made last before the pipeline's yield
        monkeypatch.setattr(pipeline.StreamStats, "_yielded", stop_at_the_second(pipeline.StreamStats._yielded))
    elif where == "handed over":  # the result is the command's, before its stop.hold()
        monkeypatch.setattr(pipeline.StreamRun, "__next__", stop_at_the_second(pipeline.StreamRun.__next__))
    else:
        monkeypatch.setattr(stream_command.JsonLinesFile, "write",
                            stop_at_the_second(stream_command.JsonLinesFile.write))
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a known handler: not ignored (nohup)
    try:
        assert main(["-q", "stream", str(images), "-m", str(small_artifact), "--backend", "torch", "--jsonl",
                     str(jsonl), "--save", str(video)]) == 143
    finally:
        signal.signal(signal.SIGTERM, previous)
    (row,) = json.loads((tmp_path / "stream_summary.json").read_text())["rows"]
    records = _whole_lines(jsonl)
    check = cv2.VideoCapture(str(video))
    try:
        saved = 0
        while check.read()[0]:
            saved += 1
    finally:
        check.release()
    assert row["ended"] == "terminated (SIGTERM)"
    assert (row["frames_yielded"], len(records), saved) == (2, 2, 2), (where, row["frames_yielded"], records)
    assert [r["frame_index"] for r in records] == [0, 1]


def test_two_streams_writing_beside_records_in_one_folder_keep_a_summary_row_each(small_artifact, kolektor_root,
                                                                                  tmp_path):
    """Two streams whose --jsonl sit in one folder wrote the same stream_summary.json: the second run's
    summary replaced the first's. Each stream keeps its row; a stream run again replaces its own."""
    first, second = tmp_path / "line1", tmp_path / "line2"
    _images(kolektor_root, "good", 2, first)
    _images(kolektor_root, "good", 3, second)
    logs = tmp_path / "logs"

    def run(images, name):
        assert main(["-q", "stream", str(images), "-m", str(small_artifact), "--backend", "torch", "--jsonl",
                     str(logs / name)]) == 0
        return json.loads((logs / "stream_summary.json").read_text())["rows"]

    run(first, "line1.jsonl")
    rows = run(second, "line2.jsonl")
    assert [(Path(r["records"]).name, r["frames_yielded"]) for r in rows] == [("line1.jsonl", 2), ("line2.jsonl", 3)]
    rows = run(first, "line1.jsonl")  # a restarted service: its own row replaced, the other kept
    assert [(Path(r["records"]).name, r["frames_yielded"]) for r in rows] == [("line2.jsonl", 3), ("line1.jsonl", 2)]
    assert len((logs / "stream_summary.csv").read_text().strip().splitlines()) == 3  # a header and a row each


def test_a_stream_that_flags_most_frames_ends_with_how_to_set_a_threshold_on_its_camera(small_artifact,
                                                                                         kolektor_root, tmp_path,
                                                                                         capsys):
    """A camera's frames scored above the files the threshold was set on: 82 of 100 frames flagged, and
    nothing said why or what to do."""
    frames = tmp_path / "frames"
    _images(kolektor_root, "good", 20, frames)
    assert main(["-q", "stream", str(frames), "-m", str(small_artifact), "--backend", "torch",
                 "--threshold=-1000"]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert (f"20 of 20 frames were flagged at threshold -1000. If most of these parts were good, this camera's frames "
            "score above the images the threshold was set on: set one on them (edgecmg capture SOURCE -o "
            f"good_frames/ while good parts pass, then edgecmg threshold {small_artifact} good_frames/); if the line "
            "changed since fit (light, position, focus), defects' scores rose too: fit again on good frames taken "
            "now") in said
    assert main(["-q", "stream", str(frames), "-m", str(small_artifact), "--backend", "torch",
                 "--threshold=1000"]) == 0
    assert "were flagged" not in capsys.readouterr().out


def test_stream_records_name_their_runs_start_as_the_summary_does(small_artifact, kolektor_root, tmp_path):
    """A restarted service appends to its --jsonl and counts frame_index from 0 again: each record says
    which run it is of, as the summary row's "started" does."""
    frames = tmp_path / "frames"
    _images(kolektor_root, "good", 2, frames)
    jsonl = tmp_path / "logs" / "frames.jsonl"
    for _ in range(2):
        assert main(["-q", "stream", str(frames), "-m", str(small_artifact), "--backend", "torch", "--jsonl",
                     str(jsonl)]) == 0
    records = _whole_lines(jsonl)
    (row,) = json.loads((jsonl.parent / "stream_summary.json").read_text())["rows"]  # the last run's
    assert [r["frame_index"] for r in records] == [0, 1, 0, 1]
    assert records[2]["run_started"] == records[3]["run_started"] == row["started"]
    assert records[0]["run_started"] == records[1]["run_started"] <= row["started"]
    datetime.fromisoformat(records[0]["run_started"])
