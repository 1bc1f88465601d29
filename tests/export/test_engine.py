"""TensorRT side without TensorRT: engine file format, compatibility errors, the float16 cast pass,
the TensorRT-friendliness checks, and build_engine's API use through a fake ``tensorrt`` module."""
from __future__ import annotations

import json
import logging
import sys

import edgecmg_testmodels as models
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgecmg import __version__
from edgecmg.config import EngineConfig
from edgecmg.engine import Platform, build_engine, check_engine_compatible
from edgecmg.engine_file import load_scorer_from_engine, read_engine_file, read_engine_header, write_engine_file
from edgecmg.errors import (
    ArtifactError,
    BackendUnavailableError,
    ConfigError,
    EngineBuildError,
    EngineIncompatibleError,
    MissingFileError,
)
from edgecmg.export import SCORER_PREFIX, read_onnx_header
from edgecmg.fp16_cast import convert_to_fp16
from edgecmg.onnx_checks import check_onnx_for_tensorrt

ort = pytest.importorskip("onnxruntime")
HEADER = models.ENGINE_HEADER

# --- engine file -----------------------------------------------------------------------------------
def test_engine_file_round_trip(tmp_path):
    path = write_engine_file(tmp_path / "m.engine", HEADER, b"\x01plan" * 100, b"scorer-bytes")
    header, scorer, plan = read_engine_file(path)
    assert plan == b"\x01plan" * 100 and scorer == b"scorer-bytes"
    for key, value in HEADER.items():
        assert header[key] == value
    assert read_engine_header(path)["engine"]["bytes"] == 500
    data = path.read_bytes()
    assert data[:8] == b"EDGECMGE"
    (tmp_path / "cut.engine").write_bytes(data[:-3])
    with pytest.raises(ArtifactError, match="truncated engine"):
        read_engine_file(tmp_path / "cut.engine")
    flipped = bytearray(data)
    flipped[-1] ^= 0xFF
    (tmp_path / "bad.engine").write_bytes(bytes(flipped))
    with pytest.raises(ArtifactError, match="checksum"):
        read_engine_file(tmp_path / "bad.engine")
    (tmp_path / "plan.engine").write_bytes(b"raw tensorrt plan, long enough to hold a prefix")
    with pytest.raises(ArtifactError, match="bad magic"):
        read_engine_header(tmp_path / "plan.engine")
    (tmp_path / "long.engine").write_bytes(data + b"x")  # as the C++ reader does (tests/test_cpp_engine_reader.py)
    with pytest.raises(ArtifactError, match="long.engine: trailing bytes after the engine: the file is corrupted"):
        read_engine_file(tmp_path / "long.engine")


def test_engine_payload_entry_without_a_byte_count_is_refused(tmp_path):
    import hashlib
    import struct

    for size in ("0", -1, None, True):
        header = json.dumps({"scorer": {"bytes": size, "sha256": hashlib.sha256(b"").hexdigest()},
                             "engine": {"bytes": 4, "sha256": hashlib.sha256(b"plan").hexdigest()}}).encode()
        path = tmp_path / "m.engine"
        path.write_bytes(struct.pack("<8sIQ", b"EDGECMGE", 3, len(header)) + header + b"plan")
        with pytest.raises(ArtifactError, match="scorer entry has no byte count"):
            read_engine_file(path)


def test_compatible_platform_passes():
    check_engine_compatible(HEADER, Platform("10.3.0.30", "Orin", "8.7"))  # same release, other build


@pytest.mark.parametrize("current,expected", [
    (Platform("10.7.0.23", "Orin", "8.7"), r"TensorRT 10\.3\.0\.26 built it, this machine has TensorRT 10\.7\.0\.23"),
    (Platform("10.3.0.26", "NVIDIA GeForce RTX 4090", "8.9"),
     r"built for Orin \(compute capability 8\.7\), this GPU is NVIDIA GeForce RTX 4090 \(compute capability 8\.9\)"),
])
def test_incompatible_engine_error_says_which_and_how_to_rebuild(current, expected):
    with pytest.raises(EngineIncompatibleError, match=expected) as info:
        check_engine_compatible(HEADER, current, path="M.engine")
    assert "edgecmg build M.int8.onnx --precision int8 -o M.engine" in str(info.value)


def test_a_dla_engine_on_a_device_without_that_core_is_refused_with_a_gpu_rebuild():
    """Every Orin is compute capability 8.7: an AGX Orin's DLA engine on an Orin Nano (no DLA) passes
    the version and architecture checks, so the core is checked too."""
    dla = {**HEADER, "dla_core": 1}
    with pytest.raises(EngineIncompatibleError, match="it runs on DLA core 1, and this device has 0 DLA core") as info:
        check_engine_compatible(dla, Platform("10.3.0.26", "Orin", "8.7", dla_cores=0), path="M.engine")
    assert "edgecmg build M.int8.onnx --precision int8 -o M.engine" in str(info.value)  # no --dla where none is
    with pytest.raises(EngineIncompatibleError, match="this device has 1 DLA core") as info:
        check_engine_compatible(dla, Platform("10.3.0.26", "Orin", "8.7", dla_cores=1), path="M.engine")
    assert "edgecmg build M.int8.onnx --precision int8 --dla 0 -o M.engine" in str(info.value)  # the core there is
    check_engine_compatible(dla, Platform("10.3.0.26", "Orin", "8.7", dla_cores=2))
    check_engine_compatible(dla, Platform("10.3.0.26", "Orin", "8.7"))  # not known: left to TensorRT
    with pytest.raises(EngineIncompatibleError) as info:  # another reason: the rebuild keeps the core
        check_engine_compatible(dla, Platform("10.7.0.23", "Orin", "8.7", dla_cores=2), path="M.engine")
    assert "--precision int8 --dla 1 -o M.engine" in str(info.value)


def test_current_platform_counts_the_runtimes_dla_cores_when_asked(fake_tensorrt):
    """Asking takes a TensorRT runtime (and on a machine without a GPU, TensorRT's error log): only
    for a DLA engine."""
    from edgecmg.engine import current_platform, tensorrt_version

    assert current_platform(fake_tensorrt(dla_cores=2), dla=True).dla_cores == 2
    assert current_platform(fake_tensorrt(dla_cores=0), dla=True).dla_cores == 0
    assert current_platform(fake_tensorrt(dla_cores=2)).dla_cores is None
    trt = fake_tensorrt(dla_cores=2)
    del trt.Runtime  # a runtime that cannot be made: not known, not an error
    assert current_platform(trt, dla=True).dla_cores is None
    assert [tensorrt_version(v) for v in ("10.3.0.26", "11.4.1.2", "11.4", "TensorRT-8.6", "10.x", "")] == \
        [(10, 3, 0), (11, 4, 1), (11, 4, 0), (8, 6, 0), (10, 0, 0), ()]


def test_same_architecture_other_gpu_only_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        check_engine_compatible(HEADER, Platform("10.3.0.26", "Jetson AGX Orin", "8.7"))
    assert "rebuild" in caplog.text


# --- float16 cast pass -----------------------------------------------------------------------------
def _run(model_or_path, frames):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    data = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"image": frames})))


def test_fp16_cast_pass_on_a_real_export(full_onnx, frames_and_labels):
    frames, _ = frames_and_labels
    half = convert_to_fp16(full_onnx, keep_fp32_prefixes=(SCORER_PREFIX,))  # runs onnx.checker itself
    onnx.checker.check_model(half)
    src = onnx.load(str(full_onnx))
    assert [(v.name, v.type.tensor_type.elem_type) for v in half.graph.input] == \
        [(v.name, v.type.tensor_type.elem_type) for v in src.graph.input]
    assert [(v.name, v.type.tensor_type.elem_type) for v in half.graph.output] == \
        [(v.name, v.type.tensor_type.elem_type) for v in src.graph.output]
    conv_weights = {n.input[1] for n in half.graph.node if n.op_type == "Conv" and not n.name.startswith(SCORER_PREFIX)}
    types = {i.name: i.data_type for i in half.graph.initializer}
    assert conv_weights and all(types[w] == TensorProto.FLOAT16 for w in conv_weights)
    scorer_mm = [n for n in half.graph.node if n.name.startswith(SCORER_PREFIX) and n.op_type in ("MatMul", "Gemm")]
    assert scorer_mm
    constant_inputs = [name for n in scorer_mm for name in n.input if name in types]  # bank chunks, map operators
    assert constant_inputs and all(types[name] == TensorProto.FLOAT for name in constant_inputs)
    assert check_onnx_for_tensorrt(half) == []
    ref, got = _run(full_onnx, frames), _run(half, frames)
    models.assert_scores_close(got["score"], ref["score"], rtol=2e-2)
    assert np.mean(got["kept_mask"] == ref["kept_mask"]) >= 0.9


def test_fp16_cast_pass_featurizer(featurizer_onnx, frames_and_labels):
    frames, _ = frames_and_labels
    ref, got = _run(featurizer_onnx, frames[:2]), _run(convert_to_fp16(featurizer_onnx), frames[:2])
    rel = np.linalg.norm(got["embeddings"] - ref["embeddings"]) / np.linalg.norm(ref["embeddings"])
    assert rel < 0.05 and got["embeddings"].dtype == np.float32
    np.testing.assert_allclose(got["match_scores"], ref["match_scores"], atol=1e-2)


def _dequantized(model):
    """{DequantizeLinear node name: float64 values} for the nodes that read constant codes."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        q = inits[node.input[0]].astype(np.float64)
        scale = inits[node.input[1]].astype(np.float64)
        zp = inits[node.input[2]].astype(np.float64) if len(node.input) > 2 else 0.0
        shape = [1] * q.ndim
        if scale.size > 1:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape[axis % q.ndim] = scale.size
        out[node.name] = (q - np.reshape(zp, shape if np.ndim(zp) else ())) * scale.reshape(shape)
    return out


def _qdq_matmuls(opset=17, weight_type=TensorProto.INT8, act_scale=0.02):
    """x -> Q/DQ (scale from a value_float Constant) -> two MatMuls that share one int8 weight under
    different per-column scales (axis 1 and -1), each with a near-dead column (scale 1e-9)."""
    rng = np.random.default_rng(0)
    codes = rng.integers(-100, 100, (3, 4)).astype(np.int8)
    inits = [helper.make_tensor("w", weight_type, [3, 4], codes.flatten().tolist()),
             numpy_helper.from_array(np.array([0.01, 1e-9, 0.02, 0.005], np.float32), "s_a"),
             numpy_helper.from_array(np.array([1e-9, 0.03, 0.01, 0.004], np.float32), "s_b"),
             numpy_helper.from_array(np.array(0, np.int8), "zp")]
    nodes = [helper.make_node("Constant", [], ["s_x"], value_float=act_scale),
             helper.make_node("QuantizeLinear", ["x", "s_x", "zp"], ["xq"], name="q_x"),
             helper.make_node("DequantizeLinear", ["xq", "s_x", "zp"], ["xd"], name="dq_x"),
             helper.make_node("DequantizeLinear", ["w", "s_a"], ["wa"], name="dq_a", axis=1),
             helper.make_node("DequantizeLinear", ["w", "s_b"], ["wb"], name="dq_b", axis=-1),
             helper.make_node("MatMul", ["xd", "wa"], ["ya"], name="mm_a"),
             helper.make_node("MatMul", ["xd", "wb"], ["yb"], name="mm_b")]
    return _model(nodes, [_vi("x", TensorProto.FLOAT, [2, 3])],
                  [_vi("ya", TensorProto.FLOAT, [2, 4]), _vi("yb", TensorProto.FLOAT, [2, 4])], inits, opset=opset)


def test_int8_cast_pass_keeps_every_dequantized_weight(ort_float16_qdq):
    source = _qdq_matmuls()
    assert check_onnx_for_tensorrt(source) == []  # the value_float Constant scale counts as a constant
    half = convert_to_fp16(source, keep_fp32_ops=())
    assert max(o.version for o in half.opset_import if o.domain == "") == 19 and half.ir_version >= 9
    scale_types = {i.name: i.data_type for i in half.graph.initializer}
    for node in (n for n in half.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")):
        assert scale_types[node.input[1]] == TensorProto.FLOAT16, node.name  # the Constant's too
    assert check_onnx_for_tensorrt(half) == []
    before, after = _dequantized(source), _dequantized(half)
    tiny = float(np.finfo(np.float16).tiny)
    for name in ("dq_a", "dq_b"):  # one shared weight, two scales: each node keeps its own values
        step = np.maximum(tiny, 2.0 ** -11 * np.abs(before[name]).max())
        np.testing.assert_allclose(after[name], before[name], rtol=0, atol=step)
    dq = {n.name: n for n in half.graph.node}
    assert dq["dq_a"].input[0] != dq["dq_b"].input[0]  # the second scale got its own copy of the codes
    ort_float16_qdq()
    x = np.random.default_rng(1).normal(size=(2, 3)).astype(np.float32)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ref = _run_graph(source, x, options)
    got = _run_graph(half, x, options)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-3 * np.abs(b).max())


def test_int8_cast_pass_requantises_int4_codes_and_refuses_huge_scales():
    half = convert_to_fp16(_qdq_matmuls(opset=21, weight_type=TensorProto.INT4), keep_fp32_ops=())
    codes = {i.name: numpy_helper.to_array(i) for i in half.graph.initializer}
    assert all(-8 <= int(v) <= 7 for n in half.graph.node if n.name in ("dq_a", "dq_b")
               for v in codes[n.input[0]].astype(np.int8).flatten())
    # a near-dead column's codes, re-quantised against the clamped scale, dequantize to 0 (kept as they
    # were, they would dequantize to 6e4x their value)
    source_codes = numpy_helper.to_array(next(i for i in _qdq_matmuls(opset=21, weight_type=TensorProto.INT4)
                                              .graph.initializer if i.name == "w"))
    assert source_codes[:, 1].astype(np.int8).any()
    assert (_dequantized(half)["dq_a"][:, 1] == 0).all()
    with pytest.raises(EngineBuildError, match="beyond float16's range"):
        convert_to_fp16(_qdq_matmuls(act_scale=1e6), keep_fp32_ops=())


def _run_graph(model, x, options):
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


# --- TensorRT-friendliness checks --------------------------------------------------------------------
def _model(nodes, inputs, outputs, inits=(), opset=17, domains=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(graph, opset_imports=imports)


def _vi(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


def test_checker_flags_unsupported_ops_opsets_and_domains():
    m = _model([helper.make_node("Det", ["x"], ["y"])], [_vi("x", TensorProto.FLOAT, [2, 2])],
               [_vi("y", TensorProto.FLOAT, [])], opset=13)
    problems = " | ".join(check_onnx_for_tensorrt(m))
    assert "opset 13" in problems and "Det is not supported" in problems
    m = _model([helper.make_node("QLinearConvX", ["x"], ["y"], domain="com.microsoft")],
               [_vi("x", TensorProto.FLOAT, [1])], [_vi("y", TensorProto.FLOAT, [1])], domains=["com.microsoft"])
    assert any("com.microsoft" in p for p in check_onnx_for_tensorrt(m))


def test_checker_flags_huge_tensors_at_max_batch():
    shape = numpy_helper.from_array(np.array([1, 1 << 16, 1 << 13], np.int64), "shape")
    m = _model([helper.make_node("Expand", ["x", "shape"], ["y"])],
               [_vi("x", TensorProto.FLOAT, ["batch", 1, 1])], [_vi("y", TensorProto.FLOAT, None)], [shape])
    assert check_onnx_for_tensorrt(m, max_batch=2) == []
    problems = check_onnx_for_tensorrt(m, max_batch=8)  # 8 * 2**29 elements
    assert any("2**31" in p for p in problems)


def _qdq_conv(zero_point=0, weight_dq=True, act_q_to=TensorProto.INT8, bias_int32=False, q_feeds_relu=False):
    w = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.int8), "w_q")
    wf = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w_f")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    wscale = numpy_helper.from_array(np.full(4, 0.01, np.float32), "ws")
    zp = helper.make_tensor("zp", act_q_to, [], [zero_point])
    wzp = numpy_helper.from_array(np.zeros(4, np.int8), "wzp")
    inits = [w, wf, scale, wscale, zp, wzp]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w_q", "ws", "wzp"], ["wd"], axis=0)]
    conv_in = ["xd", "wd" if weight_dq else "w_f"]
    if bias_int32:
        inits += [numpy_helper.from_array(np.zeros(4, np.int32), "b_q"),
                  numpy_helper.from_array(np.full(4, 1e-3, np.float32), "bs")]
        nodes.append(helper.make_node("DequantizeLinear", ["b_q", "bs"], ["bd"], axis=0))
        conv_in.append("bd")
    nodes.append(helper.make_node("Conv", conv_in, ["y"]))
    if q_feeds_relu:
        nodes.append(helper.make_node("Relu", ["xq"], ["r"]))
    return _model(nodes, [_vi("x", TensorProto.FLOAT, [1, 3, 4, 4])], [_vi("y", TensorProto.FLOAT, None)], inits)


@pytest.mark.parametrize("kwargs,expected", [
    ({}, None),
    ({"zero_point": 3}, "zero point is not 0"),
    ({"weight_dq": False}, "without a Q/DQ pair"),
    ({"act_q_to": TensorProto.UINT8}, "quantised type UINT8"),
    ({"bias_int32": True}, "quantised type INT32"),
    ({"q_feeds_relu": True}, "must feed DequantizeLinear only"),
])
def test_checker_qdq_rules(kwargs, expected):
    problems = check_onnx_for_tensorrt(_qdq_conv(**kwargs))
    if expected is None:
        assert problems == []
    else:
        assert any(expected in p for p in problems), problems


def test_checker_flags_uint8_inside_the_graph():
    m = _model([helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
                helper.make_node("Cast", ["t"], ["y"], to=TensorProto.FLOAT)],
               [_vi("x", TensorProto.UINT8, [1, 4, 4, 3])], [_vi("y", TensorProto.FLOAT, None)])
    assert any("uint8 tensor 'x' feeds ['Transpose']" in p for p in check_onnx_for_tensorrt(m))


# --- build_engine through the fake tensorrt ---------------------------------------------------------------
def test_build_without_tensorrt_gives_the_install_hint(featurizer_onnx, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailableError, match="JetPack"):
        build_engine(featurizer_onnx, EngineConfig(precision="fp32"), tmp_path / "m.engine")


@pytest.mark.parametrize("flavour,precision,strongly,flags,cast_pass", [
    # TF32: TensorRT's default, kept (see build_plan)
    ("10", "fp32", False, ["TF32"], False),
    ("10", "fp16", False, ["FP16", "TF32"], False),
    ("11", "fp16", True, ["TF32"], True),
    ("11", "fp32", True, ["TF32"], False),
    # a TensorRT 11 that dropped the deprecated, ignored STRONGLY_TYPED flag: every network still is
    ("11-no-flag", "fp16", True, ["TF32"], True),
    ("11-no-flag", "fp32", True, ["TF32"], False),
])
def test_build_engine_precision_paths(fake_tensorrt, featurizer_onnx, artifact_path, tmp_path,
                                      flavour, precision, strongly, flags, cast_pass):
    kwargs = {} if flavour == "10" else dict(version="11.0.0.1", fp16_flag=False, int8_flag=False, explicit_batch=False,
                                             strongly_typed=flavour == "11")
    trt = fake_tensorrt(**kwargs)
    cache = tmp_path / "timing.cache"
    out = build_engine(featurizer_onnx, EngineConfig(precision=precision, timing_cache=str(cache), max_batch=4),
                       tmp_path / "m.engine")
    record = trt.builds[-1]
    assert record["strongly_typed"] is strongly and record["builder_flags"] == flags
    assert record["profile"]["image"][0][0] == 1 and record["profile"]["image"][2][0] == 4
    assert record["workspace"] == 1024 << 20
    assert cache.read_bytes().startswith(b"fake-timing-cache")
    header = read_engine_header(out)
    onnx_header = read_onnx_header(featurizer_onnx)
    assert header["precision"] == precision and header["fp16_cast_pass"] is cast_pass
    assert header["tensorrt"] == trt.__version__ and header["edgecmg"] == __version__
    assert header["artifact_sha256"] == onnx_header["export"]["artifact_sha256"]
    assert header["inputs"]["image"]["max"][0] == 4 and header["inputs"]["image"]["dtype"] == "uint8"
    assert {"name", "compute_capability"} <= set(header["gpu"])
    scorer, model_header = load_scorer_from_engine(out)
    assert model_header["threshold"] == onnx_header["threshold"]
    # a second build reads the timing cache written by the first
    build_engine(featurizer_onnx, EngineConfig(precision=precision, timing_cache=str(cache)), tmp_path / "n.engine")
    assert trt.builds[-1]["timing_cache_in"].startswith("fake-timing-cache")


def test_a_timing_cache_of_another_gpu_is_not_used(fake_tensorrt, featurizer_onnx, tmp_path, caplog):
    """Tactics timed on another GPU or TensorRT version are not forced on this build: it starts from an
    empty cache (with a warning) and rewrites the file."""
    trt = fake_tensorrt()
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"fake-timing-cache:other-gpu")
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        build_engine(featurizer_onnx, EngineConfig(precision="fp32", timing_cache=str(cache)), tmp_path / "m.engine")
    assert trt.builds[-1]["timing_cache_in"] == ""
    assert "does not match this GPU/TensorRT; building without it" in caplog.text
    assert cache.read_bytes().startswith(b"fake-timing-cache:1")


def test_a_featurizer_engine_build_says_where_its_bank_search_runs(fake_tensorrt, featurizer_onnx, full_onnx,
                                                                     tmp_path, caplog):
    fake_tensorrt()
    with caplog.at_level(logging.INFO, logger="edgecmg"):
        build_engine(featurizer_onnx, EngineConfig(precision="fp16"), tmp_path / "f.engine")
    assert "f.engine computes patch features only: each frame's memory-bank search then runs on the host CPU" \
        in caplog.text and "--with-scoring" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edgecmg"):
        build_engine(full_onnx, EngineConfig(precision="fp16"), tmp_path / "full.engine")
    assert "built fp16 engine" in caplog.text and "patch features only" not in caplog.text


def test_fp16_flag_build_keeps_the_scoring_head_in_fp32(fake_tensorrt, full_onnx, tmp_path):
    trt = fake_tensorrt()
    build_engine(full_onnx, EngineConfig(precision="fp16"), tmp_path / "m.engine")
    record = trt.builds[-1]
    assert "FP16" in record["builder_flags"] and "PREFER_PRECISION_CONSTRAINTS" in record["builder_flags"]
    pinned = record["fp32_layers"]
    assert pinned and all(name.startswith(SCORER_PREFIX) for name in pinned)


def test_refused_optimisation_profile_is_an_engine_build_error(fake_tensorrt, featurizer_onnx, tmp_path,
                                                             monkeypatch):
    trt = fake_tensorrt()
    builder = trt.Builder(None)
    # TensorRT's two ways of refusing a profile: set_shape raises, add_optimization_profile returns -1
    monkeypatch.setattr(type(builder.create_builder_config()), "add_optimization_profile", lambda self, p: -1)
    with pytest.raises(EngineBuildError, match="refused the optimisation profile"):
        build_engine(featurizer_onnx, EngineConfig(precision="fp32"), tmp_path / "m.engine")

    def raising(self, name, *shapes):
        raise RuntimeError("inconsistent dimensions")

    monkeypatch.setattr(type(builder.create_optimization_profile()), "set_shape", raising)
    with pytest.raises(EngineBuildError, match="profile of input 'image'.*inconsistent dimensions"):
        build_engine(featurizer_onnx, EngineConfig(precision="fp32"), tmp_path / "m.engine")
    assert not (tmp_path / "m.engine").exists() and not trt.builds


def test_build_int8_rules(fake_tensorrt, featurizer_onnx, tmp_path):
    fake_tensorrt()
    with pytest.raises(EngineBuildError, match="edgecmg calibrate"):
        build_engine(featurizer_onnx, EngineConfig(precision="int8"), tmp_path / "m.engine")
    # the refusal names a path that would do: .trt (trtexec's habit) replaced, another suffix kept
    with pytest.raises(ConfigError, match=r"m\.trt: TensorRT engines must end in \.engine or \.plan; use .*m\.engine$"):
        build_engine(featurizer_onnx, EngineConfig(), tmp_path / "m.trt")
    with pytest.raises(ConfigError, match=r"use .*m\.v2\.engine$"):
        build_engine(featurizer_onnx, EngineConfig(), tmp_path / "m.v2")


def test_build_dla(fake_tensorrt, featurizer_onnx, tmp_path):
    trt = fake_tensorrt(dla_cores=2)
    build_engine(featurizer_onnx, EngineConfig(precision="fp16", dla_core=1), tmp_path / "m.engine")
    record = trt.builds[-1]
    assert record["device"] == "DLA" and record["dla_core"] == 1 and "GPU_FALLBACK" in record["builder_flags"]
    assert read_engine_header(tmp_path / "m.engine")["dla_core"] == 1
    fake_tensorrt(dla_cores=0)
    with pytest.raises(EngineBuildError, match="DLA core 1 requested but this device has 0"):
        build_engine(featurizer_onnx, EngineConfig(precision="fp16", dla_core=1), tmp_path / "n.engine")
    fake_tensorrt(dla_cores=1)  # cores are numbered from 0: core 1 needs two
    with pytest.raises(EngineBuildError, match="DLA core 1 requested but this device has 1"):
        build_engine(featurizer_onnx, EngineConfig(precision="fp16", dla_core=1), tmp_path / "n.engine")
    with pytest.raises(ConfigError, match="DLA runs fp16 or int8"):
        EngineConfig(precision="fp32", dla_core=0)


def test_a_dla_build_says_how_many_layers_the_dla_takes_and_refuses_none(fake_tensorrt, featurizer_onnx, tmp_path,
                                                                          caplog):
    import onnx

    layers = len(onnx.load(str(featurizer_onnx)).graph.node)
    trt = fake_tensorrt(dla_cores=1)
    trt.dla_runs = lambda name: "Conv" in name  # the convolutions only
    convs = sum("Conv" in n.name for n in onnx.load(str(featurizer_onnx)).graph.node)
    assert 0 < convs < layers
    with caplog.at_level(logging.INFO, logger="edgecmg"):
        build_engine(featurizer_onnx, EngineConfig(precision="fp16", dla_core=0), tmp_path / "m.engine")
    assert f"{convs} of {layers} layers can run on DLA core 0; the others run on the GPU" in caplog.text
    trt.dla_runs = lambda name: False
    with pytest.raises(EngineBuildError, match=f"none of the {layers} layers of .* can run on a DLA: the engine "
                                               "would run on the GPU alone; build it without dla_core=0 .--dla 0."):
        build_engine(featurizer_onnx, EngineConfig(precision="fp16", dla_core=0), tmp_path / "n.engine")
    assert not (tmp_path / "n.engine").exists()
    with pytest.raises(ConfigError, match="dla_core=-1 must be >= 0"):
        EngineConfig(precision="fp16", dla_core=-1)


def test_engine_config_refuses_an_opt_batch_outside_its_range_and_a_tiny_workspace():
    assert EngineConfig(min_batch=2, opt_batch=4, max_batch=8).profile_batches == (2, 4, 8)
    for opt in (1, 9):
        with pytest.raises(ConfigError, match=f"opt_batch={opt} must lie in 2..8"):
            EngineConfig(min_batch=2, opt_batch=opt, max_batch=8)
    assert EngineConfig(workspace_mib=16).workspace_mib == 16
    with pytest.raises(ConfigError, match="workspace_mib=8 is too small; use at least 16"):
        EngineConfig(workspace_mib=8)


def test_cli_build_dla_takes_max_batch_as_its_one_fixed_batch(fake_tensorrt, featurizer_onnx, tmp_path, capsys):
    from edgecmg.cli import main

    trt = fake_tensorrt(dla_cores=2)
    out = tmp_path / "m.engine"
    assert main(["build", str(featurizer_onnx), "--dla", "0", "--max-batch", "4", "-o", str(out)]) == 0, \
        capsys.readouterr().err
    (mins, opts, maxs), = trt.builds[-1]["profile"].values()
    assert mins[0] == opts[0] == maxs[0] == 4
    assert trt.builds[-1]["device"] == "DLA" and read_engine_header(out)["dla_core"] == 0


def test_cli_build_refuses_a_dla_core_no_jetson_has_by_its_flag(tmp_path, capsys):
    """Checked by argparse, before TensorRT is imported: where TensorRT is missing, --dla 2 was
    answered with the install hint instead."""
    from edgecmg.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["build", str(tmp_path / "m.onnx"), "--dla", "2", "-o", str(tmp_path / "m.engine")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--dla: invalid choice: 2 (choose from 0, 1)" in err and "TensorRT" not in err


def test_build_names_an_onnx_file_edgecmg_did_not_export(tmp_path):
    # The header is read from the loaded model: its errors said "ONNX model", not which file.
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])])
    path = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ArtifactError, match=f"^{path}: no 'edgecmg.header' metadata"):
        build_engine(path, EngineConfig(precision="fp32"), tmp_path / "m.engine")
    assert not (tmp_path / "m.engine").exists()


def test_engine_header_edits_and_a_damaged_length_are_refused(fake_tensorrt, featurizer_onnx, tmp_path):
    import struct

    fake_tensorrt()
    engine = build_engine(featurizer_onnx, EngineConfig(precision="fp32"), tmp_path / "m.engine")
    data = engine.read_bytes()
    header_len = struct.unpack_from("<Q", data, 12)[0]
    header = json.loads(data[20:20 + header_len])
    threshold = str(header["model"]["threshold"]).encode()
    edited = data.replace(threshold, threshold[:-1] + (b"1" if threshold[-1:] != b"1" else b"2"), 1)
    assert edited != data and len(edited) == len(data)
    (tmp_path / "edited.engine").write_bytes(edited)
    with pytest.raises(ArtifactError, match="header checksum mismatch"):
        read_engine_header(tmp_path / "edited.engine")
    damaged = bytearray(data)
    struct.pack_into("<Q", damaged, 12, 1 << 40)
    (tmp_path / "damaged.engine").write_bytes(bytes(damaged))
    with pytest.raises(ArtifactError, match="truncated inside the header"):
        read_engine_header(tmp_path / "damaged.engine")
    assert "header_sha256" not in read_engine_header(engine)  # checked, then dropped from what callers see
    for read in (read_engine_header, read_engine_file):  # missing is not damaged: a FileNotFoundError too
        with pytest.raises(MissingFileError, match="missing.engine: no such engine file"):
            read(tmp_path / "missing.engine")


def test_dla_engines_have_one_fixed_batch(fake_tensorrt, featurizer_onnx, tmp_path):
    assert EngineConfig(precision="fp16", dla_core=0).profile_batches == (1, 1, 1)
    assert EngineConfig(precision="int8", dla_core=0, min_batch=4).profile_batches == (4, 4, 4)
    with pytest.raises(ConfigError, match="DLA runs fixed shapes only"):
        EngineConfig(precision="fp16", dla_core=0, max_batch=8)
    assert EngineConfig(precision="fp16").profile_batches == (1, 1, 8)


def test_an_unreadable_timing_cache_is_replaced_not_fatal(fake_tensorrt, featurizer_onnx, tmp_path, caplog):
    trt = fake_tensorrt()
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"\x00garbage from another tool")
    with caplog.at_level("WARNING", logger="edgecmg"):
        build_engine(featurizer_onnx, EngineConfig(precision="fp32", timing_cache=str(cache)), tmp_path / "m.engine")
    assert "timing cache" in caplog.text and "unreadable" in caplog.text
    assert trt.builds[-1]["timing_cache_in"] == ""
    assert cache.read_bytes().startswith(b"fake-timing-cache")


def _tf32(x):
    """float32 rounded as TF32 math rounds a MatMul input: 10 mantissa bits, to nearest."""
    import torch

    bits = x.float().contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


def test_tf32_leaves_the_scorer_within_a_fraction_of_a_percent(model_and_header, frames_and_labels):
    """build_plan keeps TensorRT's default TF32: the scorer's distance MatMul takes [q, 1] @ [-2 m; ||m||^2],
    and only the bank norms are not already TF32 values (q is fp16-rounded, the bank is fp16)."""
    import torch

    model, _ = model_and_header
    scorer = model.scorer
    frames = torch.from_numpy(frames_and_labels[0])
    with torch.no_grad():
        embeddings, images, head = model.featurizer.dense(frames)
        q = embeddings.half().float()
        minus_2m = scorer.memory_bank.float() * -2.0
        assert torch.equal(_tf32(q), q) and torch.equal(_tf32(minus_2m), minus_2m)
        exact = model.from_dense(embeddings, images, head).score
        norms = scorer.bank_sq_norms
        assert not torch.equal(_tf32(norms), norms)  # these do move
        try:
            scorer.bank_sq_norms = _tf32(norms)
            rounded = model.from_dense(embeddings, images, head).score
        finally:
            scorer.bank_sq_norms = norms
    assert (rounded - exact).abs().max() <= 0.005 * model.threshold


def test_a_tensorrt_version_without_a_number_is_taken_as_10(fake_tensorrt):
    from edgecmg.engine import _capabilities, _network_flags

    for version, major in (("unknown", 10), ("8.6.1.6", 8), ("11.0.0.1", 11)):
        trt = fake_tensorrt(version=version)
        caps = _capabilities(trt)
        assert caps.major == major
        explicit = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        assert bool(_network_flags(trt, caps, False) & explicit) is (major < 10), version


def test_a_timing_cache_that_names_a_model_or_a_folder_is_refused_before_tensorrt_is_needed(full_onnx, tmp_path,
                                                                                          capsys):
    """`--timing-cache victim.onnx` replaced the model being built with TensorRT's timing cache."""
    from edgecmg.cli import main

    before = full_onnx.read_bytes()
    (tmp_path / "caches").mkdir()
    # other frameworks' weights too (.pt was taken and would have been replaced)
    for cache, said in ((full_onnx, "that names a model file (.onnx)"), (tmp_path / "m.edgecmg", "(.edgecmg)"),
                        (tmp_path / "weights.pt", "that names a model file (.pt)"), (tmp_path / "caches", "is a folder")):
        assert main(["-q", "build", str(full_onnx), "--timing-cache", str(cache), "-o",
                     str(tmp_path / "m.engine")]) == 2
        err = capsys.readouterr().err
        assert f"timing cache {cache}" in err and said in err and "tensorrt" not in err.lower(), err
    assert full_onnx.read_bytes() == before
