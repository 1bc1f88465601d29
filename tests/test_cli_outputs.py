"""What predict, bench and eval write when things around them go wrong: a full disk, a reader of stdout
gone away, an output folder reached from another working directory, a test set of one kind."""
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert sorted(path.name for path in out.iterdir()) == ["results.jsonl"]
    # the folder moved between two runs
    assert main([*base, "--out", str(out), "--overwrite"]) == 0
    moved = tmp_path / "moved"
    out.rename(moved)
    assert main([*base, "--out", str(moved), "--overlays", "none", "--overwrite"]) == 0
    assert sorted(path.name for path in moved.iterdir()) == ["results.jsonl"]


def test_overwrite_deletes_only_overlay_names_inside_out(tmp_path):
    """A record's overlay is looked for by its name in --out; a name predict never gives an overlay
    (an edited record) and a file outside --out are left alone."""
    from edgecmg.cli import remove_earlier_overlays

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
