"""The Python API as users of PyTorch, Pillow and os.PathLike reach for it: a torchvision-style C x H x W
tensor or one H x W x C frame handed to predict_batch or stream (iterated, they were judged as C gray
frames or H one-row frames, without an error), one Pillow image where a list goes, and a path-like
object that is not a pathlib.Path."""
import os

import numpy as np
import pytest
import torch

from edgecmg.detector import Detector
from edgecmg.errors import DataError, StreamError
from edgecmg.imageio import read_image


@pytest.fixture(scope="module")
def detector(small_artifact):
    det = Detector.load(small_artifact, backend="torch")
    yield det
    det.close()


@pytest.fixture(scope="module")
def part(kolektor_root):
    return read_image(sorted((kolektor_root / "test" / "good").iterdir())[0])


def test_a_channels_first_tensor_is_refused_by_predict_batch_and_stream_as_by_predict(detector, part):
    chw = torch.from_numpy(part).permute(2, 0, 1).float() / 255  # what torchvision's ToTensor gives
    with pytest.raises(DataError, match=r"channels-first"):
        detector.predict(chw)
    with pytest.raises(DataError, match=r"tensor of shape \(3, \d+, \d+\).*channels-first.*permute\(1, 2, 0\)"):
        detector.predict_batch(chw)
    with pytest.raises(StreamError, match=r"single tensor of shape \(3, \d+, \d+\) is ambiguous.*permute\(1, 2, 0\)"):
        detector.stream(chw)
    with pytest.raises(StreamError, match=r"N x C x H x W.*permute\(0, 2, 3, 1\)"):
        detector.stream(chw[None])
    for batch in (chw[None], chw[None].numpy()):  # a batch, tensor or array: said once, not per frame
        with pytest.raises(DataError, match=r"predict_batch takes N x H x W x C frames, got shape \(1, 3, "):
            detector.predict_batch(batch)
    with pytest.raises(StreamError, match=r"an array of shape \(1, 3, \d+, \d+\) looks channels-first"):
        detector.stream(chw[None].numpy())


def test_one_hwc_tensor_given_where_a_batch_goes_is_refused_not_split_into_rows(detector, part):
    hwc = torch.from_numpy(part)
    with pytest.raises(DataError, match=r"got a tensor of shape \(\d+, \d+, 3\); for one frame use predict"):
        detector.predict_batch(hwc)
    with pytest.raises(StreamError, match=r"single tensor of shape"):
        detector.stream(hwc)
    # The forms that are a batch still judge, as the same frames given one by one.
    batch = detector.predict_batch(hwc[None])
    assert len(batch) == 1 and batch[0].score == pytest.approx(detector.predict(part).score, abs=1e-5)
    with detector.stream(hwc[None]) as run:
        assert [r.score for r in run] == pytest.approx([batch[0].score], abs=1e-5)


def test_one_pillow_image_where_a_list_goes_is_a_data_error(detector, part):
    from PIL import Image

    image = Image.fromarray(part)
    with pytest.raises(DataError, match=r"got one Pillow image; for one frame use predict\(image\)"):
        detector.predict_batch(image)
    with pytest.raises(StreamError, match=r"one Pillow image; pass \[image\]"):
        detector.stream(image)
    assert detector.predict_batch([image])[0].score == pytest.approx(detector.predict(image).score, abs=1e-5)


def test_any_path_like_object_opens_a_model(small_artifact):
    class ModelPath(os.PathLike):  # not a pathlib.Path: its str() is its repr
        def __fspath__(self):
            return str(small_artifact)

        def __repr__(self):
            return "ModelPath()"

    with Detector.load(ModelPath(), backend="torch") as det:
        assert det.input_size == tuple(np.asarray(det.metadata["input_size"]).tolist())


@pytest.mark.parametrize("path", [None, 5])
def test_a_model_path_that_is_not_a_path_is_named_as_such(path):
    from edgecmg.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"Detector.load takes the path of a model file .*, got {path} "):
        Detector.load(path)
