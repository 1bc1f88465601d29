import json
import struct

import numpy as np
import pytest
import torch

from edgecmg import artifact
from edgecmg.errors import ArtifactError


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
    _, _, header_len, _ = struct.unpack_from("<8sIQ32s", data)
    start = struct.calcsize("<8sIQ32s")
    return start, start + header_len


def test_truncated_file_is_refused(small_artifact, tmp_path):
    bad = _rewrite(small_artifact, tmp_path / "t.edgecmg", lambda d: d.__delitem__(slice(len(d) - 100, None)))
    with pytest.raises(ArtifactError, match="truncated payload"):
        artifact.load(bad)
    tiny = tmp_path / "tiny.edgecmg"
    tiny.write_bytes(b"EDGE")
    with pytest.raises(ArtifactError, match="truncated"):
        artifact.load(tiny)


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
    with pytest.raises(ArtifactError, match="no such model file"):
        artifact.load(tmp_path / "missing.edgecmg")


def test_other_backbone_weights_are_refused(small_fit, tmp_path):
    model, metadata = small_fit
    meta = {**metadata, "backbone": {**metadata["backbone"], "sha256": "0" * 64}}
    path = artifact.save(model, meta, tmp_path / "other.edgecmg")
    with pytest.raises(ArtifactError, match="install the version the model was fitted with"):
        artifact.load(path)


def test_no_pickle_on_the_load_path(small_artifact, monkeypatch):
    import pickle

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used while loading an artifact")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    artifact.read_header(small_artifact)


def test_save_creates_missing_folders_and_refuses_unwritable_places(small_fit, tmp_path):
    model, metadata = small_fit
    nested = artifact.save(model, metadata, tmp_path / "models" / "line3" / "part.edgecmg")
    assert artifact.read_header(nested)[0]["format_version"] == artifact.FORMAT_VERSION
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(ArtifactError, match="cannot write the model file .*not_a_folder"):
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


def test_files_without_a_normal_level_load_with_maps_unchanged(small_fit, tmp_path, monkeypatch):
    """Version 1 files, written before maps were measured from a fitted normal level, still load: level 0."""
    model, metadata = small_fit
    full = artifact._tensors_of
    monkeypatch.setattr(artifact, "FORMAT_VERSION", 1)
    monkeypatch.setattr(artifact, "_tensors_of",
                        lambda m: {k: v for k, v in full(m).items() if k != "scorer.normal_map"})
    path = artifact.save(model, metadata, tmp_path / "old.edgecmg")
    monkeypatch.undo()
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
