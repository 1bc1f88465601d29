"""Reading an export without the onnx package (ONNX Runtime's runner: a second of every start): the same
header as the whole check for a sound file, and for anything else the whole check's own errors."""
from __future__ import annotations

import shutil

import pytest

from edgecmg.errors import ArtifactError, MissingFileError
from edgecmg.onnx_header import _sealed_header, read_onnx_header


@pytest.mark.parametrize("graph", ["full_onnx", "featurizer_onnx"])
def test_a_sound_export_reads_the_same_without_onnx(request, graph):
    path = request.getfixturevalue(graph)
    header = _sealed_header(path, str(path))
    assert header is not None and header == read_onnx_header(path) == read_onnx_header(path, operators=False)


def test_anything_else_gets_the_whole_checks_errors(full_onnx, tmp_path):
    with pytest.raises(MissingFileError):
        read_onnx_header(tmp_path / "gone.onnx", operators=False)
    data = bytearray(full_onnx.read_bytes())
    damaged = tmp_path / "damaged.onnx"
    data[len(data) // 2] ^= 0xFF  # a byte inside the weights: the graph no longer matches its checksum
    damaged.write_bytes(bytes(data))
    assert _sealed_header(damaged, str(damaged)) is None
    with pytest.raises(ArtifactError, match="graph checksum mismatch"):
        read_onnx_header(damaged, operators=False)
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(full_onnx.read_bytes()[:100_000])  # a copy cut short
    assert _sealed_header(cut, str(cut)) is None
    with pytest.raises(ArtifactError, match="not a readable ONNX model"):
        read_onnx_header(cut, operators=False)
    shutil.copy(full_onnx, tmp_path / "copy.onnx")  # and a sound copy still reads
    assert _sealed_header(tmp_path / "copy.onnx", "copy.onnx") == read_onnx_header(full_onnx)


def test_a_field_of_the_wrong_wire_type_is_not_plain_not_a_crash():
    """A GraphProto whose input (field 11) is written as a number, not a message: the plain read gives
    up (a ValueError, which _sealed_header turns into the whole check) instead of a TypeError."""
    from edgecmg.onnx_header import _graph_inputs_outputs

    with pytest.raises(ValueError, match="not length-delimited"):
        _graph_inputs_outputs(memoryview(bytes([11 << 3, 1])))
