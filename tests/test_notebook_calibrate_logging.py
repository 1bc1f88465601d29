"""calibrate() in a program that logs at INFO (a notebook's logging.basicConfig(level=logging.INFO)):
ONNX Runtime's quantiser logged some 60 lines of "INFO:root:Increased scale[278] for weight ..." on the
root logger; they go to edgecmg's debug log instead."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")


def _from_the_quantizer(record: logging.LogRecord) -> bool:
    return "/onnxruntime/quantization/" in Path(record.pathname).as_posix()


def test_calibrate_keeps_onnxruntime_quantizer_chatter_off_the_root_logger(caplog, small_artifact, kolektor_root,
                                                                           tmp_path):
    from edgecmg.calibration import calibrate

    filters = list(logging.getLogger().filters)
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="edgecmg")
    calibrate(small_artifact, kolektor_root / "train" / "good", tmp_path / "m.cpu.int8.onnx", method="minmax",
              samples=8, profile="cpu", progress=False)
    root_chatter = [r.getMessage() for r in caplog.records if r.name == "root" and _from_the_quantizer(r)]
    assert root_chatter == []
    demoted = [r for r in caplog.records if r.name == "edgecmg" and r.getMessage().startswith("onnxruntime quantizer:")]
    assert demoted and all(r.levelno == logging.DEBUG for r in demoted)  # kept, where edgecmg's debug log is on
    assert any("wrote INT8" in r.getMessage() for r in caplog.records)
    assert logging.getLogger().filters == filters  # the root logger is left as it was
