"""Vision-language matchers: how well does each masked view of an image match the prompt?

Interface: ``score_variants(images, head, masks) -> [B, K]`` where ``images`` is the normalised
network input [B, 3, H, W], ``head`` the backbone's head map [B, 1280, h, w], and ``masks`` [K, h*w]
(1 = keep) over the head map's positions. One batched call scores all K variants of all B images.

- ZeroShotMatcher (default, offline): score(x, text) = sum_c p(c | x) * cos(e_c, e_text), with p from
  the backbone's own ImageNet head applied to the masked, pooled head map and e from MiniLM. The
  text side is precomputed at fit time into one vector ``class_text_sim`` [1000].
- ClipMatcher: an open_clip model from a local weights file; masks are applied in pixel space.
"""
from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from edgecmg import ops
from edgecmg.errors import BackendUnavailableError, ConfigError


class Matcher(Protocol):
    def score_variants(self, images: torch.Tensor, head: torch.Tensor, masks: torch.Tensor) -> torch.Tensor: ...


class ZeroShotMatcher(nn.Module):
    """Convex combination of class-name embeddings, weighted by the ImageNet head's probabilities."""

    def __init__(self, classifier: nn.Linear, class_text_sim: torch.Tensor) -> None:
        super().__init__()
        self.classifier = classifier
        self.register_buffer("class_text_sim", class_text_sim.float().clone())

    @staticmethod
    def text_similarity(class_embeddings: torch.Tensor, prompt_embedding: torch.Tensor) -> torch.Tensor:
        """cos(e_c, e_text) for every class: [C]."""
        return F.normalize(class_embeddings, dim=-1) @ F.normalize(prompt_embedding.flatten(), dim=0)

    def score_variants(self, images: torch.Tensor, head: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        features = head.flatten(2).transpose(1, 2)  # [B, p, 1280]
        return ops.masked_similarity(features, masks, self.classifier.weight.t(), self.classifier.bias,
                                     self.class_text_sim, mode="expectation")

    def class_probabilities(self, head: torch.Tensor) -> torch.Tensor:
        """p(c | image) for the unmasked image: [B, 1000]."""
        return self.classifier(head.mean(dim=(2, 3))).softmax(dim=-1)


class ClipMatcher(nn.Module):
    """An open_clip model loaded from a local weights path; masking happens on the pixels.

    ``model`` is anything with ``encode_image`` / ``encode_text`` (open_clip's CLIP); ``text_features``
    is the encoded prompt. Image normalisation for CLIP is applied here from the uint8-range input.
    """

    CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
    CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

    def __init__(self, model: nn.Module, text_features: torch.Tensor, image_size: int, backbone_mean: float,
                 backbone_std: float) -> None:
        super().__init__()
        self.model = model.eval()
        self.image_size = image_size
        self.backbone_mean, self.backbone_std = backbone_mean, backbone_std
        self.register_buffer("text_features", F.normalize(text_features.float().flatten(), dim=0))
        self.register_buffer("mean", torch.tensor(self.CLIP_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(self.CLIP_STD).view(1, 3, 1, 1))

    @classmethod
    def from_pretrained(cls, arch: str, weights: str, prompt: str, *, backbone_mean: float = 127.0,
                        backbone_std: float = 128.0) -> "ClipMatcher":
        try:
            import open_clip
        except ImportError as exc:
            raise BackendUnavailableError("clip", "open_clip is not installed", "pip install 'edgecmg[clip]'") from exc
        model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=weights or None)
        tokenizer = open_clip.get_tokenizer(arch)
        with torch.no_grad():
            text = model.encode_text(tokenizer([prompt]))
        size = model.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else int(size)
        return cls(model, text[0], size, backbone_mean, backbone_std)

    def score_variants(self, images: torch.Tensor, head: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        b, k = images.shape[0], masks.shape[0]
        h, w = head.shape[-2:]
        if masks.shape[1] != h * w:
            raise ConfigError(f"CMER masks have {masks.shape[1]} positions, head map has {h * w}")
        pixels = images * self.backbone_std + self.backbone_mean  # back to 0..255
        pixels = F.interpolate(pixels / 255.0, size=(self.image_size, self.image_size), mode="bilinear",
                               align_corners=False)
        pixel_masks = F.interpolate(masks.float().view(k, 1, h, w), size=pixels.shape[-2:], mode="nearest")
        # [B, K, 3, S, S]: a masked cell becomes the CLIP mean colour (zero after normalisation).
        normalised = (pixels - self.mean) / self.std
        variants = (normalised[:, None] * pixel_masks[None]).flatten(0, 1)
        with torch.no_grad():
            embeddings = F.normalize(self.model.encode_image(variants).float(), dim=-1)
        return (embeddings @ self.text_features).view(b, k)
