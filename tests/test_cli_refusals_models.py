"""What bench, build, export and calibrate say about a model file of the wrong kind, and the names
they suggest: a missing file, a folder, an image or calibrate's range cache given as the model is
named with why, on one line (not timed silently away, not a protobuf parse error calling it damaged,
not "bad magic" with its first bytes); a suggested name is one the user can pass as it is."""
import json
import re

import pytest

from edgecmg.cli import main

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(200)  # a JPEG's start: what a photo's first bytes are


def _error_line(err: str, command: str) -> str:
    """The CLI's error line for ``command``, checked to be the whole of what it printed: one line."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"edgecmg {command}: error: "), err
    return lines[0]


@pytest.fixture
def wrong_files(tmp_path):
    """A photo, a folder, calibrate's range cache and a name that does not exist, as users mistype them."""
    image = tmp_path / "img.jpg"
    image.write_bytes(JPEG)
    folder = tmp_path / "small"
    (folder / "good").mkdir(parents=True)
    calib = tmp_path / "k.int8.calib.json"
    calib.write_text(json.dumps({"format": 1, "ranges": {}}, indent=1))
    return {"image": image, "folder": folder, "calib": calib, "missing": tmp_path / "k.onx"}


# --- bench ------------------------------------------------------------------------------------------

def test_bench_names_each_file_it_cannot_time_among_several_and_exits_1(featurizer_onnx, wrong_files, tmp_path,
                                                                       capsys):
    """`bench k.edgecmg k.onx` (a typo), `bench k.edgecmg small`, `bench img.jpg k.edgecmg` timed the good
    file alone and exited 0, saying nothing of the other."""
    pytest.importorskip("onnxruntime")
    said = {"missing": "no such model file", "folder": "is a folder, not a model file",
            "image": "is an image (.jpg), not a model file"}
    for kind, why in said.items():
        bad = wrong_files[kind]
        out = tmp_path / f"bench_{kind}"
        models = [str(bad), str(featurizer_onnx)] if kind == "image" else [str(featurizer_onnx), str(bad)]
        assert main(["-q", "bench", *models, "--frames", "2", "--warmup", "0", "--out", str(out)]) == 1, kind
        err = capsys.readouterr().err
        assert f"skipped {bad}: " in err and why in err, err
        assert f"1 of 2 model files could not be timed: {bad}" in err
        report = json.loads((out / "bench.json").read_text())
        assert [row["model"] for row in report["rows"]] == [featurizer_onnx.name]  # the good one is still timed
        assert report["environment"]["refused"] == [str(bad)]


def test_bench_of_one_file_it_cannot_time_says_why_not_that_no_backend_could_run_it(wrong_files, tmp_path,
                                                                                   capsys):
    said = {"image": "is an image (.jpg), not a model file; edgecmg runs .edgecmg artifacts",
            "folder": "is a folder, not a model file",
            "calib": "holds calibrate's activation ranges, not a model: give the INT8 .onnx calibrate wrote beside it",
            "missing": "no such model file"}
    for kind, why in said.items():
        out = tmp_path / f"bench_{kind}"
        assert main(["-q", "bench", str(wrong_files[kind]), "--out", str(out)]) == 2, kind
        line = _error_line(capsys.readouterr().err, "bench")
        assert why in line and "no backend could run" not in line, line
        assert not out.exists()  # refused before the output folder is made
    # several, none of them timeable: each named, and an error (nothing was timed)
    assert main(["-q", "bench", str(wrong_files["missing"]), str(wrong_files["folder"]),
                 "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert f"skipped {wrong_files['missing']}: no such model file" in err
    assert f"skipped {wrong_files['folder']}: " in err and "none of the 2 model files could be timed" in err


def test_bench_of_an_engine_no_backend_here_runs_says_why(featurizer_onnx, tmp_path, capsys):
    """A damaged engine (or one on a machine without TensorRT) got no row and no word among several,
    and "no backend could run" alone."""
    pytest.importorskip("onnxruntime")
    damaged = tmp_path / "f.engine"
    damaged.write_bytes(b"\x08\x08\x12\x07edgecmg-but-not-an-engine" * 10)
    assert main(["-q", "bench", str(damaged), "--out", str(tmp_path / "a")]) == 2
    line = _error_line(capsys.readouterr().err, "bench")
    assert "not an edgecmg engine file" in line and "no backend could run" not in line
    assert main(["-q", "bench", str(featurizer_onnx), str(damaged), "--frames", "2", "--warmup", "0",
                 "--out", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert f"skipped {damaged}: not an edgecmg engine file" in err


def test_bench_refuses_an_output_folder_inside_its_images(featurizer_onnx, kolektor_root, tmp_path, capsys):
    """`bench --images small/good -o small/good` wrote bench.json, .csv, .md and the PNG among the images."""
    import os

    good = tmp_path / "small" / "good"
    good.mkdir(parents=True)
    for path in sorted((kolektor_root / "test" / "good").iterdir())[:2]:
        os.symlink(path, good / path.name)
    before = sorted(p.name for p in good.iterdir())
    for out in (good,):  # a folder inside it is fine: --images reads it without its sub-folders
        assert main(["-q", "bench", str(featurizer_onnx), "--images", str(good), "--frames", "2", "--warmup", "0",
                     "-o", str(out)]) == 2
        line = _error_line(capsys.readouterr().err, "bench")
        assert f"--out {out}: this command reads {good}, so the next run would read what it writes" in line
    assert sorted(p.name for p in good.iterdir()) == before


# --- build ------------------------------------------------------------------------------------------

def test_build_says_what_it_takes_for_a_folder_an_image_or_a_range_cache(wrong_files, tmp_path, capsys):
    """`build img.jpg` called the photo a damaged ONNX model (DecodeError), `build k.int8.calib.json`
    printed protobuf's field list over two lines, `build small` said "no such ONNX file"."""
    onnx_beside = tmp_path / "k.int8.onnx"
    onnx_beside.write_bytes(b"onnx")
    said = {"image": f"{wrong_files['image']} is an image, not a model: build takes an .onnx file (from "
                     "`edgecmg export` or `edgecmg calibrate`)",
            "folder": f"{wrong_files['folder']} is a folder, not an ONNX file: build takes an .onnx file",
            "calib": f"{wrong_files['calib']} holds calibrate's activation ranges, not a model: build the INT8 "
                     f".onnx calibrate wrote beside it, {onnx_beside}"}
    for kind, expected in said.items():
        assert main(["-q", "build", str(wrong_files[kind]), "-o", str(tmp_path / "m.engine")]) == 2, kind
        line = _error_line(capsys.readouterr().err, "build")
        assert expected in line, line
        assert not re.search("DecodeError|ParseError|damaged|no such ONNX file|Available Fields", line), line
    other = tmp_path / "notes.txt"
    other.write_text("x")
    assert main(["-q", "build", str(other), "-o", str(tmp_path / "m.engine")]) == 2
    assert "build takes an .onnx file (from `edgecmg export` or `edgecmg calibrate`), not a .txt file" in \
        _error_line(capsys.readouterr().err, "build")
    onnx_beside.unlink()  # the range cache without its model: said so
    assert main(["-q", "build", str(wrong_files["calib"]), "-o", str(tmp_path / "m.engine")]) == 2
    assert f"{onnx_beside}; it is not there" in _error_line(capsys.readouterr().err, "build")
    assert not (tmp_path / "m.engine").exists()


def test_timing_cache_suggests_a_timing_cache_name_and_refuses_images_and_range_caches(full_onnx, tmp_path,
                                                                                       capsys):
    """The refusal suggested "e.g. trt.cache, part.calib.json" (the second is calibrate's naming, which
    a timing cache must not take), and an image or a .calib.json was accepted and replaced."""
    model = tmp_path / "m.edgecmg"
    assert main(["-q", "build", str(full_onnx), "--timing-cache", str(model), "-o", str(tmp_path / "m.engine")]) == 2
    line = _error_line(capsys.readouterr().err, "build")
    assert "(e.g. trt.cache)" in line and "calib.json" not in line
    for name, said in (("photo.png", "that names an image (.png)"), ("part.JPG", "that names an image (.JPG)"),
                       ("part.int8.calib.json", "that names calibrate's activation-range cache (.calib.json)")):
        victim = tmp_path / name
        victim.write_bytes(b"keep me")
        assert main(["-q", "build", str(full_onnx), "--timing-cache", str(victim), "-o",
                     str(tmp_path / "m.engine")]) == 2, name
        line = _error_line(capsys.readouterr().err, "build")
        assert f"timing cache {victim}: {said}" in line and "(e.g. trt.cache)" in line, line
        assert "tensorrt" not in line.lower()  # refused before TensorRT is needed
        assert victim.read_bytes() == b"keep me"


# --- export -----------------------------------------------------------------------------------------

def test_export_says_it_takes_a_fitted_model_before_reading_the_file(featurizer_onnx, wrong_files, tmp_path,
                                                                     capsys):
    """`export img.jpg -o x.onnx` said "not an edgecmg model file (bad magic b'\\xff\\xd8...')"."""
    from edgecmg.engine_file import write_engine_file

    engine = write_engine_file(tmp_path / "built.engine", {"precision": "fp16"}, b"plan")
    said = {wrong_files["image"]: "is an image, not a model: export takes a .edgecmg model file (from `edgecmg fit`)",
            featurizer_onnx: "is an ONNX export, not an edgecmg model: export takes the .edgecmg model (from "
                             "`edgecmg fit`) it was made from",
            engine: "is a TensorRT engine, not an edgecmg model: export takes the .edgecmg model",
            wrong_files["calib"]: "holds calibrate's activation ranges, not a model: export takes a .edgecmg"}
    out = tmp_path / "x.onnx"
    for given, expected in said.items():
        assert main(["-q", "export", str(given), "-o", str(out)]) == 2, given
        line = _error_line(capsys.readouterr().err, "export")
        assert f"{given} {expected}" in line and "bad magic" not in line, line
    assert not out.exists()


# --- calibrate --------------------------------------------------------------------------------------

@pytest.fixture
def calibrate_args(tmp_path_factory):
    """A model and a data folder for calibrate, in a folder of their own: the names are refused before
    either is read."""
    pytest.importorskip("onnxruntime")
    where = tmp_path_factory.mktemp("calibrate_inputs")
    model = where / "k.edgecmg"
    model.write_bytes(b"refused before it is read")
    (where / "good").mkdir()
    (where / "good" / "a.png").write_bytes(b"png")
    return [str(model), "--data", str(where / "good"), "--no-check"]


def test_calibrate_suggests_an_int8_name_from_the_stem(calibrate_args, tmp_path, capsys):
    """`-o k.int8.calib.json` suggested k.int8.calib.json.onnx; `-o k.edgecmg` suggested k.onnx, the FP32
    export's name (which the INT8 file would then replace)."""
    for given, suggested in (("k.int8.calib.json", "k.int8.onnx"), ("k.edgecmg", "k.int8.onnx"),
                             ("k.int8", "k.int8.onnx"), ("k.calib.json", "k.int8.onnx")):
        out = tmp_path / given
        assert main(["-q", "calibrate", *calibrate_args, "-o", str(out)]) == 2, given
        line = _error_line(capsys.readouterr().err, "calibrate")
        assert line.endswith(f"must end in .onnx; use {tmp_path / suggested}"), line
    assert main(["-q", "calibrate", *calibrate_args, "--profile", "cpu", "-o", str(tmp_path / "k.edgecmg")]) == 2
    assert _error_line(capsys.readouterr().err, "calibrate").endswith(f"use {tmp_path / 'k.cpu.int8.onnx'}")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_calibrate_says_the_range_cache_name_is_a_folder_and_suggests_another_output(calibrate_args, tmp_path,
                                                                                    capsys):
    """With a folder d.calib.json there, `-o d.onnx` suggested "e.g. d.calib.json/part.json", a cache
    name the command line has no flag for."""
    (tmp_path / "d.calib.json").mkdir()
    assert main(["-q", "calibrate", *calibrate_args, "-o", str(tmp_path / "d.onnx")]) == 2
    line = _error_line(capsys.readouterr().err, "calibrate")
    assert f"{tmp_path / 'd.calib.json'} is a folder" in line and line.endswith(f"e.g. {tmp_path / 'd.int8.onnx'}")
    assert "part.json" not in line
    # the suggestion's own cache name taken too: the next free name
    (tmp_path / "d.int8.calib.json").mkdir()
    assert main(["-q", "calibrate", *calibrate_args, "-o", str(tmp_path / "d.onnx")]) == 2
    assert _error_line(capsys.readouterr().err, "calibrate").endswith(f"e.g. {tmp_path / 'd-2.int8.onnx'}")


def test_calibrate_says_it_takes_a_fitted_model(wrong_files, kolektor_root, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    assert main(["-q", "calibrate", str(wrong_files["image"]), "--data", str(kolektor_root / "test" / "good"),
                 "-o", str(tmp_path / "k.int8.onnx")]) == 2
    line = _error_line(capsys.readouterr().err, "calibrate")
    assert "is an image, not a model: calibrate takes a .edgecmg model file (from `edgecmg fit`)" in line
    assert "bad magic" not in line


def test_calibration_short_of_an_absurd_sample_count_does_not_echo_it(tmp_path, caplog):
    """`--samples 1000000` on 12 images advised "add images of good parts (1000000 or more)"."""
    from edgecmg.calibration import select_with_spares

    for i in range(12):
        (tmp_path / f"{i:02d}.png").write_bytes(b"png")
    with caplog.at_level("WARNING", logger="edgecmg"):
        chosen, spares = select_with_spares(tmp_path, 1_000_000)
    assert len(chosen) == 12 and spares == []
    assert "fewer than asked for; the activation ranges come from the 12 found" in caplog.text
    assert "1000000" not in caplog.text and "1,000,000" not in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="edgecmg"):  # a usual count short: said with the count, as before
        select_with_spares(tmp_path, 64)
    assert "holds 12 images, fewer than the 64 asked for" in caplog.text
