import cv2
import numpy as np
import pytest
import torch

from edgecmg.errors import ArtifactError
from edgecmg.model.backbone import EfficientNetLite0, load_pretrained, load_state_dict_checked
from edgecmg.model.text import imagenet_class_names


@pytest.fixture(scope="module")
def backbone():
    return load_pretrained()


def _classify(model, image: np.ndarray) -> list[str]:
    x = torch.from_numpy(cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA)).permute(2, 0, 1)[None]
    with torch.no_grad():
        logits = model.classify(model(model.normalize(x)).head)
    names = imagenet_class_names()
    return [names[int(i)] for i in logits[0].topk(5).indices]


def test_pretrained_weights_classify_real_photos(backbone):
    """The network definition matches the weights: real photos land on their ImageNet classes."""
    skimage_data = pytest.importorskip("skimage.data")
    model, sha = backbone
    assert len(sha) == 64
    assert {"Egyptian cat", "tabby", "tiger cat"} & set(_classify(model, skimage_data.chelsea()))
    assert {"espresso", "cup", "coffee mug"} & set(_classify(model, skimage_data.coffee()))


def test_feature_shapes(backbone):
    model, _ = backbone
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 256, 96))
    assert [tuple(f.shape) for f in out.features] == [(2, 40, 32, 12), (2, 80, 16, 6), (2, 112, 16, 6)]
    assert tuple(out.head.shape) == (2, 1280, 8, 3)


def test_state_dict_check_names_the_problem():
    model = EfficientNetLite0()
    state = model.state_dict()
    state.pop("_fc.bias")
    state["_conv_stem.weight"] = torch.zeros(1)
    with pytest.raises(ArtifactError, match="missing.*_fc.bias.*wrong shape.*_conv_stem.weight"):
        load_state_dict_checked(model, state, "weights.pth")
