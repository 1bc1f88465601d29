"""Folders other people can write (a shared results folder, a supplier's dataset, a cache several users
point EDGECMG_CACHE_DIR at): what someone else put there must not make edgecmg write through a link,
run an export or reuse ranges they wrote, or put formulas, markup and terminal escapes into reports."""
from __future__ import annotations

import json
import logging
import os

import pytest

from edgecmg.cli import main
from edgecmg.fileio import spreadsheet_cell
from edgecmg.stream.report import markdown_table

ESCAPE = "\x1b]0;PWNED\x07\x1b[2J"  # sets a terminal's title and clears its screen


def _good_images(kolektor_root, count: int, folder):
    folder.mkdir()
    for path in sorted((kolektor_root / "test" / "good").iterdir())[:count]:
        (folder / path.name).symlink_to(path)
    return folder


OTHER_USER = 65534  # nobody
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="a link another user made needs root to make here")


def _planted_link(link, target) -> None:
    """A link as another user of a shared folder would leave it (owned by them, not by this process)."""
    link.symlink_to(target)
    os.lchown(link, OTHER_USER, OTHER_USER)


@needs_root
def test_predict_writes_no_records_through_a_link_planted_in_its_out_folder(small_artifact, kolektor_root, tmp_path,
                                                                             capsys):
    images = _good_images(kolektor_root, 2, tmp_path / "in")
    out = tmp_path / "shared"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    _planted_link(out / "results.jsonl", victim)  # dangling: predict would create the file it names
    base = ["-q", "predict", str(small_artifact), str(images), "--out", str(out), "--backend", "torch",
            "--overlays", "none"]
    assert main(base) == 2
    assert "holds an earlier run's results.jsonl" in capsys.readouterr().err
    assert not victim.exists()
    victim.write_text("someone's notes\n")
    assert main([*base, "--overwrite"]) == 2
    assert f"{out / 'results.jsonl'} is a symbolic link to {victim} that another user made (uid 65534)" in \
        capsys.readouterr().err
    assert victim.read_text() == "someone's notes\n"


@needs_root
def test_stream_appends_no_records_and_saves_no_video_through_another_users_link(small_artifact, kolektor_root,
                                                                                 tmp_path, capsys):
    images = _good_images(kolektor_root, 2, tmp_path / "in")
    victim = tmp_path / "victim.txt"
    victim.write_text("someone's notes\n")
    for flag, name in (("--jsonl", "frames.jsonl"), ("--save", "line.mkv")):
        link = tmp_path / name
        _planted_link(link, victim)
        assert main(["-q", "stream", str(images), "-m", str(small_artifact), "--backend", "torch", flag, str(link),
                     "--overwrite"]) == 2
        assert f"{flag} {link} is a symbolic link to {victim} that another user made" in capsys.readouterr().err
    assert victim.read_text() == "someone's notes\n"


def test_a_link_of_ones_own_is_followed(small_artifact, kolektor_root, tmp_path):
    """A "current.jsonl" pointing at today's log, made by the user who runs the stream, is written through."""
    images = _good_images(kolektor_root, 2, tmp_path / "in")
    today = tmp_path / "2026-12-07.jsonl"
    (tmp_path / "current.jsonl").symlink_to(today)
    assert main(["-q", "stream", str(images), "-m", str(small_artifact), "--backend", "torch", "--jsonl",
                 str(tmp_path / "current.jsonl")]) == 0
    assert len(today.read_text().splitlines()) == 2 and (tmp_path / "current.jsonl").is_symlink()


def test_eval_reports_keep_a_datasets_folder_names_from_acting_as_formulas_or_escapes(small_artifact, kolektor_root,
                                                                                      tmp_path, capsys):
    data = tmp_path / "supplier"
    formula = "=cmd|' calc'!A0"  # a DDE call a spreadsheet would run
    (data / "test").mkdir(parents=True)
    _good_images(kolektor_root, 2, data / "test" / "good")
    defects = sorted((kolektor_root / "test" / "defect").iterdir())
    for name, path in ((formula, defects[0]), (f"{ESCAPE}scratch", defects[1])):
        (data / "test" / name).mkdir()
        (data / "test" / name / path.name).symlink_to(path)
    assert main(["-q", "eval", str(small_artifact), str(data), "--backend", "torch", "--out", str(tmp_path / "r")]) == 0
    printed = capsys.readouterr().out
    assert "by defect type" in printed and "\x1b" not in printed and "\\u001b]0;PWNED" in printed
    cells = (tmp_path / "r" / "scores.csv").read_text()
    assert f"'{formula}" in cells  # shown as text by a spreadsheet, not run


def test_spreadsheet_cells_and_markdown_cells_are_made_inert():
    assert spreadsheet_cell("=1+1") == "'=1+1" and spreadsheet_cell("@SUM(A1)") == "'@SUM(A1)"
    assert spreadsheet_cell("-") == "-" and spreadsheet_cell(-0.5) == -0.5 and spreadsheet_cell("part.png") == "part.png"
    table = markdown_table([{"source": f"<img src=x onerror=alert(1)>{ESCAPE}|x", "fps": 1.0}])
    assert "<img" not in table and "&lt;img" in table and "\x1b" not in table and "\\|x" in table


def test_an_export_cache_entry_that_is_a_link_or_another_users_is_not_run(tmp_path, artifact_path, monkeypatch,
                                                                          caplog):
    from edgecmg.export_cache import cached_onnx

    monkeypatch.setenv("EDGECMG_CACHE_DIR", str(tmp_path / "cache"))
    entry = cached_onnx(artifact_path)[0]
    assert entry.parent.stat().st_mode & 0o777 == 0o700  # made private: an export holds the memory bank
    planted = tmp_path / "planted.onnx"
    entry.rename(planted)
    entry.symlink_to(planted)
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        assert cached_onnx(artifact_path)[0] == entry
    assert f"cached export {entry} is a symbolic link (to {planted}): not used; exporting again" in caplog.text
    assert not entry.is_symlink() and entry.is_file()
    if os.geteuid() != 0:
        return  # handing the entry to another user needs root
    os.chown(entry, 65534, 65534)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        assert cached_onnx(artifact_path)[0] == entry
    assert f"cached export {entry} belongs to another user (uid 65534): not used" in caplog.text
    assert entry.stat().st_uid == 0


def test_calibration_ranges_another_user_wrote_are_measured_again(tmp_path, caplog):
    from edgecmg.calibration.cache import CalibrationCache

    mine = CalibrationCache({"model": "abc"}, {"x": (0.0, 1.0)}).save(tmp_path / "mine.calib.json")
    assert CalibrationCache.load(mine) is not None
    link = tmp_path / "planted.calib.json"
    link.symlink_to(mine)
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        assert CalibrationCache.load(link) is None
    assert "is a symbolic link" in caplog.text and "recalibrating" in caplog.text
    if os.geteuid() == 0:
        os.chown(mine, 65534, 65534)
        assert CalibrationCache.load(mine) is None


def test_the_cache_folder_setting_expands_a_tilde_and_ignores_a_relative_xdg_folder(monkeypatch, tmp_path):
    from edgecmg.export_cache import cache_dir

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("EDGECMG_CACHE_DIR", "~/edge")  # as systemd's Environment= passes it
    assert cache_dir() == tmp_path / "edge"
    monkeypatch.delenv("EDGECMG_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert cache_dir() == tmp_path / ".cache" / "edgecmg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "edgecmg"
    json.dumps(str(cache_dir()))
