"""A real fitted model and its exports, shared by tests/runtime, tests/export and tests/calibration.

Fitted once per test session (module-level memo: the three conftests import this module) on 20
KolektorSDD training images at 256x96; every helper skips the calling test when the shared data
is absent. Also the evaluation frames: good and defective test images resized to the model size.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "kolektorsdd"
INPUT_SIZE = (256, 96)
TRAIN_IMAGES = 20
_MEMO: dict[str, Any] = {}


# An engine file's header as build_engine writes it, its "model" section as an export carries it: what
# tests that write engine files by hand give write_engine_file (read back, every field is checked).
ENGINE_HEADER = {
    "tensorrt": "10.3.0.26", "gpu": {"name": "Orin", "compute_capability": "8.7"}, "precision": "int8",
    "inputs": {"image": {"min": [1, 256, 96, 3], "opt": [1, 256, 96, 3], "max": [8, 256, 96, 3]}},
    "outputs": ["embeddings", "match_scores"], "graph": "featurizer", "artifact_sha256": "ab" * 32,
    "edgecmg": "0.1.0", "source_onnx": "M.int8.onnx", "dla_core": None,
    "model": {"format_version": 3, "payload": {"bytes": 1, "sha256": "cd" * 32},
              "backbone": {"id": "b", "sha256": "ef" * 32}, "input_size": [256, 96], "grid": 2, "threshold": 1.25,
              "model": {"use_cmer": True, "use_cmle": True, "feature_dim": 32, "bank_size": 100, "knn_k": 1},
              "export": {"graph": "featurizer", "outputs": ["embeddings", "match_scores"], "input": "image",
                         "precision": "int8", "scorer_sha256": "01" * 32}},
}


def kolektor() -> Path:
    if not (DATA / "train" / "good").is_dir():
        pytest.skip(f"shared KolektorSDD data not found at {DATA.resolve()}")
    return DATA.resolve()


def fitted_artifact(tmp_path_factory) -> Path:
    """Path of a .edgecmg fitted on real images (fit once per session)."""
    if "artifact" not in _MEMO:
        from edgecmg import artifact
        from edgecmg.config import ModelConfig
        from edgecmg.fit import fit

        root = kolektor()
        images = sorted((root / "train" / "good").iterdir())[:TRAIN_IMAGES]
        model, meta = fit(images, ModelConfig(prompt="a photo of a metal commutator", input_size=INPUT_SIZE),
                          progress=False)
        path = tmp_path_factory.mktemp("fitted") / "kolektor.edgecmg"
        artifact.save(model, meta, path)
        _MEMO["artifact"] = path
    return _MEMO["artifact"]


def loaded_model(tmp_path_factory):
    """(CMGModel, header) of the fitted artifact, loaded back from the file."""
    if "model" not in _MEMO:
        from edgecmg import artifact

        _MEMO["model"] = artifact.load(fitted_artifact(tmp_path_factory))
    return _MEMO["model"]


def exported_onnx(tmp_path_factory, with_scoring: bool) -> Path:
    key = f"onnx-{with_scoring}"
    if key not in _MEMO:
        from edgecmg.config import ExportConfig
        from edgecmg.export import export_onnx

        name = "full.onnx" if with_scoring else "featurizer.onnx"
        out = tmp_path_factory.mktemp("onnx") / name
        _MEMO[key] = export_onnx(fitted_artifact(tmp_path_factory), out, ExportConfig(with_scoring=with_scoring))
    return _MEMO[key]


def damage_largest_weight(source, target):
    """Copy an ONNX file, changing one byte inside its largest initializer (a bad flash card)."""
    import onnx

    proto = onnx.load(str(source))
    raw = max((init.raw_data for init in proto.graph.initializer), key=len)
    data = bytearray(source.read_bytes())
    at = data.find(raw[:256]) + len(raw) // 2
    data[at] ^= 0x5A
    target.write_bytes(bytes(data))
    return target


def eval_frames(n_good: int = 6, n_defect: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [N, H, W, 3] frames at the model size, labels [N]) from the KolektorSDD test split."""
    key = f"frames-{n_good}-{n_defect}"
    if key not in _MEMO:
        import cv2

        from edgecmg.imageio import read_image

        root = kolektor()
        good = sorted((root / "test" / "good").iterdir())[:n_good]
        defect = sorted((root / "test" / "defect").iterdir())[:n_defect]
        h, w = INPUT_SIZE
        frames = np.stack([cv2.resize(read_image(p), (w, h), interpolation=cv2.INTER_AREA) for p in good + defect])
        labels = np.array([0] * len(good) + [1] * len(defect))
        _MEMO[key] = (frames, labels)
    return _MEMO[key]


def torch_outputs(tmp_path_factory, frames: np.ndarray) -> dict[str, np.ndarray]:
    """The torch model's outputs for ``frames`` (the parity reference)."""
    import torch

    model, _ = loaded_model(tmp_path_factory)
    with torch.no_grad():
        out = model(torch.from_numpy(frames))
    return {k: v.numpy() for k, v in out._asdict().items()}


def score_features(scorer, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Host scoring of a featurizer graph's outputs with a BankScorer."""
    import torch

    with torch.no_grad():
        out = scorer(torch.from_numpy(outputs["embeddings"]), torch.from_numpy(outputs["match_scores"]))
    return {k: v.numpy() for k, v in out._asdict().items()}


def assert_scores_close(got: Any, reference: Any, rtol: float) -> None:
    """Image scores agree to ``rtol`` of the largest reference score.

    Scores are measured from the normal level of the maps, so normal frames score near 0, where a
    tolerance relative to each score would demand more digits than float32 arithmetic keeps.
    """
    reference = np.asarray(reference, dtype=np.float64)
    np.testing.assert_allclose(got, reference, rtol=0, atol=rtol * float(np.abs(reference).max()))
