"""eval --out where its report cannot be written whole, and with file names that are not UTF-8."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path

import pytest

from edgecmg.cli import main


def _small_mvtec(kolektor_root: Path, root: Path, good_name: bytes) -> Path:
    """Six training images, two good test images (one named ``good_name``) and two defects with masks."""
    for split, kind, count in (("train", "good", 6), ("test", "good", 2), ("test", "defect", 2)):
        folder = root / split / kind
        folder.mkdir(parents=True)
        for number, path in enumerate(sorted((kolektor_root / split / kind).iterdir())[:count]):
            name = os.fsdecode(good_name) if (split, kind, number) == ("test", "good", 0) else path.name
            os.symlink(path, folder / name)
            if kind == "defect":
                masks = root / "ground_truth" / "defect"
                masks.mkdir(parents=True, exist_ok=True)
                os.symlink(kolektor_root / "ground_truth" / "defect" / f"{path.stem}_mask.png",
                           masks / f"{path.stem}_mask.png")
    return root


def test_a_report_cut_short_says_which_of_its_files_were_written(kolektor_root, small_artifact, tmp_path, caplog):
    data = _small_mvtec(kolektor_root, tmp_path / "data", b"plain.jpg")
    out = tmp_path / "report"
    (out / "hardest.png").mkdir(parents=True)  # the last picture cannot be written (as on a disk that filled)
    with caplog.at_level("WARNING", logger="edgecmg"):
        assert main(["-q", "eval", str(small_artifact), str(data), "--backend", "torch", "--out", str(out)]) == 2
    assert (out / "metrics.json").is_file() and (out / "scores.csv").is_file() and (out / "scores.png").is_file()
    # Once: "stopped after judging 4 of the 4 ... (no metrics); run eval again", beside a metrics.json
    # that a second run then refused to replace.
    assert ("eval judged 4 of the 4 test images and wrote metrics.json and scores.csv and scores.png into "
            f"{out} before it stopped") in caplog.text
    assert "--overwrite" in caplog.text and "no metrics" not in caplog.text
    assert (out / "scores.partial.csv").is_file()


@pytest.mark.skipif(os.fsencode("\udce9") != b"\xe9", reason="file names here are not bytes decoded as UTF-8")
def test_eval_out_writes_a_file_name_that_is_not_utf8(kolektor_root, small_artifact, tmp_path):
    latin1 = b"caf\xe9 part.jpg"  # legal on Linux; what a zip made on Windows leaves
    data = _small_mvtec(kolektor_root, tmp_path / "data", latin1)
    out = tmp_path / "report"
    # Once: UnicodeEncodeError ("surrogates not allowed") from scores.partial.csv, and --out removed.
    assert main(["-q", "eval", str(small_artifact), str(data), "--backend", "torch", "--out", str(out)]) == 0
    text = (out / "scores.csv").read_bytes().decode("utf-8")  # UTF-8 throughout: pandas and spreadsheets read it
    files = [row["file"] for row in csv.DictReader(io.StringIO(text, newline=""))]
    # The byte that is not UTF-8 spelled as metrics.json and stream's reports spell it.
    assert sum(Path(name).name == "caf\\udce9 part.jpg" for name in files) == 1, files
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["images"] == 4
    # Which model judged: its path may hold a refit by now.
    assert metrics["model_sha256"] == hashlib.sha256(small_artifact.read_bytes()).hexdigest()
