"""fit(): the ablation settings of the benchmark (CMG parts switched off), and the normal level of the maps."""
import logging
import re
import numpy as np
import pytest
import torch

from edgecmg.config import ModelConfig
from edgecmg.errors import DataError
from edgecmg.fit import fit


def test_fit_without_cmle_and_cmer_is_the_plain_baseline(kolektor_train):
    config = ModelConfig(prompt="a photo of a metal commutator", input_size=(256, 96), cmle=False, cmer=False,
                         max_bank_size=500)
    model, metadata = fit(kolektor_train[:12], config, progress=False)
    channels = model.geometry.layout.channels
    # No CMLE: the patch features enter the bank unprojected.
    assert metadata["training"]["feature_dim"] == channels == model.scorer.memory_bank.shape[1]
    assert torch.equal(model.featurizer.projection, torch.eye(channels))
    # No CMER: zero margins, and every cell stays in the image score.
    assert metadata["cmer_margin"] == [0.0] * config.grid ** 2
    frames = torch.randint(0, 256, (2, 256, 96, 3), dtype=torch.uint8)
    with torch.no_grad():
        assert model(frames).kept_mask.all()


def test_normal_level_is_what_unseen_good_parts_score(small_fit, kolektor_train):
    """fit scores bank images without their own bank rows; the level must match what good images the
    fit never saw score, in size and in where it is high (scored against the whole bank, bank images
    would look far more normal than new parts)."""
    from edgecmg import ops
    from edgecmg.imageio import read_image, resize_to_input

    model, _ = small_fit  # fitted on kolektor_train[:24]
    maps = []
    with torch.no_grad():
        for path in kolektor_train[30:46]:
            frame = resize_to_input(read_image(path), model.geometry.input_size)
            embeddings, _ = model.featurizer(torch.from_numpy(frame)[None])
            distances, _ = ops.knn(embeddings, model.scorer.memory_bank, k=model.scorer.knn_k)
            maps.append(model.scorer.raw_maps(distances.clamp_min(0).sqrt().mean(dim=-1))[0])
    unseen = torch.stack(maps).mean(dim=0)
    level = model.scorer.normal_map
    assert abs(float(level.mean()) / float(unseen.mean()) - 1) < 0.25
    assert torch.corrcoef(torch.stack([level.flatten(), unseen.flatten()]))[0, 1] > 0.6


def test_smallest_fit_keeps_a_positive_threshold_and_draws_overlays(kolektor_train, caplog):
    """With 8 images the bank is tiny and bank images scored without their own rows look worse than
    new parts; the level's height comes from the holdout, so good parts still average 0, the
    threshold stays above it and overlays (whose colour scale needs a positive threshold) draw."""
    from edgecmg.detector import Detector
    from edgecmg.imageio import read_image

    model, metadata = fit(kolektor_train[106:114], ModelConfig(prompt="a metal part", input_size=(256, 96)),
                          progress=False)
    assert metadata["threshold"] > 0
    # 2 held-out images set that threshold, and fit says how rough that is and what to do
    assert "set on 2 held-out good images (of 8); below 20 it is a rough guess" in caplog.text
    assert "(edgecmg threshold M DIR, or Detector.load(threshold=...))" in caplog.text  # the CLI's way too
    assert "fit on 200 or more images" in caplog.text
    detector = Detector.from_model(model, metadata)
    result = detector.predict(read_image(kolektor_train[120]))
    assert result.overlay().shape == result.anomaly_map.shape + (3,)


def test_threshold_is_the_configured_quantile_of_the_holdout_scores(kolektor_train, monkeypatch):
    """threshold_quantile picks the threshold among the held-out good images' scores (fit's 0.99 is
    only the default): the same images and seed at 0.5 and 1.0 give the median and the maximum."""
    import edgecmg.fit as fit_module

    holdouts = []
    real = fit_module._score_holdout

    def spy(*args):
        scores, level = real(*args)
        holdouts.append(np.asarray(scores) - level)  # what fit sets the threshold on
        return scores, level

    monkeypatch.setattr(fit_module, "_score_holdout", spy)
    thresholds = {}
    for q in (0.5, 1.0):
        config = ModelConfig(prompt="a photo of a metal commutator", input_size=(64, 64), cmle=False,
                             max_bank_size=50, threshold_quantile=q)
        thresholds[q] = fit(kolektor_train[:8], config, progress=False)[1]["threshold"]
    np.testing.assert_array_equal(holdouts[0], holdouts[1])  # the same holdout, scored the same
    scores = holdouts[0]
    assert len(scores) == 2 and scores.max() > scores.min()
    assert thresholds[1.0] == pytest.approx(float(scores.max()), abs=1e-6)
    assert thresholds[0.5] == pytest.approx(float(np.median(scores)), abs=1e-6)
    assert thresholds[0.5] < thresholds[1.0]


def test_model_config_refuses_invalid_values_by_name():
    import dataclasses
    import re

    import pytest

    from edgecmg.errors import ConfigError

    for kwargs, expected in ((dict(grid=1), "grid=1 (--grid) must be between 2 and 8"),
                             (dict(prompt=123), "prompt=123: the prompt must be a non-empty string"),
                             (dict(prompt="  "), "the prompt must be a non-empty string"),
                             (dict(max_side=0), "max_side=0 (--max-side) is too small"),
                             (dict(max_side=-5), "max_side=-5 (--max-side) is too small"),
                             (dict(max_side=63), "use at least 64"),
                             # 100000 ended in OpenCV's out-of-memory error, with a hint about image counts
                             (dict(max_side=100000), "max_side=100000 (--max-side) is too large"),
                             (dict(max_side=2049), "use at most 2048"),
                             (dict(input_size=(64, 4128)), "input_size=(64, 4128) (--input-size 64 4128): sides of at most 4096"),
                             (dict(max_bank_size=0), "max_bank_size=0 (--bank-size) must be >= 1"),
                             (dict(max_bank_size=-3), "max_bank_size=-3"),
                             (dict(smoothing_sigma=0.0), "smoothing_sigma=0.0 must be > 0"),
                             (dict(smoothing_sigma=-1.0), "smoothing_sigma=-1.0"),
                             (dict(cmle_neighbors=0), "cmle_neighbors=0"),
                             (dict(threshold_quantile=1.5), "threshold_quantile=1.5"),
                             (dict(batch_size=0), "batch_size=0"),
                             (dict(input_size=(64, 64, 3)), "input_size=(64, 64, 3) must be a pair of integers"),
                             (dict(input_size=416), "input_size=416 must be a pair of integers or None, got int"),
                             (dict(max_side="256"), "max_side='256' must be an integer, got str"),
                             (dict(knn_k=17), "knn_k=17 must be in 1..16"),
                             (dict(knn_k=0), "knn_k=0 must be in 1..16"),
                             (dict(input_size=(32, 64)), "input_size=(32, 64) (--input-size 32 64) must be >= 64 and multiples of 32"),
                             (dict(input_size=(64, 80)), "input_size=(64, 80) (--input-size 64 80) must be >= 64 and multiples of 32"),
                             (dict(grid=2.5), "grid=2.5 must be an integer"),
                             (dict(cmer="yes"), "cmer='yes' must be True or False"),
                             (dict(coreset_ratio="0.1"), "coreset_ratio='0.1' must be a number")):
        with pytest.raises(ConfigError, match=re.escape(expected)):
            ModelConfig(**kwargs)
    # numpy numbers and a list pair are taken as Python values (the config is written into JSON metadata).
    import json

    import numpy as np

    config = ModelConfig(input_size=[np.int64(256), 96], max_side=np.int32(320), coreset_ratio=np.float32(0.5))
    assert config.input_size == (256, 96) and type(config.max_side) is int and type(config.coreset_ratio) is float
    json.dumps(dataclasses.asdict(config))
    # The smallest accepted values still build a config (and max_side 64 a 64-px-sided input).
    ModelConfig(max_side=64, max_bank_size=1, smoothing_sigma=0.1, cmle_neighbors=1, threshold_quantile=1.0,
                batch_size=1, knn_k=16, input_size=(64, 64))



def test_model_config_range_ends_and_unknown_choices():
    """Each range's documented ends are accepted; values just outside, an unknown matcher and a bool
    given for a number are refused by name."""
    import re

    from edgecmg.errors import ConfigError

    ModelConfig(coreset_ratio=1.0, score_top_fraction=0.25, cmle_dim=8, grid=8, cmer_slack=0.0,
                cmer_quantile=1.0)
    ModelConfig(cmle_dim=1024, grid=2, score_top_fraction=0.0)
    for kwargs, expected in ((dict(coreset_ratio=0.0), "coreset_ratio=0.0 must be in (0, 1]"),
                             (dict(coreset_ratio=1.5), "coreset_ratio=1.5"),
                             (dict(score_top_fraction=0.26), "score_top_fraction=0.26 (--score-top-fraction) must be in [0, 0.25]"),
                             (dict(cmle_dim=7), "cmle_dim=7 (--cmle-dim) must be in 8..1024"),
                             (dict(cmle_dim=1025), "cmle_dim=1025"),
                             (dict(grid=9), "grid=9 (--grid) must be between 2 and 8"),
                             (dict(cmer_slack=-0.1), "cmer_slack=-0.1 must be >= 0"),
                             (dict(cmer_quantile=0.0), "cmer_quantile=0.0 must be in (0, 1]"),
                             (dict(matcher="clip-ish"), "matcher='clip-ish': choose 'zeroshot'"),
                             (dict(knn_k=True), "knn_k=True must be an integer, got bool")):
        with pytest.raises(ConfigError, match=re.escape(expected)):
            ModelConfig(**kwargs)

def test_smallest_max_side_gives_the_smallest_input_size():
    from edgecmg.fit import choose_input_size

    assert choose_input_size([(100, 100)], ModelConfig(max_side=64)) == (64, 64)
    # a line-scan camera's 500 x 8000 frames at the largest max_side: 512 x 8192 would pass the longest
    # side a model file may have (the loader refuses it, at the end of the fit): shrunk, the aspect kept
    assert choose_input_size([(500, 8000)], ModelConfig(max_side=2048)) == (256, 4096)
    assert choose_input_size([(647, 256)], ModelConfig()) == (416, 160)  # KolektorSDD: unchanged


def test_fit_is_reproducible_and_fits_cmer_margins_on_bank_images_only(kolektor_train, monkeypatch):
    from edgecmg.model import cmer

    gains_rows = []
    real_fit_margin = cmer.fit_margin

    def spy(gains, quantile, slack):
        gains_rows.append(gains.shape[0])
        return real_fit_margin(gains, quantile, slack)

    monkeypatch.setattr(cmer, "fit_margin", spy)
    config = ModelConfig(prompt="a photo of a metal commutator", input_size=(256, 96), max_bank_size=500, seed=5)
    # Every draw of fit comes from its own generator seeded by config.seed: the global one (which fit
    # no longer reseeds under its caller) does not matter.
    torch.manual_seed(123)
    first, meta = fit(kolektor_train[:20], config, progress=False)
    torch.manual_seed(456)
    second, _ = fit(kolektor_train[:20], config, progress=False)
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name
    # The holdout (10% of 20 = 2 images) sets the threshold as unseen parts: CMER's margins must not
    # have seen it, or it could never be gated as new parts are.
    assert gains_rows == [18, 18]


def test_fit_inputs_folders_globs_mixed_lists_and_converted_arrays(kolektor_root, kolektor_train, tmp_path, caplog):
    """What fit() reads, before any feature pass: an MVTec root or folder (not its path's characters),
    a glob, paths and arrays mixed in order, and arrays converted as stream() converts frames, so a
    float or gray array trains on the same pixels as its file (a float array once fitted a model
    whose threshold was 30x too low)."""
    import numpy as np
    import pytest

    from edgecmg.errors import DataError
    from edgecmg.fit import _Training, training_images
    from edgecmg.imageio import read_image

    assert training_images(kolektor_root) == kolektor_train  # MVTec root: its train/good
    assert training_images(str(kolektor_root / "train" / "good")) == kolektor_train
    assert training_images(str(kolektor_root / "train" / "good" / "kos01_*")) == [
        p for p in kolektor_train if p.name.startswith("kos01_")]
    # an MVTec root without train/: refused, not searched (a glob over it would train on test/'s defects)
    (tmp_path / "no_train" / "test" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match="looks like an MVTec root .* but has no train/good folder"):
        training_images(tmp_path / "no_train")
    rgb = read_image(kolektor_train[0])
    gray = rgb[..., 0]
    (tmp_path / "broken.png").write_bytes(b"not a png")
    items = [kolektor_train[1], gray.astype(np.float32) / 255, tmp_path / "broken.png", gray, str(kolektor_train[2]),
             gray.astype(np.uint16) * 257]
    training = _Training(item for item in items)  # any iterable
    size = rgb.shape[:2]
    frames = training.read_at(size, show=False)
    assert training.names == [kolektor_train[1].name, "array1", "array3", kolektor_train[2].name, "array5"]
    assert all(frame.dtype == np.uint8 and frame.shape == (*size, 3) for frame in frames)
    for converted in (frames[1], frames[2], frames[4]):
        np.testing.assert_array_equal(converted, rgb)
    assert "broken.png" in caplog.text and "1 of 6 image(s) skipped" in caplog.text
    with pytest.raises(DataError, match=r"training image 1: a float frame must hold finite values in \[0, 1\]"):
        _Training([rgb, rgb.astype(np.float32)])
    # bgr=True: arrays in OpenCV's order train on the pixels their RGB twins do; files stay RGB.
    colour = np.rint(rgb * np.array([1.0, 0.6, 0.2])).astype(np.uint8)
    training = _Training([colour[..., ::-1], kolektor_train[0]], bgr=True)
    swapped, from_file = training.read_at(size, show=False)
    np.testing.assert_array_equal(swapped, colour)
    np.testing.assert_array_equal(from_file, rgb)
    with pytest.raises(DataError, match=r"got one array of shape \(\d+, \d+, 3\)"):
        _Training(rgb)
    with pytest.raises(DataError, match="no training images"):
        _Training([])
    pattern = str(kolektor_root / "train" / "good" / "*.jpg")
    with pytest.raises(DataError, match=r"training image 1 is a glob pattern .*: pass the pattern itself, fit\("):
        _Training([kolektor_train[0], pattern])


def test_fit_keeps_training_images_only_at_the_model_size(kolektor_train, tmp_path, caplog):
    """Sizes come from the file headers, pixels are read once at the model size, and a file whose
    header is intact over a damaged body is skipped and reported when its pixels are read, with the
    rest of the set still trained on."""
    import cv2

    from edgecmg.fit import _Training
    from edgecmg.imageio import read_image, resize_to_input

    big = []
    for path in kolektor_train[:3]:  # 4x the camera's frame: what a 5-megapixel line camera gives
        image = read_image(path)
        target = tmp_path / (path.stem + ".png")
        cv2.imwrite(str(target), cv2.resize(image, None, fx=4, fy=4, interpolation=cv2.INTER_NEAREST))
        big.append(target)
    damaged = tmp_path / "damaged.png"
    data = big[0].read_bytes()
    damaged.write_bytes(data[: len(data) // 3])  # the header survives, the pixels do not
    training = _Training([big[0], damaged, *big[1:]])  # read on threads: the order must hold
    assert training.shapes[1] == training.shapes[0] == tuple(4 * s for s in read_image(kolektor_train[0]).shape[:2])
    frames = training.read_at((320, 128), show=False)
    assert training.names == [p.name for p in big] and len(training.shapes) == 3
    assert all(frame.shape == (320, 128, 3) for frame in frames)
    np.testing.assert_array_equal(frames[1], resize_to_input(read_image(big[1]), (320, 128)))
    assert "damaged.png" in caplog.text and "1 of 4 image(s) skipped" in caplog.text


def test_too_few_images_names_the_folder_and_what_to_do(kolektor_train, tmp_path):
    import re
    import shutil

    from edgecmg.config import ModelConfig
    from edgecmg.errors import DataError
    from edgecmg.fit import fit

    for path in kolektor_train[:5]:
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=rf"at least 8 readable, distinct images of good parts, found 5 of the 6 given "
                                        rf"in {re.escape(str(tmp_path))}: the others could not be read"):
        fit(tmp_path, ModelConfig(prompt="a part"), progress=False)


def test_fit_on_a_folder_reads_its_captions_csv(kolektor_train, tmp_path, monkeypatch):
    """captions.csv (file,text) beside the images gives those images their CMLE text: the captioned
    rows are the MiniLM vectors of their captions, the others stay pseudo-text."""
    import csv

    import edgecmg.fit as fit_module

    folder = tmp_path / "good"
    folder.mkdir()
    files = kolektor_train[:12]
    for path in files:
        (folder / path.name).symlink_to(path)
    captions = {files[0].name: "a commutator with a bright scratch", files[3].name: "a dark worn commutator"}
    with open(folder / "captions.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "text"])
        writer.writerows(captions.items())
    seen = {}
    real = fit_module._text_embeddings

    def spy(names, given, pseudo, matcher):
        text = real(names, given, pseudo, matcher)
        seen.update(names=names, given=given, pseudo=pseudo, text=text, matcher=matcher)
        return text

    monkeypatch.setattr(fit_module, "_text_embeddings", spy)
    fit(folder, ModelConfig(prompt="a photo of a metal commutator", input_size=(256, 96), cmle_dim=8,
                            max_bank_size=300), progress=False)
    assert seen["given"] == captions
    rows = [seen["names"].index(name) for name in captions]
    expected = seen["matcher"].encode_texts(list(captions.values())).to(seen["text"].dtype)
    torch.testing.assert_close(seen["text"][rows], expected)
    others = [i for i in range(len(files)) if i not in rows]
    torch.testing.assert_close(seen["text"][others], seen["pseudo"][others])
    assert not torch.allclose(seen["text"][rows], seen["pseudo"][rows])


def test_captions_csv_is_read_from_the_one_folder_a_glob_matches_and_not_across_folders(kolektor_train, tmp_path,
                                                                                     caplog):
    """fit(glob) read captions.csv from the first image's folder, whose rows could then caption files
    of the same name in the glob's other folders."""
    from edgecmg.fit import _folder_captions, training_images

    for side, files in (("left", kolektor_train[:3]), ("right", kolektor_train[3:6])):
        (tmp_path / side).mkdir()
        for path in files:  # the first of each side under one name: a caption of one side fits the other's
            (tmp_path / side / ("part.jpg" if path in (files[0],) else path.name)).symlink_to(path)
        (tmp_path / side / "captions.csv").write_text(f"file,text\npart.jpg,a {side} part\n")
    one = training_images(str(tmp_path / "left" / "*.jpg"))
    assert _folder_captions(one, cmle=True) == {"part.jpg": "a left part"}
    both = training_images(str(tmp_path / "*" / "*.jpg"))
    with caplog.at_level("INFO", logger="edgecmg"):
        assert _folder_captions(both, cmle=True) is None
        assert "the images come from 2 folders" in caplog.text and str(tmp_path / "left" / "captions.csv") in caplog.text
        caplog.clear()
        assert _folder_captions(one, cmle=False) is None
        assert "is not read: captions serve CMLE only" in caplog.text


def test_read_captions_takes_a_byte_order_mark_and_names_a_file_that_is_not_utf8(tmp_path):
    """Excel's "CSV UTF-8" starts with a BOM, which was read into the first header name and refused as
    a file without the 'file,text' header; a Latin-1 file ended fit in a UnicodeDecodeError traceback."""
    from edgecmg.errors import DataError
    from edgecmg.fit import read_captions

    (tmp_path / "captions.csv").write_bytes("\ufefffile,text\r\na.png,a shiny part\r\n".encode("utf-8"))
    assert read_captions(tmp_path) == {"a.png": "a shiny part"}
    (tmp_path / "captions.csv").write_bytes("file,text\na.png,caf\xe9 part\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"captions\.csv is not UTF-8 text .*save it as CSV UTF-8"):
        read_captions(tmp_path)


def test_read_captions_leaves_out_rows_without_text_and_says_so(tmp_path, caplog):
    """A row with no text cell (a short row) gave None as a caption, and fit ended in sentence-transformers'
    'Unsupported input type: NoneType' traceback after its whole feature pass; an empty cell was encoded
    as the empty string. Both are left out with a warning naming them; a wrong header is quoted."""
    from edgecmg.errors import DataError
    from edgecmg.fit import read_captions

    (tmp_path / "captions.csv").write_text('file,text\na.png\nb.png,  \n c.png , "a part, shiny"\n,orphan\n')
    assert read_captions(tmp_path) == {"c.png": "a part, shiny"}
    assert "3 row(s) without a file name or a text left out" in caplog.text
    assert "a.png, b.png, (no file name)" in caplog.text
    (tmp_path / "captions.csv").write_text("a.png,a shiny part\n")
    with pytest.raises(DataError, match=r"header 'file,text' as its first line; it starts with 'a.png,a shiny part'"):
        read_captions(tmp_path)


def test_fit_warns_about_captions_that_name_no_training_image(kolektor_train, caplog):
    """A caption whose file is not among the training images (a path, another extension, a file
    removed) was dropped without a word, so a captions.csv that matched nothing left CMLE on pseudo-text."""
    captions = {f"good/{kolektor_train[0].name}": "a commutator", kolektor_train[1].name: "a worn commutator"}
    fit(kolektor_train[:8], ModelConfig(prompt="a photo of a metal commutator", input_size=(64, 64), cmle_dim=8,
                                        max_bank_size=50), captions=captions, progress=False)
    assert (f"1 of 2 caption(s) name no training image (good/{kolektor_train[0].name}): captions are matched by "
            f"file name alone (e.g. {kolektor_train[0].name}), 1 of 8 images captioned") in caplog.text


def test_fit_names_training_images_of_another_aspect(kolektor_train, caplog):
    """A rotated (or uncropped) image among the training crops was resized to the model's input like
    the others, its part stretched 6x into the memory bank, without a word; Detector warned only
    when such a frame was judged later."""
    from edgecmg.imageio import read_image

    rotated = np.ascontiguousarray(np.rot90(read_image(kolektor_train[8])))
    h, w = rotated.shape[:2]
    fit([*kolektor_train[:8], rotated], ModelConfig(prompt="a photo of a metal commutator", max_side=64,
                                                    cmle=False, max_bank_size=50), progress=False)
    assert "1 of 9 training image(s) have a height/width over 1.25x off the others' median" in caplog.text
    assert f"array8 ({h}x{w}); crop or rotate them" in caplog.text  # height x width, as the README writes sizes
    assert "the resize to the model's 96x64 (height x width)" in caplog.text
    assert kolektor_train[0].name not in caplog.text


def test_training_images_that_copy_others_are_left_out_and_named(kolektor_train, caplog, tmp_path, capsys):
    """KolektorSDD's training folder holds byte-identical pairs (kos21_Part6 and kos21_Part7, ...);
    an array equal to a file's pixels is a copy too. A copy on each side of the held-out split would
    score as seen before and set the threshold too low."""
    from edgecmg.imageio import read_image

    images = kolektor_train[96:106]  # 10 files: kos21_Part7.jpg repeats kos21_Part6.jpg
    assert images[-2].read_bytes() == images[-1].read_bytes()
    (tmp_path / "broken.png").write_bytes(b"not a png")
    captions = {images[0].name: "a commutator", images[1].name: "a worn commutator", "gone.png": "-"}
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        model, metadata = fit([*images, read_image(images[0]), tmp_path / "broken.png"],
                              ModelConfig(prompt="a metal part", input_size=(256, 96)), captions=captions,
                              progress=False)
    training = metadata["training"]
    assert training["images"] == 9 and training["copies_left_out"] == 2
    assert training["threshold_left_out"] == []  # 2 held out: too few to call one far above
    # The file names what the log named: the held-out images (the model never saw them in its bank),
    # the copies and unreadable files left out, and how many images had a caption.
    assert len(training["holdout"]) == training["holdout_images"] == 2
    assert set(training["holdout"]) <= {p.name for p in images[:-1]}
    assert training["copies"] == [images[-1].name, "array10"]
    assert training["unreadable"] == ["broken.png"] and training["unreadable_skipped"] == 1
    assert training["captioned_images"] == 2
    from edgecmg import artifact
    from edgecmg.cli import main

    artifact.save(model, metadata, tmp_path / "m.edgecmg")
    assert artifact.load(tmp_path / "m.edgecmg")[1]["training"] == training  # the loader takes the new fields
    assert main(["info", str(tmp_path / "m.edgecmg")]) == 0
    assert "held out for the threshold, 2 copies of others left out)" in capsys.readouterr().out
    assert (f"2 training image(s) left out as copies of others, pixel for pixel ({images[-1].name} = "
            f"{images[-2].name}, array10 = {images[0].name})") in caplog.text


def test_a_good_image_scoring_far_above_the_rest_does_not_set_the_threshold(caplog):
    """The held-out scores of KolektorSDD's default model (254 images, seed 0): kos23_Part1.jpg, a
    'good' training part with a bright blob on it, scored 28.8 beside 24 others up to 5.45; the
    0.99 quantile of all 25 was 23.2, at which the model missed 50 of 52 test defects."""
    from edgecmg.thresholds import threshold_from_scores

    scores = [0.86, 0.9, 1.04, 1.15, 1.16, 1.18, 1.21, 1.29, 1.38, 1.49, 2.02, 2.1, 2.21, 2.25, 2.28, 2.29, 2.7,
              2.92, 3.26, 3.43, 3.57, 3.69, 3.77, 5.45, 28.82]
    names = [f"part{i}.jpg" for i in range(len(scores))]
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        threshold, left_out = threshold_from_scores(scores, 0.99, names)
    assert left_out == ["part24.jpg"]
    assert threshold == pytest.approx(float(np.quantile(scores[:-1], 0.99)))
    assert ("1 of 25 good image(s) score far above the others and are left out of the threshold (part24.jpg: "
            "28.82; the others score up to 5.45)") in caplog.text
    # a score just inside the fence (Q3 + 3 x IQR) stays; few scores, or scores all alike, leave none out
    q1, q3 = np.quantile(scores[:-1] + [100.0], [0.25, 0.75])  # the quartiles whatever the largest score
    fence = float(q3 + 3 * (q3 - q1))
    assert threshold_from_scores(scores[:-1] + [fence - 1e-9], 0.99, names)[1] == []
    assert threshold_from_scores(scores[:-1] + [fence + 1e-9], 0.99, names)[1] == ["part24.jpg"]
    assert threshold_from_scores([1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 90.0], 0.99, names[:7]) == (
        pytest.approx(float(np.quantile([1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 90.0], 0.99))), [])
    assert threshold_from_scores([2.0] * 9 + [2.5], 1.0, names[:10]) == (2.5, [])
    # more scores past the fence than strays would be (5%, at least one): a second kind of part, all kept
    caplog.clear()
    two_kinds = [1.0 + 0.01 * i for i in range(80)] + [5.0 + 0.01 * i for i in range(20)]
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        threshold, left_out = threshold_from_scores(two_kinds, 0.99, [f"p{i}" for i in range(100)])
    assert left_out == [] and threshold == pytest.approx(float(np.quantile(two_kinds, 0.99)))
    assert "20 of 100 good image(s) score far above the others, too many to be strays" in caplog.text
    assert f"kept in the threshold ({threshold:.4g}; {np.quantile(two_kinds[:80], 0.99):.4g} without them)" in caplog.text
    assert "look at them (p99: 5.19, p98: 5.18, p97: 5.17, p96: 5.16, p95: 5.15 and 15 more)" in caplog.text  # highest first
    for bad in ([], [1.0, float("nan")], [1.0, float("inf")]):
        with pytest.raises(DataError, match="a threshold needs finite scores"):
            threshold_from_scores(bad, 0.99, ["a"] * len(bad))
    with pytest.raises(DataError, match="one name each: got 2 score"):
        threshold_from_scores([1.0, 2.0], 0.99, ["a"])


def test_fit_sets_its_threshold_by_that_rule_on_the_named_held_out_images(kolektor_train, monkeypatch):
    import edgecmg.fit as fit_module

    calls = []
    real = fit_module.threshold_from_scores

    def spy(scores, quantile, names):
        calls.append((list(scores), quantile, list(names)))
        return real(scores, quantile, names)

    monkeypatch.setattr(fit_module, "threshold_from_scores", spy)
    images = kolektor_train[106:126]
    _, metadata = fit(images, ModelConfig(prompt="a metal part", input_size=(256, 96), threshold_quantile=0.9),
                      progress=False)
    ((scores, quantile, names),) = calls
    assert quantile == 0.9 and len(names) == len(scores) == metadata["training"]["holdout_images"]
    assert set(names) <= {p.name for p in images}
    assert metadata["threshold"] == real(scores, quantile, names)[0]


def test_strays_are_left_out_from_eight_scores_and_a_score_on_the_fence_stays():
    """From MIN_SCORES_FOR_OUTLIERS (8) scores on, one stray is left out (5% of 8 rounds down to 0:
    'at least one'); the fence itself is not 'far above'."""
    from edgecmg.thresholds import threshold_from_scores

    eight = [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 90.0]
    names = [f"p{i}" for i in range(9)]
    threshold, left_out = threshold_from_scores(eight, 1.0, names[:8])
    assert left_out == ["p7"] and threshold == pytest.approx(1.6)
    # sorted [0, 0, 1, 1, 1, 1, 2, 2, x]: Q1 = 1, Q3 = 2 whatever x is, so the fence is exactly 5
    on_fence = [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 5.0]
    assert threshold_from_scores(on_fence, 1.0, names) == (5.0, [])
    assert threshold_from_scores(on_fence[:-1] + [5.5], 1.0, names) == (2.0, ["p8"])


def test_drop_copies_keeps_names_and_shapes_with_their_frames_and_names_three_copies(caplog):
    from edgecmg.fit import _Training

    rng = np.random.default_rng(0)
    a, b, c = (rng.integers(0, 256, (40, 30, 3), dtype=np.uint8) for _ in range(3))
    training = _Training([a, b, a, c, a, b, a])
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        frames = training.drop_copies(training.read_at((40, 30), False))
    assert len(frames) == 3
    assert training.names == ["array0", "array1", "array3"]
    assert len(training.shapes) == len(training.sources) == 3
    assert training.copies == [("array2", "array0"), ("array4", "array0"), ("array5", "array1"),
                               ("array6", "array0")]
    assert ("4 training image(s) left out as copies of others, pixel for pixel (array2 = array0, "
            "array4 = array0, array5 = array1 and 1 more)") in caplog.text


def test_a_training_file_whose_name_holds_glob_characters_is_an_image_not_a_pattern(kolektor_train, tmp_path):
    import shutil

    from edgecmg.fit import _Training

    odd = tmp_path / "part[1]?.jpg"
    shutil.copy(kolektor_train[0], odd)
    training = _Training([kolektor_train[1], str(odd)])
    assert training.names == [kolektor_train[1].name, odd.name]


def test_the_held_out_names_fit_passes_are_those_of_their_scores(kolektor_train, monkeypatch):
    """Each held-out name goes with its own score: the detector fit returns scores that image so."""
    import edgecmg.fit as fit_module
    from edgecmg.config import ModelConfig
    from edgecmg.detector import Detector
    from edgecmg.imageio import read_image

    calls = []
    real = fit_module.threshold_from_scores
    monkeypatch.setattr(fit_module, "threshold_from_scores",
                        lambda s, q, n: calls.append((list(s), list(n))) or real(s, q, n))
    images = kolektor_train[106:126]
    model, metadata = fit_module.fit(images, ModelConfig(prompt="a metal part", input_size=(256, 96)),
                                     progress=False)
    ((scores, names),) = calls
    by_name = {p.name: p for p in images}
    with Detector.from_model(model, metadata, device="cpu") as detector:
        judged = [detector.predict(read_image(by_name[name])).score for name in names]
    assert judged == pytest.approx(scores, rel=1e-3, abs=1e-3)


class _StopBeforeFeatures(Exception):
    """Raised in place of loading the backbone: what fit says and does before its feature pass, at no
    feature pass's cost."""


def _stop_before_features(monkeypatch):
    import edgecmg.fit as fit_module

    def stop():
        raise _StopBeforeFeatures

    monkeypatch.setattr(fit_module, "load_pretrained", stop)


def test_read_captions_keeps_unquoted_commas_and_names_rows_over_lines_and_repeated_files(tmp_path, caplog):
    """'a.png, a shiny part, no scratches' was read as 'a shiny part' (csv put the rest in fields
    nobody read); an unclosed quote swallowed the next rows into its caption, and of two rows for
    one file the last won: all without a word."""
    from edgecmg.fit import read_captions

    (tmp_path / "captions.csv").write_text("file,text\na.png, a shiny part, no scratches, centred\n"
                                           'b.png,"quoted, kept",and more,\n\n'
                                           'c.png,"shiny\nd.png,worn\n"\n'
                                           "e.png,first\n\ne.png,second\n")
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        captions = read_captions(tmp_path)
    assert captions == {"a.png": "a shiny part, no scratches, centred", "b.png": "quoted, kept, and more",
                        "c.png": "shiny\nd.png,worn", "e.png": "second"}
    assert "1 caption(s) run over several lines: c.png (lines 5-7); a quote left open" in caplog.text
    assert "1 file(s) named by more than one row, and the last row's caption is used: e.png (lines 8, 10)" in caplog.text
    # the caption not in the last column cannot take the extra fields back: they are named, not joined
    caplog.clear()
    (tmp_path / "captions.csv").write_text("text,file\nshiny, bright,a.png\n")
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        read_captions(tmp_path)
    assert "1 row(s) have more fields than the header, and the extra ones are left out" in caplog.text
    assert "line 2 ( bright)" not in caplog.text and "line 2 (bright)" in caplog.text


def test_a_caption_over_csvs_field_limit_is_a_data_error_naming_the_row(kolektor_train, tmp_path, capsys):
    """A 140,000-character caption ended `edgecmg fit` in csv's traceback (exit 1)."""
    from edgecmg.cli import main
    from edgecmg.fit import read_captions

    (tmp_path / kolektor_train[0].name).symlink_to(kolektor_train[0])
    (tmp_path / "captions.csv").write_text(f"file,text\nb.png,ok\n{kolektor_train[0].name},{'x' * 140_000}\n")
    with pytest.raises(DataError, match=r"captions\.csv, the row from line 3: not readable as CSV \(field larger "
                                        r"than field limit \(131072\)\); a caption may hold up to 131,072 characters"):
        read_captions(tmp_path)
    assert main(["fit", str(tmp_path), "--prompt", "a part", "-o", str(tmp_path / "m.edgecmg")]) == 2
    assert "captions.csv, the row from line 3: not readable as CSV" in capsys.readouterr().err


def test_fit_without_cmle_leaves_captions_csv_unread(kolektor_train, tmp_path, monkeypatch, caplog):
    """--no-cmle stopped on a Latin-1 captions.csv that only CMLE would have read."""
    for path in kolektor_train[:8]:
        (tmp_path / path.name).symlink_to(path)
    (tmp_path / "captions.csv").write_bytes("file,text\na.png,caf\xe9 part\n".encode("latin-1"))
    _stop_before_features(monkeypatch)
    with caplog.at_level(logging.INFO, logger="edgecmg"), pytest.raises(_StopBeforeFeatures):
        fit(tmp_path, ModelConfig(prompt="a part", input_size=(64, 64), cmle=False), progress=False)
    assert "captions.csv is not read: captions serve CMLE only, which is off" in caplog.text
    with pytest.raises(DataError, match="is not UTF-8 text"):  # with CMLE it is read, and refused
        fit(tmp_path, ModelConfig(prompt="a part", input_size=(64, 64)), progress=False)


def test_a_generator_refilling_one_buffer_trains_on_every_frame(kolektor_train):
    """A camera SDK fills one buffer per frame: fit kept the buffer itself, read every 'image' as the
    last frame, and stopped on 11 false copies."""
    from edgecmg.fit import _Training
    from edgecmg.imageio import read_image, resize_to_input

    size = (160, 64)
    images = [resize_to_input(read_image(path), size) for path in kolektor_train[:4]]
    buffer = np.empty_like(images[0])

    def camera(bgr=False):
        for image in images:
            buffer[...] = image[..., ::-1] if bgr else image
            yield buffer

    for bgr in (False, True):  # converted once, on arrival: BGR swapped once
        training = _Training(camera(bgr), bgr=bgr)
        frames = training.drop_copies(training.read_at(size, show=False))
        assert training.copies == [] and training.names == ["array0", "array1", "array2", "array3"]
        for frame, image in zip(frames, images):
            np.testing.assert_array_equal(frame, image)
    # a list's arrays are the caller's: kept by reference, not copied
    training = _Training(images)
    assert all(source is image for source, image in zip(training.sources, images))


def test_tiny_training_images_are_named(kolektor_train, monkeypatch, caplog):
    """An 8x20 thumbnail among 256x96 inputs went into the fit without a word, where Detector warns
    about such a frame (under 1/8 of the input on a side) when it judges one."""
    from edgecmg.imageio import read_image

    thumbnail = np.ascontiguousarray(read_image(kolektor_train[8])[:8, :20])
    _stop_before_features(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="edgecmg"), pytest.raises(_StopBeforeFeatures):
        fit([*kolektor_train[:8], thumbnail, np.zeros((32, 12, 3), np.uint8)],
            ModelConfig(prompt="a part", input_size=(256, 96)), progress=False)
    assert ("1 of 10 training image(s) are under 1/8 of the model's 256x96 input (height x width) on a side, so the "
            "resize blows them up more than 8x and they hold no detail of a part: array8 (8x20); check the crop") \
        in caplog.text
    assert "array9" not in caplog.text  # 32x12 is 1/8 exactly: as Detector, not tiny


def test_a_training_folder_names_the_sub_folders_it_leaves_unread(kolektor_train, tmp_path, caplog):
    """mixed/sub/s.png was dropped without a word while mixed/*.png was fitted (calibrate named such
    sub-folders; both use one helper)."""
    from edgecmg.fit import training_images

    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "no_images").mkdir()
    (tmp_path / "no_images" / "notes.txt").write_text("-")
    for path in kolektor_train[:3]:
        (tmp_path / path.name).symlink_to(path)
    (tmp_path / "sub" / "deeper" / kolektor_train[3].name).symlink_to(kolektor_train[3])
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        assert [p.name for p in training_images(tmp_path)] == [p.name for p in kolektor_train[:3]]
    assert (f"{tmp_path}: the images in its sub-folder(s) sub are not read (fit reads a folder's own images); to "
            f"train on them too, where they are good parts only, pass a glob such as '{tmp_path}/**/*.jpg'") \
        in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        assert len(training_images(f"{tmp_path}/**/*.jpg")) == 4  # the glob reads what it matches, unsaid
    assert "not read" not in caplog.text
    from edgecmg.imageio import subfolders_with_images  # what calibrate names too

    assert subfolders_with_images(tmp_path) == ["sub"]


def test_out_of_range_seeds_are_refused_up_front(kolektor_train, tmp_path, capsys):
    """--seed 18446744073709551616 crashed in torch's manual_seed after the whole feature pass."""
    import re

    from edgecmg.cli import main
    from edgecmg.errors import ConfigError

    ModelConfig(seed=2**64 - 1)
    for seed in (2**64, -1):
        with pytest.raises(ConfigError, match=re.escape(f"seed={seed} (--seed) must be in 0..2**64-1")):
            ModelConfig(seed=seed)
    (tmp_path / kolektor_train[0].name).symlink_to(kolektor_train[0])
    assert main(["fit", str(tmp_path), "--prompt", "a part", "-o", str(tmp_path / "m.edgecmg"),
                 "--seed", str(2**64)]) == 2
    assert "seed=18446744073709551616 (--seed) must be in" in capsys.readouterr().err


def test_fit_help_says_what_a_seed_reproduces(capsys):
    """--help said 'fits are reproducible'; the file's creation time and fit seconds always differ, and
    another torch thread count moves the threshold and bank rows."""
    from edgecmg.cli import main

    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "fits are reproducible" not in text
    assert "the same images and seed on the same machine, with the same thread count, give the same model, bar its " \
           "creation time and fit seconds" in text


def test_mvtec_folders_without_good_images_get_no_glob_hint(kolektor_train, tmp_path):
    """`fit DATA/test`, and `fit DATA` with an empty train/good, suggested a glob over the folder, which
    trains on test/'s defects; `fit DATA/train` was not told to pass the folder above it."""
    from edgecmg.fit import training_images

    data = tmp_path / "part"
    for kind in ("good", "crack"):
        (data / "test" / kind).mkdir(parents=True)
        (data / "test" / kind / "000.jpg").symlink_to(kolektor_train[0])
    (data / "ground_truth" / "crack").mkdir(parents=True)
    (data / "train" / "good").mkdir(parents=True)
    for given, expected in (
            (data, rf"{data}/train/good holds no image files to fit on: put the images of good parts in it"),
            (data / "test", rf"{data}/test is the test/ folder of an MVTec layout, which holds defects beside good "
                            rf"parts: fit on images of good parts only: put them in {data}/train/good and pass {data}"),
            (data / "ground_truth", r"ground_truth/ folder of an MVTec layout, which holds defect masks"),
            (data / "train", rf"{data}/train is the train/ folder of an MVTec layout: pass the MVTec root, the folder "
                             rf"above it \({data}\), or {data}/train/good")):
        with pytest.raises(DataError, match=expected) as caught:
            training_images(given)
        assert "glob" not in str(caught.value), given
    # a folder of images' own sub-folders outside such a layout still get list_images' hint
    (tmp_path / "plain" / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match="pass a glob such as"):
        training_images(tmp_path / "plain")


def test_fit_takes_the_sdks_own_dataset_and_samples(kolektor_root, kolektor_train, tmp_path, caplog):
    """fit(MVTecDataset(root)) was 'not iterable', and elpv_dataset()'s train list 'dtype object'."""
    import re
    import shutil

    from edgecmg.config import ModelConfig
    from edgecmg.datasets import MVTecDataset, Sample
    from edgecmg.errors import DataError
    from edgecmg.fit import fit

    root = tmp_path / "part"
    (root / "train" / "good").mkdir(parents=True)
    (root / "test" / "good").mkdir(parents=True)
    for path in kolektor_train[:8]:
        shutil.copy(path, root / "train" / "good" / path.name)
    config = ModelConfig(prompt="a photo of a metal commutator", input_size=(64, 64), cmle=False, max_bank_size=50)
    with caplog.at_level(logging.INFO, logger="edgecmg"):
        by_folder = fit(root, config, progress=False)[1]
    said = [r.getMessage() for r in caplog.records]  # what a log without progress bars shows, before the work
    assert said.index("fitting on 8 images at 64x64") < next(i for i, m in enumerate(said) if m.startswith("fitted"))
    by_dataset = fit(MVTecDataset(root), config, progress=False)[1]
    by_samples = fit(MVTecDataset(root).train_samples(), config, progress=False)[1]
    assert by_folder["threshold"] == by_dataset["threshold"] == by_samples["threshold"]
    assert by_dataset["training"]["images"] == by_samples["training"]["images"] == 8
    defect = Sample(kolektor_train[8], 1, "crack")
    with pytest.raises(DataError, match=rf"training image 8 \({re.escape(str(kolektor_train[8]))}\) is labelled a "
                                        r"defect \(crack\): fit on good parts only"):
        fit([*MVTecDataset(root).train_samples(), defect], config, progress=False)


def test_too_few_images_says_how_many_were_given_and_lost(tmp_path):
    """Nine text files named .png read as "found 0 in fakes: add more"."""
    from edgecmg.config import ModelConfig
    from edgecmg.errors import DataError
    from edgecmg.fit import fit

    for i in range(9):
        (tmp_path / f"f{i}.png").write_text("not an image")
    with pytest.raises(DataError, match=rf"found 0 of the 9 given in {re.escape(str(tmp_path))}: the others could "
                                        r"not be read or are copies of another \(named above\); fix or replace "
                                        r"them, or add more"):
        fit(tmp_path, ModelConfig(prompt="a part", input_size=(64, 64)), progress=False)
