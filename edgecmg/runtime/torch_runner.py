"""Torch runner: the fitted CMGModel itself, on CPU or CUDA."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from edgecmg.model.detector import CMGModel
from edgecmg.runtime.base import Runner


class TorchRunner(Runner):
    backend = "torch"

    def __init__(self, path: str, metadata: dict[str, Any], device: str = "cpu",
                 model: Optional[CMGModel] = None) -> None:
        super().__init__(path, metadata, device)
        self._model = model

    def _activate(self) -> None:
        if self._model is None:
            from edgecmg import artifact

            self._model, self.metadata = artifact.load(self.path)
        self._model = self._model.to(self.device).eval()

    @torch.inference_mode()
    def _infer(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        batch = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        out = self._model(batch)
        return {name: value.cpu().numpy() for name, value in out._asdict().items()}

    def _deactivate(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    @property
    def model(self) -> CMGModel:
        return self._model
