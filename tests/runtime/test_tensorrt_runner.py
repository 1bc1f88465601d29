"""The TensorRT runner: the real one where TensorRT and a GPU exist, its control flow everywhere
else through the fake ``tensorrt`` module (tests/runtime/fake_tensorrt.py) on host memory."""
from __future__ import annotations

import importlib.util
import sys

import pytest

import fake_tensorrt as fake
from edgecmg.config import EngineConfig
from edgecmg.engine import build_engine
from edgecmg.engine_file import read_engine_file, write_engine_file
from edgecmg.errors import (ArtifactError, BackendUnavailableError, DataError, EdgeCMGError,
                            EngineIncompatibleError)
from edgecmg.runtime.tensorrt_runner import TensorRTRunner


def _tensorrt_importable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


HAVE_TRT = importlib.util.find_spec("tensorrt") is not None and _tensorrt_importable()
needs_tensorrt = pytest.mark.skipif(
    not HAVE_TRT, reason="tensorrt cannot be imported: it is not on the package registries these machines reach "
    "(it ships with JetPack on a Jetson, or NVIDIA's own wheels on a desktop GPU)")


@pytest.fixture
def fake_engine(fake_tensorrt, featurizer_onnx, tmp_path):
    fake_tensorrt()
    return build_engine(featurizer_onnx, EngineConfig(precision="fp32", max_batch=2), tmp_path / "m.engine")


def test_batches_above_the_profile_are_split(fake_engine, frames_and_labels, torch_reference):
    frames, _ = frames_and_labels
    runner = TensorRTRunner(fake_engine, memory=fake.HostMemory)
    with runner:
        out = runner.infer(frames[:5])  # max_batch 2 -> 3 executions
    assert out["embeddings"].shape[0] == 5 and runner.produces_features
    import edgecmg_testmodels as models

    got = models.score_features(runner.host_scorer(), out)
    models.assert_scores_close(got["score"], torch_reference["score"][:5], rtol=1e-4)
    assert runner.metadata["engine"]["precision"] == "fp32"


def test_an_upper_case_engine_suffix_builds_and_runs(fake_tensorrt, featurizer_onnx, frames_and_labels, tmp_path):
    fake_tensorrt()
    path = build_engine(featurizer_onnx, EngineConfig(precision="fp32", max_batch=2), tmp_path / "M.ENGINE")
    frames, _ = frames_and_labels
    with TensorRTRunner(path, memory=fake.HostMemory) as runner:
        assert runner.infer(frames[:1])["embeddings"].shape[0] == 1


def test_engine_from_another_tensorrt_is_refused_on_activate(fake_engine, fake_tensorrt):
    fake_tensorrt(version="11.0.0.1", fp16_flag=False, int8_flag=False, explicit_batch=False)
    runner = TensorRTRunner(fake_engine, memory=fake.HostMemory)
    with pytest.raises(EngineIncompatibleError, match=r"TensorRT 10\.3\.0\.26 built it.*11\.0\.0\.1.*edgecmg build"):
        runner.activate()
    assert not runner.active


def test_a_dla_engine_on_a_device_without_its_core_is_refused_on_activate(fake_tensorrt, featurizer_onnx,
                                                                            frames_and_labels, tmp_path):
    """Same TensorRT, same compute capability (every Orin is 8.7): the DLA core decides."""
    fake_tensorrt(dla_cores=2)
    engine = build_engine(featurizer_onnx, EngineConfig(precision="fp16", dla_core=1), tmp_path / "dla.engine")
    fake_tensorrt(dla_cores=0)  # an Orin Nano
    runner = TensorRTRunner(engine, memory=fake.HostMemory)
    with pytest.raises(EngineIncompatibleError, match=r"runs on DLA core 1, and this device has 0 DLA core.*"
                                                      r"--precision fp16 -o .*dla\.engine"):
        runner.activate()
    assert not runner.active
    fake_tensorrt(dla_cores=2)
    with TensorRTRunner(engine, memory=fake.HostMemory) as runner:
        assert runner.infer(frames_and_labels[0][:1])["embeddings"].shape[0] == 1


def test_corrupt_plan_is_an_incompatibility(fake_engine, tmp_path):
    header, scorer, plan = read_engine_file(fake_engine)
    broken = write_engine_file(tmp_path / "broken.engine", header, b"garbage" + plan, scorer)
    with pytest.raises(EngineIncompatibleError, match="could not deserialize"):
        TensorRTRunner(broken, memory=fake.HostMemory).activate()


def test_a_context_tensorrt_cannot_create_is_an_error_and_releases_the_memory(fake_engine, fake_tensorrt):
    trt = fake_tensorrt()
    trt.context_fails = True  # create_execution_context returns None (device memory exhausted)
    opened = []

    def memory(device):
        opened.append(fake.HostMemory(device))
        return opened[-1]

    runner = TensorRTRunner(fake_engine, memory=memory)
    with pytest.raises(EdgeCMGError, match="could not create an execution context.*device memory"):
        runner.activate()
    assert not runner.active and opened and opened[0].closed


def test_missing_tensorrt_gives_the_jetpack_hint(fake_engine, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    runner = TensorRTRunner(fake_engine, memory=fake.HostMemory)
    with pytest.raises(BackendUnavailableError, match="JetPack"):
        runner.activate()


def test_an_engine_on_a_machine_without_an_nvidia_gpu_says_what_to_judge_with_here(fake_engine, monkeypatch):
    """The error said to pip install TensorRT, which no machine without the GPU can use."""
    from edgecmg.detector import Detector
    from edgecmg.runtime import registry

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setattr(registry, "nvidia_gpu_present", lambda: False)
    with pytest.raises(BackendUnavailableError, match=r"m\.engine is a TensorRT engine, which runs only on an NVIDIA "
                                                      r"GPU, and this machine has none.*judge here with the \.onnx it "
                                                      r"was built from \(or the \.edgecmg\)") as raised:
        Detector.load(fake_engine)
    assert "pip install" not in str(raised.value)
    monkeypatch.setattr(registry, "nvidia_gpu_present", lambda: True)  # a GPU without TensorRT: install it
    with pytest.raises(BackendUnavailableError, match="tensorrt"):
        Detector.load(fake_engine)


def test_runner_input_checks(fake_engine, tmp_path):
    with pytest.raises(DataError, match="CUDA device"):
        TensorRTRunner(fake_engine, device="cpu")
    (tmp_path / "x.onnx").write_bytes(b"")
    with pytest.raises(DataError, match="engine files"):
        TensorRTRunner(tmp_path / "x.onnx")
    (tmp_path / "bare.engine").write_bytes(b"\x00" * 64)
    with pytest.raises(ArtifactError, match="not an edgecmg engine"):
        TensorRTRunner(tmp_path / "bare.engine")


@needs_tensorrt
@pytest.mark.gpu
def test_real_tensorrt_engine_matches_torch(featurizer_onnx, frames_and_labels, torch_reference, tmp_path):
    import edgecmg_testmodels as models

    frames, _ = frames_and_labels
    engine = build_engine(featurizer_onnx, EngineConfig(precision="fp32", max_batch=4), tmp_path / "m.engine")
    with TensorRTRunner(engine) as runner:
        out = runner.infer(frames)
    got = models.score_features(runner.host_scorer(), out)
    models.assert_scores_close(got["score"], torch_reference["score"], rtol=1e-3)


@needs_tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16"])
def test_real_tensorrt_fp16_full_graph(full_onnx, frames_and_labels, torch_reference, tmp_path, precision):
    import edgecmg_testmodels as models

    frames, _ = frames_and_labels
    engine = build_engine(full_onnx, EngineConfig(precision=precision, max_batch=4), tmp_path / "m.engine")
    with TensorRTRunner(engine) as runner:
        out = runner.infer(frames)
    models.assert_scores_close(out["score"], torch_reference["score"], rtol=2e-2)


def test_a_batch_below_the_profile_minimum_is_padded_and_cut(fake_tensorrt, featurizer_onnx, frames_and_labels,
                                                             torch_reference, tmp_path):
    # A fixed-batch engine (as DLA needs) given 1 or 3 frames: padded to 2 per call, the padding's rows cut.
    fake_tensorrt()
    engine = build_engine(featurizer_onnx, EngineConfig(precision="fp32", min_batch=2, max_batch=2),
                          tmp_path / "fixed.engine")
    frames, _ = frames_and_labels
    import edgecmg_testmodels as models

    with TensorRTRunner(engine, memory=fake.HostMemory) as runner:
        for n in (1, 3):
            out = runner.infer(frames[:n])
            assert out["embeddings"].shape[0] == n
            got = models.score_features(runner.host_scorer(), out)
            models.assert_scores_close(got["score"], torch_reference["score"][:n], rtol=1e-4)


def test_a_header_that_disagrees_with_the_plans_profile_is_refused_on_activate(fake_tensorrt, featurizer_onnx,
                                                                               tmp_path):
    fake_tensorrt()
    engine = build_engine(featurizer_onnx, EngineConfig(precision="fp32", min_batch=2, max_batch=2),
                          tmp_path / "fixed.engine")
    header, scorer, plan = read_engine_file(engine)
    for shapes in header["inputs"].values():
        shapes["min"][0] = 1  # a header that disagrees with the engine's profile
    lying = write_engine_file(tmp_path / "lying.engine", header, plan, scorer)
    # Refused when the plan is opened, naming both (it was a DataError at the first batch of 1).
    with pytest.raises(ArtifactError, match=r"lying\.engine: the plan takes 'image' from \[2, 256, 96, 3\] to "
                                            r"\[2, 256, 96, 3\], but its header gives \[1, 256, 96, 3\]"):
        TensorRTRunner(lying, memory=fake.HostMemory).activate()


def test_each_thread_that_runs_the_engine_makes_its_device_current_first(fake_engine, frames_and_labels):
    """CUDA's current device is per thread: a stream's inference thread started on device 0, and
    TensorRT would have enqueued a cuda:1 engine there."""
    import threading

    frames, _ = frames_and_labels
    with TensorRTRunner(fake_engine, memory=fake.HostMemory) as runner:
        runner.infer(frames[:1])
        other = threading.Thread(target=runner.infer, args=(frames[:1],))
        other.start()
        other.join()
        assert runner._memory.current_in == {threading.get_ident(), other.ident}
