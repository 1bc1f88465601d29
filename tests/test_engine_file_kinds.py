"""An engine reader given another of edgecmg's files says which it is and how to make an engine of it
(it said "a bare TensorRT plan lacks the model header" of a model file and of an ONNX export)."""
from __future__ import annotations

import shutil

import pytest

from edgecmg.engine_file import read_engine_header
from edgecmg.errors import ArtifactError


@pytest.mark.parametrize("fixture,message", [
    ("small_artifact", r"part.engine: an edgecmg model file \(.edgecmg\), not an engine file: export it .* and "
                       r"build the engine on the device"),
    ("full_onnx", r"part.engine: not an edgecmg engine file \(bad magic .*\): neither an .onnx export nor a bare "
                  r"TensorRT plan holds the model header; build the engine"),
])
def test_another_edgecmg_file_read_as_an_engine_is_named_for_what_it_is(fixture, message, request, tmp_path):
    renamed = tmp_path / "part.engine"
    shutil.copy(request.getfixturevalue(fixture), renamed)
    with pytest.raises(ArtifactError, match=message):
        read_engine_header(renamed)
