"""The runner registry: file kinds, backend names, auto selection, errors."""
from __future__ import annotations

import pytest

from edgecmg.errors import BackendUnavailableError, ConfigError, DataError
from edgecmg.runtime import BACKENDS, available_backends, load_host_scorer, make_runner, runner_choices
from edgecmg.runtime.onnx_runner import OnnxRunner, available_providers
from edgecmg.runtime.registry import SPECS, candidate_specs
from edgecmg.runtime.torch_runner import TorchRunner


def test_backend_names_and_table():
    assert BACKENDS == ("torch", "onnxruntime", "tensorrt")
    assert {s.backend for s in SPECS} == set(BACKENDS)
    assert "torch" in available_backends() and "onnxruntime" in available_backends()
    # fastest first: every GPU row precedes every CPU row
    devices = [s.device for s in SPECS]
    assert devices == sorted(devices, key=lambda d: d != "cuda")


def test_auto_picks_the_fastest_available(artifact_path, featurizer_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECMG_CACHE_DIR", str(tmp_path))
    expected = runner_choices(artifact_path)[0]
    if not any(s.device == "cuda" and s.available() for s in SPECS):
        # no GPU: of the CPU rows, ONNX Runtime (the whole detector in one graph) beats torch
        assert expected == ("onnxruntime", "cpu")
    runner = make_runner(artifact_path)
    assert (runner.backend, runner.device.split(":")[0]) == expected
    assert isinstance(make_runner(featurizer_onnx), OnnxRunner)
    assert isinstance(make_runner(artifact_path, "torch", "cpu"), TorchRunner)


def test_edgecmg_with_onnxruntime_exports_once_into_the_cache(artifact_path, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECMG_CACHE_DIR", str(tmp_path))
    first = make_runner(artifact_path, "onnxruntime", "cpu")
    second = make_runner(artifact_path, "onnxruntime", "cpu")
    assert first.path == second.path and str(tmp_path) in first.path
    assert first.model_path == str(artifact_path)  # what the user opened, for messages and repr
    assert not first.produces_features  # the whole detector in one graph: no host scoring


def test_an_upper_case_suffix_runs_on_every_backend(artifact_path, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("EDGECMG_CACHE_DIR", str(tmp_path / "cache"))
    upper = shutil.copy(artifact_path, tmp_path / "PART.EDGECMG")
    assert make_runner(upper, "onnxruntime", "cpu").model_path == str(upper)
    assert isinstance(make_runner(upper, "torch", "cpu"), TorchRunner)
    monkeypatch.setenv("HOME", str(tmp_path))  # "~/..." as a shell would expand it
    assert make_runner("~/PART.EDGECMG", "torch", "cpu").path == str(upper)


def test_an_unwritable_export_cache_falls_back_to_torch_under_auto(artifact_path, tmp_path, monkeypatch):
    """A read-only file system (common on embedded targets) leaves ONNX Runtime no place for the
    .edgecmg's export: auto goes on to torch, and asking for onnxruntime says what to do."""
    import edgecmg.export

    def no_export(*args, **kwargs):
        raise AssertionError("the export ran although its cache cannot be written")

    monkeypatch.setattr(edgecmg.export, "export_model", no_export)  # refused before seconds of work
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    monkeypatch.setenv("EDGECMG_CACHE_DIR", str(blocker / "cache"))  # below a file: never creatable
    with pytest.raises(BackendUnavailableError, match="cannot write the export cache") as info:
        make_runner(artifact_path, "onnxruntime", "cpu")
    assert "EDGECMG_CACHE_DIR" in str(info.value) and "backend='torch'" in str(info.value)
    assert isinstance(make_runner(artifact_path, device="cpu"), TorchRunner)  # auto: ONNX Runtime, then torch
    # when no backend after the failed one can run, the cache is named as the cause
    import edgecmg.runtime.registry as registry

    specs = [s for s in registry.SPECS if s.backend == "onnxruntime" and s.device == "cpu"]
    monkeypatch.setattr(registry, "candidate_specs", lambda *args: specs)
    with pytest.raises(BackendUnavailableError, match="cannot write the export cache"):
        make_runner(artifact_path)


def test_errors_name_the_problem(artifact_path, featurizer_onnx, tmp_path):
    with pytest.raises(ConfigError, match="backend='gpu'"):
        make_runner(artifact_path, "gpu")
    with pytest.raises(ConfigError, match="cannot run .onnx"):
        make_runner(featurizer_onnx, "torch")
    with pytest.raises(ConfigError, match="export and build"):
        make_runner(artifact_path, "tensorrt")
    with pytest.raises(ConfigError, match=r"device='tpu': use 'cpu', 'cuda'"):
        make_runner(artifact_path, "torch", "tpu")
    (tmp_path / "m.pt").write_bytes(b"x")
    with pytest.raises(DataError, match="unknown model file type"):
        make_runner(tmp_path / "m.pt")
    with pytest.raises(DataError, match="no such model file"):
        make_runner(tmp_path / "missing.onnx")
    with pytest.raises(DataError, match="is a folder, not a model file"):  # was "unknown model file type ''"
        make_runner(tmp_path)
    # the files kept beside models are named for what they are (both were "unknown model file type")
    (tmp_path / "m.int8.calib.json").write_text("{}")
    with pytest.raises(DataError, match=r"m.int8.calib.json holds calibrate's activation ranges, not a model: give "
                                        r"the INT8 .onnx calibrate wrote beside it \(.*m.int8.onnx\)"):
        make_runner(tmp_path / "m.int8.calib.json")
    (tmp_path / "part.PNG").write_bytes(b"x")
    with pytest.raises(DataError, match=r"part.PNG is an image \(.png\), not a model file; edgecmg runs"):
        make_runner(tmp_path / "part.PNG")


def test_unavailable_backend_raises_with_hint(featurizer_onnx, monkeypatch):
    import edgecmg.runtime.registry as registry

    monkeypatch.setattr(registry, "available_providers", lambda: [])
    with pytest.raises(BackendUnavailableError, match=r"; for the CPU, pip install"):
        make_runner(featurizer_onnx, "onnxruntime", "cpu")
    # onnxruntime asked for on no device in particular, where it is not installed: both of its runners
    # are named, and the hint is the CPU build's (it named the CUDA provider alone, with the GPU hint)
    with pytest.raises(BackendUnavailableError, match=r"none of the runners for \.onnx files on any device can run "
                       r"here \(onnxruntime-cuda: .*; onnxruntime-cpu: ONNX Runtime, CPU execution provider") as caught:
        make_runner(featurizer_onnx, "onnxruntime")
    assert caught.value.backend == "onnxruntime"
    assert caught.value.install_hint == registry._HINTS["onnxruntime"]()
    specs = candidate_specs(featurizer_onnx, "tensorrt")
    assert [s.device for s in specs] == ["cuda"]
    # auto on a device nothing here can use: every candidate's reason, not only the first's
    with pytest.raises(BackendUnavailableError, match=r"backend 'auto' is unavailable: none of the runners for "
                       r"\.onnx files on cuda can run here \(tensorrt-cuda: .*; onnxruntime-cuda: ONNX Runtime, "
                       r"CUDA execution provider not available\)") as caught:
        make_runner(featurizer_onnx, "auto", "cuda")
    assert caught.value.backend == "auto"


def test_a_numbered_cuda_device_selects_the_cuda_runners(artifact_path, featurizer_onnx):
    for path in (artifact_path, featurizer_onnx):
        assert {s.device for s in candidate_specs(path, device="cuda:1")} == {"cuda"}
        assert candidate_specs(path, device="cuda:1") == candidate_specs(path, device="cuda")


def test_a_cuda_index_past_the_devices_is_refused_by_name(artifact_path, featurizer_onnx, monkeypatch):
    """cuda:3 on a one-GPU machine reached each runner's own error (torch's "invalid device ordinal",
    ORT's and cudaSetDevice's codes); it is named before a runner starts. No GPU here: torch is told
    it sees one."""
    import torch

    from edgecmg.runtime import registry

    for bad in ("cuda:x", "cuda:-1", "cuda:", "gpu:0", "cuda:\u00b2"):  # a superscript two is a digit to isdigit()
        with pytest.raises(ConfigError, match=f"device='{bad}': use 'cpu', 'cuda' or 'cuda:N'"):
            make_runner(featurizer_onnx, device=bad)
    monkeypatch.setattr(registry, "torch_cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for path, backend in [(artifact_path, "torch"), (featurizer_onnx, "onnxruntime"), (featurizer_onnx, "auto")]:
        with pytest.raises(ConfigError, match=r"device='cuda:3': this machine has 1 CUDA device\(s\), cuda:0 to cuda:0"):
            make_runner(path, backend, "cuda:3")
        with pytest.raises(ConfigError, match="device='cuda:1': this machine has 1"):
            make_runner(path, backend, 1)  # an index, as torch takes it
    assert registry.check_torch_device("cuda:0") == "cuda:0"
    with pytest.raises(ConfigError, match="device='cuda:2'"):
        registry.check_torch_device("cuda:2")


def test_onnxruntime_runs_an_edgecmg_file_only_where_onnx_can_export_it(artifact_path, monkeypatch):
    """An .edgecmg runs on ONNX Runtime through an export, which needs the onnx package: without it
    onnxruntime is not offered for .edgecmg files (torch still is)."""
    import edgecmg.runtime.registry as registry

    assert ("onnxruntime", "cpu") in runner_choices(artifact_path)
    monkeypatch.setattr(registry, "has_module", lambda name: name != "onnx")
    assert ("onnxruntime", "cpu") not in runner_choices(artifact_path)
    assert ("torch", "cpu") in runner_choices(artifact_path)


def test_auto_with_no_runner_here_gives_the_plainest_candidates_hint(featurizer_onnx, monkeypatch):
    """Nothing can run an .onnx here: the hint is the CPU build's (what most often fixes it), not
    that of the first candidate, ONNX Runtime's TensorRT provider on a GPU."""
    import edgecmg.runtime.onnx_runner as onnx_runner
    import edgecmg.runtime.registry as registry

    monkeypatch.setattr(registry, "available_providers", lambda: [])
    monkeypatch.setattr(onnx_runner, "installed_ort_distributions", lambda: ["onnxruntime"])
    with pytest.raises(BackendUnavailableError) as caught:
        make_runner(featurizer_onnx)
    assert caught.value.backend == "auto"
    assert caught.value.install_hint == onnx_runner.ORT_INSTALL_HINT


def test_a_named_backend_whose_runner_fails_to_start_is_an_error_not_a_fallback(featurizer_onnx, monkeypatch):
    """backend='onnxruntime' with the CUDA provider present but failing: the error, not a quiet
    switch to the CPU provider (auto may fall back; a named backend and device may not)."""
    import dataclasses

    import edgecmg.runtime.registry as registry

    def refuse(path, device, **_):
        raise BackendUnavailableError("onnxruntime", "the CUDA provider cannot start", "a hint")

    specs = tuple(dataclasses.replace(s, available=lambda: True, create=refuse)
                  if (s.backend, s.device) == ("onnxruntime", "cuda") else s for s in SPECS)
    monkeypatch.setattr(registry, "SPECS", specs)
    with pytest.raises(BackendUnavailableError, match="the CUDA provider cannot start"):
        make_runner(featurizer_onnx, "onnxruntime")
    runner = make_runner(featurizer_onnx, "auto")  # auto goes on to the next available runner
    assert (runner.backend, runner.device) == ("onnxruntime", "cpu")


def test_a_missing_gpu_provider_says_how_to_get_it(featurizer_onnx, monkeypatch):
    """A CPU onnxruntime installed beside onnxruntime-gpu (both own the one onnxruntime module) hides
    the GPU providers: the error names both distributions and how to keep only the GPU one."""
    from importlib import metadata

    from edgecmg.runtime.onnx_runner import installed_ort_distributions

    if "cuda" in available_providers():
        pytest.skip("this onnxruntime has the CUDA provider: nothing is missing")
    if installed_ort_distributions() != ["onnxruntime"]:
        pytest.skip(f"checked beside the CPU build alone; here: {installed_ort_distributions()}")
    with pytest.raises(BackendUnavailableError, match=r"pip uninstall -y onnxruntime, then .*onnx-gpu.*Jetson"):
        OnnxRunner(featurizer_onnx, provider="cuda").activate()

    real_version = metadata.version
    monkeypatch.setattr(metadata, "version",
                        lambda name: "1.31.1" if name == "onnxruntime-gpu" else real_version(name))
    assert installed_ort_distributions() == ["onnxruntime", "onnxruntime-gpu"]
    both = r"onnxruntime and onnxruntime-gpu are installed together.*pip uninstall -y onnxruntime onnxruntime-gpu"
    with pytest.raises(BackendUnavailableError, match=both):
        OnnxRunner(featurizer_onnx, provider="cuda").activate()
    with pytest.raises(BackendUnavailableError, match=both):  # the registry's refusal, before any session
        make_runner(featurizer_onnx, "onnxruntime", "cuda")
    with pytest.raises(BackendUnavailableError, match=both):  # ONNX Runtime's TensorRT provider too
        make_runner(featurizer_onnx, "tensorrt", "cuda")
    monkeypatch.setattr(metadata, "version",  # a stale dist-info without METADATA is not an installed build
                        lambda name: None if name == "onnxruntime-gpu" else real_version(name))
    assert installed_ort_distributions() == ["onnxruntime"]


def test_host_scorer_from_every_file_kind(artifact_path, featurizer_onnx, model_and_header):
    model, _ = model_and_header
    for path in (artifact_path, featurizer_onnx):
        scorer, header = load_host_scorer(path)
        assert scorer.memory_bank.shape == model.scorer.memory_bank.shape
        assert header["threshold"] == pytest.approx(float(model.scorer.threshold))


def test_a_damaged_engine_is_named_before_the_backend_is_chosen(tmp_path):
    """Without TensorRT, a text file named .engine used to be answered with "TensorRT is not
    available" and its install hint; the file is the problem, and `edgecmg info` already said so."""
    from edgecmg.engine_file import write_engine_file
    from edgecmg.errors import ArtifactError

    fake = tmp_path / "fake.engine"
    fake.write_text("hello\n")
    with pytest.raises(ArtifactError, match=r"fake\.engine: truncated \(6 bytes\): not an edgecmg engine file"):
        make_runner(fake)
    import edgecmg_testmodels as models

    engine = write_engine_file(tmp_path / "built.engine", models.ENGINE_HEADER, b"plan")
    if not any(s.available() for s in candidate_specs(engine)):  # a sound file: the backend is what is missing
        with pytest.raises(BackendUnavailableError):
            make_runner(engine)


def test_onnx_runner_device_follows_its_provider_and_refuses_frames_of_another_size(featurizer_onnx):
    """A GPU provider means a CUDA device (the numbered one for cuda:N), decided before any session
    opens; frames not at the graph's fixed input size are refused by name, not by ONNX Runtime."""
    import numpy as np

    assert OnnxRunner(featurizer_onnx, provider="tensorrt").device == "cuda"
    assert OnnxRunner(featurizer_onnx, device="cuda:1", provider="cuda")._providers() == [
        ("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    with OnnxRunner(featurizer_onnx) as runner:
        h, w = runner.metadata["input_size"]
        with pytest.raises(DataError, match=f"frames are {h + 32}x{w} but {featurizer_onnx.name} takes {h}x{w}"):
            runner.infer(np.zeros((1, h + 32, w, 3), np.uint8))
