"""``edgecmg info`` never calls fine a model file that loading refuses: it runs load's checks on the
header and the tensors (without building anything from pretrained weights) and reports load's own
error, exit 2. And the header fields load used to take on trust: a format-3 file's score pool, and
use_cmle against the projection the tensors hold."""
from __future__ import annotations

import copy
import hashlib
import json
import re
import struct

import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from edgecmg import artifact
from edgecmg.cli import main
from edgecmg.commands.info import describe
from edgecmg.errors import ArtifactError, ConfigError, EdgeCMGError

PREFIX = struct.Struct("<8sIQ32s")  # the model file's fixed prefix: magic, version, header length, header SHA-256


def _parts(path):
    """(prefix version, header, payload bytes) of a model file."""
    data = path.read_bytes()
    _, version, header_len, _ = PREFIX.unpack_from(data)
    start = PREFIX.size
    return version, json.loads(data[start:start + header_len]), data[start + header_len:]


def _reseal(src, dst, *, header=None, payload=None, tensors=None, version=None):
    """``src`` with its header, payload (bytes, or ``tensors`` saved as safetensors) or version replaced
    and every checksum and size recomputed, as a tool that edits and re-hashes would leave it: only
    the loader's own checks stand in the way."""
    old_version, old_header, old_payload = _parts(src)
    header = copy.deepcopy(old_header if header is None else header)
    if tensors is not None:
        payload = save_safetensors(tensors)
    payload = old_payload if payload is None else payload
    version = old_version if version is None else version
    header["payload"] = {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    header["format_version"] = version
    header_bytes = json.dumps(header).encode()
    prefix = PREFIX.pack(artifact.MAGIC, version, len(header_bytes), hashlib.sha256(header_bytes).digest())
    dst.write_bytes(prefix + header_bytes + payload)
    return dst


def _tensors(path):
    return load_safetensors(_parts(path)[2])


def _with_tensor(name, make):
    """An edit of the payload: tensor ``name`` replaced by ``make(its tensors)`` (None: removed)."""
    def edit(src, dst):
        tensors = _tensors(src)
        value = make(tensors)
        if value is None:
            del tensors[name]
        else:
            tensors[name] = value
        return _reseal(src, dst, tensors=tensors)
    return edit


def _with_header(field, value):
    """An edit of the header: the dotted ``field`` set to ``value``."""
    def edit(src, dst):
        header = _parts(src)[1]
        table = header
        *parents, key = field.split(".")
        for parent in parents:
            table = table[parent]
        table[key] = value
        return _reseal(src, dst, header=header)
    return edit


def _nan_bank(tensors):
    bank = tensors["scorer.memory_bank"].clone()
    bank[0, 0] = float("nan")
    return bank


def _clip_without_weights(src, dst):
    header = _parts(src)[1]
    header["matcher"] = {"kind": "clip", "arch": "ViT-B-32", "weights": str(dst.parent / "gone.safetensors"),
                         "sha256": "0" * 64}
    return _reseal(src, dst, header=header)


# Files the audit found described as "checksums ok ... runs here on ..." while predict refused them:
# each passes every checksum (re-hashed after the edit), so only load's own checks tell.
REFUSED_BY_LOAD = {
    "payload not safetensors": lambda src, dst: _reseal(src, dst, payload=b"not safetensors at all"),
    "NaN in the memory bank": _with_tensor("scorer.memory_bank", _nan_bank),
    "bfloat16 memory bank": _with_tensor("scorer.memory_bank", lambda t: t["scorer.memory_bank"].bfloat16()),
    "float32 memory bank": _with_tensor("scorer.memory_bank", lambda t: t["scorer.memory_bank"].float()),
    "a tensor missing": _with_tensor("scorer.cmer_margin", lambda t: None),
    "an extra tensor": _with_tensor("scorer.unknown", lambda t: torch.zeros(3)),
    "no memory bank": _with_tensor("scorer.memory_bank", lambda t: None),
    "smoothing kernel summing to 0": _with_tensor("scorer.smoothing_taps", lambda t: torch.zeros(33)),
    "even smoothing kernel": _with_tensor("scorer.smoothing_taps", lambda t: torch.full((32,), 1 / 32)),
    # info showed "memory bank 1000000000000 x 32"
    "bank size no tensor has": _with_header("model.bank_size", 10 ** 12),
    "grid no tensor has": _with_header("grid", 3),
    # a file fitted on another install's backbone weights: info cannot read those, but load's refusal
    # reads only the header
    "other backbone weights": _with_header("backbone.sha256", "ab" * 32),
}


def test_a_clip_model_whose_weights_are_not_here_is_described_with_why_it_does_not_run(small_artifact, tmp_path,
                                                                                        capsys):
    """A CLIP model names a weights file (and needs open_clip) that another machine may lack, as an
    engine may lack TensorRT there: info describes it and says what loading it here says, never
    "runs here"."""
    path = _clip_without_weights(small_artifact, tmp_path / "clip.edgecmg")
    with pytest.raises(EdgeCMGError) as refused:
        artifact.load(path)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"runs here on none: loading it here fails: {refused.value}" in out, out
    assert describe(path)["runs_here"] == []


@pytest.mark.parametrize("case", sorted(REFUSED_BY_LOAD))
def test_info_refuses_with_loads_error_every_file_load_refuses(small_artifact, tmp_path, capsys, monkeypatch, case):
    path = REFUSED_BY_LOAD[case](small_artifact, tmp_path / "damaged.edgecmg")
    artifact.read_header(path)  # the checksums hold: a reader of those alone calls it fine
    with pytest.raises(EdgeCMGError) as refused:
        artifact.load(path)
    said = f"edgecmg info: error: {refused.value}"  # as predict says it, under info's name
    with monkeypatch.context() as patch:
        # Info stays a header reader: nothing is built from pretrained weights, CLIP's included.
        def no_weights(*args, **kwargs):
            raise AssertionError("edgecmg info read pretrained weights")

        patch.setattr(artifact, "load_pretrained", no_weights)
        patch.setattr("edgecmg.model.matcher.ClipMatcher.load", no_weights)
        assert main(["info", str(path), str(small_artifact)]) == 1
        captured = capsys.readouterr()
        assert captured.err.strip() == said
        assert str(path) not in captured.out and captured.out.count("runs here on") == 1  # the sound file's
        assert main(["info", str(path), "--json"]) == 2
        (entry,) = json.loads(capsys.readouterr().out)
        assert entry == {"file": str(path), "error": str(refused.value)}


def _dropped_pool(src, dst, version=None):
    header = _parts(src)[1]
    del header["model"]["score_top_fraction"]
    return _reseal(src, dst, header=header, version=version)


def test_a_format_3_file_without_its_score_pool_is_refused_and_a_format_2_file_keeps_the_maximum(small_artifact,
                                                                                                   tmp_path):
    """Format 3 writes model.score_top_fraction in every file and sets the threshold on the score it
    pools; without it the file loaded scored by the maximum (10.997 -> 11.228 in the audit) against
    that threshold. Format 2 files never had it: their thresholds were set on the maximum."""
    assert artifact.read_header(small_artifact)[0]["model"]["score_top_fraction"] > 0
    edited = _dropped_pool(small_artifact, tmp_path / "edited.edgecmg")
    message = re.escape(str(edited)) + r": header field 'model.score_top_fraction' is missing.*fit the model again"
    with pytest.raises(ArtifactError, match=message):
        artifact.load(edited)
    with pytest.raises(ArtifactError, match=message):
        describe(edited)
    old = _dropped_pool(small_artifact, tmp_path / "old.edgecmg", version=2)
    loaded, header = artifact.load(old)
    assert header["format_version"] == 2 and "score_top_fraction" not in header["model"]
    assert loaded.scorer.score_top_fraction == 0.0 and loaded.scorer.score_pixels == 1
    assert describe(old)["header"] == header


def _without_cmle(src, dst, use_cmle):
    """``src`` as a fit without CMLE stores it (the identity over all the layout's channels, a zero
    mean, a bank of that width), its header saying ``use_cmle``."""
    version, header, _ = _parts(src)
    tensors = _tensors(src)
    channels = tensors["featurizer.projection"].shape[0]
    bank = torch.randn(header["model"]["bank_size"], channels, generator=torch.Generator().manual_seed(0))
    tensors.update({"featurizer.projection": torch.eye(channels), "featurizer.proj_mean": torch.zeros(channels),
                    "scorer.memory_bank": bank.half(), "scorer.bank_sq_norms": bank.square().sum(1)})
    header["model"].update(feature_dim=channels, use_cmle=use_cmle)
    return _reseal(src, dst, header=header, tensors=tensors)


def test_a_use_cmle_flag_that_disagrees_with_the_projection_is_refused(small_fit, small_artifact, tmp_path):
    """Every frame goes through the payload's projection whatever the header's use_cmle says; the flag
    is what reports show (info said "CMLE off" for a file projecting with a fitted CMLE)."""
    says_off = _with_header("model.use_cmle", False)(small_artifact, tmp_path / "off.edgecmg")
    message = (re.escape(str(says_off)) + r": header field 'model.use_cmle' is false, but the payload's projection "
               r".* is a fitted CMLE projection.*fit the model again")
    with pytest.raises(ArtifactError, match=message):
        artifact.load(says_off)
    with pytest.raises(ArtifactError, match=message):
        describe(says_off)
    # The other way round: a file without CMLE whose header claims it.
    says_on = _without_cmle(small_artifact, tmp_path / "on.edgecmg", use_cmle=True)
    with pytest.raises(ArtifactError, match=re.escape(str(says_on)) + r": header field 'model.use_cmle' is true, "
                                                                      r"but .* is the identity fit stores without CMLE"):
        describe(says_on)
    # Told the truth, the same tensors load, and info says CMLE is off.
    honest = _without_cmle(small_artifact, tmp_path / "honest.edgecmg", use_cmle=False)
    assert artifact.load(honest)[1]["model"]["use_cmle"] is False
    assert not describe(honest)["model"]["model"]["use_cmle"]
    # save runs the same check: a model whose flag was switched after fitting is not written.
    model, metadata = small_fit
    switched = copy.deepcopy(model)
    switched.use_cmle = False
    out = tmp_path / "switched.edgecmg"
    with pytest.raises(ConfigError, match=re.escape(str(out)) + r": not written.*'model.use_cmle' is false"):
        artifact.save(switched, metadata, out)
    assert not out.exists()
