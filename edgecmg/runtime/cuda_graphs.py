"""Replay a model's fixed-shape GPU work from CUDA graphs, one graph per input shape.

Why: at one 256x256 frame the backbone's ~50 convolutions take about 0.65 ms of GPU time on an H100,
but launching them one by one from Python costs several milliseconds of CPU (measured with
torch.profiler: inference 4.8 ms per frame, of which the GPU was busy 0.65 ms). A CUDA graph records
the launches once and replays them with one call. Only work without host synchronisation can be
captured (``Featurizer.dense``); the kNN and CMER calls check their inputs on the host and stay eager.

Replays write into the graph's own output tensors: a caller must be done with them before the next
call (the torch runner copies its results to the host inside the same ``infer``).
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Optional

import torch

log = logging.getLogger("edgecmg")

ENV_VAR = "EDGECMG_CUDA_GRAPHS"  # "0" turns graphs off (eager launches, as on CPU)
MAX_GRAPHS = 8  # distinct input shapes kept (batch sizes, in practice); each holds its activations


def graphs_enabled(device: str) -> bool:
    """Graphs on CUDA devices unless EDGECMG_CUDA_GRAPHS=0."""
    if not str(device).startswith("cuda"):
        return False
    return os.environ.get(ENV_VAR, "1").strip().lower() not in ("0", "false", "off", "no")


def capture(fn: Callable[[], object], device, warmup: int = 2) -> tuple[torch.cuda.CUDAGraph, object]:
    """(graph, fn's outputs): ``fn`` run ``warmup`` times off the default stream (cuDNN picks its
    algorithms, lazy buffers get allocated: capture must not see first-call work), then one call of it
    recorded in a CUDA graph. Replaying the graph rewrites those outputs. Raises what capture raises."""
    side = torch.cuda.Stream(device=device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = fn()
    return graph, outputs


class _Captured:
    def __init__(self, graph: torch.cuda.CUDAGraph, static_in: torch.Tensor, static_out: tuple) -> None:
        self.graph = graph
        self.static_in = static_in
        self.static_out = static_out


class GraphReplayer:
    """``fn(x) -> tuple of tensors``, replayed from a CUDA graph captured on first sight of each shape.

    A shape whose capture fails runs eagerly from then on (logged once): graphs are a speed-up,
    never a reason for a frame to fail.
    """

    def __init__(self, fn: Callable[[torch.Tensor], tuple], warmup: int = 2) -> None:
        self.fn = fn
        self.warmup = warmup
        self._captured: dict[tuple, Optional[_Captured]] = {}

    def __call__(self, x: torch.Tensor) -> tuple:
        key = (tuple(x.shape), x.dtype, x.device)
        if key not in self._captured:
            if len(self._captured) >= MAX_GRAPHS:
                self._captured.pop(next(iter(self._captured)))  # oldest shape out
            self._captured[key] = self._capture(x)
        entry = self._captured[key]
        if entry is None:
            return self.fn(x)
        entry.static_in.copy_(x)
        entry.graph.replay()
        return entry.static_out

    def _capture(self, x: torch.Tensor) -> Optional[_Captured]:
        static_in = x.clone()
        try:
            graph, static_out = capture(lambda: tuple(self.fn(static_in)), x.device, self.warmup)
        except Exception as exc:  # e.g. a host sync inside fn: run this shape eagerly
            torch.cuda.synchronize(x.device)
            log.warning("CUDA graph capture failed for input %s (%s: %s); running it without graphs",
                        tuple(x.shape), type(exc).__name__, exc)
            return None
        return _Captured(graph, static_in, static_out)

    def __len__(self) -> int:
        return sum(entry is not None for entry in self._captured.values())
