"""ONNX Runtime runner: an exported ``.onnx`` on the CPU, CUDA or TensorRT execution provider."""
from __future__ import annotations

import contextlib
import ctypes
import re
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgecmg import distributions
from edgecmg.errors import NO_THREAD_HINT, ArtifactError, BackendUnavailableError, ConfigError, no_thread
from edgecmg.runtime.base import FEATURIZER_OUTPUTS, Runner, device_index, run_in_batches

ORT_INSTALL_HINT = (f"for the CPU, {distributions.extra_install_hint('onnx')}; for the CUDA/TensorRT providers "
                    "on an x86-64 desktop: pip uninstall -y onnxruntime, then "
                    f"{distributions.extra_install_hint('onnx-gpu')}; PyPI has no onnxruntime-gpu for aarch64: on a "
                    "Jetson, use the onnxruntime-gpu wheel built for your JetPack, or run engines with TensorRT")
ORT_DISTRIBUTIONS = distributions.ONNXRUNTIME  # see edgecmg.distributions
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def import_onnxruntime():
    distributions.onnxruntime_telemetry_off()
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailableError("onnxruntime", f"cannot import onnxruntime ({exc})", ORT_INSTALL_HINT) from exc
    if hasattr(onnxruntime, "set_default_logger_severity"):
        # The process-wide logger's warnings, in colour codes, filled a service's log on every run;
        # sessions set their own level. (Its telemetry's "Failed to persist telemetry device ID" where
        # HOME is read-only comes during the import: onnxruntime_telemetry_off prevents it.)
        onnxruntime.set_default_logger_severity(3)
    if not hasattr(onnxruntime, "InferenceSession"):  # the files one build shared with another were removed
        raise BackendUnavailableError("onnxruntime", "the onnxruntime module is broken (no InferenceSession): two "
                                      "builds were installed and one was uninstalled", "pip uninstall -y onnxruntime "
                                      "onnxruntime-gpu, then install the one you need")
    return onnxruntime


def installed_ort_distributions() -> list[str]:
    """Which of :data:`ORT_DISTRIBUTIONS` pip has installed here."""
    found = []
    for name in ORT_DISTRIBUTIONS:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        if version:  # None: a stale dist-info folder without its METADATA, not an installed build
            found.append(name)
    return found


def provider_install_hint(otherwise: str = ORT_INSTALL_HINT) -> str:
    """What to do when an execution provider is missing: ``otherwise``, or, when several ONNX Runtime
    distributions share the module, how to keep only the one needed."""
    found = installed_ort_distributions()
    if len(found) < 2:
        return otherwise
    return (f"{' and '.join(found)} are installed together and share one onnxruntime module, so the one installed last "
            f"decides which providers there are: pip uninstall -y {' '.join(found)}, then install only the build "
            "whose providers you need (for CUDA and TensorRT onnxruntime-gpu: pip install onnxruntime-gpu on x86-64; "
            "on a Jetson, the wheel built for your JetPack)")


def available_providers() -> list[str]:
    """Short names ("cpu", "cuda", "tensorrt") of the execution providers this onnxruntime has."""
    try:
        ort = import_onnxruntime()
        have = set(ort.get_available_providers())
    except Exception:  # noqa: BLE001 - absent, or a module half removed by uninstalling one of two builds
        return []
    return [short for short, name in PROVIDERS.items() if name in have]


# ONNX Runtime's errors for a model it cannot take (onnxruntime.capi.onnxruntime_pybind11_state): a file
# onnx reads and edgecmg's checksums pass (ir_version and opset_import are outside them) whose version
# fields are damaged, or newer than this ONNX Runtime. They say nothing of the install, unlike the rest
# (a provider that cannot start, CUDA errors).
_MODEL_ERRORS = ("InvalidGraph", "InvalidProtobuf", "NotImplemented")


def _is_model_error(exc: Exception) -> bool:
    """Whether an InferenceSession error is about the model file rather than this ONNX Runtime's setup.
    FAIL is also what providers raise (a CUDA error): it counts only while the model is being loaded,
    which ONNX Runtime's message then says ("Load model from ... failed"). NOT_IMPLEMENTED is also what
    a build of ONNX Runtime without some kernel raises ("Could not find an implementation for ..."):
    it counts only where it names the file's IR version or an opset."""
    if not type(exc).__module__.startswith("onnxruntime"):
        return False
    name, text = type(exc).__name__, str(exc)
    if name == "NotImplemented":
        return bool(re.search(r"IR version|opset", text, re.IGNORECASE))
    return name in _MODEL_ERRORS or (name == "Fail" and "Load model from" in text)


def _ort_message(exc: Exception) -> str:
    """ONNX Runtime's first line without its status code, the path (named already) and the C++ source
    location and signature it puts before the reason: "Unsupported model IR version: 72, max supported
    IR version: 14" for a damaged ir_version."""
    first = (str(exc).strip().splitlines() or [""])[0]
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", first)
    text = re.sub(r"^Load model from .*? failed:", "", text)
    text = re.sub(r"^\S+:\d+ .*?\) ", "", text)  # /onnxruntime_src/...cc:256 onnxruntime::Model::Model(...)
    text = text.strip().rstrip(".") or first
    return text if len(text) <= 500 else text[:497].rsplit(" ", 1)[0] + "..."


class OnnxRunner(Runner):
    """Runs an edgecmg ONNX export (featurizer or full graph) with ONNX Runtime.

    provider: "cpu", "cuda" or "tensorrt" (TensorRT execution provider, CUDA and CPU fallback; engines
        cached under ``trt_cache_dir``); default from ``device`` ("cpu" or "cuda[:N]").
    threads: intra-op threads (None: ONNX Runtime's default, all cores).
    fp16: with the TensorRT provider, let TensorRT run the float layers in FP16. Default: on for INT8
        (Q/DQ) featurizer exports, whose float layers `edgecmg build` also runs in FP16; off for FP32
        exports and for full graphs (their scorer needs FP32).
    spin: let ONNX Runtime's idle threads spin-wait between runs. Default: off for featurizer
        graphs, whose outputs go straight to host scoring on the same cores (spinning threads
        starve it: measured 2x slower host scoring on 2 cores), ONNX Runtime's default otherwise.
    """

    backend = "onnxruntime"

    def __init__(self, path: str | Path, metadata: Optional[dict[str, Any]] = None, device: str = "cpu", *,
                 provider: Optional[str] = None, threads: Optional[int] = None, fp16: Optional[bool] = None,
                 trt_cache_dir: Optional[str | Path] = None, spin: Optional[bool] = None) -> None:
        if metadata is None:
            from edgecmg.onnx_header import read_onnx_header  # no torch for a file that needs none

            # No operator check: the session refuses an operator ONNX Runtime lacks by itself, and the
            # file is then read without the onnx package (a second of every start).
            metadata = read_onnx_header(path, operators=False)
        provider = provider or ("cuda" if str(device).startswith("cuda") else "cpu")
        if provider not in PROVIDERS:
            raise ConfigError(f"provider={provider!r}: choose one of {', '.join(PROVIDERS)}")
        if provider != "cpu" and not str(device).startswith("cuda"):
            device = "cuda"
        super().__init__(str(path), metadata, device)
        self.provider = provider
        self.threads = threads
        self.spin = spin
        self.quantized = metadata.get("export", {}).get("precision") == "int8"
        self.trt_cache_dir = trt_cache_dir
        self._session = None
        self._input_name = "image"
        self._input_hw: Optional[tuple[int, int]] = None
        self._fixed_batch: Optional[int] = None  # an export with dynamic_batch=False takes only this batch
        self._outputs: list[str] = []
        # Not for a full graph: the provider cannot keep the scorer's distance MatMul in FP32, as
        # `edgecmg build` does, and FP16 cannot resolve ||q||^2 + ||m||^2 - 2 q.m.
        self.fp16 = fp16 if fp16 is not None else self.quantized and self.produces_features

    @property
    def label(self) -> str:
        return f"onnxruntime|{self.provider}"

    def _providers(self) -> list:
        index = device_index(self.device)
        if self.provider == "cpu":
            return ["CPUExecutionProvider"]
        cuda = ("CUDAExecutionProvider", {"device_id": index})
        if self.provider == "cuda":
            return [cuda, "CPUExecutionProvider"]
        from edgecmg.export_cache import cache_dir

        folder = Path(self.trt_cache_dir) if self.trt_cache_dir else cache_dir() / "ort-tensorrt"
        folder.mkdir(parents=True, exist_ok=True)
        options = {"device_id": index, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(folder),
                   "trt_timing_cache_enable": True, "trt_timing_cache_path": str(folder),  # else: the cwd
                   "trt_fp16_enable": bool(self.fp16),
                   # A weakly typed TensorRT network with Q/DQ layers needs the INT8 builder flag (without
                   # it the build fails: "int8 is not configured in the builder"); for a Q/DQ model the
                   # provider uses the graph's scales and asks for no calibration table.
                   "trt_int8_enable": self.quantized}
        return [("TensorrtExecutionProvider", options), cuda, "CPUExecutionProvider"]

    def _activate(self) -> None:
        ort = import_onnxruntime()
        wanted = PROVIDERS[self.provider]
        if wanted not in ort.get_available_providers():
            raise BackendUnavailableError(
                "onnxruntime", f"this onnxruntime has no {wanted} (it has {ort.get_available_providers()})",
                provider_install_hint())
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = int(self.threads)
            options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        spin = self.spin if self.spin is not None else not self.produces_features
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(self.path, options, providers=self._providers())
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            if _is_model_error(exc):
                # The file was read without its operator check (__init__): where that check finds why
                # (an operator edgecmg never exports), its words name it; else ONNX Runtime's own.
                from edgecmg.onnx_header import read_onnx_header

                with contextlib.suppress(BackendUnavailableError):  # no onnx package here: ONNX Runtime's words
                    read_onnx_header(self.path)
                raise ArtifactError(f"{self.path}: the installed ONNX Runtime, {ort.__version__}, cannot load it "
                                    f"({_ort_message(exc)}): the file is damaged, or was exported for a newer ONNX "
                                    f"Runtime than {ort.__version__}; copy or export it again, or upgrade "
                                    "onnxruntime") from exc
            if no_thread(exc):  # not an install problem: the install hint would send the user the wrong way
                raise BackendUnavailableError("onnxruntime", f"cannot open {self.path}: {NO_THREAD_HINT}; or pass "
                                              "backend='torch' (--backend torch)") from exc
            raise BackendUnavailableError("onnxruntime", f"cannot open {self.path} with {wanted}: {exc}",
                                          provider_install_hint()) from exc
        active = self._session.get_providers()
        if not active or active[0] != wanted:
            self._session = None
            raise BackendUnavailableError(
                "onnxruntime", f"{wanted} could not be initialised (session fell back to {active}); check the "
                "CUDA/cuDNN/TensorRT libraries onnxruntime-gpu needs", provider_install_hint())
        inp = self._session.get_inputs()[0]
        self._input_name = inp.name
        dims = list(inp.shape)
        if len(dims) == 4 and all(isinstance(d, int) for d in dims[1:3]):
            self._input_hw = (int(dims[1]), int(dims[2]))
        if dims and isinstance(dims[0], int) and dims[0] > 0:
            self._fixed_batch = int(dims[0])
        self._outputs = [o.name for o in self._session.get_outputs()]

    def _infer(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        self.check_input_size(frames, self._input_hw)
        if self._fixed_batch is not None and len(frames) != self._fixed_batch:
            return run_in_batches(frames, self._run, self._fixed_batch, self._fixed_batch)
        return self._run(frames)

    def _run(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        values = self._session.run(None, {self._input_name: np.ascontiguousarray(frames)})
        return dict(zip(self._outputs, values))

    def _after_fork_in_child(self) -> None:
        super()._after_fork_in_child()
        if self._session is not None:
            # A session made before the fork judges in the child, but freeing it there waits for ever
            # for the thread pool it was made with, whose threads stayed in the parent: close() and the
            # child's normal exit hung (4 of 5 forks, an audit). The child keeps a reference for good, so
            # that neither frees it; the memory is the parent's pages, shared until written.
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(self._session))

    def _deactivate(self) -> None:
        self._session = None

    @property
    def produces_features(self) -> bool:
        outputs = self._outputs or list(self.metadata.get("export", {}).get("outputs", []))
        return tuple(outputs) == FEATURIZER_OUTPUTS

