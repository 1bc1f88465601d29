"""ONNX export: parity with torch, graph contract, self-sufficiency, chunked bank distances."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import edgecmg_testmodels as models
from edgecmg import ops
from edgecmg.config import ExportConfig
from edgecmg.errors import ArtifactError, ConfigError, OutputError
from edgecmg.export import (
    SCORER_PREFIX,
    BankDistances,
    bank_chunk_rows,
    export_model,
    load_scorer_from_onnx,
    read_onnx_header,
)
from edgecmg.metrics import auroc
from edgecmg.onnx_checks import check_onnx_for_tensorrt, tensor_types
from edgecmg.result import OUTPUT_NAMES

ort = pytest.importorskip("onnxruntime")


def run_onnx(path, frames):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"image": frames})))


# Both paths round the queries to fp16 for the fp16 bank: an embedding that differs by 5e-5 between
# ONNX Runtime and torch can land on the other side of an fp16 rounding step, which moves that
# patch's distance by up to ~1e-3 of the map's largest value (measured: 0.3313 vs 0.3326).
MAP_ATOL_OF_MAX = 3e-3


def assert_scores_match(got, ref, rtol=1e-4):
    models.assert_scores_close(got["score"], ref["score"], rtol=rtol)
    scale = np.abs(ref["anomaly_map"]).max()
    np.testing.assert_allclose(got["anomaly_map"], ref["anomaly_map"], rtol=0,
                               atol=max(rtol, MAP_ATOL_OF_MAX) * scale)
    np.testing.assert_array_equal(got["kept_mask"], ref["kept_mask"])


def test_full_graph_matches_torch(full_onnx, frames_and_labels, torch_reference):
    frames, labels = frames_and_labels
    got = run_onnx(full_onnx, frames)
    assert list(got) == list(OUTPUT_NAMES)
    assert got["kept_mask"].dtype == np.bool_
    assert_scores_match(got, torch_reference)
    assert auroc(labels, got["score"]) == auroc(labels, torch_reference["score"])


def test_featurizer_graph_with_host_scoring_matches_torch(featurizer_onnx, frames_and_labels, torch_reference):
    frames, labels = frames_and_labels
    features = run_onnx(featurizer_onnx, frames)
    assert list(features) == ["embeddings", "match_scores"]
    scorer, header = load_scorer_from_onnx(featurizer_onnx)
    got = models.score_features(scorer, features)
    assert_scores_match(got, torch_reference)
    assert auroc(labels, got["score"]) == auroc(labels, torch_reference["score"])


@pytest.mark.parametrize("batch", [1, 3])
def test_dynamic_batch(full_onnx, frames_and_labels, torch_reference, batch):
    frames, _ = frames_and_labels
    got = run_onnx(full_onnx, frames[:batch])
    assert got["score"].shape == (batch,)
    models.assert_scores_close(got["score"], torch_reference["score"][:batch], rtol=1e-4)


def test_graph_contract(full_onnx, featurizer_onnx, model_and_header):
    model, _ = model_and_header
    h, w = model.geometry.input_size
    for path in (full_onnx, featurizer_onnx):
        proto = onnx.load(str(path))
        assert {o.domain: o.version for o in proto.opset_import}.get("", 0) >= 17
        (inp,) = proto.graph.input
        assert inp.name == "image" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
        dims = inp.type.tensor_type.shape.dim
        assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [h, w, 3]
        ops_used = {n.op_type for n in proto.graph.node}
        assert not ops_used & {"CDist", "cdist"}
        # uint8 goes through a Cast first (TensorRT takes uint8 only as I/O into a Cast)
        assert all(n.op_type == "Cast" for n in proto.graph.node if "image" in n.input)
        assert check_onnx_for_tensorrt(proto, max_batch=16) == []
    full = onnx.load(str(full_onnx))
    scorer_ops = [n.op_type for n in full.graph.node if n.name.startswith(SCORER_PREFIX)]
    assert "MatMul" in scorer_ops and ("ReduceMin" in scorer_ops or "TopK" in scorer_ops)
    # CMER's kept cells reach the pixels by a broadcast of the head cells, not by gathering one index per
    # pixel (0.9 ms of ONNX Runtime's 416x160 frame, and a 0.5 MB constant in the file)
    constants = [*full.graph.initializer, *(a.t for n in full.graph.node if n.op_type == "Constant" for a in n.attribute)]
    assert not [t.name for t in constants if t.data_type == onnx.TensorProto.INT64 and math.prod(t.dims) == h * w]


def test_files_are_self_sufficient(full_onnx, featurizer_onnx, model_and_header, artifact_path):
    model, header = model_and_header
    for path in (full_onnx, featurizer_onnx):
        meta = read_onnx_header(path)
        assert meta["threshold"] == pytest.approx(header["threshold"])
        assert meta["input_size"] == list(model.geometry.input_size)
        assert meta["export"]["opset"] == 17 and len(meta["export"]["artifact_sha256"]) == 64
    assert read_onnx_header(full_onnx)["export"]["graph"] == "full"
    scorer, _ = load_scorer_from_onnx(featurizer_onnx)
    for key, value in model.scorer.state_dict().items():
        torch.testing.assert_close(scorer.state_dict()[key], value, rtol=0, atol=0)
    with pytest.raises(ArtifactError, match="scores inside"):
        load_scorer_from_onnx(full_onnx)


def test_scorer_bytes_without_a_normal_level_load_with_level_zero(model_and_header):
    """Featurizer graphs and engines exported before maps had a normal level carry none."""
    from safetensors.torch import load as load_safetensors, save as save_safetensors

    from edgecmg.export import scorer_from_bytes, scorer_state_bytes

    model, header = model_and_header
    tensors = load_safetensors(scorer_state_bytes(model.scorer))
    del tensors["normal_map"]
    scorer = scorer_from_bytes(header, save_safetensors(tensors))
    assert not scorer.normal_map.any()
    torch.testing.assert_close(scorer.memory_bank, model.scorer.memory_bank, rtol=0, atol=0)


def test_an_unwritable_output_is_an_error_before_the_export_and_leaves_nothing(artifact_path, model_and_header,
                                                                            tmp_path, monkeypatch):
    # Was a FileNotFoundError traceback from onnx.save, after the export's seconds of work.
    from edgecmg.export import export_onnx

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(OutputError, match=f"cannot write the model file {blocker / 'm.onnx'}"):
        export_onnx(artifact_path, blocker / "m.onnx")
    # A write that fails half way (disk full) is named too, and its temporary file removed.
    def half_written(model, path):
        Path(path).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx, "save", half_written)
    model, header = model_and_header
    with pytest.raises(OutputError, match=f"cannot write the ONNX file {tmp_path / 'm.onnx'}: the disk is full"):
        export_model(model, header, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == [blocker]


def test_non_edgecmg_onnx_is_refused(tmp_path):
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    path = tmp_path / "other.onnx"
    onnx.save(onnx.helper.make_model(graph), str(path))
    with pytest.raises(ArtifactError, match="not exported by edgecmg"):
        read_onnx_header(path)
    with pytest.raises(ArtifactError, match=f"^{path}: no 'edgecmg.header'"):  # named, not "ONNX model"
        load_scorer_from_onnx(path)
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(ArtifactError):
        read_onnx_header(tmp_path / "junk.onnx")


def test_chunked_export_keeps_every_tensor_small(tmp_path, model_and_header, frames_and_labels, torch_reference):
    model, header = model_and_header
    frames, _ = frames_and_labels
    budget = 1 << 16
    max_batch = 4
    out = export_model(model, header, tmp_path / "chunked.onnx",
                       ExportConfig(with_scoring=True, max_batch=max_batch, max_chunk_elements=budget))
    proto = onnx.load(str(out))
    bank = int(model.scorer.memory_bank.shape[0])
    ph, pw = model.geometry.patch_size
    rows = bank_chunk_rows(bank, ph * pw, max_batch, budget)
    # the distance blocks: one MatMul per bank chunk (the map's two MatMuls take no bank chunk)
    matmuls = [n for n in proto.graph.node if n.name.startswith(SCORER_PREFIX) and n.op_type in ("MatMul", "Gemm")
               and any("bank_t" in name for name in n.input)]
    assert len(matmuls) == -(-bank // rows) > 1
    # at batch = max_batch no distance block exceeds the budget
    from edgecmg.onnx_checks import _with_batch

    inferred = _with_batch(proto, max_batch)
    types = tensor_types(inferred)
    for node in matmuls:
        dims = [d.dim_value for d in types[node.output[0]].shape.dim]
        assert all(dims) and int(np.prod(dims)) <= budget
    got = run_onnx(out, frames[:max_batch])
    models.assert_scores_close(got["score"], torch_reference["score"][:max_batch], rtol=1e-4)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("bank_rows,chunk", [(37, 37), (37, 8), (2, 8)])
def test_bank_distances_equal_ops_knn(k, bank_rows, chunk):
    gen = torch.Generator().manual_seed(k * 100 + bank_rows + chunk)
    bank = torch.randn(bank_rows, 12, generator=gen).half()
    queries = torch.randn(2, 9, 12, generator=gen) * 3
    norms = ops.bank_sq_norms(bank)
    got = BankDistances(bank, norms, k, chunk)(queries)
    ref, _ = ops.knn(queries, bank, k=k, bank_sq_norms=norms, backend="torch")
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-4)


def test_damaged_or_unsealed_onnx_files(full_onnx, featurizer_onnx, tmp_path, caplog):
    from edgecmg.detector import Detector
    from edgecmg.export import GRAPH_SHA_KEY, graph_sha256, metadata_props

    assert metadata_props(full_onnx)[GRAPH_SHA_KEY] == graph_sha256(onnx.load(str(full_onnx)))
    for source in (full_onnx, featurizer_onnx):
        damaged = models.damage_largest_weight(source, tmp_path / f"damaged-{source.name}")
        onnx.load(str(damaged))  # still a well-formed protobuf: only the checksum can tell
        with pytest.raises(ArtifactError, match="graph checksum mismatch"):
            Detector.load(damaged, backend="onnxruntime")
    # an empty file, and one cut short in a copy: each named for what it is, with what to do
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "cut.onnx").write_bytes(full_onnx.read_bytes()[:50_000])
    (tmp_path / "built.onnx").write_bytes(b"EDGECMGE" + bytes(64))  # an engine file renamed .onnx
    for name, expected in (("empty.onnx", "empty file (0 bytes), not an ONNX model; export or copy it again"),
                           ("built.onnx", "is a TensorRT engine built by edgecmg, not ONNX: it is already built"),
                           ("cut.onnx", "the file is damaged or incomplete: export or copy it again")):
        with pytest.raises(ArtifactError, match=re.escape(expected)):
            Detector.load(tmp_path / name, backend="onnxruntime")
    # Every export of a format-3 model is sealed: one whose checksum was removed is refused (it loaded
    # with a warning, and its header went unchecked).
    from edgecmg.export import HEADER_KEY, HEADER_SHA_KEY

    for removed in ([GRAPH_SHA_KEY], [HEADER_SHA_KEY], [GRAPH_SHA_KEY, HEADER_SHA_KEY]):
        proto = onnx.load(str(full_onnx))
        kept = [p for p in proto.metadata_props if p.key not in removed]
        del proto.metadata_props[:]
        proto.metadata_props.extend(kept)
        onnx.save(proto, str(tmp_path / "unsealed.onnx"))
        for operators in (True, False):  # False: ONNX Runtime's runner (its plain read gives up on it)
            with pytest.raises(ArtifactError, match=f"unsealed.onnx: no {' or '.join(removed)} metadata, which "
                                                    "every export of a format-3 model carries"):
                read_onnx_header(tmp_path / "unsealed.onnx", operators=operators)
    # a file exported (from a format-2 model) before checksums: loads, with a warning that says how to add them
    header = json.loads(metadata_props(proto)[HEADER_KEY])
    header["format_version"] = 2
    del proto.metadata_props[:]
    proto.metadata_props.add(key=HEADER_KEY, value=json.dumps(header))
    onnx.save(proto, str(tmp_path / "old.onnx"))
    with caplog.at_level("WARNING", logger="edgecmg"):
        assert read_onnx_header(tmp_path / "old.onnx")["export"]["graph"] == "full"
        read_onnx_header(tmp_path / "old.onnx")  # read twice (a featurizer's load does): said once
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and ("no edgecmg.graph_sha256 or edgecmg.header_sha256 (exported by an edgecmg older than "
                               "the checksums): it cannot be checked for damage; export it again (edgecmg export) "
                               "to add them") in said[0]
    # an INT8 file is made again by calibrate, not export
    header["export"]["precision"] = "int8"
    del proto.metadata_props[:]
    proto.metadata_props.add(key=HEADER_KEY, value=json.dumps(header))
    onnx.save(proto, str(tmp_path / "old.int8.onnx"))
    caplog.clear()
    with caplog.at_level("WARNING", logger="edgecmg"):
        read_onnx_header(tmp_path / "old.int8.onnx", operators=False)
    assert "calibrate it again (edgecmg calibrate) to add them" in caplog.text


def test_export_config_is_validated():
    with pytest.raises(ConfigError, match="opset"):
        ExportConfig(opset=13)
    with pytest.raises(ConfigError):
        ExportConfig(max_chunk_elements=1 << 31)
    with pytest.raises(ConfigError):
        ExportConfig(dynamic_batch=False, batch=32, max_batch=8)



def test_export_config_range_ends():
    ExportConfig(opset=20, max_chunk_elements=1 << 16)
    # batch is the fixed batch of a fixed-batch export only: a dynamic export ignores it
    assert ExportConfig(dynamic_batch=True, batch=32, max_batch=8).max_batch == 8
    for kwargs, expected in ((dict(opset=21), "opset=21"),
                             (dict(max_chunk_elements=(1 << 16) - 1), "max_chunk_elements=65535 must be in"),
                             (dict(max_batch=0), "max_batch=0 must be >= 1"),
                             (dict(batch=0), "batch=0")):
        with pytest.raises(ConfigError, match=re.escape(expected)):
            ExportConfig(**kwargs)

def test_fixed_batch_export(tmp_path, model_and_header, frames_and_labels, torch_reference):
    model, header = model_and_header
    frames, _ = frames_and_labels
    out = export_model(model, header, tmp_path / "fixed.onnx", ExportConfig(with_scoring=True, dynamic_batch=False,
                                                                            batch=2))
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_value == 2
    assert read_onnx_header(out)["export"]["max_batch"] == 2
    got = run_onnx(out, frames[:2])
    models.assert_scores_close(got["score"], torch_reference["score"][:2], rtol=1e-4)
    # Through the runner, any batch: split into the file's batch of 2, an odd tail padded and cut
    # (ONNX Runtime itself refuses "Got: 5 Expected: 2").
    from edgecmg.runtime.onnx_runner import OnnxRunner

    with OnnxRunner(out) as runner:
        for n in (5, 1):
            got = runner.infer(frames[:n])
            assert {name: value.shape[0] for name, value in got.items()} == {name: n for name in OUTPUT_NAMES}
            assert_scores_match(got, {name: value[:n] for name, value in torch_reference.items()})


def test_an_edited_onnx_header_is_refused(full_onnx, tmp_path):
    from edgecmg.detector import Detector
    from edgecmg.export import HEADER_KEY, HEADER_SHA_KEY, metadata_props, set_metadata_props

    assert HEADER_SHA_KEY in metadata_props(full_onnx)
    proto = onnx.load(str(full_onnx))
    header = json.loads(metadata_props(proto)[HEADER_KEY])
    header["threshold"] = header["threshold"] * 2  # a "tuned" threshold
    set_metadata_props(proto, {HEADER_KEY: json.dumps(header, sort_keys=True)})
    onnx.save(proto, str(tmp_path / "edited.onnx"))
    with pytest.raises(ArtifactError, match="header checksum mismatch"):
        Detector.load(tmp_path / "edited.onnx", backend="onnxruntime")
