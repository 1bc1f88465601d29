"""Runner interface: every backend executes a model file behind the same four calls.

    runner = make_runner(path, backend="auto")      # registry.py
    with runner:                                    # activate() ... deactivate()
        outputs = runner.infer(frames)              # uint8 [B, H, W, 3] RGB -> dict of numpy outputs

``infer`` returns the graph outputs by name. A full-detector graph returns ``score``,
``anomaly_map`` and ``kept_mask`` (``edgecmg.result.OUTPUT_NAMES``); a featurizer-only graph
returns ``embeddings`` and ``match_scores``, which the Detector scores on the host with the
model's BankScorer. ``metadata`` is the artifact header (threshold, input size, grid, ...).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from edgecmg.errors import DataError, EdgeCMGError

FEATURIZER_OUTPUTS = ("embeddings", "match_scores")


class Runner(ABC):
    """Base of all runners; subclasses implement ``_activate``, ``_infer`` and ``_deactivate``."""

    #: backend name used by the registry and in reports ("torch", "onnxruntime", "tensorrt")
    backend: str = ""

    def __init__(self, path: str, metadata: dict[str, Any], device: str = "cpu") -> None:
        self.path = str(path)
        self.metadata = metadata
        self.device = device
        self.active = False

    # --- lifecycle ---------------------------------------------------------------------------
    def activate(self) -> "Runner":
        if not self.active:
            self._activate()
            self.active = True
        return self

    def deactivate(self) -> None:
        if self.active:
            self._deactivate()
            self.active = False

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    # --- inference ---------------------------------------------------------------------------
    def infer(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        """Run a batch of uint8 RGB frames [B, H, W, 3]; returns the graph outputs by name."""
        if not self.active:
            raise EdgeCMGError(f"{self.backend} runner for {self.path} is not active: use `with runner:` "
                               "or call runner.activate() first")
        self.check_input(frames)
        return self._infer(frames)

    @staticmethod
    def check_input(frames: np.ndarray) -> None:
        if not isinstance(frames, np.ndarray):
            raise DataError(f"frames must be a numpy array, got {type(frames).__name__}")
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise DataError(f"frames must be uint8 [B, H, W, 3] RGB, got shape {frames.shape}")
        if frames.dtype != np.uint8:
            raise DataError(f"frames must be uint8, got {frames.dtype}; convert with np.clip(x, 0, 255).astype(np.uint8)")
        if frames.shape[0] == 0:
            raise DataError("frames is an empty batch")

    @property
    def produces_features(self) -> bool:
        """True when this runner's graph stops after the featurizer (host-side scoring needed)."""
        return False

    @abstractmethod
    def _activate(self) -> None: ...

    @abstractmethod
    def _infer(self, frames: np.ndarray) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def _deactivate(self) -> None: ...
