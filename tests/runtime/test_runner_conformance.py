"""Every runner available here honours the Runner contract and agrees with the torch model.

Parametrised over the registry: (backend, device) pairs of ``runner_choices`` for each model file
kind, plus the TensorRT runner driven through a fake ``tensorrt`` module on host memory (the real
TensorRT variant runs where ``tensorrt`` imports and a GPU exists; skipped otherwise).
"""
from __future__ import annotations

import numpy as np
import pytest

import edgecmg_testmodels as models
from edgecmg.config import EngineConfig
from edgecmg.errors import DataError, EdgeCMGError
from edgecmg.metrics import auroc
from edgecmg.result import OUTPUT_NAMES
from edgecmg.runtime import FEATURIZER_OUTPUTS, Runner, make_runner, runner_choices
from edgecmg.runtime.registry import SPECS


def _cases():
    kinds = ("artifact", "featurizer_onnx", "full_onnx")
    suffix = {"artifact": ".edgecmg", "featurizer_onnx": ".onnx", "full_onnx": ".onnx"}
    cases = []
    for kind in kinds:
        for spec in SPECS:
            if suffix[kind] in spec.suffixes:
                reason = f"{spec.name} ({spec.what}) not available here"
                marks = [] if spec.available() else [pytest.mark.skip(reason=reason)]
                cases.append(pytest.param(kind, spec.backend, spec.device, id=f"{kind}-{spec.name}", marks=marks))
    cases.append(pytest.param("fake_engine", "tensorrt", "cuda", id="fake_engine-tensorrt(fake, host memory)"))
    return cases


@pytest.fixture
def runner_for(request, artifact_path, featurizer_onnx, full_onnx, fake_tensorrt, tmp_path, monkeypatch):
    def make(kind: str, backend: str, device: str) -> Runner:
        if kind == "fake_engine":
            import fake_tensorrt as fake

            from edgecmg.engine import build_engine
            from edgecmg.runtime.tensorrt_runner import TensorRTRunner

            fake_tensorrt()
            engine = build_engine(featurizer_onnx, EngineConfig(precision="fp32", max_batch=4), tmp_path / "m.engine")
            return TensorRTRunner(engine, device="cuda:0", memory=fake.HostMemory)
        monkeypatch.setenv("EDGECMG_CACHE_DIR", str(tmp_path / "cache"))
        path = {"artifact": artifact_path, "featurizer_onnx": featurizer_onnx, "full_onnx": full_onnx}[kind]
        return make_runner(path, backend, device)

    return make


def _scores(runner: Runner, outputs: dict) -> dict:
    if runner.produces_features:
        return models.score_features(runner.host_scorer(), outputs)
    return outputs


@pytest.mark.parametrize("kind,backend,device", _cases())
def test_runner_contract_and_parity(runner_for, kind, backend, device, frames_and_labels, torch_reference):
    frames, labels = frames_and_labels
    runner = runner_for(kind, backend, device)
    assert isinstance(runner, Runner)
    # "tensorrt" on an .onnx file is ONNX Runtime's TensorRT execution provider
    assert runner.backend == backend or (backend == "tensorrt" and runner.backend == "onnxruntime")
    assert "threshold" in runner.metadata and "input_size" in runner.metadata
    with pytest.raises(EdgeCMGError, match="not active"):
        runner.infer(frames[:1])
    with runner as active:
        assert active is runner and runner.active
        for bad, what in ((frames[:1].astype(np.float32), "uint8"), (frames[0], "B, H, W, 3"),
                          (frames[:0], "empty"), (list(frames[:1]), "numpy")):
            with pytest.raises(DataError, match=what):
                runner.infer(bad)
        single = runner.infer(frames[:1])
        batch = runner.infer(frames)
    assert not runner.active
    expected = FEATURIZER_OUTPUTS if runner.produces_features else OUTPUT_NAMES
    assert tuple(batch) == tuple(expected)
    assert len(next(iter(single.values()))) == 1 and len(next(iter(batch.values()))) == len(frames)
    got = _scores(runner, batch)
    models.assert_scores_close(got["score"], torch_reference["score"], rtol=1e-4)
    np.testing.assert_array_equal(got["kept_mask"], torch_reference["kept_mask"])
    # Maps to 3e-3 of their largest value: exported graphs round the fp16 bank's query step differently
    # (tests/export/test_export_onnx.py, MAP_ATOL_OF_MAX).
    reference_map = torch_reference["anomaly_map"]
    np.testing.assert_allclose(got["anomaly_map"], reference_map, rtol=0,
                               atol=3e-3 * float(np.abs(reference_map).max()))
    assert auroc(labels, got["score"]) == auroc(labels, torch_reference["score"])
    runner.deactivate()  # idempotent


@pytest.mark.parametrize("kind,backend,device", [c for c in _cases() if "onnx" in c.id or "engine" in c.id])
def test_exported_runners_refuse_other_frame_sizes(runner_for, kind, backend, device, frames_and_labels):
    frames, _ = frames_and_labels
    runner = runner_for(kind, backend, device)
    with runner:
        with pytest.raises(DataError, match="resize them"):
            runner.infer(np.zeros((1, 64, 64, 3), np.uint8))


def test_every_file_kind_has_a_runner_here(artifact_path, featurizer_onnx):
    assert ("torch", "cpu") in runner_choices(artifact_path)
    assert ("onnxruntime", "cpu") in runner_choices(featurizer_onnx)


def _started(target):
    """target() on a daemon thread (a failed test cannot hang the run at exit)."""
    import threading

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("kind,backend,device", _cases())
def test_deactivate_waits_for_an_infer_under_way_in_another_thread(runner_for, kind, backend, device,
                                                                   frames_and_labels, held_call):
    """Detector.close() from one thread while another judges a frame: the session, engine or device
    buffers must outlive the call using them (freed under it, a GPU run can crash the process), and
    calls after the close has begun are refused with edgecmg's error, not an AttributeError."""
    frames, _ = frames_and_labels
    runner = runner_for(kind, backend, device)
    runner.activate()
    expected = runner.infer(frames[:1])
    call = held_call(runner, "_infer", lambda: runner.infer(frames[:1]))
    closer = _started(runner.deactivate)
    closer.join(0.3)
    assert closer.is_alive(), "deactivate released the backend under a running call"
    with pytest.raises(EdgeCMGError, match="not active"):
        runner.infer(frames[:1])  # refused from the start of the close
    call.release.set()
    call.thread.join(10)
    closer.join(10)
    assert not call.thread.is_alive() and not closer.is_alive() and not runner.active
    for name, value in expected.items():
        np.testing.assert_array_equal(call.outcome["result"][name], value)


def test_deactivate_from_inside_a_call_on_the_same_thread_is_refused(artifact_path, frames_and_labels, monkeypatch):
    """A signal handler that closes the detector lands on the thread whose call is under way: waiting
    for that call would never end, so close() says what happened and the call finishes."""
    frames, _ = frames_and_labels
    runner = make_runner(artifact_path, "torch", "cpu").activate()
    infer = runner._infer
    refusals = []

    def infer_interrupted_by_a_closing_handler(batch):
        try:
            runner.deactivate()
        except EdgeCMGError as exc:
            refusals.append(str(exc))
        return infer(batch)

    monkeypatch.setattr(runner, "_infer", infer_interrupted_by_a_closing_handler)
    # On a thread of its own, so that a close that waits for its own call fails here instead of hanging.
    import threading

    results = {}
    caller = threading.Thread(target=lambda: results.setdefault("out", runner.infer(frames[:1])), daemon=True)
    caller.start()
    caller.join(30)
    assert not caller.is_alive(), "close() from inside the call waited for that call: it never returns"
    out = results["out"]
    assert len(refusals) == 1 and "inside a call on the same thread" in refusals[0]
    assert runner.active and len(out["score"]) == 1
    runner.deactivate()
    assert not runner.active


def test_a_failed_activation_releases_what_it_took_and_reports_its_own_error():
    """An activation that fails half way (a CUDA stream made, the engine refused) is cleaned up by
    the runner's _deactivate, and the activation's error is the one raised even if that cleanup fails."""

    class HalfActivating(Runner):
        backend = "test"

        def __init__(self, cleanup_fails: bool = False) -> None:
            super().__init__("part.onnx", {})
            self.cleanup_fails, self.held = cleanup_fails, []

        def _activate(self) -> None:
            self.held.append("stream")
            raise RuntimeError("the engine was refused")

        def _infer(self, frames):
            raise AssertionError("never called")

        def _deactivate(self) -> None:
            self.held.clear()
            if self.cleanup_fails:
                raise RuntimeError("cleanup failed")

    for cleanup_fails in (False, True):
        runner = HalfActivating(cleanup_fails)
        with pytest.raises(RuntimeError, match="the engine was refused"):
            runner.activate()
        assert runner.held == [] and not runner.active


def test_a_close_interrupted_while_waiting_leaves_the_release_to_the_last_call(featurizer_onnx, frames_and_labels,
                                                                               monkeypatch, held_call):
    frames, _ = frames_and_labels
    runner = make_runner(featurizer_onnx, "onnxruntime", "cpu").activate()
    call = held_call(runner, "_infer", lambda: runner.infer(frames[:1]))

    class Interrupt(BaseException):  # stands for Ctrl-C (pytest itself stops on a KeyboardInterrupt)
        pass

    def interrupted_wait(predicate, timeout=None):
        raise Interrupt  # while close() waits for the call

    monkeypatch.setattr(runner._calls, "wait_for", interrupted_wait)
    with pytest.raises(Interrupt):
        runner.deactivate()
    assert not runner.active and runner._session is not None  # refused from now on, released later
    with pytest.raises(EdgeCMGError, match="still closing"):
        runner.activate()
    call.release.set()
    call.thread.join(10)
    assert "result" in call.outcome and runner._session is None  # the call finished, then released
    monkeypatch.undo()
    runner.deactivate()  # nothing left to do
    runner.activate()  # and it can be opened again
    assert runner.active and len(runner.infer(frames[:1])["embeddings"]) == 1
    runner.deactivate()


def test_a_second_close_waits_for_the_first_and_an_activation_cannot_land_inside_one(featurizer_onnx,
                                                                                     frames_and_labels, held_call):
    frames, _ = frames_and_labels
    runner = make_runner(featurizer_onnx, "onnxruntime", "cpu").activate()
    call = held_call(runner, "_infer", lambda: runner.infer(frames[:1]))
    first = _started(runner.deactivate)
    first.join(0.2)
    second = _started(runner.deactivate)
    reopen = _started(runner.activate)
    second.join(0.3)
    reopen.join(0.01)
    assert first.is_alive() and second.is_alive() and reopen.is_alive()  # all wait for the call under way
    call.release.set()
    for thread in (call.thread, first, second, reopen):
        thread.join(10)
        assert not thread.is_alive()
    assert "result" in call.outcome
    # The activation went after the close had released (it could not be wiped by it), or before the
    # second close: either way the runner's state and its session agree.
    assert runner.active == (runner._session is not None)
    runner.deactivate()
    assert not runner.active and runner._session is None
