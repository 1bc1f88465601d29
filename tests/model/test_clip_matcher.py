"""The optional CLIP matcher, end to end, with randomly initialised open_clip weights.

open_clip needs torchvision, which cannot live beside the main test environment's torch, so these
tests run in their own environment: `make test` builds .venv-clip and runs this file there. In the
main environment only the "open_clip is missing" behaviour is checked.
"""
from __future__ import annotations

import hashlib
import importlib.util

import numpy as np
import pytest
import torch

from edgecmg.config import ModelConfig
from edgecmg.errors import ArtifactError, BackendUnavailableError, ConfigError, MissingFileError
from edgecmg.model.matcher import build_matcher

HAVE_OPEN_CLIP = importlib.util.find_spec("open_clip") is not None
needs_open_clip = pytest.mark.skipif(not HAVE_OPEN_CLIP, reason="open_clip is not installed here; "
                                     "`make test` runs this file in .venv-clip, which has it")
# ViT-S-32: the smallest plain open_clip CLIP (63 M parameters) that tokenises offline.
ARCH = "ViT-S-32"


@pytest.mark.skipif(HAVE_OPEN_CLIP, reason="checks the error raised where open_clip is missing")
def test_clip_without_open_clip_names_the_install_command(tmp_path):
    weights = tmp_path / "clip.safetensors"
    weights.write_bytes(b"0")
    with pytest.raises(BackendUnavailableError, match=r"pip install 'open_clip_torch>=2\.20' \(edgecmg's \[clip\] extra; in a clone: pip install -e '\.\[clip\]'\)"):
        build_matcher({"kind": "clip", "arch": ARCH, "weights": str(weights)}, torch.nn.Linear(4, 2))


def test_a_missing_clip_weights_file_is_said_before_whether_open_clip_is_installed(tmp_path):
    """fit --clip-weights nope.safetensors said open_clip was missing, not the mistyped file."""
    with pytest.raises(MissingFileError, match=r"CLIP weights .*nope\.safetensors: no such file"):
        build_matcher({"kind": "clip", "arch": ARCH, "weights": str(tmp_path / "nope.safetensors")},
                      torch.nn.Linear(4, 2))


def test_clip_config_needs_a_weights_file():
    with pytest.raises(ConfigError, match="clip_weights"):
        ModelConfig(matcher="clip")


@pytest.fixture(scope="module")
def clip_weights(tmp_path_factory):
    """A randomly initialised ViT-S-32 written as fp16 safetensors (the way users convert theirs)."""
    open_clip = pytest.importorskip("open_clip")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.create_model(ARCH, pretrained=None)
    path = tmp_path_factory.mktemp("clip") / "vit-s-32-random.safetensors"
    save_file({k: v.detach().half().contiguous().clone() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def clip_fit(clip_weights, kolektor_train):
    from edgecmg.fit import fit

    config = ModelConfig(prompt="a photo of a metal commutator", input_size=(256, 128), matcher="clip",
                         clip_arch=ARCH, clip_weights=str(clip_weights), cmle_dim=8, max_bank_size=500)
    names = [p.name for p in kolektor_train[:12]]
    captions = {names[0]: "a commutator with copper bars", names[1]: "a commutator, slightly darker"}
    return fit(kolektor_train[:12], config, captions=captions, progress=False)


@needs_open_clip
def test_clip_matcher_scores_every_variant_in_one_call(clip_weights):
    from edgecmg.model.matcher import ClipMatcher

    matcher = ClipMatcher.load(ARCH, clip_weights)
    matcher.set_prompt("a photo of a metal commutator")
    images = torch.randn(2, 3, 128, 96)
    head = torch.zeros(2, 1280, 4, 3)
    masks = torch.ones(3, 12)
    masks[1, :6] = 0
    masks[2, 6:] = 0
    scores = matcher.score_variants(images, head, masks)
    assert scores.shape == (2, 3)
    # The all-ones mask is the plain image: its score is the cosine of image and prompt embeddings.
    full = matcher.image_embedding(images, head) @ matcher.text_features
    torch.testing.assert_close(scores[:, 0], full, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(scores[:, 1], scores[:, 0])
    assert torch.all(scores.abs() <= 1.0 + 1e-5)


@needs_open_clip
def test_loading_silences_only_open_clips_random_init_warning(clip_weights, caplog):
    import logging

    from edgecmg.model.matcher import ClipMatcher

    with caplog.at_level(logging.INFO):
        ClipMatcher.load(ARCH, clip_weights)
        logging.getLogger().warning("the user's own warning")
    assert not [r for r in caplog.records if "open_clip" in r.pathname and r.levelno >= logging.WARNING]
    assert any(r.getMessage() == "the user's own warning" for r in caplog.records)
    assert not logging.getLogger().filters  # the filter is gone after the call


@needs_open_clip
def test_fit_save_load_with_clip_keeps_weights_out_of_the_artifact(clip_fit, clip_weights, tmp_path):
    from edgecmg import artifact

    model, metadata = clip_fit
    path = artifact.save(model, metadata, tmp_path / "clip.edgecmg")
    # The artifact names the CLIP weights; it never copies them (the file is 126 MB, the model < 2 MB).
    assert path.stat().st_size < 2_000_000 < clip_weights.stat().st_size
    loaded, header = artifact.load(path)
    assert header["matcher"]["kind"] == "clip" and header["matcher"]["arch"] == ARCH
    assert header["matcher"]["sha256"] == hashlib.sha256(clip_weights.read_bytes()).hexdigest()
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 256, 128, 3), dtype=np.uint8))
    with torch.no_grad():
        expected, got = model(frames), loaded(frames)
    torch.testing.assert_close(got.score, expected.score)
    assert torch.equal(got.kept_mask, expected.kept_mask)
    # Margins were fitted from the CLIP matcher's own gains, one per cell.
    assert model.scorer.cmer_margin.shape == (4,) and torch.all(model.scorer.cmer_margin >= 0)
    # edgecmg info's check (load's checks, without building the CLIP model) passes the file as load does,
    # and refuses it as load does once the weights file it names has changed
    assert artifact.check(path)["matcher"]["kind"] == "clip"
    original = clip_weights.read_bytes()
    clip_weights.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # one bit of the last weight
    try:
        with pytest.raises(ArtifactError, match="SHA-256"):
            artifact.check(path)
    finally:
        clip_weights.write_bytes(original)


@needs_open_clip
def test_a_different_clip_weights_file_is_refused(clip_fit, clip_weights, tmp_path):
    from safetensors.torch import load_file, save_file

    from edgecmg import artifact

    model, metadata = clip_fit
    path = artifact.save(model, metadata, tmp_path / "clip.edgecmg")
    other = tmp_path / "other.safetensors"
    state = load_file(str(clip_weights))
    state["logit_scale"] = state["logit_scale"] + 1
    save_file(state, str(other))
    with pytest.raises(ArtifactError, match="SHA-256"):
        artifact.load(path, clip_weights=other)
    with pytest.raises(MissingFileError, match="no such file"):
        artifact.load(path, clip_weights=tmp_path / "missing.safetensors")
    pickled = tmp_path / "clip.pt"
    pickled.write_bytes(b"not read")
    with pytest.raises(ConfigError, match="safetensors"):
        artifact.load(path, clip_weights=pickled)


@needs_open_clip
def test_clip_weights_of_another_arch_are_refused(clip_weights):
    from edgecmg.model.matcher import ClipMatcher

    with pytest.raises(ConfigError, match="do not fit"):
        ClipMatcher.load("ViT-M-32", clip_weights)
    with pytest.raises(ConfigError, match="not an open_clip model"):
        ClipMatcher.load("ViT-Q-99", clip_weights)


@needs_open_clip
def test_clip_model_exports_to_onnx_and_runs_in_onnx_runtime(clip_fit, tmp_path):
    pytest.importorskip("onnxruntime")
    from edgecmg import artifact
    from edgecmg.detector import Detector

    model, metadata = clip_fit
    path = artifact.save(model, metadata, tmp_path / "clip.edgecmg")
    frame = np.random.default_rng(1).integers(0, 256, (256, 128, 3), dtype=np.uint8)
    torch_result = Detector.load(path, backend="torch").predict(frame)
    ort_result = Detector.load(path, backend="onnxruntime").predict(frame)
    assert ort_result.score == pytest.approx(torch_result.score, rel=1e-4)
    assert np.array_equal(ort_result.kept_mask, torch_result.kept_mask)


@needs_open_clip
def test_cli_fit_with_clip_weights(clip_weights, kolektor_train, tmp_path):
    import json

    from edgecmg import artifact
    from edgecmg.cli import main

    good = tmp_path / "good"
    good.mkdir()
    for path in kolektor_train[:10]:
        (good / path.name).symlink_to(path)
    out = tmp_path / "cli.edgecmg"
    assert main(["-q", "fit", str(good), "--prompt", "a photo of a metal commutator", "-o", str(out),
                 "--input-size", "256", "128", "--cmle-dim", "8", "--clip-weights", str(clip_weights),
                 "--clip-arch", ARCH]) == 0
    header, _ = artifact.read_header(out)
    assert header["matcher"] == {"kind": "clip", "arch": ARCH, "weights": str(clip_weights.resolve()),
                                 "sha256": hashlib.sha256(clip_weights.read_bytes()).hexdigest()}
    assert json.loads(json.dumps(header))["config"]["matcher"] == "clip"


@needs_open_clip
def test_int8_calibration_keeps_the_clip_matcher_in_float(clip_fit, kolektor_train, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx

    from edgecmg import artifact
    from edgecmg.calibration import calibrate
    from edgecmg.detector import Detector

    model, metadata = clip_fit
    path = artifact.save(model, metadata, tmp_path / "clip.edgecmg")
    calib = tmp_path / "calib"
    calib.mkdir()
    for image in kolektor_train[:4]:
        (calib / image.name).symlink_to(image)
    out = calibrate(path, calib, tmp_path / "clip.int8.onnx", method="minmax", samples=4, profile="cpu",
                    progress=False)
    graph = onnx.load(str(out)).graph
    # The CLIP model's patch embedding: the only convolution outside the EfficientNet backbone.
    clip_convs = [n for n in graph.node if n.op_type in ("Conv", "QLinearConv") and "/backbone/" not in n.name
                  and "conv1" in n.name]
    assert clip_convs and all(n.op_type == "Conv" for n in clip_convs)  # the patch embedding stays float
    quantized_inputs = {i for n in graph.node if n.op_type == "DequantizeLinear" for i in n.output}
    assert not any(i in quantized_inputs for n in clip_convs for i in n.input)
    frame = np.random.default_rng(2).integers(0, 256, (256, 128, 3), dtype=np.uint8)
    result = Detector.load(out).predict(frame)
    assert np.isfinite(result.score)


@needs_open_clip
def test_fit_hashes_the_clip_weights_file_once(clip_weights, kolektor_train, monkeypatch):
    """fit's early check of --clip-weights hashed the file, and loading it hashed it again (seconds
    for a 600 MB file): the early check leaves the hash to the load."""
    from edgecmg.fit import fit
    from edgecmg.model import matcher

    hashed = []

    def counting_sha256(path):
        hashed.append(path)
        return real_sha256(path)

    real_sha256 = matcher.file_sha256
    monkeypatch.setattr(matcher, "file_sha256", counting_sha256)
    config = ModelConfig(prompt="a photo of a metal commutator", input_size=(128, 64), matcher="clip",
                         clip_arch=ARCH, clip_weights=str(clip_weights), cmle=False, cmer=False,
                         max_bank_size=200)
    model, _ = fit(kolektor_train[:10], config, progress=False)
    assert len(hashed) == 1
    assert model.featurizer.matcher.spec()["sha256"] == hashlib.sha256(clip_weights.read_bytes()).hexdigest()
