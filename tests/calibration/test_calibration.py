"""INT8 calibration: Q/DQ structure, TensorRT-friendliness, float heads, cache reuse, INT8 parity."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import scipy.stats
import pytest

import edgecmg_testmodels as models
from edgecmg.calibration import (
    CalibrationCache,
    ImageFolderReader,
    backbone_region,
    calibrate,
    default_cache_path,
    select_images,
    select_with_spares,
)
from edgecmg.errors import BackendUnavailableError, ConfigError, DataError
from edgecmg.export import GRAPH_SHA_KEY, SCORER_PREFIX, graph_sha256, load_scorer_from_onnx, read_onnx_header
from edgecmg.fp16_cast import QDQ_FP16_OPSET, convert_to_fp16
from edgecmg.onnx_checks import check_onnx_for_tensorrt, is_quantized
from edgecmg.runtime import make_runner

pytest.importorskip("onnxruntime")
SAMPLES = 8


@pytest.fixture(scope="session")
def train_dir():
    return models.kolektor() / "train" / "good"


@pytest.fixture(scope="session")
def int8_featurizer(tmp_path_factory, artifact_path, train_dir):
    out = tmp_path_factory.mktemp("int8") / "m.int8.onnx"
    return calibrate(artifact_path, train_dir, out, method="minmax", samples=SAMPLES, progress=False)


@pytest.fixture(scope="session")
def int8_full(tmp_path_factory, artifact_path, train_dir):
    out = tmp_path_factory.mktemp("int8-full") / "full.int8.onnx"
    return calibrate(artifact_path, train_dir, out, method="percentile", samples=SAMPLES, with_scoring=True,
                     progress=False)


def _consumers(model):
    out = {}
    for node in model.graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def test_int8_featurizer_is_qdq_and_tensorrt_friendly(int8_featurizer, featurizer_onnx):
    model = onnx.load(str(int8_featurizer))
    assert is_quantized(model)
    assert check_onnx_for_tensorrt(model, max_batch=16) == []
    header = read_onnx_header(model)
    assert header["export"]["precision"] == "int8" and header["quantization"]["profile"] == "tensorrt"
    assert header["quantization"]["samples"] == SAMPLES
    load_scorer_from_onnx(int8_featurizer)  # still self-sufficient for host scoring
    # sealed with the quantised graph's own checksum, not the FP32 one it started from
    assert {p.key: p.value for p in model.metadata_props}[GRAPH_SHA_KEY] == graph_sha256(model)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    weight_dq = [producers[n.input[1]] for n in model.graph.node if n.op_type == "Conv" and n.input[1] in producers]
    assert weight_dq, "no quantised convolution"
    for dq in weight_dq:  # per-channel weights
        assert inits[dq.input[1]].size == inits[dq.input[0]].shape[0] > 1
    for q in (n for n in model.graph.node if n.op_type == "QuantizeLinear"):  # per-tensor activations
        assert inits[q.input[1]].size == 1


def test_matching_and_feature_heads_stay_float(int8_featurizer):
    model = onnx.load(str(int8_featurizer))
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers = _consumers(model)
    for node in model.graph.node:  # projection, matching head and feature taps compute in float
        if node.op_type in ("MatMul", "Softmax", "Resize", "AveragePool", "Concat", "ReduceSum"):
            assert not any(c.op_type == "QuantizeLinear" for o in node.output for c in consumers.get(o, [])), node.name
        if node.op_type == "MatMul":
            assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input[1:])
    # the first convolutions (stem and first blocks) stay float by default
    first_conv = next(n for n in model.graph.node if n.op_type == "Conv")
    assert producers[first_conv.input[0]].op_type != "DequantizeLinear"


def test_int8_parity_with_looser_tolerance(int8_featurizer, frames_and_labels, torch_reference):
    frames, labels = frames_and_labels
    with make_runner(int8_featurizer, "onnxruntime", "cpu") as runner:
        out = runner.infer(frames)
    got = models.score_features(runner.host_scorer(), out)
    models.assert_scores_close(got["score"], torch_reference["score"], rtol=0.15)
    # The ranking of frames survives quantisation. (An AUROC difference is too coarse on 12 frames:
    # one swapped pair of near-equal scores moves it by 1/36.) bench_int8.py measures AUROC on the
    # full test sets.
    rho = scipy.stats.spearmanr(got["score"], torch_reference["score"]).statistic
    assert rho >= 0.8, rho


def test_int8_with_fp16_float_layers(int8_featurizer, frames_and_labels, torch_reference, ort_float16_qdq):
    """What `edgecmg build --precision int8` hands TensorRT: the INT8 graph with its float layers and
    its Q/DQ scales in float16, run here by ONNX Runtime with graph optimisation off."""
    import onnxruntime as ort

    source = onnx.load(str(int8_featurizer))
    half = convert_to_fp16(source, keep_fp32_ops=())
    assert max(o.version for o in half.opset_import if o.domain in ("", "ai.onnx")) == QDQ_FP16_OPSET
    assert check_onnx_for_tensorrt(half, max_batch=16) == []
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in half.graph.initializer}
    qdq = [n for n in half.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qdq) == sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in source.graph.node)
    assert all(inits[n.input[1]].dtype == np.float16 and (inits[n.input[1]] > 0).all() for n in qdq)
    producers = {o: n for n in half.graph.node for o in n.output}
    convs = [n for n in half.graph.node if n.op_type == "Conv" and n.input[1] in producers]
    assert convs and all(producers[n.input[i]].op_type == "DequantizeLinear" for n in convs for i in (0, 1)), \
        "a Cast between DequantizeLinear and its convolution would stop TensorRT fusing the pair into INT8"

    # Weights of near-dead channels (float32 scales down to 1e-11, below float16's smallest normal)
    # are quantised again against the clamped scale and dequantize to what they did, to its step.
    src_inits = {i.name: onnx.numpy_helper.to_array(i) for i in source.graph.initializer}
    src_nodes = {n.name: n for n in source.graph.node}
    clamped = 0
    for dq in (n for n in half.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits):
        src = src_nodes[dq.name]
        scale = inits[dq.input[1]].astype(np.float64).reshape(-1, *[1] * (inits[dq.input[0]].ndim - 1))
        before_scale = src_inits[src.input[1]].astype(np.float64).reshape(scale.shape)
        before = src_inits[src.input[0]] * before_scale
        after = inits[dq.input[0]] * scale
        assert np.all(np.abs(after - before) <= scale / 2 + 1e-3 * np.abs(before)), dq.name
        clamped += int((before_scale < np.finfo(np.float16).tiny).sum())
    assert clamped > 0, "the real model has near-dead channels; this check would not see the clamp otherwise"

    # ONNX Runtime's graph optimiser mis-fuses float16 Q/DQ on the CPU (embeddings off by 200%), so it
    # is off here (ONNX's semantics are what TensorRT builds from; ONNX Runtime still casts around ops
    # it has no float16 kernel for, so this checks float16 rounding between ops).
    ort_float16_qdq()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(half.SerializeToString(), options, providers=["CPUExecutionProvider"])
    frames, _ = frames_and_labels
    out = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"image": frames})))
    assert out["embeddings"].dtype == np.float32
    got = models.score_features(load_scorer_from_onnx(int8_featurizer)[0], out)
    models.assert_scores_close(got["score"], torch_reference["score"], rtol=0.15)
    assert scipy.stats.spearmanr(got["score"], torch_reference["score"]).statistic >= 0.8


def test_a_quantised_onnx_is_built_as_int8_only(fake_tensorrt, int8_featurizer, tmp_path):
    """Its Q/DQ nodes fix the precision: an fp16 or fp32 build of it is refused, not quietly made."""
    from edgecmg.config import EngineConfig
    from edgecmg.engine import build_engine
    from edgecmg.errors import EngineBuildError

    trt = fake_tensorrt()
    for precision in ("fp16", "fp32"):
        with pytest.raises(EngineBuildError, match="is quantised .Q/DQ nodes.: build it with precision='int8' .--precision int8."):
            build_engine(int8_featurizer, EngineConfig(precision=precision), tmp_path / "m.engine")
    assert not trt.builds and not (tmp_path / "m.engine").exists()


def test_int8_on_a_dla_needs_a_tensorrt_that_puts_strongly_typed_networks_there(fake_tensorrt, int8_featurizer,
                                                                                 tmp_path):
    """INT8 engines are strongly typed; TensorRT 10 builds DLA engines from precision flags, and only
    11.4.1 places strongly typed networks on a DLA: before it, the build is refused with the FP16 way."""
    from edgecmg.config import EngineConfig
    from edgecmg.engine import build_engine
    from edgecmg.engine_file import read_engine_header
    from edgecmg.errors import EngineBuildError

    trt = fake_tensorrt(version="10.3.0.26", dla_cores=2)
    with pytest.raises(EngineBuildError, match=r"INT8 on DLA core 1 needs TensorRT 11\.4\.1 or later.*"
                                               r"TensorRT 10\.3\.0\.26 cannot place on a DLA.*"
                                               r"--precision fp16 --dla 1"):
        build_engine(int8_featurizer, EngineConfig(precision="int8", dla_core=1), tmp_path / "m.engine")
    assert not trt.builds and not (tmp_path / "m.engine").exists()
    build_engine(int8_featurizer, EngineConfig(precision="int8"), tmp_path / "gpu.engine")  # the GPU: built
    # 11.4.0 has DLA on Windows on ARM only; were a Jetson to report cores, INT8 is still refused there
    fake_tensorrt(version="11.4.0.9", fp16_flag=False, int8_flag=False, explicit_batch=False, dla_cores=2)
    with pytest.raises(EngineBuildError, match=r"needs TensorRT 11\.4\.1 or later.*TensorRT 11\.4\.0\.9 cannot"):
        build_engine(int8_featurizer, EngineConfig(precision="int8", dla_core=0), tmp_path / "m.engine")
    fake_tensorrt(version="10.3.0.26", dla_cores=0)  # a desktop GPU: the missing core is said first
    with pytest.raises(EngineBuildError, match="DLA core 0 requested but this device has 0 DLA core"):
        build_engine(int8_featurizer, EngineConfig(precision="int8", dla_core=0), tmp_path / "m.engine")
    trt = fake_tensorrt(version="11.4.1.2", fp16_flag=False, int8_flag=False, explicit_batch=False, dla_cores=2)
    build_engine(int8_featurizer, EngineConfig(precision="int8", dla_core=1), tmp_path / "m.engine")
    assert trt.builds[-1]["strongly_typed"] and trt.builds[-1]["device"] == "DLA"
    assert read_engine_header(tmp_path / "m.engine")["dla_core"] == 1


@pytest.mark.parametrize("flavour,graph", [("10", "featurizer"), ("11", "featurizer"), ("11", "full")])
def test_int8_engine_build_casts_the_float_layers(fake_tensorrt, request, frames_and_labels, torch_reference,
                                                  tmp_path, flavour, graph, ort_float16_qdq):
    import fake_tensorrt as fake

    from edgecmg.config import EngineConfig
    from edgecmg.engine import build_engine
    from edgecmg.engine_file import read_engine_file
    from edgecmg.runtime.tensorrt_runner import TensorRTRunner

    source = request.getfixturevalue("int8_featurizer" if graph == "featurizer" else "int8_full")
    kwargs = {} if flavour == "10" else dict(version="11.0.0.1", fp16_flag=False, int8_flag=False, explicit_batch=False)
    trt = fake_tensorrt(**kwargs)
    engine = build_engine(source, EngineConfig(precision="int8", max_batch=4), tmp_path / "m.engine")
    record = trt.builds[-1]
    # no precision flag on a strongly typed network (TF32 is TensorRT's default, not a precision choice)
    assert record["strongly_typed"] and record["builder_flags"] == ["TF32"]
    header, _, plan = read_engine_file(engine)
    assert header["precision"] == "int8" and header["fp16_cast_pass"] is True
    network = fake.network_of(plan)
    assert is_quantized(network) and check_onnx_for_tensorrt(network, max_batch=4) == []
    dq_scales = {n.input[1] for n in network.graph.node if n.op_type == "DequantizeLinear"}
    assert {i.data_type for i in network.graph.initializer if i.name in dq_scales} == {onnx.TensorProto.FLOAT16}
    scorer_weights = {n.input[1] for n in network.graph.node
                      if n.name.startswith(SCORER_PREFIX) and n.op_type in ("MatMul", "Gemm")}
    assert {i.data_type for i in network.graph.initializer if i.name in scorer_weights} <= {onnx.TensorProto.FLOAT}
    # the fake engine runs that network with ONNX Runtime, graph optimisation off
    ort_float16_qdq()
    with TensorRTRunner(engine, memory=fake.HostMemory) as runner:
        out = runner.infer(frames_and_labels[0])
        got = models.score_features(runner.host_scorer(), out) if runner.produces_features else out
    models.assert_scores_close(got["score"], torch_reference["score"], rtol=0.15)


def test_tensorrt_provider_runs_int8_float_layers_in_fp16(int8_featurizer, int8_full, featurizer_onnx, tmp_path):
    from edgecmg.runtime.onnx_runner import OnnxRunner

    def trt_options(path, **kwargs):
        runner = OnnxRunner(path, provider="tensorrt", trt_cache_dir=tmp_path, **kwargs)
        return dict(runner._providers()[0][1])

    # as `edgecmg build --precision int8` does; an FP32 export stays FP32 unless asked
    assert trt_options(int8_featurizer)["trt_fp16_enable"] is True
    assert trt_options(featurizer_onnx)["trt_fp16_enable"] is False
    assert trt_options(int8_featurizer, fp16=False)["trt_fp16_enable"] is False
    # a full graph's scorer would be FP16 too: the provider has no per-layer precision
    assert trt_options(int8_full)["trt_fp16_enable"] is False and trt_options(int8_full)["trt_int8_enable"] is True
    # Q/DQ layers in a weakly typed network need TensorRT's INT8 flag
    assert trt_options(int8_featurizer)["trt_int8_enable"] is True
    assert trt_options(featurizer_onnx)["trt_int8_enable"] is False
    # both caches in edgecmg's folder: without a path the timing cache lands in the working directory
    assert trt_options(featurizer_onnx)["trt_timing_cache_path"] == str(tmp_path)
    assert trt_options(featurizer_onnx)["trt_engine_cache_path"] == str(tmp_path)


def test_cache_is_reused_and_invalidated(int8_featurizer, artifact_path, train_dir, tmp_path, monkeypatch):
    import edgecmg.calibration.quantize as qmod

    cache = default_cache_path(int8_featurizer)
    assert cache.is_file() and CalibrationCache.load(cache).key["method"] == "minmax"
    out = tmp_path / "again.int8.onnx"
    shutil.copy(cache, default_cache_path(out))

    def no_calibration(*args, **kwargs):
        raise AssertionError("ranges should have come from the cache")

    monkeypatch.setattr(qmod, "compute_ranges", no_calibration)
    calibrate(artifact_path, train_dir, out, method="minmax", samples=SAMPLES, progress=False)

    def activation_scales(path):  # QuantizeLinear scales by quantised tensor: the calibrated ranges
        model = onnx.load(str(path))
        inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
        return {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node if n.op_type == "QuantizeLinear"}

    assert activation_scales(out) == activation_scales(int8_featurizer)  # written from the cached ranges
    # a cache written before the number of images read was recorded: the run says how many were asked for
    import json

    cached = json.loads(default_cache_path(out).read_text())
    del cached["images_read"]
    default_cache_path(out).write_text(json.dumps(cached))
    calibrate(artifact_path, train_dir, out, method="minmax", samples=SAMPLES, progress=False)
    assert read_onnx_header(out)["quantization"]["samples"] == SAMPLES
    with pytest.raises(AssertionError, match="from the cache"):  # other sample count: recalibrates
        calibrate(artifact_path, train_dir, out, method="minmax", samples=SAMPLES + 1, progress=False)



def test_the_cpu_profiles_percentile_cache_is_reused(artifact_path, train_dir, tmp_path, monkeypatch, caplog):
    """Its ranges hold constant tensors' the wrong way round ([6.0, 5.994]): a check that refused them
    made every second cpu-profile run calibrate again, saying the cache was damaged."""
    import edgecmg.calibration.quantize as qmod

    out = tmp_path / "m.cpu.int8.onnx"
    calibrate(artifact_path, train_dir, out, method="percentile", samples=SAMPLES, profile="cpu", progress=False)

    def no_calibration(*args, **kwargs):
        raise AssertionError("ranges should have come from the cache")

    monkeypatch.setattr(qmod, "compute_ranges", no_calibration)
    with caplog.at_level("WARNING", logger="edgecmg"):
        calibrate(artifact_path, train_dir, out, method="percentile", samples=SAMPLES, profile="cpu", progress=False)
    assert "recalibrating" not in caplog.text
    # Built for TensorRT, its uint8 activations failed at parsing after a warning a node: refused first.
    from edgecmg.config import EngineConfig
    from edgecmg.engine import build_engine
    from edgecmg.errors import EngineBuildError

    with pytest.raises(EngineBuildError, match=r"calibrated for ONNX Runtime on a CPU \(`--profile cpu`"):
        build_engine(out, EngineConfig(precision="int8"), tmp_path / "m.engine")


def test_asymmetric_ranges_of_the_cpu_profile_are_not_reused_for_tensorrt(artifact_path, train_dir, tmp_path,
                                                                            monkeypatch):
    """The cpu profile's ranges are asymmetric (uint8 activations); TensorRT's Q/DQ needs symmetric ones:
    the same method on the same images must calibrate again."""
    import edgecmg.calibration.quantize as qmod

    out = tmp_path / "m.int8.onnx"
    calibrate(artifact_path, train_dir, out, method="minmax", samples=SAMPLES, profile="cpu", progress=False)
    assert CalibrationCache.load(default_cache_path(out)).key["symmetric"] is False

    def no_calibration(*args, **kwargs):
        raise AssertionError("ranges should have come from the cache")

    monkeypatch.setattr(qmod, "compute_ranges", no_calibration)
    with pytest.raises(AssertionError, match="from the cache"):
        calibrate(artifact_path, train_dir, out, method="minmax", samples=SAMPLES, profile="tensorrt", progress=False)

def test_data_fingerprint_follows_each_files_name_size_and_modification_time(tmp_path, train_dir):
    """A calibration cache is keyed by the images' fingerprint: an image replaced by another of the same
    size (a re-export, a new capture under the old name) must still change it, by its mtime."""
    import os

    from edgecmg.calibration.data import fingerprint

    paths = []
    for source in sorted(train_dir.iterdir())[:2]:
        paths.append(tmp_path / source.name)
        paths[-1].write_bytes(source.read_bytes())
    before = fingerprint(paths)
    assert fingerprint(paths) == before and fingerprint(paths[::-1]) != before
    stat = paths[1].stat()
    os.utime(paths[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert paths[1].stat().st_size == stat.st_size and fingerprint(paths) != before


def test_cache_mismatch_reasons():
    cache = CalibrationCache({"method": "entropy", "samples": 8}, {"a": (0.0, 1.0)})
    assert cache.mismatch({"method": "entropy", "samples": 8}, ["a"]) is None
    assert "method" in cache.mismatch({"method": "minmax", "samples": 8}, ["a"])
    assert "missing" in cache.mismatch({"method": "entropy", "samples": 8}, ["a", "b"])
    # a key the cache records and this run does not (written by an edgecmg keyed on more) is a mismatch too
    recorded_more = CalibrationCache({"method": "entropy", "samples": 8, "graph_sha256": "ab"}, {"a": (0.0, 1.0)})
    assert "graph_sha256 differs" in recorded_more.mismatch({"method": "entropy", "samples": 8}, ["a"])


def test_a_cache_file_of_another_shape_is_recalibrated_not_a_crash(tmp_path, caplog):
    path = tmp_path / "q.calib.json"
    for text in ("[1]", '{"format": "edgecmg-calibration-cache", "version": 1, "key": {}, "ranges": [1, 2]}',
                 '{"format": "edgecmg-calibration-cache", "version": 1, "key": 3, "ranges": {}}', "{tru"):
        path.write_text(text)
        caplog.clear()
        assert CalibrationCache.load(path) is None
        assert "recalibrating" in caplog.text
    path.write_text('{"format": "edgecmg-calibration-cache", "version": 2, "key": {}, "ranges": {}}')
    caplog.clear()
    assert CalibrationCache.load(path) is None and "(or a newer one)" in caplog.text
    saved = CalibrationCache({"method": "minmax"}, {"a": (0.0, 1.0)}, 8).save(path)
    assert CalibrationCache.load(saved) == CalibrationCache({"method": "minmax"}, {"a": (0.0, 1.0)}, 8)
    assert [p.name for p in tmp_path.iterdir()] == ["q.calib.json"]


@pytest.mark.parametrize("bad", ["[NaN, 1.0]", "[-1.0, Infinity]", "[-1e38, 1e38]", "[0.0, 65505.0]", "[-65505.0, 0.0]"])
def test_a_cache_range_no_engine_could_have_is_recalibrated_not_used(tmp_path, caplog, bad):
    """A damaged or edited range (NaN, 1e38) made an assertion deep in the quantiser, or an INT8 model
    that flagged every part. A constant tensor's range written the wrong way round by the percentile
    calibrator ([6.0, 5.994]) is kept: refusing it made every cpu-profile cache recalibrate."""
    path = tmp_path / "q.calib.json"
    head = '{"format": "edgecmg-calibration-cache", "version": 1, "key": {}, "ranges": '
    path.write_text(head + '{"a": [-84.7, 85.5], "b": ' + bad + '}}')
    assert CalibrationCache.load(path) is None
    assert "holds the range" in caplog.text and "for b, which no activation of a working engine has" in caplog.text
    path.write_text(head + '{"a": [-84.7, 85.5], "b": [-65504.0, 65504.0], "relu6": [6.0, 5.994]}}')
    assert CalibrationCache.load(path).ranges == {"a": (-84.7, 85.5), "b": (-65504.0, 65504.0), "relu6": (6.0, 5.994)}


def test_full_graph_int8_keeps_scoring_in_float(int8_full, frames_and_labels, torch_reference):
    out = int8_full
    model = onnx.load(str(out))
    assert [o.name for o in model.graph.output] == ["score", "anomaly_map", "kept_mask"]
    scorer_nodes = [n for n in model.graph.node if n.name.startswith(SCORER_PREFIX)]
    assert scorer_nodes and not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in scorer_nodes)
    assert check_onnx_for_tensorrt(model) == []
    # the graph scores inside: it does not carry the featurizer's scorer payload for host scoring
    from edgecmg.errors import ArtifactError
    from edgecmg.export import SCORER_KEY

    assert SCORER_KEY not in {p.key for p in model.metadata_props}
    with pytest.raises(ArtifactError, match="scores inside"):
        load_scorer_from_onnx(out)
    frames, _ = frames_and_labels
    with make_runner(out, "onnxruntime", "cpu") as runner:
        got = runner.infer(frames)
    models.assert_scores_close(got["score"], torch_reference["score"], rtol=0.15)


def test_cpu_profile_is_onnxruntime_shaped(artifact_path, train_dir, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="edgecmg"):
        out = calibrate(artifact_path, train_dir, tmp_path / "cpu.int8.onnx", method="minmax", samples=SAMPLES,
                        profile="cpu", progress=False)
    assert caplog.text == ""  # TensorRT's Q/DQ rules are not this profile's: no warnings about them
    model = onnx.load(str(out))
    zero_points = [onnx.numpy_helper.to_array(i) for i in model.graph.initializer if i.name.endswith("_zero_point")]
    assert any(z.dtype == np.uint8 for z in zero_points)
    assert any("zero point is not 0" in p or "UINT8" in p for p in check_onnx_for_tensorrt(model))
    # reduce_range by default on the cpu profile: 7-bit weights (x86 without VNNI saturates 8-bit pairs)
    weights = [onnx.numpy_helper.to_array(i) for i in model.graph.initializer
               if i.data_type == onnx.TensorProto.INT8 and i.dims and len(i.dims) == 4]
    assert weights and max(int(np.abs(w.astype(np.int16)).max()) for w in weights) <= 64
    assert read_onnx_header(out)["quantization"]["reduce_range"] is True


def test_backbone_region(featurizer_onnx):
    model = onnx.load(str(featurizer_onnx))
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    region = backbone_region(model)
    assert set(convs) <= set(region)
    kinds = {n.op_type for n in model.graph.node if n.name in region}
    assert kinds <= {"Conv", "Clip", "Add"}
    # With the first 6 convolutions (stem, blocks 0-1) float, their activations stay float with them:
    # the ReLU6 Clips they feed, and nothing else (blocks 0-1 have no residual Add).
    producer_of = {out: n for n in model.graph.node for out in n.output}
    float_clips = {n.name for n in model.graph.node
                   if n.op_type == "Clip" and producer_of[n.input[0]].name in set(convs[:6])}
    assert len(float_clips) == 4  # after the stem, block 0's depthwise, block 1's expand and depthwise
    assert set(backbone_region(model, 6)) == set(region) - set(convs[:6]) - float_clips


def test_backbone_region_leaves_convolutions_outside_the_backbone_float():
    """A CLIP matcher's patch embedding is a Conv of the matching head: only /backbone/ convolutions
    (and what lies between them) are quantised."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="/backbone/conv1"),
             helper.make_node("Relu", ["a"], ["b"], name="/backbone/relu"),
             helper.make_node("Conv", ["b", "w2"], ["c"], name="/backbone/conv2"),
             helper.make_node("Conv", ["c", "w3"], ["y"], name="/matcher/patch_embed")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph)
    assert backbone_region(model) == ["/backbone/conv1", "/backbone/relu", "/backbone/conv2"]
    assert backbone_region(model, 1) == ["/backbone/conv2"]


def test_reader_selection_and_skips(tmp_path, train_dir):
    images = sorted(train_dir.iterdir())[:5]
    for p in images:
        shutil.copy(p, tmp_path / p.name)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    chosen = select_images(tmp_path, 4, seed=1)
    assert len(chosen) == 4 and chosen == select_images(tmp_path, 4, seed=1) and chosen == sorted(chosen)
    reader = ImageFolderReader(select_images(tmp_path, 10), (64, 32), progress=False)
    batches = []
    while (item := reader.get_next()) is not None:
        batches.append(item["image"])
    assert len(batches) == 5 and all(b.shape == (1, 64, 32, 3) and b.dtype == np.uint8 for b in batches)
    with pytest.raises(DataError):
        select_images(tmp_path / "nope", 4)
    (tmp_path / "empty" / "sub").mkdir(parents=True)  # named as a folder, not as a '**/*' pattern never given
    with pytest.raises(DataError, match=r"no image files in .*empty or its sub-folders") as caught:
        select_images(tmp_path / "empty", 4)
    assert "pattern" not in str(caught.value)


def test_sub_folders_a_folder_of_images_leaves_unread_are_named(tmp_path, train_dir, caplog):
    """A folder's own images win over its sub-folders': those left out are said, not dropped unsaid."""
    images = sorted(train_dir.iterdir())[:6]
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "no_images").mkdir()
    for p in images[:4]:
        shutil.copy(p, tmp_path / p.name)
    for p in images[4:]:
        shutil.copy(p, tmp_path / "sub" / "deeper" / p.name)
    with caplog.at_level("INFO", logger="edgecmg"):
        chosen = select_images(tmp_path, 10)
    assert [p.name for p in chosen] == [p.name for p in images[:4]]
    assert "holds images of its own, so its sub-folders (sub) are not read" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="edgecmg"):
        assert len(select_images(str(tmp_path / "**" / "*"), 10)) == 6  # a glob reads what it matches
    assert "not read" not in caplog.text


def test_fewer_images_than_asked_for_is_said(tmp_path, train_dir, caplog):
    for p in sorted(train_dir.iterdir())[:3]:
        shutil.copy(p, tmp_path / p.name)
    with caplog.at_level("WARNING", logger="edgecmg"):
        chosen, spares = select_with_spares(tmp_path, 8)
    assert len(chosen) == 3 and spares == []
    assert "holds 3 images, fewer than the 8 asked for" in caplog.text and str(tmp_path) in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="edgecmg"):
        select_with_spares(tmp_path, 3)
    assert caplog.text == ""


def test_a_second_draw_without_report_says_nothing_and_draws_the_same(tmp_path, train_dir, caplog):
    """calibrate's check draws calibrate's images again: its notes were logged by the first draw."""
    for p in sorted(train_dir.iterdir())[:3]:
        shutil.copy(p, tmp_path / p.name)
    (tmp_path / "sub").mkdir()
    shutil.copy(next(train_dir.iterdir()), tmp_path / "sub" / "x.png")
    with caplog.at_level("INFO", logger="edgecmg"):
        first = select_with_spares(tmp_path, 8)
    assert "fewer than the 8 asked for" in caplog.text and "sub-folders (sub) are not read" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="edgecmg"):
        assert select_with_spares(tmp_path, 8, report=False) == first
        select_with_spares([tmp_path / "gone.png", *first[0]], 8, report=False)  # a path left out, too few
    assert caplog.text == ""


def test_unreadable_calibration_images_are_replaced_by_spares(tmp_path, train_dir):
    for p in sorted(train_dir.iterdir())[:6]:
        shutil.copy(p, tmp_path / p.name)
    for name in ("broken-a.png", "broken-b.png"):
        (tmp_path / name).write_bytes(b"\x89PNG not really")
    chosen, spares = select_with_spares(tmp_path, 5, seed=0)
    assert chosen == select_images(tmp_path, 5, seed=0) and sorted(chosen + spares) == sorted(tmp_path.iterdir())
    assert select_with_spares(tmp_path, 5, seed=0) == (chosen, spares)  # seeded: the same spares every run
    # make sure both broken files are among the chosen five: the reader must still hand out five frames
    chosen = [tmp_path / "broken-a.png", tmp_path / "broken-b.png"] + [p for p in chosen if "broken" not in p.name][:3]
    spares = [p for p in sorted(tmp_path.iterdir()) if p not in chosen]
    reader = ImageFolderReader(chosen, (64, 32), spares=spares, progress=False)
    frames = []
    while (item := reader.get_next()) is not None:
        frames.append(item["image"])
    assert len(frames) == reader.used == 5
    # spares run out: what could be read is used, and counted
    reader = ImageFolderReader(chosen, (64, 32), progress=False)
    while reader.get_next() is not None:
        pass
    assert reader.used == 3


def test_argument_checks(artifact_path, train_dir, tmp_path):
    with pytest.raises(ConfigError, match="method"):
        calibrate(artifact_path, train_dir, tmp_path / "x.onnx", method="kl")
    with pytest.raises(ConfigError, match="profile"):
        calibrate(artifact_path, train_dir, tmp_path / "x.onnx", profile="gpu")
    with pytest.raises(ConfigError, match=r"must end in \.onnx"):
        calibrate(artifact_path, train_dir, tmp_path / "x.int8")


def test_calibrate_without_onnxruntime_says_what_to_install_before_making_a_folder(artifact_path, train_dir,
                                                                                  tmp_path, monkeypatch):
    """onnxruntime calibrates; missing, it was a bare ModuleNotFoundError from the cache key's version
    lookup, after the output folder had been made."""
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # an import of it then fails
    monkeypatch.setitem(sys.modules, "onnxruntime.quantization", None)
    with pytest.raises(BackendUnavailableError, match=r"onnxruntime.*pip install -e '\.\[onnx\]'"):
        calibrate(artifact_path, train_dir, tmp_path / "out" / "m.int8.onnx", samples=4, progress=False)
    assert not (tmp_path / "out").exists()


def test_calibrate_without_onnx_says_what_to_install_before_making_a_folder(artifact_path, train_dir, tmp_path,
                                                                           monkeypatch, capsys):
    """A wheel installed without [onnx]: `edgecmg calibrate` ended in a ModuleNotFoundError traceback
    (exit 1) instead of the one-line error (exit 2) that names the extra."""
    import sys

    from edgecmg.cli import main

    monkeypatch.setitem(sys.modules, "onnx", None)  # an import of it then fails
    with pytest.raises(BackendUnavailableError, match=r"cannot import onnx.*pip install 'onnx>=1\.15'"):
        calibrate(artifact_path, train_dir, tmp_path / "out" / "m.int8.onnx", samples=4, progress=False)
    assert not (tmp_path / "out").exists()
    assert main(["-q", "calibrate", str(artifact_path), "--data", str(train_dir), "-o",
                 str(tmp_path / "out" / "m.int8.onnx")]) == 2
    assert "Traceback" not in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_detector_reports_the_precision_of_the_file(int8_featurizer, featurizer_onnx):
    from edgecmg.detector import Detector

    with Detector.load(int8_featurizer, backend="onnxruntime") as det:
        assert det.precision == "int8"
    with Detector.load(featurizer_onnx, backend="onnxruntime") as det:
        assert det.precision == "fp32"


def test_cli_calibrate_cpu_profile_full_graph_with_the_profile_default_method(artifact_path, train_dir, tmp_path):
    from edgecmg.calibration import DEFAULT_METHOD
    from edgecmg.cli import main

    out = tmp_path / "cli.cpu.int8.onnx"
    assert main(["-q", "calibrate", str(artifact_path), "--data", str(train_dir), "--samples", "4",
                 "--profile", "cpu", "--with-scoring", "-o", str(out)]) == 0
    header = read_onnx_header(out)
    assert header["quantization"]["profile"] == "cpu"
    assert header["quantization"]["method"] == DEFAULT_METHOD["cpu"] == "percentile"
    assert header["export"]["graph"] == "full"
    runner = make_runner(str(out), backend="onnxruntime")
    assert not runner.produces_features  # scoring inside the graph


def test_cli_calibrate_to_an_unwritable_place_fails_first_and_clearly(artifact_path, train_dir, tmp_path, capsys,
                                                                        monkeypatch):
    # Was a FileNotFoundError traceback from the cache's write, after the calibration pass.
    import edgecmg.calibration.quantize as qmod
    from edgecmg.cli import main

    def no_pass(*args, **kwargs):
        raise AssertionError("calibrated before checking the output's place")

    monkeypatch.setattr(qmod, "compute_ranges", no_pass)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["-q", "calibrate", str(artifact_path), "--data", str(train_dir), "--samples", "4",
                 "-o", str(blocker / "m.int8.onnx")]) == 2
    assert f"cannot write the model file {blocker / 'm.int8.onnx'}" in capsys.readouterr().err


def test_cli_choices_are_the_calibration_modules_own():
    # The CLI spells them out so that building the parser does not import the calibration package
    # (OpenCV, numpy); this keeps the two lists from drifting apart.
    from edgecmg.calibration import METHODS, PROFILES
    from edgecmg.cli import build_parser

    calibrate = build_parser()._subparsers._group_actions[0].choices["calibrate"]
    options = {a.dest: a.choices for a in calibrate._actions}
    assert tuple(options["method"]) == METHODS
    assert tuple(options["profile"]) == PROFILES


def test_cli_calibrate_defaults_to_the_modules_sample_count(monkeypatch, tmp_path, capsys):
    import edgecmg.calibration as calibration
    from edgecmg.cli import build_parser, main

    seen = {}

    def record(*args, **kwargs):
        seen.update(kwargs)
        return tmp_path / "x.onnx"

    monkeypatch.setattr(calibration, "calibrate", record)
    assert main(["-q", "calibrate", "m.edgecmg", "--data", str(tmp_path), "-o", str(tmp_path / "x.onnx"),
                 "--no-check"]) == 0
    assert seen["samples"] == calibration.DEFAULT_SAMPLES
    assert main(["-q", "calibrate", "m.edgecmg", "--data", str(tmp_path), "--samples", "7",
                 "-o", str(tmp_path / "x.onnx"), "--no-check"]) == 0
    assert seen["samples"] == 7
    calibrate_parser = build_parser()._subparsers._group_actions[0].choices["calibrate"]
    help_text = next(a.help for a in calibrate_parser._actions if a.dest == "samples")
    assert f"= {calibration.DEFAULT_SAMPLES}" in help_text


def test_an_mvtec_root_calibrates_on_its_normal_training_parts(kolektor_root):
    chosen = select_images(kolektor_root, 1000)
    assert chosen == sorted((kolektor_root / "train" / "good").iterdir())  # no test defects, no masks


def _add_graph(path, width):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "zero"], ["y"], name="add")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])],
        [numpy_helper.from_array(np.zeros((1, width), np.float32), "zero")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_entropy_ranges_clip_an_outlier_that_minmax_keeps(tmp_path):
    # ONNX Runtime's entropy calibrator at its default 128 bins returned the min-max range; with the
    # 2,048 bins edgecmg asks for, a lone outlier no longer stretches the range.
    import numpy as np

    from edgecmg.calibration.quantize import compute_ranges

    path = _add_graph(tmp_path / "add.onnx", 40000)
    values = np.random.default_rng(0).laplace(0.0, 1.0, (1, 40000)).astype(np.float32)
    values[0, 0] = 40.0

    class Reader:
        def __init__(self):
            self.batches = [{"x": values}]

        def get_next(self):
            return self.batches.pop() if self.batches else None

        def rewind(self):
            self.batches = [{"x": values}]

    highs = {}
    for method in ("minmax", "entropy"):
        work = tmp_path / method
        work.mkdir()
        highs[method] = compute_ranges(path, Reader(), method, ("Add",), symmetric=True, work_dir=work)["y"][1]
    assert highs["minmax"] == pytest.approx(40.0)
    assert 5.0 < highs["entropy"] < 20.0, highs


@pytest.mark.parametrize("frames", [5, 4])  # a last chunk part-full, and frames filling whole chunks
def test_ranges_are_collected_a_chunk_at_a_time(tmp_path, monkeypatch, frames):
    # ONNX Runtime's calibrators keep every activation of one collect_data call: 256 images of a
    # 416x160 model needed 22 GB. edgecmg hands them chunks, and the ranges still cover every frame.
    import numpy as np
    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    from edgecmg.calibration import quantize as qmod

    path = _add_graph(tmp_path / "add.onnx", 1000)
    batches = [np.random.default_rng(i).normal(0.0, 1.0, (1, 1000)).astype(np.float32) for i in range(frames)]
    batches[-1][0, 0] = 50.0  # the widest value arrives in the last chunk
    held = []

    class Reader:
        def __init__(self, calibrator=None):
            self.left = list(batches)
            self.calibrator = calibrator

        def get_next(self):
            if self.calibrator is not None:  # what ONNX Runtime holds when the next frame is asked for
                held.append(len(self.calibrator.intermediate_outputs))
            return {"x": self.left.pop(0)} if self.left else None

    monkeypatch.setattr(qmod, "CHUNK_IMAGES", 2)
    for method in ("minmax", "percentile"):
        work = tmp_path / method
        work.mkdir()
        ranges = qmod.compute_ranges(path, Reader(), method, ("Add",), symmetric=True, work_dir=work)
        if method == "minmax":
            assert ranges["y"][1] == pytest.approx(50.0)
        else:
            assert 3.0 < ranges["y"][1] < 50.0, ranges

    calibrator = create_calibrator(path, ["Add"], augmented_model_path=str(tmp_path / "aug.onnx"),
                                   calibrate_method=CalibrationMethod.MinMax)
    qmod._collect_in_chunks(calibrator, Reader(calibrator), 2)
    assert max(held) <= 2, held
    assert calibrator.compute_data().data["y"].range_value[1] == pytest.approx(50.0)


def test_a_list_of_image_paths_calibrates_as_a_folder_of_them_does(tmp_path, train_dir, caplog):
    images = sorted(train_dir.iterdir())[:6]
    for p in images:
        shutil.copy(p, tmp_path / p.name)
    given = [str(tmp_path / p.name) for p in images]
    assert select_with_spares(given, 4, seed=1) == select_with_spares(tmp_path, 4, seed=1)
    with caplog.at_level("WARNING", logger="edgecmg"):
        chosen, spares = select_with_spares(given[:2], 4)
    assert chosen == [Path(p) for p in given[:2]] and spares == []
    assert "the image list holds 2 images, fewer than the 4 asked for" in caplog.text
    with pytest.raises(DataError, match="no calibration images given"):
        select_with_spares([], 4)
    caplog.clear()
    with caplog.at_level("WARNING", logger="edgecmg"):
        chosen, _ = select_with_spares([*given[:3], str(tmp_path / "gone.png"), str(tmp_path)], 2, seed=1)
    assert len(chosen) == 2 and set(chosen) <= {Path(p) for p in given[:3]}
    assert "2 of the 5 paths given are not files and are left out" in caplog.text and "gone.png" in caplog.text


def test_one_unreadable_image_without_a_spare_is_said(artifact_path, train_dir, tmp_path, caplog):
    """Every readable image is used, and the ranges' image count (what the header records) says one
    was missing, even when only one was."""
    folder = tmp_path / "images"
    folder.mkdir()
    for p in sorted(train_dir.iterdir())[:3]:
        shutil.copy(p, folder / p.name)
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    with caplog.at_level("WARNING", logger="edgecmg"):
        out = calibrate(artifact_path, folder, tmp_path / "m.int8.onnx", method="minmax", samples=4,
                        progress=False)
    assert "calibration: 3 of the 4 images asked for were readable; the ranges come from 3" in caplog.text
    assert read_onnx_header(out)["quantization"]["samples"] == 3
    assert onnx.load(str(out)).doc_string.endswith("minmax calibration on 3 images)")  # read, not asked


def test_tensorrt_ranges_are_symmetric(int8_featurizer):
    """TensorRT's Q/DQ is symmetric int8: every range calibrated for the tensorrt profile is (-m, m)."""
    ranges = CalibrationCache.load(default_cache_path(int8_featurizer)).ranges
    assert ranges and all(lo == -hi for lo, hi in ranges.values())


def test_reuse_cache_false_calibrates_again_beside_a_matching_cache(int8_featurizer, artifact_path, train_dir,
                                                                   tmp_path, monkeypatch):
    import edgecmg.calibration.quantize as qmod

    out = tmp_path / "again.int8.onnx"
    shutil.copy(default_cache_path(int8_featurizer), default_cache_path(out))  # it would fit this run

    class Recalibrated(Exception):
        pass

    def recalibrates(*args, **kwargs):
        raise Recalibrated

    monkeypatch.setattr(qmod, "compute_ranges", recalibrates)
    with pytest.raises(Recalibrated):
        calibrate(artifact_path, train_dir, out, method="minmax", samples=SAMPLES, reuse_cache=False, progress=False)


def test_ranges_reused_from_the_cache_keep_the_count_of_images_read(artifact_path, train_dir, tmp_path,
                                                                     monkeypatch):
    """One readable image of the two asked for: the header and description say 1 image (singular),
    and say it again when a later run takes the ranges from the cache."""
    import edgecmg.calibration.quantize as qmod

    folder = tmp_path / "images"
    folder.mkdir()
    good = sorted(train_dir.iterdir())[0]
    shutil.copy(good, folder / good.name)
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "m.int8.onnx"
    for run in ("calibrated", "from the cache"):
        calibrate(artifact_path, folder, out, method="minmax", samples=2, progress=False)
        assert read_onnx_header(out)["quantization"]["samples"] == 1, run
        assert onnx.load(str(out)).doc_string.endswith("minmax calibration on 1 image)"), run

        def no_calibration(*args, **kwargs):
            raise AssertionError("ranges should have come from the cache")

        monkeypatch.setattr(qmod, "compute_ranges", no_calibration)


def test_a_broken_link_among_the_calibration_images_is_skipped_not_the_end(tmp_path, train_dir):
    """The data's fingerprint stat()ed every file: a dangling link ended calibrate with a bare Errno 2
    before the reader could name and skip it."""
    from edgecmg.calibration.data import fingerprint

    for p in sorted(train_dir.iterdir())[:3]:
        shutil.copy(p, tmp_path / p.name)
    os.symlink(tmp_path / "gone.png", tmp_path / "zz_link.png")
    chosen = select_images(tmp_path, 8)
    assert len(chosen) == 4 and fingerprint(chosen) != fingerprint(chosen[:3])
    assert fingerprint([tmp_path / "never_there.png"])  # a file gone meanwhile: still a fingerprint


def test_a_cache_path_that_names_a_model_or_the_output_is_refused_before_any_work(artifact_path, train_dir, tmp_path):
    """calibrate(cache_path=the model) replaced the fitted model with the JSON ranges."""
    out = tmp_path / "m.int8.onnx"
    for cache, said in ((artifact_path, "that names a model file (.edgecmg)"),
                        (tmp_path / "other.onnx", "that names a model file (.onnx)"),
                        (tmp_path / "ranges", "is a folder")):
        if cache.name == "ranges":
            cache.mkdir()
        with pytest.raises(ConfigError, match=re.escape(f"cache_path {cache}") + ".*" + re.escape(said)):
            calibrate(artifact_path, train_dir, out, samples=SAMPLES, cache_path=cache, progress=False)
    assert not out.exists()


def test_cli_calibrate_judges_good_images_with_both_models_and_warns_where_int8_flags_them(
        artifact_path, train_dir, tmp_path, capsys, caplog):
    """A calibration whose ranges clip what good parts show (entropy did this on KolektorSDD: all 16
    good images flagged) wrote a model that fails every part, and nothing said so before the line."""
    from edgecmg.calibration.cache import CalibrationCache
    from edgecmg.cli import main

    out = tmp_path / "m.int8.onnx"
    assert main(["-q", "calibrate", str(artifact_path), "--data", str(train_dir), "--samples", "4",
                 "--method", "minmax", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    checked = re.search(r"check on (\d+) good images \(FP32 on onnxruntime, INT8 on onnxruntime\): scores moved by "
                        r"up to ([0-9.e+-]+) .*flagged: FP32 (\d+), INT8 (\d+)", printed)
    assert checked, printed
    images = len([p for p in train_dir.iterdir() if p.is_file()])
    assert int(checked[1]) == min(16, images) and float(checked[2]) < 1.0  # 4 minmax images move scores little
    assert "flags" not in caplog.text

    # The same calibration with every range cut to a twentieth (what clipping ranges do to a good part)
    cache_path = tmp_path / "m.int8.calib.json"
    cache = CalibrationCache.load(cache_path)
    cache.ranges = {name: (lo / 20, hi / 20) for name, (lo, hi) in cache.ranges.items()}
    cache.save(cache_path)
    caplog.clear()
    with caplog.at_level("WARNING", logger="edgecmg"):
        # exit 1: a `set -e` script must not go on to build and deploy it (the file is kept)
        assert main(["-q", "calibrate", str(artifact_path), "--data", str(train_dir), "--samples", "4",
                     "--method", "minmax", "-o", str(out)]) == 1
    assert out.is_file()
    checked = re.search(r"flagged: FP32 (\d+), INT8 (\d+)", capsys.readouterr().out)
    assert int(checked[2]) > int(checked[1])
    assert f"{out} flags" in caplog.text and "that the FP32 model passes" in caplog.text
    assert f"edgecmg threshold {out} GOOD_IMAGES" in caplog.text

    caplog.clear()
    assert main(["-q", "calibrate", str(artifact_path), "--data", str(train_dir), "--samples", "4",
                 "--method", "minmax", "-o", str(out), "--no-check"]) == 0
    assert "check on" not in capsys.readouterr().out and "flags" not in caplog.text


def test_the_check_fails_where_int8_flags_a_good_image_even_as_it_passes_another(monkeypatch, tmp_path, caplog):
    """Counts alone hid it: INT8 flagging one good image the FP32 model passes while passing one it
    flags left the totals equal, and calibrate exited 0 without a word."""
    import contextlib

    import edgecmg.detector
    import edgecmg.evaluation
    from edgecmg import cli

    good = tmp_path / "test" / "good"  # an MVTec root: the check judges its test/good
    good.mkdir(parents=True)
    monkeypatch.setattr(edgecmg.detector.Detector, "load",
                        classmethod(lambda cls, path, backend="auto": contextlib.nullcontext(path)))
    found = {"images": 16, "skipped": [], "reference_backend": "onnxruntime", "candidate_backend": "onnxruntime",
             "reference_threshold": 5.0, "candidate_threshold": 5.0, "reference_flags": 1, "candidate_flags": 1,
             "newly_flagged": [str(good / "a.png")], "newly_passed": [str(good / "b.png")],
             "max_change": 0.9, "median_change": 0.1}
    monkeypatch.setattr(edgecmg.evaluation, "compare_detectors", lambda *args, **kwargs: found)
    monkeypatch.setattr(cli, "_list_images_or_none", lambda folder: [good / "a.png", good / "b.png"])
    with caplog.at_level("WARNING", logger="edgecmg"):
        assert cli._check_quantization("m.edgecmg", tmp_path / "m.int8.onnx", tmp_path, 4, False) is True
    assert "flags 1 of these 16 good images that the FP32 model passes (a.png)" in caplog.text
    found.update(newly_flagged=[], candidate_flags=0)
    assert cli._check_quantization("m.edgecmg", tmp_path / "m.int8.onnx", tmp_path, 4, False) is False


def test_int8_files_read_without_onnx_as_with_it(int8_featurizer, int8_full):
    """ONNX Runtime's runner reads a sealed export without the onnx package (onnx_header._sealed_header):
    the quantised graphs calibrate wrote give the very header the whole check gives."""
    from edgecmg.onnx_header import _sealed_header

    for path in (int8_featurizer, int8_full):
        header = _sealed_header(Path(path), str(path))
        assert header is not None and header == read_onnx_header(path)
