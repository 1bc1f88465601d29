"""Runners: one interface (``Runner``) over torch, ONNX Runtime and TensorRT, and the registry
that maps a model file to its runner (``make_runner(path, backend="auto")``)."""
from edgecmg.runtime.base import FEATURIZER_OUTPUTS, Runner
from edgecmg.runtime.registry import (
    BACKENDS,
    SPECS,
    available_backends,
    load_host_scorer,
    make_runner,
    runner_choices,
)

__all__ = [
    "BACKENDS",
    "FEATURIZER_OUTPUTS",
    "SPECS",
    "Runner",
    "available_backends",
    "load_host_scorer",
    "make_runner",
    "runner_choices",
]
