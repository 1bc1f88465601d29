"""Each header field's bounds, on both sides (a mutation audit found the checks tested at one value
each): a model file's header as load checks it, and an export's as ONNX Runtime's runner checks it.
Every edit below is refused by name; the sound headers pass."""
from __future__ import annotations

import copy
import re

import pytest

from edgecmg import artifact
from edgecmg.errors import ArtifactError
from edgecmg.header_checks import check_header
from edgecmg.onnx_header import check_model_header, read_onnx_header
from test_artifact import _set  # sets a dotted header field, in place


def _clip(header):
    header["matcher"] = {"kind": "clip", "arch": "ViT-B-32", "weights": "/models/clip.bin"}  # no sha256


MODEL_FILE_EDITS = [
    (_set("threshold", -1e308), "'threshold' is -1e+308, beyond float32's range"),  # -inf in float32: all flagged
    (_clip, "'matcher.sha256' is missing"),
    (_set("input_size", [256, 96, 96]), "'input_size' is [256, 96, 96]"),
    (_set("input_size", [32, 96]), "'input_size' is [32, 96]"),
    (_set("input_size", [100, 96]), "'input_size' is [100, 96]"),
    (_set("model.score_top_fraction", 1.0), "'model.score_top_fraction' is 1.0, not in [0, 1)"),
    (_set("model.score_top_fraction", -0.1), "'model.score_top_fraction' is -0.1, not in [0, 1)"),
    (_set("model.use_cmle", "yes"), "'model.use_cmle' is \"yes\", not true or false"),
    (_set("quantization", "x"), "'quantization' is \"x\", not an object"),
    (_set("export", {"outputs": [1]}), "'export.outputs' is [1], not a list of strings"),
    (_set("training", {"aspect_hw": float("inf")}), "'training.aspect_hw' is Infinity, not a finite number"),
]


@pytest.fixture(scope="module")
def model_file_header(small_artifact):
    header, _ = artifact.read_header(small_artifact)
    check_header(small_artifact, header, header["format_version"], model_file=True)  # sound as written
    return header


@pytest.mark.parametrize("edit,message", MODEL_FILE_EDITS)
def test_a_model_file_header_beyond_a_fields_bounds_is_refused(model_file_header, small_artifact, edit, message):
    header = copy.deepcopy(model_file_header)
    edit(header)
    with pytest.raises(ArtifactError, match=rf"^{small_artifact}: header field {re.escape(message)}"):
        check_header(small_artifact, header, header["format_version"], model_file=True)


def test_the_bounds_themselves_are_allowed(model_file_header, small_artifact):
    for edit in (_set("input_size", [64, 4096]), _set("model.score_top_fraction", 0.0),
                 _set("threshold", -3.4e38)):
        header = copy.deepcopy(model_file_header)
        edit(header)
        check_header(small_artifact, header, header["format_version"], model_file=True)


@pytest.fixture(scope="module")
def export_header(full_onnx):
    return read_onnx_header(full_onnx)


@pytest.mark.parametrize("edit,message", [
    (_set("format_version", 0), "header field 'format_version' is 0"),
    (_set("format_version", 4), "exported from a format-4 model, newer than this edgecmg understands (3); "
                                "upgrade edgecmg"),
    (_set("export.precision", "fp16"), "header field 'export.precision' is 'fp16', not 'fp32' or 'int8'"),
])
def test_an_export_header_of_another_format_or_precision_is_refused(export_header, full_onnx, edit, message):
    header = copy.deepcopy(export_header)
    edit(header)
    with pytest.raises(ArtifactError, match=rf"^{full_onnx}: {re.escape(message)}"):
        check_model_header(full_onnx, header)
