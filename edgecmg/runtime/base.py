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

import logging
import os
import threading
import weakref
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from edgecmg.errors import ConfigError, DataError, EdgeCMGError

log = logging.getLogger("edgecmg")

FEATURIZER_OUTPUTS = ("embeddings", "match_scores")


def device_index(device: str) -> int:
    """The N of "cuda:N" (0 for "cuda")."""
    if ":" in device:
        try:
            return int(device.split(":", 1)[1])
        except ValueError as exc:
            raise ConfigError(f"device {device!r}: use 'cuda' or 'cuda:N'") from exc
    return 0


def run_in_batches(frames: np.ndarray, run: Callable[[np.ndarray], dict[str, np.ndarray]], min_batch: int,
                   max_batch: int) -> dict[str, np.ndarray]:
    """``run`` over ``frames`` in batches a graph with a batch range accepts (a fixed-batch export or
    engine: ``min_batch == max_batch``): at most ``max_batch`` frames a call, and a call short of
    ``min_batch`` (one frame, the tail of a split batch) padded with copies of its last frame, whose
    rows are cut from the outputs. Every output is batch-first."""
    parts = []
    for start in range(0, len(frames), max_batch):
        chunk = frames[start:start + max_batch]
        n = len(chunk)
        if n >= min_batch:
            parts.append(run(chunk))
            continue
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], min_batch - n, axis=0)])
        parts.append({name: value[:n] for name, value in run(padded).items()})
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


class RunnerInactiveError(EdgeCMGError):
    """infer() on a runner that is not active (never activated, or closed)."""


def _runners_after_fork() -> None:
    for runner in list(_LIVE_RUNNERS):
        runner._after_fork_in_child()


_LIVE_RUNNERS: "weakref.WeakSet[Runner]" = weakref.WeakSet()  # for the after-fork handler, no more
if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_runners_after_fork)


class Runner(ABC):
    """Base of all runners; subclasses implement ``_activate``, ``_infer`` and ``_deactivate``."""

    #: backend name used by the registry and in reports ("torch", "onnxruntime", "tensorrt")
    backend: str = ""

    def __init__(self, path: str, metadata: dict[str, Any], device: str = "cpu") -> None:
        self.path = str(path)
        # The file the user opened; differs from ``path`` when that is an export made from it (an
        # .edgecmg run by ONNX Runtime runs its cached .onnx).
        self.model_path = self.path
        self.metadata = metadata
        self.device = device
        self.active = False
        self._scorer = None
        # infer() calls under way, so that deactivate() from another thread waits for them instead of
        # freeing a session, engine or device buffers they are using.
        self._calls = threading.Condition()
        self._in_flight: list[int] = []  # the calling threads' idents, one entry per call
        self._release_pending = False  # a close was interrupted: the last call under way releases
        # activate() and the whole of deactivate() one at a time: a second close waits for the first
        # to have released, and an activation cannot land between a close's wait and its release.
        self._lifecycle = threading.Lock()
        _LIVE_RUNNERS.add(self)

    def _after_fork_in_child(self) -> None:
        """In a process forked from this runner's: its locks anew. A lock another thread of the parent
        held at the fork (a predict under way) stays held in the child, where no thread will release it:
        the child's first call waited for ever (9 of 10 forks, an audit). Subclasses add their own."""
        self._calls = threading.Condition()
        self._in_flight = []
        self._lifecycle = threading.Lock()

    # --- lifecycle ---------------------------------------------------------------------------
    def activate(self) -> "Runner":
        with self._lifecycle:
            if self.active:
                return self
            if self._release_pending:
                raise EdgeCMGError(f"{self.model_path}: still closing (a call under way releases the backend when "
                                   "it returns); activate again after it")
            try:
                self._activate()
            except BaseException:
                try:
                    self._deactivate()  # release what the failed activation took (a CUDA stream, buffers)
                except Exception:  # noqa: BLE001 - the activation's own error is the one to report
                    log.debug("%s: cleanup after a failed activation failed too", self.path, exc_info=True)
                raise
            with self._calls:
                self.active = True
        return self

    def deactivate(self) -> None:
        """Release the backend; waits for infer() calls under way in other threads to finish, and
        refuses new ones from its start. Interrupted while waiting (Ctrl-C), it leaves the release to
        the last of those calls."""
        with self._calls:
            if threading.get_ident() in self._in_flight:
                # A signal handler or callback on the thread whose call is under way: waiting would
                # never end, and releasing now would pull the backend from under that call.
                raise EdgeCMGError(f"{self.model_path}: close() was called from inside a call on the same "
                                   "thread (a signal handler?); close after the call returns, e.g. set a flag there")
        with self._lifecycle:
            interrupted = None
            with self._calls:
                if not self.active:
                    return
                self.active = False
                try:
                    self._calls.wait_for(lambda: not self._in_flight)
                except BaseException as exc:
                    if self._in_flight:
                        self._release_pending = True
                        raise
                    interrupted = exc  # the calls ended meanwhile: release here, then pass it on
            self._deactivate()
            if interrupted is not None:
                raise interrupted

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    # --- inference ---------------------------------------------------------------------------
    def infer(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        """Run a batch of uint8 RGB frames [B, H, W, 3]; returns the graph outputs by name."""
        ident = threading.get_ident()
        try:
            with self._calls:
                if not self.active:
                    raise RunnerInactiveError(f"{self.backend} runner for {self.path} is not active: use "
                                              "`with runner:` or call runner.activate() first")
                self._in_flight.append(ident)
            self.check_input(frames)
            return self._infer(frames)
        finally:
            with self._calls:
                if ident in self._in_flight:  # absent when refused, or interrupted before the append
                    self._in_flight.remove(ident)
                    self._calls.notify_all()
                release = self._release_pending and not self._in_flight
            if release:  # the last call of an interrupted close
                with self._lifecycle:
                    if self._release_pending:
                        self._deactivate()
                        self._release_pending = False

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

    def check_input_size(self, frames: np.ndarray, input_hw: Optional[tuple[int, int]]) -> None:
        """Refuse frames that are not at the graph's fixed input size (None: any size)."""
        if input_hw is not None and tuple(frames.shape[1:3]) != tuple(input_hw):
            raise DataError(f"frames are {frames.shape[1]}x{frames.shape[2]} but {Path(self.path).name} takes "
                            f"{input_hw[0]}x{input_hw[1]} (H x W): resize them to the model's input "
                            "size first (the Detector does this)")

    @property
    def produces_features(self) -> bool:
        """True when this runner's graph stops after the featurizer (host-side scoring needed)."""
        return False

    def host_scorer(self):
        """The BankScorer that turns this featurizer graph's outputs into results (loaded once, from
        the file this runner executes)."""
        if self._scorer is None:
            from edgecmg.runtime.registry import load_host_scorer

            self._scorer = load_host_scorer(self.path)[0]
        return self._scorer

    @abstractmethod
    def _activate(self) -> None: ...

    @abstractmethod
    def _infer(self, frames: np.ndarray) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def _deactivate(self) -> None: ...
