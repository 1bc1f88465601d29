"""CMGModel: the whole detector as one pure-torch module (the graph that gets exported).

uint8 frame [B, H0, W0, 3] -> resize + normalise -> EfficientNet-Lite0 -> multi-scale patch features
-> CMLE projection -> kNN against the memory bank -> smoothed anomaly map; in parallel the head map
feeds CMER, whose kept cells gate the image score. Outputs follow ``edgecmg.result.OUTPUT_NAMES``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from edgecmg import ops
from edgecmg.errors import ConfigError
from edgecmg.model import bank as bank_ops
from edgecmg.model import cmer
from edgecmg.model.backbone import EfficientNetLite0
from edgecmg.model.layouts import LEGACY_LAYOUT, FeatureLayout, feature_layout

HEAD_STRIDE = 32  # pixels per cell of the head map (the backbone's last block, stride 32), each way


class DetectorOutput(NamedTuple):
    score: torch.Tensor        # [B] float32
    anomaly_map: torch.Tensor  # [B, H, W] float32 at the model's input size
    kept_mask: torch.Tensor    # [B, g, g] bool


@dataclass(frozen=True)
class Geometry:
    """Sizes fixed at fit time: input (H, W), CMER grid, and the feature layout's name."""

    input_size: tuple[int, int]
    grid: int
    features: str = LEGACY_LAYOUT

    @classmethod
    def from_header(cls, header: dict) -> "Geometry":
        """From an artifact header; files written before layouts were named carry none (= "s8")."""
        return cls(tuple(header["input_size"]), int(header["grid"]), str(header.get("features", LEGACY_LAYOUT)))

    @property
    def layout(self) -> FeatureLayout:
        return feature_layout(self.features)

    @property
    def patch_size(self) -> tuple[int, int]:
        stride = self.layout.stride
        return self.input_size[0] // stride, self.input_size[1] // stride

    @property
    def head_size(self) -> tuple[int, int]:
        return self.input_size[0] // HEAD_STRIDE, self.input_size[1] // HEAD_STRIDE


class Featurizer(nn.Module):
    """Frame -> (projected patch embeddings [B, P, d], text-match scores [B, 1 + K]).

    Everything that needs the backbone; what the featurizer-only ONNX graph holds.
    """

    def __init__(self, backbone: EfficientNetLite0, geometry: Geometry, feature_dim: int,
                 matcher: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone.eval()
        self.geometry = geometry
        self.matcher = matcher  # from edgecmg.model.matcher.build_matcher
        hh, hw = geometry.head_size
        self.register_buffer("variant_masks", torch.cat(
            [torch.ones(1, hh * hw), cmer.drop_one_masks(hh, hw, geometry.grid)]))
        channels = geometry.layout.channels
        self.register_buffer("proj_mean", torch.zeros(channels))
        self.register_buffer("projection", torch.eye(channels, feature_dim))

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (or 0..255 float) [B, H0, W0, 3] RGB -> normalised [B, 3, H, W]."""
        x = frames.permute(0, 3, 1, 2).float()
        if tuple(x.shape[-2:]) != self.geometry.input_size:
            x = F.interpolate(x, size=self.geometry.input_size, mode="bilinear", align_corners=False)
        return self.backbone.normalize(x)

    def patch_features(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The layout's block maps -> locally aggregated patch features [B, P, C] on the layout's grid."""
        size = self.geometry.patch_size
        resampled = []
        for f in features:
            if f.shape[-2] > size[0]:
                # Finer than the grid: integer-factor average pooling (exports as a plain AveragePool).
                factor = f.shape[-2] // size[0]
                f = F.avg_pool2d(f, factor)
            elif f.shape[-2] < size[0]:
                f = F.interpolate(f, size=size, mode="bilinear", align_corners=False)
            resampled.append(f)
        x = torch.cat(resampled, dim=1)
        # 3x3 neighbourhood average: a patch sees its surroundings (PatchCore's local aggregation).
        x = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        return x.flatten(2).transpose(1, 2)

    def project(self, patches: torch.Tensor) -> torch.Tensor:
        """CMLE's linear map (identity when CMLE is off): [B, P, C] -> [B, P, d]."""
        return (patches - self.proj_mean) @ self.projection

    def match_scores(self, images: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
        """[B, 1 + K]: text match of the full image, then of each drop-one-cell variant."""
        return self.matcher.score_variants(images, head, self.variant_masks)

    def dense(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(embeddings, normalised images, head map): the fixed-shape part with no host sync, which
        the torch runner replays from a CUDA graph on GPUs (edgecmg.runtime.cuda_graphs)."""
        x = self.preprocess(frames)
        out = self.backbone(x, self.geometry.layout.blocks)
        return self.project(self.patch_features(out.features)), x, out.head

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embeddings, x, head = self.dense(frames)
        return embeddings, self.match_scores(x, head)


# TensorRT's TopK layer takes k <= 3840: a larger pool would not build into an engine.
_MAX_SCORE_PIXELS = 3840


def score_pixel_count(input_size: tuple[int, int], fraction: float) -> int:
    """How many of the map's hottest pixels the image score averages: ``fraction`` of the map, at least
    1 (0: the maximum), at most 3,840 (TensorRT's TopK limit; 1.5% of an 800x320 map)."""
    if fraction <= 0:
        return 1
    return max(1, min(round(fraction * input_size[0] * input_size[1]), _MAX_SCORE_PIXELS))


class BankScorer(nn.Module):
    """(embeddings, match scores) -> DetectorOutput: kNN against the bank, smoothing, CMER gating.

    Runs inside the full ONNX graph, or on the host after a featurizer-only graph or engine.
    """

    def __init__(self, geometry: Geometry, *, feature_dim: int, bank_size: int, use_cmer: bool,
                 knn_k: int, smoothing_sigma: float, score_top_fraction: float = 0.0) -> None:
        super().__init__()
        self.geometry = geometry
        self.use_cmer = use_cmer
        self.knn_k = knn_k
        hh, hw = geometry.head_size
        # Cell of each output pixel, through the head map so pixel and head cells agree.
        head_cells = cmer.cell_index(hh, hw, geometry.grid).view(hh, hw)
        pixel_cells = head_cells.repeat_interleave(HEAD_STRIDE, 0).repeat_interleave(HEAD_STRIDE, 1).flatten()
        self.score_top_fraction = score_top_fraction
        self.score_pixels = score_pixel_count(geometry.input_size, score_top_fraction)
        smallest_cell = int(torch.bincount(pixel_cells).min())
        if self.score_pixels > smallest_cell:
            raise ConfigError(
                f"score_top_fraction={score_top_fraction} pools {self.score_pixels} pixels, more than the "
                f"smallest CMER cell holds ({smallest_cell} at grid {geometry.grid} on "
                f"{geometry.input_size[0]}x{geometry.input_size[1]}); use a smaller score_top_fraction "
                "(--score-top-fraction) or grid (--grid)")
        self.register_buffer("pixel_cells", pixel_cells)
        # The cells at the head map's resolution, from which image_score expands a frame's kept cells to its
        # pixels (HEAD_STRIDE x HEAD_STRIDE each) by a broadcast: gathering one index per pixel from pixel_cells cost ONNX
        # Runtime 0.9 ms of a 416x160 frame. Made from the geometry, not written to files.
        self.register_buffer("head_cells", head_cells.flatten(), persistent=False)
        self.register_buffer("cmer_margin", torch.zeros(geometry.grid ** 2))  # one margin per cell
        self.register_buffer("memory_bank", torch.zeros(bank_size, feature_dim, dtype=torch.float16))
        self.register_buffer("bank_sq_norms", torch.zeros(bank_size))
        self.register_buffer("threshold", torch.tensor(float("inf")))
        self.register_buffer("smoothing_taps", bank_ops.gaussian_kernel1d(smoothing_sigma))
        # raw_maps' operator per axis (bank.map_operator), derived from the taps: not written to files,
        # made anew here and whenever a state dict is loaded (which is how a file's taps arrive).
        self.register_buffer("map_rows", torch.empty(0), persistent=False)
        self.register_buffer("map_cols_t", torch.empty(0), persistent=False)
        self.make_map_operators()
        self.register_load_state_dict_post_hook(_remake_map_operators)  # a module-level function: picklable
        # What normal parts score at each pixel (fit: the mean map of unseen normal images). Edges,
        # texture and the frame's border score high on every part; subtracting this level judges
        # each pixel against what is normal at that place. Zeros (no change) until fitted.
        self.register_buffer("normal_map", torch.zeros(geometry.input_size))

    def make_map_operators(self) -> None:
        """Build ``map_rows`` [H, ph] and ``map_cols_t`` [pw, W] from the geometry and the taps."""
        (ph, pw), (height, width) = self.geometry.patch_size, self.geometry.input_size
        # One shift for both axes, clamped as bank.shift_up_left clamps it on the 2-D map.
        offset = min(self.geometry.layout.response_offset, height - 1, width - 1)
        taps = self.smoothing_taps
        with torch.no_grad():  # built in float32, kept in the taps' dtype (a scorer made .half() stays half)
            self.map_rows = bank_ops.map_operator(ph, height, offset, taps).to(taps.dtype)
            self.map_cols_t = bank_ops.map_operator(pw, width, offset, taps).t().contiguous().to(taps.dtype)

    def set_bank(self, memory_bank: torch.Tensor) -> None:
        self.memory_bank = memory_bank.half()
        self.bank_sq_norms = ops.bank_sq_norms(self.memory_bank)

    def anomaly_maps(self, embeddings: torch.Tensor) -> torch.Tensor:
        """kNN distance per patch -> upsampled, smoothed map [B, H, W]."""
        return self.maps_from_patch_scores(self.patch_scores(embeddings))

    def patch_scores(self, embeddings: torch.Tensor, bank_rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        """[B, P] mean distance of each patch to its k nearest bank rows; ``bank_rows`` (bool [m]) limits
        the search to those rows (fit scores bank images without their own rows)."""
        bank, norms = self.memory_bank, self.bank_sq_norms
        if bank_rows is not None:
            bank, norms = bank[bank_rows], norms[bank_rows]
        distances = ops.knn_distances(embeddings, bank, k=self.knn_k, bank_sq_norms=norms)
        return distances.clamp_min(0).sqrt().mean(dim=-1)

    def maps_from_patch_scores(self, patch_scores: torch.Tensor) -> torch.Tensor:
        """[B, P] kNN distances -> anomaly maps [B, H, W]: the raw maps less the normal level."""
        return self.raw_maps(patch_scores) - self.normal_map

    def raw_maps(self, patch_scores: torch.Tensor) -> torch.Tensor:
        """[B, P] kNN distances -> upsampled, smoothed maps [B, H, W], aligned with the image: each score
        drawn where the content it responds to is, not on its grid cell (see FeatureLayout). One
        matrix per axis does all three steps (bank.map_operator)."""
        ph, pw = self.geometry.patch_size
        return self.map_rows @ patch_scores.reshape(-1, ph, pw) @ self.map_cols_t

    def kept_cells(self, match_scores: torch.Tensor) -> torch.Tensor:
        """CMER decision [B, K] bool (all True when CMER is off)."""
        if not self.use_cmer:
            return torch.ones(match_scores.shape[0], self.geometry.grid ** 2, dtype=torch.bool,
                              device=match_scores.device)
        gain = cmer.match_gain(match_scores[:, 0], match_scores[:, 1:])
        return cmer.kept_cells(gain, self.cmer_margin)

    def forward(self, embeddings: torch.Tensor, match_scores: torch.Tensor) -> DetectorOutput:
        maps = self.anomaly_maps(embeddings)
        kept = self.kept_cells(match_scores)
        g = self.geometry.grid
        return DetectorOutput(self.image_score(maps, kept), maps, kept.view(-1, g, g))

    def image_score(self, maps: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        """[B] image scores from the maps [B, H, W] and CMER's kept cells [B, K]."""
        # The map keeps every value (a defect is never hidden from it); only the image score is gated.
        values = maps.flatten(1)
        ungated = self.pool(values)
        # CMER may lower a score, but never turns an alarm into a miss: where the ungated score is
        # at or above the stored threshold it stands. (With the zero-shot matcher a defect can make its own
        # cell look irrelevant to the prompt; on KolektorSDD this rule halves what gating costs.)
        alarm = ungated >= self.threshold  # >=: an alarm is score >= threshold
        if not _tracing() and bool((kept.all(dim=1) | alarm).all()):
            # Each frame keeps every cell (its gated pool is this pool) or is an alarm (its gated pool is
            # not used): the second pool would change nothing (1.1 ms of a 416x160 frame on the CPU). An
            # exported graph has no branch and always pools twice.
            return ungated
        hh, hw = self.geometry.head_size
        pixel_keep = (kept[:, self.head_cells].view(-1, hh, 1, hw, 1).expand(-1, hh, HEAD_STRIDE, hw, HEAD_STRIDE)
                      .reshape(values.shape))
        # Maps can be negative (below the normal level), so dropped pixels become -inf, not 0.
        gated = self.pool(values.masked_fill(~pixel_keep, float("-inf")))
        return torch.where(alarm, ungated, gated)

    def pool(self, values: torch.Tensor) -> torch.Tensor:
        """[B, N] map values -> [B]: the mean of the ``score_pixels`` largest (the max when 1). Pixels
        dropped by CMER hold -inf and never count: a kept cell holds at least ``score_pixels``."""
        if self.score_pixels == 1:
            return values.amax(dim=1)
        return values.topk(self.score_pixels, dim=1, sorted=False).values.mean(dim=1)


def _tracing() -> bool:
    """Whether the scorer is being traced into a graph (ONNX export: torch.jit's tracer; torch.export and
    torch.compile, where this torch has them), which must hold every step whatever the frame."""
    if torch.jit.is_tracing():
        return True
    compiler = getattr(torch, "compiler", None)
    return any(getattr(compiler, name, lambda: False)() for name in ("is_compiling", "is_exporting"))


def score_top_fraction(spec: dict) -> float:
    """The image-score pooling of a file's model spec. Files written before it was recorded were scored
    by the map's maximum, and their thresholds were set on that: 0."""
    return float(spec.get("score_top_fraction", 0.0))


def _remake_map_operators(scorer: BankScorer, _incompatible_keys) -> None:
    """load_state_dict post hook: the map operators follow the taps the state dict brought."""
    scorer.make_map_operators()


def add_missing_normal_level(tensors: dict[str, torch.Tensor], geometry: Geometry, key: str) -> None:
    """Files written before maps had a fitted normal level carry none: a level of zeros leaves their
    maps as they were. ``key``: the level's name in ``tensors`` (it depends on the module root)."""
    tensors.setdefault(key, torch.zeros(geometry.input_size))


class CMGModel(nn.Module):
    """A fitted CMG anomaly detector = Featurizer + BankScorer.

    Build it with ``edgecmg.fit.fit`` or ``edgecmg.artifact.load``.
    """

    def __init__(self, backbone: EfficientNetLite0, geometry: Geometry, *, feature_dim: int,
                 bank_size: int, use_cmer: bool, use_cmle: bool, knn_k: int, smoothing_sigma: float,
                 matcher: nn.Module, score_top_fraction: float = 0.0) -> None:
        super().__init__()
        self.geometry = geometry
        self.use_cmle = use_cmle
        self.featurizer = Featurizer(backbone, geometry, feature_dim, matcher)
        self.scorer = BankScorer(geometry, feature_dim=feature_dim, bank_size=bank_size, use_cmer=use_cmer,
                                 knn_k=knn_k, smoothing_sigma=smoothing_sigma,
                                 score_top_fraction=score_top_fraction)

    @property
    def threshold(self) -> float:
        return float(self.scorer.threshold)

    def forward(self, frames: torch.Tensor) -> DetectorOutput:
        return self.from_dense(*self.featurizer.dense(frames))

    def from_dense(self, embeddings: torch.Tensor, images: torch.Tensor, head: torch.Tensor) -> DetectorOutput:
        """The rest of ``forward`` after ``Featurizer.dense``: text matching, kNN scoring, CMER."""
        return self.scorer(embeddings, self.featurizer.match_scores(images, head))
