"""Files edited on purpose and sealed again (every checksum recomputed): what the checks still catch."""
from __future__ import annotations

import re

import pytest
import torch

from edgecmg import artifact
from edgecmg.errors import ArtifactError
from test_artifact import _edit_payload, _set_tensor


def _one_hot(length: int, at: int) -> torch.Tensor:
    taps = torch.zeros(length)
    taps[at] = 1.0
    return taps


@pytest.mark.parametrize("taps", [
    _one_hot(33, 0),  # every map moved by 16 pixels: defects scored a fraction of themselves, nothing flagged
    _one_hot(385, 384),
    torch.tensor([0.5, 0.0, 0.0, 0.0, 0.5]),  # every map doubled
])
def test_smoothing_taps_that_move_or_double_the_map_are_refused(small_artifact, tmp_path, taps):
    path = _edit_payload(small_artifact, tmp_path / "taps.edgecmg", _set_tensor("scorer.smoothing_taps",
                                                                               lambda _: taps))
    with pytest.raises(ArtifactError, match=re.escape(f"{path}: tensor scorer.smoothing_taps is not a smoothing "
                                                      "kernel (symmetric, highest in its middle)")):
        artifact.load(path)


def test_a_gaussian_of_another_width_still_loads(small_artifact, tmp_path):
    from edgecmg.model.bank import gaussian_kernel1d

    path = _edit_payload(small_artifact, tmp_path / "wide.edgecmg", _set_tensor("scorer.smoothing_taps",
                                                                                lambda _: gaussian_kernel1d(6.0)))
    model, _ = artifact.load(path)
    assert model.scorer.smoothing_taps.numel() == 49


def test_info_prints_a_crafted_headers_strings_without_their_terminal_escapes(small_artifact, tmp_path, capsys):
    """info printed every header string but the prompt as it was: escapes from a crafted file cleared
    the terminal, and a newline printed a line of its own."""
    from edgecmg.cli import main
    from test_artifact import _edit_header, _set

    clear = "\x1b[2J\x1b[H"
    path = _edit_header(small_artifact, tmp_path / "crafted.edgecmg",
                        _set("created.host", f"{clear}factory\r\nchecksums ok, runs here"))
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out
    assert "\\u001b[2J\\u001b[Hfactory\\r\\nchecksums ok, runs here" in out


def test_a_rebuild_command_from_a_crafted_engine_header_stays_one_file_name():
    from edgecmg.engine import rebuild_command

    header = {"source_onnx": "../../tmp/x.onnx; rm -rf ~", "precision": "int8"}
    assert rebuild_command(header, "line 3.engine") == \
        "edgecmg build 'x.onnx; rm -rf ~' --precision int8 -o 'line 3.engine'"
    assert rebuild_command({"source_onnx": "/models/part.int8.onnx", "precision": "fp16"}, "M.engine") == \
        "edgecmg build part.int8.onnx --precision fp16 -o M.engine"


def test_a_file_without_its_pixel_to_cell_map_is_refused_before_the_model_is_built(small_artifact, tmp_path,
                                                                                   monkeypatch):
    """The map ties the header's input size to the file's size: without it, a 590 KB file declaring
    4096x4096 had the model built at that size (503 MB) before its tensor set was refused."""
    import edgecmg.artifact as artifact_module

    built = []
    real_build = artifact_module._build_model
    monkeypatch.setattr(artifact_module, "_build_model", lambda *args: built.append(1) or real_build(*args))
    path = _edit_payload(small_artifact, tmp_path / "no-cells.edgecmg",
                         lambda tensors: tensors.pop("scorer.pixel_cells"))
    with pytest.raises(ArtifactError, match=re.escape(f"{path}: the payload has no pixel-to-cell map "
                                                      "(scorer.pixel_cells); copy the file again")):
        artifact.load(path)
    assert built == []
