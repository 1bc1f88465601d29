"""Report files for a file name that is not UTF-8: ``caf\\xe9`` (Latin-1, legal on Linux) reaches
Python as ``caf\\udce9``, which crashed write_report after the .json, leaving no .csv and no .md."""
from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from edgecmg.stream import write_report

LATIN1_NAME = os.fsdecode(b"caf\xe9")  # 'caf\udce9' on Linux


def _check_reports(folder: Path, stem: str, expected_source: str) -> None:
    """The three files exist, are valid UTF-8, and spell the name alike: as the JSON escapes it."""
    data = json.loads((folder / f"{stem}.json").read_text(encoding="utf-8"))
    assert data["rows"][-1]["source"] == expected_source  # the JSON gives the name back exactly
    spelled = expected_source.encode("utf-8", "backslashreplace").decode("utf-8")
    assert "\\udce9" in spelled
    assert spelled in (folder / f"{stem}.json").read_text(encoding="utf-8")
    with open(folder / f"{stem}.csv", encoding="utf-8", newline="") as f:
        assert list(csv.DictReader(f))[-1]["source"] == spelled
    assert spelled in (folder / f"{stem}.md").read_text(encoding="utf-8")


@pytest.mark.skipif(sys.platform == "win32", reason="Windows file names are UTF-16: no undecodable byte")
def test_write_report_writes_a_name_that_is_not_utf8(tmp_path, capsys):
    source = f"/data/{LATIN1_NAME}.jpg"
    table = write_report([{"source": source, "frames": 3}], tmp_path, "stream_summary", environment={}, echo=True)
    _check_reports(tmp_path, "stream_summary", source)
    assert "/data/caf\\udce9.jpg" in table and "/data/caf\\udce9.jpg" in capsys.readouterr().out


@pytest.mark.skipif(sys.platform == "win32", reason="Windows file names are UTF-16: no undecodable byte")
def test_stream_of_a_folder_whose_name_is_not_utf8_writes_its_whole_summary(small_artifact, kolektor_root, tmp_path):
    from edgecmg.cli import main

    folder = tmp_path / f"d{LATIN1_NAME}f"
    folder.mkdir()
    for image in sorted((kolektor_root / "train" / "good").iterdir())[:2]:
        shutil.copy(image, folder / f"{LATIN1_NAME}_{image.name}")
    report = tmp_path / "report"
    assert main(["stream", str(folder), "-m", str(small_artifact), "--backend", "torch", "--report", str(report),
                 "-q"]) == 0
    _check_reports(report, "stream_summary", str(folder))
