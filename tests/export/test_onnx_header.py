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


def _key(number, wire):
    return bytes([number << 3 | wire])


def test_the_plain_reader_steps_over_fixed_width_fields_and_gives_up_on_anything_else():
    from edgecmg.onnx_header import _fields, _one

    message = _key(1, 5) + bytes(4) + _key(2, 1) + bytes(8) + _key(3, 0) + bytes([5])
    assert [(n, v) for n, v in _fields(memoryview(message))] == [(1, None), (2, None), (3, 5)]
    for bad in (_key(1, 3) + _key(1, 4),      # a group: no ONNX field is one
                _key(1, 5) + bytes(2),        # a fixed32 cut short
                _key(1, 2) + bytes([5]) + b"ab"):  # a length past the message
        with pytest.raises(ValueError):
            list(_fields(memoryview(bad)))
    # a singular field written twice: protobuf would merge (or take the last), so the read gives up
    with pytest.raises(ValueError, match="written twice"):
        _one(memoryview(_key(1, 2) + b"\x01a" + _key(1, 2) + b"\x01b"), 1)
    assert bytes(_one(memoryview(_key(1, 2) + b"\x01a" + _key(2, 0) + b"\x07"), 1)) == b"a"


def test_a_second_graph_before_a_sealed_one_is_not_vouched_for(full_onnx, tmp_path):
    """Protobuf merges a model's repeated graph field, so a graph put in front of a sealed export's runs
    with it (here an operator of a foreign domain); the plain read checked the last graph's bytes only
    and vouched for the file. Now it gives up, and the whole check refuses it."""
    import onnx

    extra = onnx.helper.make_graph([onnx.helper.make_node("Pwn", ["image"], ["score"], domain="evil.ops")],
                                   "extra", [], [])
    graph_bytes = extra.SerializeToString()
    assert len(graph_bytes) < 128  # its length is then a one-byte varint
    path = tmp_path / "two_graphs.onnx"
    path.write_bytes(_key(7, 2) + bytes([len(graph_bytes)]) + graph_bytes + full_onnx.read_bytes())
    assert any(n.domain == "evil.ops" for n in onnx.load(str(path)).graph.node)  # what would run
    assert _sealed_header(path, str(path)) is None
    with pytest.raises(ArtifactError):
        read_onnx_header(path, operators=False)
