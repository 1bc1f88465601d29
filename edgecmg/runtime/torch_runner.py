"""Torch runner: the fitted CMGModel itself, on CPU or CUDA."""
from __future__ import annotations

import threading
from typing import Any, Optional

import numpy as np
import torch

from edgecmg.model.detector import CMGModel
from edgecmg.runtime.base import Runner
from edgecmg.runtime.cuda_graphs import GraphReplayer, graphs_enabled


class TorchRunner(Runner):
    backend = "torch"

    def __init__(self, path: str, metadata: dict[str, Any], device: str = "cpu",
                 model: Optional[CMGModel] = None, data: Optional[bytes] = None) -> None:
        """``model``: an in-memory model (nothing is read); ``data``: the file's bytes, already read
        for ``metadata``, that activate() builds the model from."""
        super().__init__(path, metadata, device)
        self._model = model
        self._data = data
        self._graphs: Optional[GraphReplayer] = None  # CUDA only: the backbone part from CUDA graphs
        # Graph replays share their output tensors: one infer at a time reads them to the end.
        self._lock = threading.Lock()

    def _after_fork_in_child(self) -> None:
        super()._after_fork_in_child()
        self._lock = threading.Lock()

    def _activate(self) -> None:
        if self._model is None:
            from edgecmg import artifact

            self._model, self.metadata = artifact.load(self.path, data=self._data)
            self._data = None  # the model holds what it needs
        self._model = self._model.to(self.device).eval()
        if graphs_enabled(self.device):
            self._graphs = GraphReplayer(self._model.featurizer.dense)

    @torch.inference_mode()
    def _infer(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        batch = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        with self._lock:
            dense = self._graphs(batch) if self._graphs is not None else self._model.featurizer.dense(batch)
            out = self._model.from_dense(*dense)
            return {name: value.cpu().numpy() for name, value in out._asdict().items()}

    def _deactivate(self) -> None:
        self._graphs = None  # frees the graphs' memory pools
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    @property
    def model(self) -> CMGModel:
        return self._model
