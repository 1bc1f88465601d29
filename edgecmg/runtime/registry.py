"""Runner registry: which runner executes which model file, and what ``backend="auto"`` picks.

One table, ``SPECS``, fastest first. Each row: backend name, device kind, the file suffixes it
runs, an availability probe and a factory. ``make_runner`` keeps the rows that fit the file, the
requested backend and device, and takes the first available one:

=============  ======  ==========================  ==========================================
backend        device  files                       runner
=============  ======  ==========================  ==========================================
tensorrt       cuda    .engine, .plan              TensorRTRunner (TensorRT Python API)
tensorrt       cuda    .onnx                       OnnxRunner, TensorRT execution provider
onnxruntime    cuda    .onnx, .edgecmg (exported)  OnnxRunner, CUDA execution provider
torch          cuda    .edgecmg                    TorchRunner
onnxruntime    cpu     .onnx, .edgecmg (exported)  OnnxRunner, CPU execution provider
torch          cpu     .edgecmg                    TorchRunner
=============  ======  ==========================  ==========================================

An ``.edgecmg`` artifact run with onnxruntime is exported once (the full graph) into the cache
directory keyed by the artifact's SHA-256 (``edgecmg.export_cache.cached_onnx``), so
``edgecmg bench M.edgecmg --backends torch onnxruntime`` compares both on the same model. Engines
are never built implicitly (minutes of TensorRT tuning): ``edgecmg build`` makes them.
"""
from __future__ import annotations

import importlib.util
import logging
import numbers
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from edgecmg.distributions import extra_install_hint
from edgecmg.engine import TENSORRT_INSTALL_HINT, tensorrt_available
from edgecmg.engine_file import ENGINE_SUFFIXES, read_engine_header
from edgecmg.errors import BackendUnavailableError, ConfigError, DataError, MissingFileError
from edgecmg.runtime.base import Runner, device_index
from edgecmg.runtime.onnx_runner import OnnxRunner, available_providers, provider_install_hint

log = logging.getLogger("edgecmg")

BACKENDS = ("torch", "onnxruntime", "tensorrt")
ARTIFACT_SUFFIX = ".edgecmg"
ONNX_SUFFIX = ".onnx"
KNOWN_SUFFIXES = (ARTIFACT_SUFFIX, ONNX_SUFFIX, *ENGINE_SUFFIXES)
_HINTS = {
    "torch": lambda: "install the CUDA build of torch for GPU inference",
    "onnxruntime": provider_install_hint,  # names a CPU build hiding a GPU one, when it finds both
    "tensorrt": lambda: TENSORRT_INSTALL_HINT,
}


def torch_cuda_available() -> bool:
    """Whether torch imports here and sees a CUDA device."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken CUDA install means "not available"
        return False


def nvidia_gpu_present() -> bool:
    """Whether this machine has an NVIDIA GPU: torch sees one, or the driver (desktop) or L4T (Jetson)
    is there (a CPU-only torch beside cuda-python and TensorRT still counts)."""
    return (torch_cuda_available() or Path("/proc/driver/nvidia/version").exists()
            or Path("/etc/nv_tegra_release").exists())


def has_module(name: str) -> bool:
    """Whether ``name`` can be imported here, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _ort_provider(provider: str, *, needs_export: bool = False) -> Callable[[], bool]:
    def probe() -> bool:
        if needs_export and not has_module("onnx"):
            return False
        return provider in available_providers()

    return probe


@dataclass(frozen=True)
class RunnerSpec:
    backend: str
    device: str  # "cuda" or "cpu"
    suffixes: tuple[str, ...]
    available: Callable[[], bool]
    create: Callable[..., Runner]
    what: str = ""
    hint: Optional[Callable[[], str]] = None  # what to do when it is not available; default: by backend

    @property
    def name(self) -> str:
        return f"{self.backend}-{self.device}"


def _device_for(spec: RunnerSpec, device: Optional[str]) -> str:
    return device if device is not None else spec.device


def _torch_runner(path: Path, device: str, **_: Any) -> Runner:
    from edgecmg import artifact
    from edgecmg.runtime.torch_runner import TorchRunner

    # One read: the threshold the Detector takes from this header and the model activate() builds
    # come from the same bytes, even if the file is replaced in between.
    data = artifact.read_bytes(path)
    header, _payload = artifact.read_header(path, data=data)
    return TorchRunner(str(path), header, device, data=data)


def _onnx_runner(provider: str) -> Callable[..., Runner]:
    def create(path: Path, device: str, *, threads: Optional[int] = None, spin: Optional[bool] = None,
               export_config=None, **_: Any) -> Runner:
        if path.suffix.lower() == ARTIFACT_SUFFIX:
            from edgecmg.config import ExportConfig
            from edgecmg.export_cache import cached_onnx

            # The whole detector in one graph: no host round trip for the bank scoring, which on a
            # 2-core CPU made the featurizer-only export 40% slower per frame (benchmarks/results/bench.md).
            onnx_path, header = cached_onnx(path, export_config or ExportConfig(with_scoring=True))
            runner = OnnxRunner(onnx_path, header, device, provider=provider, threads=threads, spin=spin)
            runner.model_path = str(path)
            return runner
        return OnnxRunner(path, None, device, provider=provider, threads=threads, spin=spin)

    return create


def _tensorrt_runner(path: Path, device: str, **_: Any) -> Runner:
    from edgecmg.runtime.tensorrt_runner import TensorRTRunner

    return TensorRTRunner(path, None, device)


SPECS: tuple[RunnerSpec, ...] = (
    RunnerSpec("tensorrt", "cuda", ENGINE_SUFFIXES, lambda: tensorrt_available() and _torch_or_cudart(),
               _tensorrt_runner, "TensorRT engine"),
    RunnerSpec("tensorrt", "cuda", (ONNX_SUFFIX,), _ort_provider("tensorrt"), _onnx_runner("tensorrt"),
               "ONNX Runtime's TensorRT execution provider", lambda: provider_install_hint(
                   f"onnxruntime-gpu ({extra_install_hint('onnx-gpu')} on x86-64; on a Jetson, the wheel built for your "
                   "JetPack), with TensorRT's libraries on the library path (JetPack provides them)")),
    RunnerSpec("onnxruntime", "cuda", (ONNX_SUFFIX, ARTIFACT_SUFFIX), _ort_provider("cuda", needs_export=True),
               _onnx_runner("cuda"), "ONNX Runtime, CUDA execution provider"),
    RunnerSpec("torch", "cuda", (ARTIFACT_SUFFIX,), torch_cuda_available, _torch_runner, "torch on CUDA"),
    RunnerSpec("onnxruntime", "cpu", (ONNX_SUFFIX, ARTIFACT_SUFFIX), _ort_provider("cpu", needs_export=True),
               _onnx_runner("cpu"), "ONNX Runtime, CPU execution provider"),
    RunnerSpec("torch", "cpu", (ARTIFACT_SUFFIX,), lambda: True, _torch_runner, "torch on CPU"),
)


def _torch_or_cudart() -> bool:
    return torch_cuda_available() or has_module("cuda")


def device_name(device: Any) -> Optional[str]:
    """``device`` as the runners take it: None, "cpu", "cuda" or "cuda:N"; also accepts what torch
    accepts, a ``torch.device`` and an int N (CUDA device N)."""
    if device is None or isinstance(device, str):
        return device
    if isinstance(device, numbers.Integral) and not isinstance(device, bool) and device >= 0:  # numpy's too
        return f"cuda:{int(device)}"
    if type(device).__name__ == "device" and type(device).__module__ == "torch":  # torch.device, torch not imported
        return str(device)
    raise ConfigError(f"device={device!r}: use 'cpu', 'cuda', 'cuda:N', a torch.device or a CUDA index N "
                      "(or leave it unset)")


def _device_kind(device: Optional[str]) -> Optional[str]:
    if device is None:
        return None
    if device == "cpu":
        return "cpu"
    if device == "cuda" or re.fullmatch(r"cuda:[0-9]+", device):
        return "cuda"
    raise ConfigError(f"device={device!r}: use 'cpu', 'cuda' or 'cuda:N' (or leave it unset)")


def check_cuda_index(device: Optional[str]) -> None:
    """Refuse "cuda:N" past the CUDA devices torch sees (which, like ONNX Runtime and TensorRT, honour
    CUDA_VISIBLE_DEVICES), by name, before a runner fails on it with its own error. Not checked where
    torch sees no CUDA: each runner then says what is missing."""
    if _device_kind(device) != "cuda" or not torch_cuda_available():
        return
    import torch

    count = torch.cuda.device_count()
    if device_index(device) >= count:
        raise ConfigError(f"device={device!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1} "
                          "(nvidia-smi lists them; CUDA_VISIBLE_DEVICES renumbers what it keeps from 0)")


def check_torch_device(device: str) -> str:
    """``device`` for the torch backend ("cpu", "cuda" or "cuda:N"), refused where this torch has no CUDA
    or not that device."""
    if _device_kind(device) == "cuda" and not torch_cuda_available():
        raise BackendUnavailableError("torch", f"device={device!r}: this torch has no CUDA device", _HINTS["torch"]())
    check_cuda_index(device)
    return device


def check_model_file(path: Path) -> str:
    """The lower-case suffix of a model file that exists and is of a kind edgecmg runs; otherwise a
    DataError saying what was given instead (a folder, another file type, nothing)."""
    suffix = path.suffix.lower()
    if path.is_dir():  # on the command line: the model and the data given the other way round
        raise DataError(f"{path} is a folder, not a model file: give the .edgecmg, .onnx or "
                        f"{'/'.join(ENGINE_SUFFIXES)} file (edgecmg commands take the model first)")
    if not path.exists():  # before the suffix: a mistyped name is missing first of all
        raise MissingFileError(f"{path}: no such model file")
    if suffix in KNOWN_SUFFIXES:
        from edgecmg.magic import git_lfs_pointer

        pointer = git_lfs_pointer(path)
        if pointer:  # before any reader calls it damaged
            raise DataError(pointer)
        return suffix
    runs = f"edgecmg runs .edgecmg artifacts, .onnx exports and {'/'.join(ENGINE_SUFFIXES)} TensorRT engines"
    from edgecmg.fileio import RANGE_CACHE_SUFFIX, is_range_cache
    from edgecmg.imageio import IMAGE_EXTENSIONS

    # the two files that sit beside models and get given in their place: named for what they are
    if is_range_cache(path):
        beside = path.with_name(path.name[: -len(RANGE_CACHE_SUFFIX)] + ONNX_SUFFIX)
        raise DataError(f"{path} holds calibrate's activation ranges, not a model: give the INT8 .onnx calibrate "
                        f"wrote beside it ({beside}), or the engine built from it; {runs}")
    if suffix in IMAGE_EXTENSIONS:
        raise DataError(f"{path} is an image ({suffix}), not a model file; {runs}")
    raise DataError(f"{path}: unknown model file type {suffix!r}; {runs}")


def candidate_specs(path: str | Path, backend: str = "auto", device: Optional[str] = None) -> list[RunnerSpec]:
    """Rows of ``SPECS`` that could run ``path`` for this backend/device, fastest first (availability
    not checked)."""
    if backend != "auto" and backend not in BACKENDS:
        raise ConfigError(f"backend={backend!r}: choose 'auto' or one of {', '.join(BACKENDS)}")
    suffix = Path(path).suffix.lower()
    kind = _device_kind(device)
    return [s for s in SPECS if suffix in s.suffixes and (backend == "auto" or s.backend == backend)
            and (kind is None or s.device == kind)]


def make_runner(path: str | Path, backend: str = "auto", device: Optional[str] = None, *,
                threads: Optional[int] = None, spin: Optional[bool] = None, export_config=None) -> Runner:
    """The runner for a model file (not yet active: use ``with runner:``).

    backend: "auto" (fastest available, see the module table), "torch", "onnxruntime" or "tensorrt".
    device: None (the backend's best), "cpu", "cuda" or "cuda:N".
    threads, spin: ONNX Runtime's intra-op threads and spin-waiting (``OnnxRunner``); other runners take
    neither. export_config: how an .edgecmg is exported for onnxruntime.
    """
    path = Path(path).expanduser()
    suffix = check_model_file(path)
    if suffix in ENGINE_SUFFIXES:
        # A damaged or foreign .engine is named as such here, not reported as "TensorRT is missing"
        # on a machine without it; the header is a few hundred bytes.
        read_engine_header(path)
    device = device_name(device)
    specs = candidate_specs(path, backend, device)
    check_cuda_index(device)
    if not specs:
        runs = {b: sorted({x for s in SPECS if s.backend == b for x in s.suffixes}) for b in BACKENDS}
        if backend != "auto" and suffix not in runs[backend]:
            raise ConfigError(f"backend {backend!r} cannot run {suffix} files (it runs {', '.join(runs[backend])}); "
                              + _conversion_hint(suffix, backend))
        raise ConfigError(f"no {backend} runner for {suffix} files on device {device!r}; "
                          f"{suffix} files run on: {', '.join(s.name for s in SPECS if suffix in s.suffixes)}")
    failed: Optional[BackendUnavailableError] = None
    for spec in specs:
        if spec.available():
            try:
                return spec.create(path, _device_for(spec, device), threads=threads, spin=spin,
                                   export_config=export_config)
            except BackendUnavailableError as exc:
                if backend != "auto":
                    raise
                log.warning("%s; trying the next backend", exc)  # auto: e.g. an unwritable export cache
                failed = exc
    if failed is not None:  # the cause that matters, not "nothing else is available"
        raise failed
    if suffix in ENGINE_SUFFIXES and not nvidia_gpu_present():
        # Installing TensorRT (what the hint below says) cannot help a machine without the GPU.
        raise BackendUnavailableError(specs[0].backend, f"{path} is a TensorRT engine, which runs only on an NVIDIA "
                                      "GPU, and this machine has none",
                                      "judge here with the .onnx it was built from (or the .edgecmg); build and run "
                                      "engines on the target")
    if len(specs) == 1:
        reason = f"{specs[0].name} cannot run here ({specs[0].what} not available)"
    else:  # each candidate's own reason: the first alone (onnxruntime-cuda, where ONNX Runtime is not
        # installed at all) hid that e.g. CUDA was missing for all of them
        reason = (f"none of the runners for {suffix} files on {device or 'any device'} can run here ("
                  + "; ".join(f"{s.name}: {s.what} not available" for s in specs) + ")")
    # the hint of the plainest candidate (the last: CPU where there is one), what most often fixes it
    hinted = specs[-1]
    raise BackendUnavailableError(backend if backend == "auto" else specs[0].backend, reason,
                                  (hinted.hint or _HINTS[hinted.backend])())


def _conversion_hint(suffix: str, backend: str) -> str:
    if backend == "tensorrt" and suffix == ARTIFACT_SUFFIX:
        return ("export and build first: edgecmg export M.edgecmg --format onnx -o M.onnx; "
                "edgecmg build M.onnx -o M.engine (in Python: edgecmg.export.export_onnx, then "
                "edgecmg.engine.build_engine)")
    if backend == "torch":
        return "torch runs the .edgecmg artifact the file was made from"
    if suffix in ENGINE_SUFFIXES:
        return "engines run only on tensorrt; use the .onnx it was built from for onnxruntime"
    return "convert the file first (edgecmg export / edgecmg build)"


def available_backends() -> list[str]:
    """Backend names usable on this machine for some file type (torch always)."""
    return [b for b in BACKENDS if any(s.backend == b and s.available() for s in SPECS)]


def runner_choices(path: str | Path) -> list[tuple[str, str]]:
    """(backend, device) pairs that can run ``path`` here, fastest first (the conformance tests'
    parametrisation and what ``auto`` chooses from)."""
    return [(s.backend, s.device) for s in candidate_specs(path) if s.available()]


def load_host_scorer(path: str | Path):
    """(BankScorer, header) for host-side scoring of a featurizer-only model file of any kind."""
    path = Path(path)
    suffix = check_model_file(path)
    if suffix == ONNX_SUFFIX:
        from edgecmg.export import load_scorer_from_onnx

        return load_scorer_from_onnx(path)
    if suffix in ENGINE_SUFFIXES:
        from edgecmg.engine_file import load_scorer_from_engine

        return load_scorer_from_engine(path)
    from edgecmg import artifact

    model, header = artifact.load(path)
    return model.scorer, header
