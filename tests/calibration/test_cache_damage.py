"""A damaged or edited calibration cache (calibrate's *.calib.json): recalibrated with a warning that
names it, never a traceback and never reused in silence; where calibrate's check finds that ranges
reused from a cache flag good parts, its warning names that file to delete."""
from __future__ import annotations

import json

import pytest

import edgecmg_testmodels as models
from edgecmg.calibration import CalibrationCache, default_cache_path

pytest.importorskip("onnxruntime")

KEY = {"method": "minmax", "samples": 16}
RANGES = {"a": (-84.7, 85.5), "b": (0.0, 6.0)}


@pytest.fixture(scope="module")
def train_dir():
    return models.kolektor() / "train" / "good"


def _saved(tmp_path):
    return CalibrationCache(KEY, dict(RANGES), 16).save(tmp_path / "q.int8.calib.json")


@pytest.mark.parametrize("damage", ["version", "images_read", "range", "nesting"])
def test_numbers_past_floats_reach_and_json_nested_too_deep_are_damage_not_a_traceback(tmp_path, caplog, damage):
    """"version": 1e400 and "images_read": 1e400 (infinity to int()), a range of 1 and 400 zeros (too
    large for float()) and JSON nested 100,000 deep ended calibrate with OverflowError or RecursionError."""
    path = _saved(tmp_path)
    text = path.read_text()
    edited = {"version": text.replace('"version": 1', '"version": 1e400'),
              "images_read": text.replace('"images_read": 16', '"images_read": 1e400'),
              "range": text.replace("85.5", "1" + "0" * 400),
              "nesting": "[" * 100_000 + "]" * 100_000}[damage]
    assert edited != text
    path.write_text(edited)
    with caplog.at_level("WARNING", logger="edgecmg"):
        assert CalibrationCache.load(path) is None
    assert f"calibration cache {path} is unreadable" in caplog.text and "recalibrating" in caplog.text


def test_a_cache_edited_since_calibrate_wrote_it_does_not_match_its_checksum(tmp_path, caplog):
    """Every range a twentieth (plausible numbers, wrong ones) was reused run after run, making an INT8
    model that flagged 15 of 16 good images; the checksum calibrate saves in the file tells."""
    path = _saved(tmp_path)
    assert CalibrationCache.load(path) == CalibrationCache(KEY, dict(RANGES), 16)
    written = json.loads(path.read_text())
    path.write_text(json.dumps(written))  # the same numbers laid out otherwise: still the cache
    assert CalibrationCache.load(path) == CalibrationCache(KEY, dict(RANGES), 16) and "checksum" not in caplog.text
    scaled = {**written, "ranges": {k: [lo * 0.05, hi * 0.05] for k, (lo, hi) in written["ranges"].items()}}
    one_digit = {**written, "ranges": {**written["ranges"], "a": [-84.7, 8.55]}}
    renamed = {**written, "ranges": {"c" if k == "b" else k: v for k, v in written["ranges"].items()}}
    other_key = {**written, "key": {**KEY, "samples": 8}}  # a run it was not measured for
    for edited in (scaled, one_digit, renamed, other_key):
        path.write_text(json.dumps(edited, indent=1, sort_keys=True))
        caplog.clear()
        with caplog.at_level("WARNING", logger="edgecmg"):
            assert CalibrationCache.load(path) is None, edited
        assert f"calibration cache {path} does not match the checksum calibrate saved in it" in caplog.text
        assert "recalibrating" in caplog.text


def test_a_cache_written_before_caches_had_a_checksum_is_recalibrated_not_reused(tmp_path, caplog):
    """Its ranges cannot be told from edited or damaged ones: it still loads (the file is readable),
    but calibrate measures the ranges again, saying why."""
    from edgecmg.calibration.quantize import _reusable_cache

    path = _saved(tmp_path)
    assert _reusable_cache(path, KEY, list(RANGES)) == CalibrationCache(KEY, dict(RANGES), 16)
    older = json.loads(path.read_text())
    older.pop("sha256", None)
    path.write_text(json.dumps(older, indent=1, sort_keys=True))
    assert CalibrationCache.load(path).ranges == RANGES
    with caplog.at_level("WARNING", logger="edgecmg"):
        assert _reusable_cache(path, KEY, list(RANGES)) is None
    assert (f"calibration cache {path} was written by an edgecmg that did not yet save a checksum of its ranges"
            in caplog.text and "recalibrating" in caplog.text)
    caplog.clear()
    with caplog.at_level("WARNING", logger="edgecmg"):  # not this run's anyway: no warning needed
        assert _reusable_cache(path, {**KEY, "samples": 8}, list(RANGES)) is None
    assert "checksum" not in caplog.text


def test_cli_calibrate_recalibrates_an_edited_cache_and_names_a_reused_one_whose_model_flags_good_parts(
        artifact_path, train_dir, tmp_path, capsys, caplog):
    """The audit's case: ranges a twentieth in the file were reused in silence, the check warned that
    the INT8 model flags good images and advised calibrating again, which reused them again."""
    from edgecmg.cli import main
    from edgecmg.export import read_onnx_header

    out = tmp_path / "q.int8.onnx"
    cache_path = default_cache_path(out)
    args = ["-q", "calibrate", str(artifact_path), "--data", str(train_dir), "--samples", "4", "--method", "minmax",
            "-o", str(out)]
    assert main(args) == 0
    capsys.readouterr()
    written = json.loads(cache_path.read_text())
    written["ranges"] = {k: [lo / 20, hi / 20] for k, (lo, hi) in written["ranges"].items()}
    cache_path.write_text(json.dumps(written, indent=1, sort_keys=True))  # edited, its checksum left as it was
    caplog.clear()
    with caplog.at_level("WARNING", logger="edgecmg"):
        assert main(args) == 0
    assert f"calibration cache {cache_path} does not match the checksum" in caplog.text
    assert "flags" not in caplog.text  # measured again: the good parts pass
    assert read_onnx_header(out)["quantization"]["cache_reused"] is False

    # Saved through the cache (checksum and all) as a calibrate whose ranges clip would: reused, and
    # the check's warning names the file a rerun would reuse again.
    cache = CalibrationCache.load(cache_path)
    cache.ranges = {name: (lo / 20, hi / 20) for name, (lo, hi) in cache.ranges.items()}
    cache.save(cache_path)
    caplog.clear()
    with caplog.at_level("WARNING", logger="edgecmg"):
        assert main(args) == 1  # the check failed: a script stops here
    assert read_onnx_header(out)["quantization"]["cache_reused"] is True
    assert f"{out} flags" in caplog.text and "that the FP32 model passes" in caplog.text
    assert f"reused from {cache_path}" in caplog.text and f"Delete {cache_path} and calibrate again" in caplog.text
    assert f"edgecmg threshold {out} GOOD_IMAGES" in caplog.text
