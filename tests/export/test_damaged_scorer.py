"""Damage that edgecmg's own checksums of a file did not stop where it mattered: a featurizer export's scorer
payload (its memory bank) damaged before `edgecmg build`, which copied it into the engine under a checksum of
its own; and an ONNX file whose version fields (outside every checksum) ONNX Runtime cannot load, which was
reported as an ONNX Runtime missing from the install."""
from __future__ import annotations

import re
import sys

import onnx
import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from edgecmg.config import EngineConfig
from edgecmg.detector import Detector
from edgecmg.engine import build_engine
from edgecmg.engine_file import load_scorer_from_engine, read_engine_file, write_engine_file
from edgecmg.errors import ArtifactError, BackendUnavailableError
from edgecmg.export import SCORER_KEY, set_metadata_props


def _damaged_scorer(source, target, new_char=None):
    """``source`` with one character of its scorer's base64 changed, deep in the memory bank's data (a bad
    flash card): to another base64 character (it still decodes, to other values), or to ``new_char``."""
    proto = onnx.load(str(source))
    text = next(p.value for p in proto.metadata_props if p.key == SCORER_KEY)
    at = len(text) - 400
    char = new_char or ("B" if text[at] != "B" else "C")
    set_metadata_props(proto, {SCORER_KEY: text[:at] + char + text[at + 1:]})
    onnx.save(proto, str(target))
    return target


@pytest.mark.parametrize("new_char,message", [
    (None, "scorer payload checksum mismatch: the 'edgecmg.scorer' metadata (the memory bank) was damaged"),
    ("!", "'edgecmg.scorer' metadata is not base64 ("),
])
def test_build_refuses_a_damaged_scorer_before_tensorrt(featurizer_onnx, tmp_path, monkeypatch, fake_tensorrt,
                                                        new_char, message):
    path = _damaged_scorer(featurizer_onnx, tmp_path / "damaged.onnx", new_char)
    out = tmp_path / "m.engine"
    expected = rf"^{re.escape(str(path))}: {re.escape(message)}.*export the model again"
    # Without TensorRT: the file's damage, not "backend 'tensorrt' is unavailable".
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(ArtifactError, match=expected):
        build_engine(path, EngineConfig(precision="fp32"), out)
    # With it: refused before the build (it sealed a changed bank in, or ended in a binascii.Error after it).
    trt = fake_tensorrt()
    with pytest.raises(ArtifactError, match=expected):
        build_engine(path, EngineConfig(precision="fp32"), out)
    assert trt.builds == [] and not out.exists()


def test_an_engine_whose_scorer_is_not_its_exports_is_refused(featurizer_onnx, tmp_path, fake_tensorrt):
    """What a build from a damaged export wrote before build checked it: a bank whose values changed, under
    an engine checksum computed from them. The export's checksum, in the model header, tells."""
    fake_tensorrt()
    engine = build_engine(featurizer_onnx, EngineConfig(precision="fp32"), tmp_path / "m.engine")
    load_scorer_from_engine(engine)  # the export's own scorer loads
    header, scorer, plan = read_engine_file(engine)
    tensors = load_safetensors(scorer)
    tensors["memory_bank"] = tensors["memory_bank"].clone()
    tensors["memory_bank"].view(-1)[-100] += torch.tensor(0.5, dtype=tensors["memory_bank"].dtype)
    sealed = write_engine_file(tmp_path / "sealed.engine", header, plan, save_safetensors(tensors))
    with pytest.raises(ArtifactError, match=rf"^{re.escape(str(sealed))}: the scorer payload is not the one its "
                                            rf"ONNX export recorded \(.*\): {re.escape(str(featurizer_onnx))} was "
                                            r"damaged before this engine was built from it; export the model again"):
        load_scorer_from_engine(sealed)


@pytest.mark.parametrize("damage,reason", [
    (lambda proto: setattr(proto, "ir_version", 72), "Unsupported model IR version: 72"),
    (lambda proto: setattr(proto.opset_import[0], "version", 99), "99"),
])
def test_an_onnx_file_onnx_runtime_cannot_load_is_damaged_not_a_missing_install(featurizer_onnx, tmp_path,
                                                                                 block_import, damage, reason):
    import onnxruntime as ort

    from edgecmg.runtime.onnx_runner import OnnxRunner

    proto = onnx.load(str(featurizer_onnx))
    damage(proto)  # outside the graph and header checksums: the header checks pass, ONNX Runtime refuses
    path = tmp_path / "damaged.onnx"
    onnx.save(proto, str(path))
    expected = (rf"^{re.escape(str(path))}: the installed ONNX Runtime, {re.escape(ort.__version__)}, cannot load "
                rf"it \(.*{re.escape(reason)}.*\): the file is damaged, or was exported for a newer ONNX Runtime "
                rf"than {re.escape(ort.__version__)}; copy or export it again, or upgrade onnxruntime$")
    with pytest.raises(ArtifactError, match=expected):
        OnnxRunner(path).activate()
    with pytest.raises(ArtifactError, match=expected):  # auto: not passed over as a backend missing here
        Detector.load(path)
    # A failure of ONNX Runtime itself, not of the file, keeps the backend error and its install hint.
    fail = ort.capi.onnxruntime_pybind11_state.Fail
    runner = OnnxRunner(featurizer_onnx)

    def provider_failure(*args, **kwargs):
        raise fail("[ONNXRuntimeError] : 1 : FAIL : CUDA failure 100: no CUDA-capable device is detected")

    # Nor is a kernel missing from this build of ONNX Runtime (NOT_IMPLEMENTED, naming no version).
    missing_kernel = ort.capi.onnxruntime_pybind11_state.NotImplemented

    def kernel_missing(*args, **kwargs):
        raise missing_kernel("[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an implementation for "
                             "ConvInteger(10) node with name 'conv'")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ort, "InferenceSession", provider_failure)
        with pytest.raises(BackendUnavailableError, match="CUDA failure 100.*; for the CPU, pip install"):
            runner.activate()
        patch.setattr(ort, "InferenceSession", kernel_missing)
        with pytest.raises(BackendUnavailableError, match="Could not find an implementation for ConvInteger"):
            runner.activate()
    block_import("onnxruntime", "No module named 'onnxruntime'")
    with pytest.raises(BackendUnavailableError, match=r"cannot import onnxruntime .*\); for the CPU, pip install"):
        OnnxRunner(path).activate()


def test_info_refuses_a_featurizer_export_or_engine_whose_scorer_running_it_would_refuse(featurizer_onnx, tmp_path,
                                                                                        fake_tensorrt, capsys):
    """`edgecmg info` said "checksums ok" of both (the bank is outside the graph's checksum, and an engine
    built from a damaged export had sealed it in), while bench and Detector.load refused them."""
    from edgecmg.cli import main

    damaged = _damaged_scorer(featurizer_onnx, tmp_path / "damaged.onnx")
    fake_tensorrt()
    engine = build_engine(featurizer_onnx, EngineConfig(precision="fp32"), tmp_path / "m.engine")
    header, scorer, plan = read_engine_file(engine)
    tensors = load_safetensors(scorer)
    tensors["memory_bank"] = tensors["memory_bank"].clone()
    tensors["memory_bank"].view(-1)[-100] += torch.tensor(0.5, dtype=tensors["memory_bank"].dtype)
    sealed = write_engine_file(tmp_path / "sealed.engine", header, plan, save_safetensors(tensors))
    assert main(["info", str(featurizer_onnx), str(engine)]) == 0  # the sound ones are described
    capsys.readouterr()
    for path, said in ((damaged, "scorer payload checksum mismatch"),
                       (sealed, "the scorer payload is not the one its ONNX export recorded")):
        assert main(["info", str(path)]) == 2, path
        err = capsys.readouterr().err
        assert f"{path}: {said}" in err and "checksums ok" not in err, err
