"""Error messages an audit of all of them found wanting: raw TypeError/AttributeError out of fit() for
a None or a list where a folder or a dict goes, a missing CLIP weights file said only after every
training image was read (and as "the model the detector was fitted with"), a garbled "too few
images" line, a broken link named on the command line ending the run instead of being skipped as in
a folder, and checksum refusals that said what happened but not what to do."""
import os

import numpy as np
import pytest

from edgecmg.cli import main
from edgecmg.config import ModelConfig
from edgecmg.errors import ArtifactError, ConfigError, DataError, MissingFileError


@pytest.mark.parametrize("images, said", [(None, "got None"), (123, "got a value of type int")])
def test_fit_of_nothing_usable_is_a_config_error(images, said):
    from edgecmg.fit import fit

    with pytest.raises(ConfigError, match=f"fit takes a folder, a glob, or a list of image paths or arrays, {said}"):
        fit(images, ModelConfig(prompt="a part"))


def test_captions_that_are_not_a_dict_are_a_config_error(kolektor_root):
    from edgecmg.fit import fit

    with pytest.raises(ConfigError, match=r"captions= takes a dict of image file name -> text, got a list"):
        fit(kolektor_root / "train" / "good", ModelConfig(prompt="a part"), captions=["a scratch"])


def test_missing_clip_weights_are_said_before_any_training_image_is_read(tmp_path, monkeypatch):
    from edgecmg import fit as fit_module

    def no_reading(*args, **kwargs):
        raise AssertionError("a training image was read before the weights were checked")

    monkeypatch.setattr(fit_module, "training_images", no_reading)
    config = ModelConfig(prompt="a part", matcher="clip", clip_weights=str(tmp_path / "nope.safetensors"))
    with pytest.raises(MissingFileError, match=r"nope.safetensors: no such file; pass the local .safetensors file of "
                                               r"the ViT-\S+ model to fit with \(clip_weights, --clip-weights\)"):
        fit_module.fit(tmp_path, config)


def test_too_few_readable_images_are_said_in_plain_words(kolektor_root, tmp_path):
    from edgecmg.fit import fit

    good = sorted((kolektor_root / "train" / "good").iterdir())[0]
    os.symlink(good, tmp_path / "a.jpg")
    for name in ("b.png", "c.png"):
        (tmp_path / name).write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"found 1 of the 3 given in .*: the others could not be read or are copies "
                                        r"of another \(named above\); fix or replace them, or add more"):
        fit(tmp_path, ModelConfig(prompt="a part"))


def test_a_broken_link_named_on_the_command_line_is_skipped_as_in_a_folder(small_artifact, kolektor_root,
                                                                         tmp_path, caplog, capsys):
    good = sorted((kolektor_root / "test" / "good").iterdir())[0]
    os.symlink(tmp_path / "gone.png", tmp_path / "dangling.png")
    out = tmp_path / "out"
    assert main(["-q", "predict", str(small_artifact), str(good), str(tmp_path / "dangling.png"), "--out", str(out),
                 "--backend", "torch", "--overlays", "none"]) == 1  # one judged, one skipped
    assert "1 image judged, 1 skipped" in capsys.readouterr().out
    assert f"dangling.png is a symbolic link to {tmp_path / 'gone.png'}, which does not exist" in caplog.text


@pytest.mark.parametrize("where, said", [(-100, "payload"), (200, "header")])
def test_a_checksum_refusal_says_what_to_do(small_artifact, tmp_path, where, said):
    from edgecmg import artifact

    data = bytearray(small_artifact.read_bytes())
    if said == "header":  # a byte inside the JSON header's text, past its length prefix
        text_at = data.index(b'"input_size"')
        data[text_at + 2] ^= 0x01
    else:
        data[where] ^= 0xFF
    damaged = tmp_path / "damaged.edgecmg"
    damaged.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=f"{said} checksum mismatch: .*; copy the original file again or fit the "
                                            "model again"):
        artifact.load(damaged)


def test_predict_that_reads_no_image_says_what_to_do(small_artifact, tmp_path, caplog):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(np.zeros(10, np.uint8).tobytes())
    assert main(["-q", "predict", str(small_artifact), str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                 "--backend", "torch"]) == 1
    assert "no image could be read: nothing was judged; each file is named above with why" in caplog.text


def test_export_over_an_existing_file_says_it_replaces_it(small_artifact, tmp_path, caplog):
    out = tmp_path / "m.onnx"
    assert main(["-q", "export", str(small_artifact), "-o", str(out)]) == 0
    assert "exists" not in caplog.text
    assert main(["-q", "export", str(small_artifact), "-o", str(out)]) == 0
    assert f"{out} exists; this export replaces it when it ends (another -o keeps both)" in caplog.text
    link = tmp_path / "link.onnx"
    link.symlink_to(out)
    caplog.clear()
    assert main(["-q", "export", str(small_artifact), "-o", str(link)]) == 0
    assert f"{link} is a link to {out}; this export replaces the link with the new file when it ends" in caplog.text
    assert out.is_file() and not link.is_symlink()
