"""Configuration: one frozen dataclass per concern, passed to constructors.

The CLI turns flags into these; no config dicts are threaded through layers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from edgecmg.errors import ConfigError


@dataclass(frozen=True)
class ModelConfig:
    """How a CMG detector is built and fitted.

    input_size: (height, width) the frames are resized to; ``None`` picks it at fit time from the
        training images' aspect ratio (long side ``max_side``, both sides multiples of 32), because
        squashing a 1:2.5 part into a square destroys the detail defects live in.
    """

    prompt: str = "a photo of a flawless industrial part"
    input_size: Optional[tuple[int, int]] = None
    max_side: int = 320
    cmer: bool = True
    grid: int = 2
    cmer_quantile: float = 0.99
    cmle: bool = True
    cmle_dim: int = 96
    cmle_neighbors: int = 10
    coreset_ratio: float = 0.1
    max_bank_size: int = 16384
    knn_k: int = 1
    smoothing_sigma: float = 4.0
    threshold_quantile: float = 0.99
    matcher: str = "zeroshot"
    clip_weights: Optional[str] = None
    batch_size: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.prompt.strip():
            raise ConfigError("prompt is empty: describe the normal part, e.g. 'a photo of a metal commutator'")
        if self.input_size is not None:
            h, w = self.input_size
            if h % 32 or w % 32 or h < 64 or w < 64:
                raise ConfigError(f"input_size {self.input_size} must be >= 64 and multiples of 32 in both sides")
        if not 1 <= self.grid <= 8:
            raise ConfigError(f"grid={self.grid} must be between 1 and 8")
        if not 0.0 < self.coreset_ratio <= 1.0:
            raise ConfigError(f"coreset_ratio={self.coreset_ratio} must be in (0, 1]")
        if not 1 <= self.knn_k <= 16:
            raise ConfigError(f"knn_k={self.knn_k} must be in 1..16")
        if not 8 <= self.cmle_dim <= 1024:
            raise ConfigError(f"cmle_dim={self.cmle_dim} must be in 8..1024")
        if self.matcher not in ("zeroshot", "clip"):
            raise ConfigError(f"matcher={self.matcher!r}: choose 'zeroshot' (offline default) or 'clip'")
        if self.matcher == "clip" and not self.clip_weights:
            raise ConfigError("matcher='clip' needs clip_weights=<path to local open_clip weights>")


@dataclass(frozen=True)
class ExportConfig:
    """How a fitted model is written to ONNX."""

    opset: int = 17
    with_scoring: bool = False
    dynamic_batch: bool = True


@dataclass(frozen=True)
class EngineConfig:
    """How a TensorRT engine is built."""

    precision: str = "fp16"
    timing_cache: Optional[str] = None
    workspace_mib: int = 1024
    dla_core: Optional[int] = None
    max_batch: int = 8


@dataclass(frozen=True)
class StreamConfig:
    """How frames flow from a source to the detector."""

    policy: str = "latest"
    batch: int = 1
    max_queue: int = 4
    reconnect_attempts: int = 5
    reconnect_backoff_s: float = 0.5
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.policy not in ("latest", "all"):
            raise ConfigError(f"policy={self.policy!r}: choose 'latest' (drop stale frames) or 'all' (lose none)")
        if self.batch < 1:
            raise ConfigError(f"batch={self.batch} must be >= 1")
        if self.max_queue < 1:
            raise ConfigError(f"max_queue={self.max_queue} must be >= 1")
