"""An engine reader given another of edgecmg's files says which it is and how to make an engine of it
(it said "a bare TensorRT plan lacks the model header" of a model file and of an ONNX export)."""
from __future__ import annotations

import shutil

import pytest

from edgecmg.engine_file import read_engine_header
from edgecmg.errors import ArtifactError


def test_a_model_file_read_as_an_engine_is_named_as_a_model_file(small_artifact, tmp_path):
    renamed = tmp_path / "part.engine"
    shutil.copy(small_artifact, renamed)
    with pytest.raises(ArtifactError, match=r"part.engine: an edgecmg model file \(.edgecmg\), not an engine file: "
                                            r"export it .* and build the engine on the device"):
        read_engine_header(renamed)


def test_an_onnx_export_read_as_an_engine_says_it_lacks_the_header(full_onnx, tmp_path):
    renamed = tmp_path / "part.engine"
    shutil.copy(full_onnx, renamed)
    with pytest.raises(ArtifactError, match=r"not an edgecmg engine file \(bad magic .*\): neither an .onnx export "
                                            r"nor a bare TensorRT plan holds the model header; build the engine"):
        read_engine_header(renamed)
