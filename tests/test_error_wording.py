"""Error messages that both the Python API and the CLI reach name both spellings: the Python name
with its value, then the CLI flag in parentheses (``batch=0 (--batch) ...``); a missing ONNX input
is a MissingFileError (also a FileNotFoundError), never the ArtifactError of a damaged file."""
from __future__ import annotations

import re

import pytest

from edgecmg.cli import main
from edgecmg.config import EngineConfig, ExportConfig, ModelConfig, StreamConfig
from edgecmg.errors import ArtifactError, ConfigError, DataError, EdgeCMGError, EngineBuildError, MissingFileError


def _error_line(err: str, command: str) -> str:
    """The CLI's one error line for ``command``."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"edgecmg {command}: error: "), err
    return lines[0]


# --- a missing .onnx ----------------------------------------------------------------------------

def test_build_of_a_missing_onnx_is_a_missing_file_error(tmp_path, capsys):
    from edgecmg.engine import build_engine

    missing = tmp_path / "nope.onnx"
    with pytest.raises(MissingFileError, match=re.escape(f"{missing}: no such file; build takes an .onnx file")) as info:
        build_engine(missing, EngineConfig(), tmp_path / "e.engine")
    assert isinstance(info.value, FileNotFoundError) and not isinstance(info.value, ArtifactError)
    assert main(["-q", "build", str(missing), "-o", str(tmp_path / "e.engine")]) == 2
    line = _error_line(capsys.readouterr().err, "build")
    assert f"{missing}: no such file; build takes an .onnx file" in line and "no such ONNX file" not in line


def test_every_reader_of_an_onnx_path_says_a_missing_one_is_missing(tmp_path):
    from edgecmg.export import load_scorer_from_onnx, metadata_props, read_onnx_header
    from edgecmg.fp16_cast import convert_to_fp16
    from edgecmg.onnx_checks import check_onnx_for_tensorrt, is_quantized

    missing = tmp_path / "gone.onnx"
    for reader in (read_onnx_header, metadata_props, load_scorer_from_onnx, is_quantized, check_onnx_for_tensorrt,
                   convert_to_fp16):
        with pytest.raises(MissingFileError, match=re.escape(f"{missing}: no such ONNX file; check the path")) as info:
            reader(missing)
        assert isinstance(info.value, FileNotFoundError) and not isinstance(info.value, ArtifactError), reader
    folder = tmp_path / "folder.onnx"
    folder.mkdir()
    with pytest.raises(ConfigError, match=re.escape(f"{folder} is a folder, not an ONNX file; give the .onnx file")):
        read_onnx_header(folder)


# --- the Sample class is named where it lives ----------------------------------------------------

def test_evaluation_names_the_sample_class_by_its_module(tmp_path):
    from edgecmg.datasets import Sample
    from edgecmg.evaluation import samples_to_evaluate

    with pytest.raises(DataError, match=re.escape("(edgecmg.datasets.Sample(path, label, defect_type, mask_path))")):
        samples_to_evaluate([tmp_path / "a.png"])
    assert Sample.__module__ == "edgecmg.datasets"


# --- config values name their CLI flag too ------------------------------------------------------

STREAM_REFUSALS = (
    (dict(batch=0), ["--batch", "0"], "batch=0 (--batch) must be >= 1"),
    (dict(max_queue=0), ["--max-queue", "0"], "max_queue=0 (--max-queue) must be >= 1"),
    (dict(reconnect_attempts=-1), ["--reconnect-attempts", "-1"],
     "reconnect_attempts=-1 (--reconnect-attempts) must be >= 0 (0 = never reconnect"),
    (dict(capture_size=(0, 10)), ["--capture-size", "0", "10"],
     "capture_size=(0, 10) (--capture-size 0 10) must be (width, height), both >= 1"),
    (dict(capture_fps=0.0), ["--capture-fps", "0"],
     "capture_fps=0.0 (--capture-fps) must be > 0, or leave it unset (leave --capture-fps out)"),
)


@pytest.mark.parametrize("kwargs, flags, expected", STREAM_REFUSALS)
def test_stream_config_refusals_name_the_flag(kwargs, flags, expected, tmp_path, capsys):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        StreamConfig(**kwargs)
    # the config is checked before the model or the source is looked for
    assert main(["-q", "stream", str(tmp_path / "line.mp4"), "-m", str(tmp_path / "m.edgecmg"), *flags]) == 2
    line = _error_line(capsys.readouterr().err, "stream")
    assert expected in line and "None" not in line, line


MODEL_REFUSALS = (
    (dict(grid=9), ["--grid", "9"], "grid=9 (--grid) must be between 2 and 8"),
    (dict(cmle_dim=7), ["--cmle-dim", "7"], "cmle_dim=7 (--cmle-dim) must be in 8..1024"),
    (dict(score_top_fraction=0.3), ["--score-top-fraction", "0.3"],
     "score_top_fraction=0.3 (--score-top-fraction) must be in [0, 0.25]"),
    (dict(input_size=(100, 100)), ["--input-size", "100", "100"],
     "input_size=(100, 100) (--input-size 100 100) must be >= 64 and multiples of 32 in both sides; the nearest "
     "that are: (96, 96) or (128, 128) (--input-size 96 96 or 128 128)"),
    (dict(input_size=(64, 80)), ["--input-size", "64", "80"],
     "the nearest that are: (64, 64) or (64, 96) (--input-size 64 64 or 64 96)"),
    (dict(input_size=(32, 64)), ["--input-size", "32", "64"], "the nearest that are: (64, 64) (--input-size 64 64)"),
    (dict(input_size=(64, 4128)), ["--input-size", "64", "4128"],
     "input_size=(64, 4128) (--input-size 64 4128): sides of at most 4096"),
)


@pytest.mark.parametrize("kwargs, flags, expected", MODEL_REFUSALS)
def test_model_config_refusals_name_the_flag(kwargs, flags, expected, tmp_path, capsys):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        ModelConfig(**kwargs)
    # fit checks its config before it looks at the images
    assert main(["-q", "fit", str(tmp_path / "good"), "--prompt", "a part", "-o", str(tmp_path / "m.edgecmg"),
                 *flags]) == 2
    assert expected in _error_line(capsys.readouterr().err, "fit")


def test_the_suggested_input_sizes_are_ones_the_config_takes():
    for h, w in ((100, 100), (64, 80), (32, 64), (70, 4100), (4095, 65)):
        with pytest.raises(ConfigError) as info:
            ModelConfig(input_size=(h, w))
        suggested = re.search(r"the nearest that are: (.*) \(--input-size", str(info.value)).group(1)
        for size in re.findall(r"\((\d+), (\d+)\)", suggested):
            assert ModelConfig(input_size=tuple(int(side) for side in size)).input_size


def test_export_opset_names_the_flag(tmp_path, capsys):
    expected = "opset=5 (--opset): choose 17..20"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        ExportConfig(opset=5)
    assert main(["-q", "export", str(tmp_path / "m.edgecmg"), "--format", "onnx", "-o", str(tmp_path / "m.onnx"),
                 "--opset", "5"]) == 2
    assert expected in _error_line(capsys.readouterr().err, "export")


def test_threshold_quantile_and_calibrate_samples_name_the_flag(tmp_path):
    from edgecmg.calibration import select_with_spares
    from edgecmg.evaluation import threshold_from_good

    with pytest.raises(ConfigError, match=re.escape("quantile=1.5 (--quantile) must be in (0, 1]")):
        threshold_from_good(None, [], 1.5)  # checked before the detector is used
    with pytest.raises(DataError, match=re.escape("samples=0 (--samples): calibrate on at least 1 image")):
        select_with_spares(tmp_path, 0)


# --- Python API errors that named only a CLI flag ------------------------------------------------

def test_dla_with_fp32_names_both_spellings(tmp_path, capsys):
    expected = ("DLA runs fp16 or int8 only: with dla_core=0 (--dla 0) use precision='fp16' or 'int8' (--precision "
                "fp16 or int8)")
    with pytest.raises(ConfigError, match=re.escape(expected)):
        EngineConfig(precision="fp32", dla_core=0)
    assert main(["-q", "build", str(tmp_path / "m.onnx"), "--precision", "fp32", "--dla", "0", "-o",
                 str(tmp_path / "m.engine")]) == 2
    assert expected in _error_line(capsys.readouterr().err, "build")


def test_cmle_on_features_that_do_not_vary_names_both_ways_to_turn_it_off():
    import torch

    from edgecmg.model.cmle import fit_projection

    with pytest.raises(DataError, match=re.escape("turn CMLE off: cmle=False (--no-cmle)")):
        fit_projection(torch.ones(10, 16), torch.zeros(10, 10), 4)


def test_score_pool_larger_than_a_cmer_cell_names_both_flags():
    from edgecmg.model.detector import BankScorer, Geometry

    with pytest.raises(ConfigError, match=re.escape("; use a smaller score_top_fraction (--score-top-fraction) or "
                                                    "grid (--grid)")):
        BankScorer(Geometry((256, 256), 8, "s16"), feature_dim=2, bank_size=1, use_cmer=True, knn_k=1,
                   smoothing_sigma=0.5, score_top_fraction=0.02)


def test_a_dla_build_no_layer_can_use_names_both_spellings(fake_tensorrt, featurizer_onnx, tmp_path):
    from edgecmg.engine import build_engine

    trt = fake_tensorrt(dla_cores=1)
    trt.dla_runs = lambda name: False  # no layer can run on the DLA
    with pytest.raises(EngineBuildError, match=re.escape("would run on the GPU alone; build it without dla_core=0 "
                                                         "(--dla 0)")):
        build_engine(featurizer_onnx, EngineConfig(precision="fp16", dla_core=0), tmp_path / "dla.engine")


def test_a_qdq_graph_built_other_than_int8_names_both_spellings(fake_tensorrt, featurizer_onnx, tmp_path,
                                                                 monkeypatch):
    import edgecmg.engine

    fake_tensorrt()
    monkeypatch.setattr(edgecmg.engine, "is_quantized", lambda model: True)  # as a calibrate output reads
    with pytest.raises(EngineBuildError, match=re.escape("is quantised (Q/DQ nodes): build it with "
                                                         "precision='int8' (--precision int8)")):
        edgecmg.engine.build_engine(featurizer_onnx, EngineConfig(precision="fp16"), tmp_path / "q.engine")


def test_a_cpu_calibrated_onnx_names_both_profile_spellings(fake_tensorrt, featurizer_onnx, tmp_path, monkeypatch):
    import edgecmg.export
    from edgecmg.engine import build_engine

    fake_tensorrt()
    real = edgecmg.export.read_onnx_header  # calibrated for ONNX Runtime on a CPU: the header says so
    monkeypatch.setattr(edgecmg.export, "read_onnx_header",
                        lambda *args, **kwargs: {**real(*args, **kwargs), "quantization": {"profile": "cpu"}})
    with pytest.raises(EngineBuildError, match=re.escape("calibrate again with the default profile='tensorrt' "
                                                         "(`--profile tensorrt`)")):
        build_engine(featurizer_onnx, EngineConfig(precision="fp16"), tmp_path / "cpu.engine")


def test_a_context_tensorrt_cannot_create_names_both_batch_spellings(fake_tensorrt, featurizer_onnx, tmp_path):
    import fake_tensorrt as fake

    from edgecmg.engine import build_engine
    from edgecmg.runtime.tensorrt_runner import TensorRTRunner

    trt = fake_tensorrt()
    engine = build_engine(featurizer_onnx, EngineConfig(precision="fp32", max_batch=4), tmp_path / "m.engine")
    trt.context_fails = True
    with pytest.raises(EdgeCMGError, match=re.escape("rebuild it with a smaller batch than its 4: max_batch=2 "
                                                     "(--max-batch 2)")):
        TensorRTRunner(engine, memory=fake.HostMemory).activate()


def test_an_export_cache_that_cannot_be_written_names_both_backend_spellings(artifact_path, tmp_path, monkeypatch):
    import edgecmg.export
    from edgecmg.errors import BackendUnavailableError
    from edgecmg.runtime import make_runner

    def no_export(*args, **kwargs):
        raise AssertionError("the export ran although its cache cannot be written")

    monkeypatch.setattr(edgecmg.export, "export_model", no_export)
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    monkeypatch.setenv("EDGECMG_CACHE_DIR", str(blocker / "cache"))  # below a file: never creatable
    with pytest.raises(BackendUnavailableError, match=re.escape("use backend='torch' (--backend torch)")):
        make_runner(artifact_path, "onnxruntime", "cpu")
