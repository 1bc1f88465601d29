"""Vision-language matchers: how well does each masked view of an image match the prompt?

Every matcher offers the same four calls:
- ``score_variants(images, head, masks) -> [B, K]``: ``images`` is the normalised network input
  [B, 3, H, W], ``head`` the backbone's head map [B, 1280, h, w], ``masks`` [K, h*w] (1 = keep) over
  the head map's positions. One batched call scores all K variants of all B images (CMER).
- ``image_embedding(images, head) -> [B, D]``: the whole image as a point of the text space (CMLE's
  pseudo-text when an image has no caption).
- ``encode_texts(texts) -> [N, D]``: captions into the same text space (fit time only).
- ``spec() -> dict``: what the artifact header records so that a loader can rebuild the matcher.

- ZeroShotMatcher (default, offline): score(x, text) = sum_c p(c | x) * cos(e_c, e_text), with p from
  the backbone's own ImageNet head applied to the masked, pooled head map and e from MiniLM. The
  text side is precomputed at fit time into one vector ``class_text_sim`` [1000].
- ClipMatcher: an open_clip model read from a local safetensors file; masks are applied to the
  pixels. The artifact stores the prompt's vector and the weights file's path and SHA-256, never
  the CLIP weights.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from edgecmg import ops
from edgecmg.distributions import extra_install_hint
from edgecmg.errors import ArtifactError, BackendUnavailableError, ConfigError, MissingFileError
from edgecmg.fileio import file_sha256

CLIP_INSTALL_HINT = (extra_install_hint("clip") + ", with a torchvision built for your torch (in the clone, "
                     "-c tests/requirements-clip.txt pins a matching pair)")


class Matcher(Protocol):
    def score_variants(self, images: torch.Tensor, head: torch.Tensor, masks: torch.Tensor) -> torch.Tensor: ...

    def image_embedding(self, images: torch.Tensor, head: torch.Tensor) -> torch.Tensor: ...

    def encode_texts(self, texts: list[str]) -> torch.Tensor: ...

    def spec(self) -> dict[str, Any]: ...


class ZeroShotMatcher(nn.Module):
    """Convex combination of class-name embeddings, weighted by the ImageNet head's probabilities."""

    def __init__(self, classifier: nn.Linear, class_text_sim: torch.Tensor) -> None:
        super().__init__()
        self.classifier = classifier
        self.register_buffer("class_text_sim", class_text_sim.float().clone())
        # e_c [1000, 384], needed at fit time only: not persistent, never in an artifact.
        self.register_buffer("class_embeddings", torch.empty(0), persistent=False)
        self._checked_params: tuple = ((), ())  # (tensors, their versions) last checked by score_variants

    @staticmethod
    def text_similarity(class_embeddings: torch.Tensor, prompt_embedding: torch.Tensor) -> torch.Tensor:
        """cos(e_c, e_text) for every class: [C]."""
        return F.normalize(class_embeddings, dim=-1) @ F.normalize(prompt_embedding.flatten(), dim=0)

    def set_prompt(self, prompt: str) -> None:
        """Encode the ImageNet class names and the prompt with MiniLM (fit time)."""
        from edgecmg.model import text as text_model

        self.class_embeddings = text_model.imagenet_class_embeddings()
        prompt_embedding = text_model.encode_texts([prompt])[0]
        self.class_text_sim.copy_(self.text_similarity(self.class_embeddings, prompt_embedding))

    def score_variants(self, images: torch.Tensor, head: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        features = head.flatten(2).transpose(1, 2)  # [B, p, 1280]
        # The head, the text vector and the masks are the same tensors on every frame: once checked for
        # NaN/Inf they are not read again (0.5 ms of launches and a host sync per frame) until one of
        # them is replaced or written in place (torch counts every in-place write in ``_version``).
        params = (self.classifier.weight, self.classifier.bias, self.class_text_sim, masks)
        versions = tuple(t._version for t in params)
        last_params, last_versions = self._checked_params
        unchanged = (len(last_params) == len(params) and all(a is b for a, b in zip(params, last_params))
                     and versions == last_versions)
        scores = ops.masked_similarity(features, masks, self.classifier.weight.t(), self.classifier.bias,
                                       self.class_text_sim, mode="expectation", params_checked=unchanged)
        self._checked_params = (params, versions)  # reached only when the check passed
        return scores

    def class_probabilities(self, head: torch.Tensor) -> torch.Tensor:
        """p(c | image) for the unmasked image: [B, 1000]."""
        return self.classifier(head.mean(dim=(2, 3))).softmax(dim=-1)

    def image_embedding(self, images: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
        """Pseudo-text t = sum_c p(c | image) e_c: [B, 384]."""
        if self.class_embeddings.numel() == 0:
            raise ConfigError("the zero-shot matcher has no class embeddings: call set_prompt() first (fit time)")
        return self.class_probabilities(head) @ self.class_embeddings

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        from edgecmg.model import text as text_model

        return text_model.encode_texts(texts)

    def spec(self) -> dict[str, Any]:
        return {"kind": "zeroshot"}


class _DropRecordsFrom(logging.Filter):
    """Drops log records emitted from source files under a package folder (by path, because
    open_clip logs through the root logger rather than a logger of its own)."""

    def __init__(self, package: str) -> None:
        super().__init__()
        self._marker = package

    def filter(self, record: logging.LogRecord) -> bool:
        return self._marker not in Path(record.pathname).parts


def _import_open_clip():
    try:
        import open_clip
    except ImportError as exc:
        raise BackendUnavailableError("clip", f"cannot import open_clip ({exc})", CLIP_INSTALL_HINT) from exc
    return open_clip


class ClipMatcher(nn.Module):
    """An open_clip CLIP model from a local safetensors weights file; masking happens on the pixels.

    ``model`` is anything with ``encode_image`` / ``encode_text`` (open_clip's CLIP). The backbone's
    normalised input is mapped back to pixels and re-normalised with CLIP's statistics here.
    """

    CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
    CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

    def __init__(self, model: nn.Module, tokenizer, *, image_size: int, embed_dim: int, arch: str, weights: str,
                 weights_sha256: str, backbone_mean: float = 127.0, backbone_std: float = 128.0) -> None:
        super().__init__()
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.arch, self.weights, self.weights_sha256 = arch, weights, weights_sha256
        self.backbone_mean, self.backbone_std = backbone_mean, backbone_std
        # The prompt's unit-length embedding, set by set_prompt() at fit time and stored in the artifact.
        self.register_buffer("text_features", torch.zeros(embed_dim))
        self.register_buffer("mean", torch.tensor(self.CLIP_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(self.CLIP_STD).view(1, 3, 1, 1))

    @staticmethod
    def check_weights(arch: str, weights: str | Path, *, expected_sha256: Optional[str] = None,
                      fitting: bool = False) -> tuple[Path, Optional[str], Any]:
        """What :meth:`load` checks before it builds the model, in its order: the weights file is there
        and a .safetensors file, open_clip imports, the file's SHA-256 is ``expected_sha256`` (where
        given) and ``arch`` is an open_clip model. Returns (path, its SHA-256, the open_clip module);
        ``edgecmg info`` runs it to say what loading the model would say, without building it, and
        fit before it reads any image (``fitting``: the messages speak of the weights to fit with, and
        the SHA-256 is None: the file is hashed once, when fit loads it, not twice; seconds for a large
        model)."""
        path = Path(weights).expanduser()  # the file before the library: a mistyped path is the likelier mistake
        if not path.exists():
            which = (f"the {arch} model to fit with (clip_weights, --clip-weights)" if fitting
                     else f"the {arch} model the detector was fitted with")
            raise MissingFileError(f"CLIP weights {path}: no such file; pass the local .safetensors file of {which}")
        if not path.is_file():
            raise ConfigError(f"CLIP weights {path} is not a file; pass the .safetensors file itself")
        if path.suffix != ".safetensors":
            raise ConfigError(f"CLIP weights {path}: only .safetensors files are read (no pickle); convert "
                              "the checkpoint once with safetensors.torch.save_file(model.state_dict(), ...)")
        open_clip = _import_open_clip()
        sha = None if fitting and expected_sha256 is None else file_sha256(path)
        if expected_sha256 is not None and sha != expected_sha256:
            raise ArtifactError(f"CLIP weights {path} have SHA-256 {sha[:12]}, the model was fitted with "
                                f"{expected_sha256[:12]}; point clip_weights at the file used at fit time")
        if arch not in open_clip.list_models():
            raise ConfigError(f"CLIP arch {arch!r} is not an open_clip model name (e.g. 'ViT-B-32')")
        return path, sha, open_clip

    @classmethod
    def load(cls, arch: str, weights: str | Path, *, expected_sha256: Optional[str] = None,
             backbone_mean: float = 127.0, backbone_std: float = 128.0) -> "ClipMatcher":
        """Build open_clip's ``arch`` and fill it from ``weights`` (a .safetensors state dict; no pickle).

        ``expected_sha256`` (from an artifact header) refuses a different weights file.
        """
        path, sha, open_clip = cls.check_weights(arch, weights, expected_sha256=expected_sha256)
        from safetensors.torch import load_file

        # open_clip warns (on the root logger) that a model built without `pretrained` is random:
        # the weights come next. Drop only open_clip's own records, only for this call.
        quiet = _DropRecordsFrom("open_clip")
        root = logging.getLogger()
        root.addFilter(quiet)
        try:
            model = open_clip.create_model(arch, pretrained=None)
        finally:
            root.removeFilter(quiet)
        try:
            model.load_state_dict(load_file(str(path)), strict=True)
        except RuntimeError as exc:
            raise ConfigError(f"CLIP weights {path} do not fit open_clip {arch!r}: {str(exc)[:300]}") from exc
        try:
            tokenizer = open_clip.get_tokenizer(arch)
        except Exception as exc:  # e.g. a tokenizer open_clip would fetch from a hub: nothing is downloaded here
            raise ConfigError(f"CLIP arch {arch!r}: its tokenizer is not available offline ({exc}); choose an "
                              "arch with open_clip's bundled tokenizer, e.g. 'ViT-B-32'") from exc
        size = model.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else int(size)
        return cls(model, tokenizer, image_size=size, embed_dim=int(open_clip.get_model_config(arch)["embed_dim"]),
                   arch=arch, weights=str(path.resolve()), weights_sha256=sha,
                   backbone_mean=backbone_mean, backbone_std=backbone_std)

    def spec(self) -> dict[str, Any]:
        return {"kind": "clip", "arch": self.arch, "weights": self.weights, "sha256": self.weights_sha256}

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(self.model.encode_text(self.tokenizer(list(texts))).float(), dim=-1)

    def set_prompt(self, prompt: str) -> None:
        self.text_features = self.encode_texts([prompt])[0]

    def _clip_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone-normalised [B, 3, H, W] -> CLIP-normalised [B, 3, S, S]."""
        pixels = (images * self.backbone_std + self.backbone_mean) / 255.0
        pixels = F.interpolate(pixels, size=(self.image_size, self.image_size), mode="bilinear",
                               align_corners=False)
        return (pixels - self.mean) / self.std

    @torch.no_grad()
    def image_embedding(self, images: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
        """CLIP's image embedding, which shares the text space by construction: [B, D]."""
        return F.normalize(self.model.encode_image(self._clip_pixels(images)).float(), dim=-1)

    def score_variants(self, images: torch.Tensor, head: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        b, k = images.shape[0], masks.shape[0]
        h, w = head.shape[-2:]
        if masks.shape[1] != h * w:
            raise ConfigError(f"CMER masks have {masks.shape[1]} positions, head map has {h * w}")
        normalised = self._clip_pixels(images)
        pixel_masks = F.interpolate(masks.float().view(k, 1, h, w), size=normalised.shape[-2:], mode="nearest")
        # [B * K, 3, S, S]: a dropped cell becomes CLIP's mean colour (zero after normalisation).
        variants = (normalised[:, None] * pixel_masks[None]).flatten(0, 1)
        with torch.no_grad():
            embeddings = F.normalize(self.model.encode_image(variants).float(), dim=-1)
        return (embeddings @ self.text_features).view(b, k)


def build_matcher(spec: dict[str, Any], classifier: nn.Linear, *, clip_weights: Optional[str] = None) -> nn.Module:
    """The matcher a header's ``matcher`` entry (or a fit config) describes.

    ``clip_weights`` overrides the recorded path (the model moved to another machine); where the
    entry records a SHA-256 (an artifact header; a fit config has none), the file must match it.
    """
    kind = spec.get("kind", "zeroshot")
    if kind == "zeroshot":
        return ZeroShotMatcher(classifier, torch.zeros(classifier.out_features))
    if kind == "clip":
        return ClipMatcher.load(spec["arch"], clip_weights or spec["weights"], expected_sha256=spec.get("sha256"))
    raise ConfigError(f"unknown matcher kind {kind!r}: choose 'zeroshot' or 'clip'")
