"""Strict JSON in every output (no NaN or Infinity, which JavaScript, strict parsers and newer jq refuse),
and records whose numbers agree with their own verdict."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edgecmg.fileio import json_ready, json_text
from edgecmg.result import Result


def strict_loads(text: str):
    """json.loads that refuses NaN and Infinity, as JavaScript's JSON.parse does."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_json_text_writes_null_for_what_json_cannot_hold_and_plain_numbers_for_numpy():
    value = {"nan": float("nan"), "inf": [float("inf"), -math.inf], "f32": np.float32(1.5), "i64": np.int64(7),
             "array": np.array([[1, 2], [3, 4]], np.uint8), "f_array": np.array([np.nan, 0.25]), "tuple": (1, "a"),
             3: True, "nested": {"deep": [np.float64("inf")]}}
    assert strict_loads(json_text(value)) == {
        "nan": None, "inf": [None, None], "f32": 1.5, "i64": 7, "array": [[1, 2], [3, 4]], "f_array": [None, 0.25],
        "tuple": [1, "a"], "3": True, "nested": {"deep": [None]}}
    assert json_ready(np.bool_(True)) is True
    assert strict_loads(json_text({"a": 1}, indent=2)) == {"a": 1} and "\n" in json_text({"a": 1}, indent=2)


def test_metrics_json_of_an_infinite_score_is_still_json(tmp_path):
    """A backend that overflows (an FP16 engine) scores inf: F1's best threshold is then inf, which
    json.dumps wrote as Infinity and made the whole metrics.json unreadable."""
    from edgecmg.evaluation import write_report

    records = [{"file": "good.png", "defect_type": "good", "label": 0, "score": 1.0, "is_anomaly": False},
               {"file": "bad.png", "defect_type": "crack", "label": 1, "score": float("inf"), "is_anomaly": True}]
    write_report(tmp_path, {"image_auroc": 1.0, "f1_max": 1.0, "f1_threshold": float("inf")}, records, 2.0, "data")
    metrics = strict_loads((tmp_path / "metrics.json").read_text())
    assert metrics["f1_threshold"] is None and metrics["image_auroc"] == 1.0


def _result(score: float, threshold: float) -> Result:
    return Result(score=score, threshold=threshold, anomaly_map=np.zeros((4, 4), np.float32),
                  kept_mask=np.ones((2, 2), bool))


@pytest.mark.parametrize("threshold", [5.06398094177246, 2.5, 1e-7, 123456.789])
def test_a_records_numbers_agree_with_its_verdict(threshold):
    """Rounded to 6 places, a score just under the threshold was written equal to it: a script's
    ``score >= threshold`` flagged the part the record itself passed."""
    for score in (np.nextafter(threshold, -np.inf), threshold, np.nextafter(threshold, np.inf),
                  np.float32(threshold) - np.float32(4e-7)):
        result = _result(float(score), threshold)
        record = strict_loads(json_text(result.to_dict()))
        assert (record["score"] >= record["threshold"]) == record["is_anomaly"] == result.is_anomaly
        assert (record["score"], record["threshold"]) == (float(score), threshold)  # as judged, not rounded


def test_a_record_of_a_score_json_cannot_hold_is_null_and_flagged():
    """-inf too: an overflow of either sign is a part the model could not score (it passed)."""
    from edgecmg.metrics import verdict_counts

    for score in (float("nan"), float("inf"), -float("inf")):
        record = strict_loads(json_text(_result(score, 2.5).to_dict()))
        assert record["score"] is None and record["is_anomaly"] is True
    # eval's counts follow the same rule (it refuses NaN scores before they are counted)
    assert verdict_counts([0, 0, 1, 1], [1.0, -np.inf, np.inf, 3.0], 2.5) == {"good_flagged": 1, "defects_missed": 0}


def test_json_ready_takes_tuples_and_spells_keys_as_json_does():
    assert json_ready((1.0, math.inf, (math.nan,))) == [1.0, None, [None]]
    assert json_ready({True: 1, None: 2, 3: 4, 1.5: 5}) == {"true": 1, "null": 2, "3": 4, "1.5": 5}


def test_a_report_with_infinities_in_its_environment_or_nested_cells_is_still_json(tmp_path):
    from edgecmg.stream.report import markdown_table, write_report

    write_report([{"a": 1, "b": {"c": math.inf}}], tmp_path, "r", environment={"x": math.inf})
    written = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert written["environment"]["x"] is None and written["rows"][0]["b"] == {"c": None}
    assert "Infinity" not in markdown_table([{"a": {"b": math.inf}}], ["a"])


def test_file_sha256_reads_past_its_first_block(tmp_path):
    """Models run to tens of MB, read in blocks: the digest is the whole file's (the suite's test model
    is smaller than one block)."""
    import hashlib

    from edgecmg.fileio import file_sha256

    data = np.random.default_rng(0).integers(0, 256, 3 * 2**20 + 7, dtype=np.uint8).tobytes()
    (tmp_path / "model.bin").write_bytes(data)
    assert file_sha256(tmp_path / "model.bin") == hashlib.sha256(data).hexdigest()
