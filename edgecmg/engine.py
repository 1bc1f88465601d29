"""TensorRT engines: the platform here (TensorRT version, GPU, DLA cores), whether an engine built
elsewhere runs on it, and the build from ONNX. The ``.engine`` file itself is ``edgecmg.engine_file``;
the ONNX-side preparation, which needs no TensorRT, is ``edgecmg.onnx_checks`` (what TensorRT's
parser accepts) and ``edgecmg.fp16_cast`` (the float16 copy).

TensorRT engines run only on the TensorRT version and GPU architecture they were built for:
``check_engine_compatible`` says which and how to rebuild.

TensorRT 10 and 11: both take explicit-batch networks (the EXPLICIT_BATCH flag is deprecated in 10
and gone in 11); INT8 is explicit only (Q/DQ nodes from ``edgecmg calibrate``, built strongly
typed: TensorRT 10.1 deprecated and 11 removed implicit calibration and the INT8 flag), from a
float16 copy of the ONNX (``convert_to_fp16``, scales included) so that the layers left in float run
in FP16; FP16 is the builder flag on 10.x and, where the flag no longer exists (11.x), the float16
copy built strongly typed. Capabilities are detected on the imported module,
not inferred from version numbers, except that a TensorRT 11 without the STRONGLY_TYPED flag
(deprecated and ignored there: every network is strongly typed) builds without it.
"""
from __future__ import annotations

import functools
import logging
import re
import shlex
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from edgecmg import __version__
from edgecmg.config import EngineConfig, expect_config
from edgecmg.engine_file import ENGINE_SUFFIXES, write_engine_file
from edgecmg.errors import (
    ArtifactError,
    BackendUnavailableError,
    ConfigError,
    EngineBuildError,
    EngineIncompatibleError,
    MissingFileError,
)
from edgecmg.fileio import (RANGE_CACHE_SUFFIX, atomic_write_bytes, check_cache_path, check_file_suffix, check_writable,
                            is_range_cache)
from edgecmg.fp16_cast import DEFAULT_FP32_OPS, convert_to_fp16
from edgecmg.onnx_checks import _as_model, check_onnx_for_tensorrt, is_quantized

log = logging.getLogger("edgecmg")

TENSORRT_INSTALL_HINT = (
    "on a Jetson TensorRT ships with JetPack 6.1 or later (TensorRT 10.3; sudo apt install nvidia-jetpack, "
    "then use the system python3-libnvinfer in a venv made with --system-site-packages); on an x86-64 Linux "
    "desktop GPU `pip install tensorrt-cu12` or `tensorrt-cu13` (the CUDA major of your torch and onnxruntime-gpu; "
    "today TensorRT 11, which edgecmg builds for; `tensorrt-cu12<11` keeps 10; plain `tensorrt` "
    "follows NVIDIA's newest CUDA; its libraries may come from NVIDIA's package index, pypi.nvidia.com), or "
    "NVIDIA's tar/deb packages")
# DLA by TensorRT release (NVIDIA's "Working with DLA"): TensorRT 10 up to 10.7 builds DLA engines from
# precision flags; 11.4.1 (JetPack 7.2.2, AGX Orin) places strongly typed networks on a DLA, and is the
# last release for JetPack (11.5 has no DLA: its core count is 0, which build refuses first).
STRONGLY_TYPED_DLA_SINCE = (11, 4, 1)
DLA_RELEASES = "JetPack's TensorRT 10 up to 10.7, or 11.4.1"


# --------------------------------------------------------------------------------------------------
# tensorrt import and platform
# --------------------------------------------------------------------------------------------------
def import_tensorrt():
    """``import tensorrt`` or BackendUnavailableError with the JetPack / NVIDIA install hint."""
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or a broken install (missing libnvinfer) raising OSError
        raise BackendUnavailableError("tensorrt", f"cannot import tensorrt ({type(exc).__name__}: {exc})",
                                      TENSORRT_INSTALL_HINT) from exc
    return trt


def tensorrt_available() -> bool:
    """Whether TensorRT's Python package imports here (JetPack, or NVIDIA's wheels on a desktop GPU)."""
    try:
        import_tensorrt()
    except BackendUnavailableError:
        return False
    return True


@dataclass(frozen=True)
class Platform:
    """Where an engine is built or run: what decides whether an engine can be deserialized."""

    tensorrt: str
    gpu_name: str
    compute_capability: str
    dla_cores: Optional[int] = None  # None: not known (a DLA engine is then not checked against it)

    def describe(self) -> str:
        return f"TensorRT {self.tensorrt} on {self.gpu_name} (compute capability {self.compute_capability})"


def gpu_info(device: int = 0) -> tuple[str, str]:
    """(GPU name, "major.minor" compute capability) through torch or cuda-python; ("unknown", "?")."""
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(device)
            return torch.cuda.get_device_name(device), f"{major}.{minor}"
    except Exception:  # noqa: BLE001 - a broken torch CUDA install must not stop the build
        pass
    cudart = _cuda_python_runtime()
    if cudart is not None:
        err, props = cudart.cudaGetDeviceProperties(device)
        if int(err) == 0:
            name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
            return name.rstrip("\x00"), f"{props.major}.{props.minor}"
    return "unknown", "?"


def _cuda_python_runtime():
    """cuda-python's runtime module (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]
        except ImportError:
            return None
    return cudart


def current_platform(trt=None, device: int = 0, *, dla: bool = False) -> Platform:
    """The TensorRT version and GPU here; with ``dla`` (for a DLA engine) also the DLA cores, which
    takes a TensorRT runtime to ask."""
    trt = trt or import_tensorrt()
    name, cc = gpu_info(device)
    return Platform(str(trt.__version__), name, cc, _dla_cores(trt) if dla else None)


def _dla_cores(trt) -> Optional[int]:
    """DLA cores this TensorRT can use here: 0 on a desktop GPU, an Orin Nano, or with a TensorRT
    without DLA (see DLA_RELEASES); None where the runtime cannot be asked."""
    try:
        return int(trt.Runtime(_LogBridge.make(trt)).num_DLA_cores)
    except Exception:  # noqa: BLE001 - no GPU, or a binding without the property
        return None


def tensorrt_version(version: str) -> tuple[int, ...]:
    """(major, minor, patch) of a TensorRT version string such as "10.3.0.26" (missing parts are 0;
    () when it holds no number)."""
    numbers = [int(n) for n in re.findall(r"\d+", str(version))[:3]]
    return tuple(numbers + [0] * (3 - len(numbers))) if numbers else ()


def _version_key(version: str) -> tuple[str, ...]:
    """major.minor.patch: builds of one release share engines; other releases do not."""
    return tuple(str(version).split(".")[:3])


# --------------------------------------------------------------------------------------------------
# engine compatibility with this platform
# --------------------------------------------------------------------------------------------------
def rebuild_command(header: dict[str, Any], engine_path: str | Path, dla_cores: Optional[int] = None) -> str:
    """The build command for this engine's source. Its DLA core where this device has it (``dla_cores``:
    None when not known), else core 0 where there is one, else no --dla (the GPU)."""
    # The header's words go into a command a person may paste: the source's file name alone, each word
    # quoted (a crafted file's "x.onnx; rm -rf ~" stays one file name).
    source = Path(str(header.get("source_onnx") or "")).name or "M.onnx"
    cmd = f"edgecmg build {shlex.quote(source)} --precision {shlex.quote(str(header.get('precision', 'fp16')))}"
    core = header.get("dla_core")
    if core is not None and dla_cores is not None and core >= dla_cores:
        core = 0 if dla_cores > 0 else None
    if core is not None:
        cmd += f" --dla {int(core)}"
    return cmd + f" -o {shlex.quote(str(engine_path))}"


def check_engine_compatible(header: dict[str, Any], current: Optional[Platform] = None, *,
                            path: str | Path = "engine") -> None:
    """Raise EngineIncompatibleError when the engine was built for another TensorRT or GPU.

    ``header``: an engine file's as ``edgecmg.engine_file`` reads it, its fields checked there (a
    "gpu" that is not an object, a "dla_core" that is not an integer, are refused when read).
    ``current``: the running platform (default: detected; inject one to test). A different GPU model
    of the same compute capability only warns (TensorRT deserializes it, tuned for the other model).
    """
    current = current or current_platform(dla=header.get("dla_core") is not None)
    built_gpu = header.get("gpu") or {}
    built = Platform(str(header.get("tensorrt", "?")), str(built_gpu.get("name", "?")),
                     str(built_gpu.get("compute_capability", "?")))
    reasons = []
    if _version_key(built.tensorrt) != _version_key(current.tensorrt):
        reasons.append(f"TensorRT {built.tensorrt} built it, this machine has TensorRT {current.tensorrt}")
    if "?" not in (built.compute_capability, current.compute_capability) and \
            built.compute_capability != current.compute_capability:
        reasons.append(f"it was built for {built.gpu_name} (compute capability {built.compute_capability}), "
                       f"this GPU is {current.gpu_name} (compute capability {current.compute_capability})")
    core = header.get("dla_core")
    if core is not None and current.dla_cores is not None and core >= current.dla_cores:
        # Every Orin has compute capability 8.7: an AGX engine on an Orin Nano passes the checks above.
        reasons.append(f"it runs on DLA core {core}, and this device has {current.dla_cores} DLA core(s)")
    if reasons:
        raise EngineIncompatibleError(
            f"{path}: cannot run this engine here: {'; '.join(reasons)}. TensorRT engines run only on the "
            f"TensorRT version and GPU architecture (and DLA core) they were built for. Rebuild it on this machine: "
            f"{rebuild_command(header, path, current.dla_cores)}")
    if built.gpu_name != current.gpu_name and "unknown" not in (built.gpu_name, current.gpu_name):
        log.warning("%s: built on %s, running on %s (same compute capability %s): it works, but rebuild it "
                    "here for the best kernels: %s", path, built.gpu_name, current.gpu_name,
                    current.compute_capability, rebuild_command(header, path, current.dla_cores))


# --------------------------------------------------------------------------------------------------
# build
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Capabilities:
    major: int
    fp16_flag: bool
    strongly_typed_flag: bool
    explicit_batch_flag: bool


def _capabilities(trt) -> _Capabilities:
    major = (tensorrt_version(trt.__version__) or (10,))[0]  # a version with no number: taken as 10
    flags = trt.NetworkDefinitionCreationFlag
    return _Capabilities(
        major=major,
        fp16_flag=hasattr(trt.BuilderFlag, "FP16"),
        strongly_typed_flag=hasattr(flags, "STRONGLY_TYPED"),
        explicit_batch_flag=hasattr(flags, "EXPLICIT_BATCH"),
    )


class _LogBridge:
    """Route TensorRT's log to the ``edgecmg`` logger (an ILogger subclass, made lazily)."""

    @staticmethod
    @functools.lru_cache(maxsize=4)  # one per tensorrt module: TensorRT keeps the first logger it is given
    def make(trt):
        class Bridge(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, severity, msg) -> None:  # noqa: D401 - TensorRT callback
                if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                    log.error("TensorRT: %s", msg)
                elif severity == trt.ILogger.Severity.WARNING:
                    log.warning("TensorRT: %s", msg)
                else:
                    log.debug("TensorRT: %s", msg)

        try:
            return Bridge()
        except Exception:  # noqa: BLE001 - fall back to TensorRT's own stderr logger
            return trt.Logger(trt.Logger.WARNING)


def pin_fp32_layers(network, trt, prefixes: tuple[str, ...]) -> int:
    """Ask for float32 on the layers parsed from nodes named ``prefixes*`` (weakly typed FP16 builds:
    the bank distances expand ||q||^2 + ||m||^2 - 2 q.m, which float16 cannot resolve). Returns
    the number of layers constrained; the caller sets PREFER_PRECISION_CONSTRAINTS."""
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if not str(layer.name).startswith(prefixes):
            continue
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if not outputs or any(o.dtype != trt.DataType.FLOAT for o in outputs):
            continue  # shape/index/bool layers keep their types
        layer.precision = trt.DataType.FLOAT
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.DataType.FLOAT)
        pinned += 1
    return pinned


def build_plan(network_bytes: bytes, config: EngineConfig, *, strongly_typed: bool, fp16_flag: bool,
               source: str = "model.onnx", trt=None,
               fp32_prefixes: tuple[str, ...] = ()) -> tuple[bytes, dict[str, Any]]:
    """Parse ONNX bytes and build a serialized TensorRT engine. Returns (plan, {input: shapes}).

    fp32_prefixes: with the FP16 builder flag, layers from nodes named so are kept in float32.

    TensorRT's default TF32 stays on. In the scorer it rounds only the bank norms of the distance
    MatMul to 10-bit mantissas: its other inputs (the fp16-rounded queries, -2 x the fp16 bank, 1)
    are exact in TF32. Emulated with the default KolektorSDD model on its 139 test images (a one-off
    script, 2026-11-25): scores move by at most 0.08% of the threshold, no verdict and no AUROC digit
    changes; tests/export/test_engine.py checks the exactness and a 0.5% bound.
    """
    trt = trt or import_tensorrt()
    caps = _capabilities(trt)
    logger = _LogBridge.make(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, caps, strongly_typed))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(network_bytes, source):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"TensorRT's ONNX parser rejected {source}: " + "; ".join(errors[:5]))

    bconfig = builder.create_builder_config()
    bconfig.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(config.workspace_mib) << 20)
    if fp16_flag:
        bconfig.set_flag(trt.BuilderFlag.FP16)
        if fp32_prefixes and pin_fp32_layers(network, trt, fp32_prefixes):
            bconfig.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
    shapes = _add_optimisation_profile(builder, bconfig, network, config.profile_batches, source)
    if config.dla_core is not None:
        _use_dla(trt, builder, bconfig, network, config.dla_core, source, strongly_typed)
    cache_path = Path(config.timing_cache) if config.timing_cache else None
    if cache_path is not None:
        _use_timing_cache(bconfig, cache_path)

    serialized = builder.build_serialized_network(network, bconfig)
    if serialized is None:
        raise EngineBuildError(f"TensorRT could not build an engine from {source} (precision {config.precision}); "
                               "the TensorRT errors are in the log above")
    plan = bytes(memoryview(serialized))
    if cache_path is not None:
        cache_bytes = bytes(memoryview(bconfig.get_timing_cache().serialize()))
        atomic_write_bytes(cache_path, cache_bytes, what="the timing cache", sync=False)
    return plan, shapes


def _network_flags(trt, caps: _Capabilities, strongly_typed: bool) -> int:
    """create_network's flags: STRONGLY_TYPED when asked for, EXPLICIT_BATCH before TensorRT 10.
    TensorRT 11 makes every network strongly typed and keeps the flag only as deprecated and ignored:
    a release that drops it builds the same network without it."""
    flags = 0
    if strongly_typed and caps.strongly_typed_flag:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif strongly_typed and caps.major < 11:
        raise EngineBuildError(f"TensorRT {trt.__version__} has no strongly typed networks; this build "
                               "needs TensorRT >= 10 (JetPack 6.1 or later; JetPack 6.0 ships TensorRT 8.6)")
    if caps.major < 10 and caps.explicit_batch_flag:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    return flags


def _add_optimisation_profile(builder, bconfig, network, batches, source: str) -> dict[str, Any]:
    """One optimisation profile: a dynamic batch spans ``batches`` (min, opt, max), other dims are
    fixed. Returns {input: {"min", "opt", "max", "dtype"}} for the engine header."""
    profile = builder.create_optimization_profile()
    shapes: dict[str, Any] = {}
    lo, opt, hi = batches
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = list(tensor.shape)
        if any(d < 0 for d in dims[1:]):
            raise EngineBuildError(f"input '{tensor.name}' has dynamic dims {dims} besides the batch; export "
                                   "with a fixed input size")
        if dims and dims[0] < 0:
            mins, opts, maxs = ([b, *dims[1:]] for b in (lo, opt, hi))
        else:
            mins = opts = maxs = dims
        try:
            profile.set_shape(tensor.name, mins, opts, maxs)
        except RuntimeError as exc:  # TensorRT raises for an inconsistent min/opt/max
            raise EngineBuildError(f"TensorRT refused the optimisation profile of input '{tensor.name}' (min "
                                   f"{mins}, opt {opts}, max {maxs}): {exc}") from exc
        dtype = getattr(tensor.dtype, "name", None) or str(tensor.dtype).split(".")[-1]
        shapes[tensor.name] = {"min": mins, "opt": opts, "max": maxs, "dtype": str(dtype).lower()}
    if bconfig.add_optimization_profile(profile) < 0:
        raise EngineBuildError(f"TensorRT refused the optimisation profile {shapes} of {source} (see the TensorRT "
                               "log above)")
    return shapes


def _use_dla(trt, builder, bconfig, network, dla_core: int, source: str, strongly_typed: bool) -> None:
    """Run on DLA core ``dla_core``, with the layers DLA cannot run falling back to the GPU; say how
    many layers can run there, and refuse a build where none can (a "DLA" engine that runs wholly
    on the GPU), or a strongly typed network where TensorRT cannot place one on a DLA."""
    available = int(getattr(builder, "num_DLA_cores", 0))
    if dla_core >= available:
        raise EngineBuildError(f"DLA core {dla_core} requested but this device has {available} DLA "
                               "core(s) (DLA exists on Jetson AGX/NX Orin, not on desktop GPUs or Orin Nano, and "
                               f"only with {DLA_RELEASES})")
    if strongly_typed and tensorrt_version(trt.__version__) < STRONGLY_TYPED_DLA_SINCE:
        raise EngineBuildError(
            f"{source}: INT8 on DLA core {dla_core} needs TensorRT {'.'.join(map(str, STRONGLY_TYPED_DLA_SINCE))} "
            f"or later: edgecmg builds INT8 engines as strongly typed networks, which TensorRT {trt.__version__} "
            f"cannot place on a DLA. Build an FP16 engine, precision='fp16' (--precision fp16), for the DLA from "
            f"the FP32 export (edgecmg export M.edgecmg --with-scoring -o M.onnx; edgecmg build M.onnx --precision "
            f"fp16 --dla {dla_core}), "
            f"or this INT8 model without dla_core={dla_core} (--dla {dla_core}), on the GPU")
    bconfig.default_device_type = trt.DeviceType.DLA
    bconfig.DLA_core = int(dla_core)
    bconfig.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    layers = network.num_layers
    on_dla = sum(bool(bconfig.can_run_on_DLA(network.get_layer(i))) for i in range(layers))
    if on_dla == 0:
        raise EngineBuildError(f"none of the {layers} layers of {source} can run on a DLA: the engine would run "
                               f"on the GPU alone; build it without dla_core={dla_core} (--dla {dla_core})")
    log.info("%d of %d layers can run on DLA core %d; the others run on the GPU", on_dla, layers, dla_core)


def _use_timing_cache(bconfig, cache_path: Path) -> None:
    """Build with the timing cache in ``cache_path``, or with an empty one where it is missing, unreadable
    or from another GPU/TensorRT (build_plan writes it back after the build)."""
    data = cache_path.read_bytes() if cache_path.is_file() else b""
    cache = bconfig.create_timing_cache(data)
    if cache is None:  # TensorRT returns None for a blob it cannot read
        log.warning("timing cache %s is unreadable; building without it (it is rewritten after)", cache_path)
        cache = bconfig.create_timing_cache(b"")
    if not bconfig.set_timing_cache(cache, ignore_mismatch=False):
        log.warning("timing cache %s does not match this GPU/TensorRT; building without it", cache_path)
        bconfig.set_timing_cache(bconfig.create_timing_cache(b""), ignore_mismatch=False)


def build_engine(onnx_path: str | Path, config: EngineConfig = EngineConfig(),
                 out_path: Optional[str | Path] = None) -> Path:
    """``edgecmg build M.onnx --precision fp32|fp16|int8 [--timing-cache F] [--dla N] -o M.engine``.

    The ONNX must be an edgecmg export (``edgecmg export`` / ``edgecmg calibrate``); the engine file
    gets its header, and the scorer for featurizer graphs, so it is self-sufficient.
    """
    config = expect_config(config, EngineConfig, "build_engine")
    from edgecmg.export import (GRAPH_FEATURIZER, SCORER_KEY, SCORER_PREFIX, metadata_props, read_onnx_header,
                                scorer_payload)

    onnx_path = Path(onnx_path)
    check_build_input(onnx_path)
    out_path = Path(out_path) if out_path is not None else onnx_path.with_suffix(".engine")
    check_file_suffix(out_path, ENGINE_SUFFIXES, name="an engine file", files="TensorRT engines")
    # Both written after minutes of building: checked now (a read-only folder failed after the build).
    if config.timing_cache:
        check_writable(check_timing_cache_path(config.timing_cache, onnx_path, out_path), what="the timing cache")
    check_writable(out_path, what="the engine")
    model = _as_model(onnx_path)
    model_header = read_onnx_header(model, str(onnx_path))
    props = metadata_props(model)
    quantized = is_quantized(model)
    _check_precision_matches(onnx_path, config.precision, quantized)
    quantization = model_header.get("quantization")
    if isinstance(quantization, dict) and quantization.get("profile") == "cpu":
        # uint8 asymmetric activations: TensorRT takes symmetric int8 only, and failed on it at parsing,
        # after a warning a node (about 130 of them) in the build's log.
        raise EngineBuildError(f"{onnx_path} was calibrated for ONNX Runtime on a CPU (`--profile cpu`: uint8 "
                               "activations, which TensorRT does not take); calibrate again with the default "
                               "profile='tensorrt' (`--profile tensorrt`) and build that file")
    # The scorer is checked against its export's checksum before TensorRT is imported or anything built:
    # the engine file seals what it copies under a checksum of its own, so a damaged bank was loaded from
    # it as sound (a character that is not base64 failed only after the build, in a traceback).
    scorer = b""
    if model_header["export"]["graph"] == GRAPH_FEATURIZER or SCORER_KEY in props:
        scorer = scorer_payload(props, model_header, str(onnx_path))
    trt = import_tensorrt()
    caps = _capabilities(trt)
    # Strongly typed networks take their precision from the tensor types, not from builder flags: FP16
    # without the flag (TensorRT 11), and INT8's float layers in FP16 rather than FP32 (Q/DQ scales in
    # float16 too, so each DequantizeLinear still feeds its quantised op directly).
    fp16_cast = (config.precision == "fp16" and not caps.fp16_flag) or quantized
    strongly = fp16_cast or caps.major >= 11  # every TensorRT 11 network is; fp16_cast covers quantized
    if fp16_cast:
        model = convert_to_fp16(model, keep_fp32_ops=() if quantized else DEFAULT_FP32_OPS,
                                keep_fp32_prefixes=(SCORER_PREFIX,))
    problems = check_onnx_for_tensorrt(model, max_batch=config.max_batch)  # the network TensorRT gets
    for p in problems:
        log.warning("%s: %s", onnx_path, p)
    network_bytes = model.SerializeToString()
    started = time.perf_counter()
    try:
        plan, shapes = build_plan(
            network_bytes, config, strongly_typed=strongly,
            fp16_flag=config.precision == "fp16" and caps.fp16_flag and not strongly,
            source=str(onnx_path), trt=trt, fp32_prefixes=(SCORER_PREFIX,))
    except EngineBuildError as exc:
        if problems:
            raise EngineBuildError(f"{exc}. The graph check found: " + "; ".join(problems[:5])) from exc
        raise
    platform = current_platform(trt)
    header = _engine_header(onnx_path, config, model_header, shapes, platform, strongly=strongly,
                            fp16_cast=fp16_cast, started=started)
    write_engine_file(out_path, header, plan, scorer)
    log.info("built %s engine %s in %.1f s (%s)", config.precision, out_path, header["build_seconds"],
             platform.describe())
    if header.get("graph") == GRAPH_FEATURIZER:
        log.info("%s computes patch features only: each frame's memory-bank search then runs on the host CPU "
                 "after a copy; an engine of the whole detector keeps it on the GPU (build from the output "
                 "of export or calibrate with --with-scoring)", out_path)
    return out_path


#: What build takes, and where it comes from: said by every refusal of another kind of file.
BUILD_TAKES = "build takes an .onnx file (from `edgecmg export` or `edgecmg calibrate`)"


def check_build_input(onnx_path: Path) -> None:
    """What is given to build, by its kind before anything is parsed: a folder, a missing file, or
    one that is not an .onnx (an image, calibrate's .calib.json, the .edgecmg or an engine) is a
    one-line error saying what build takes, not a protobuf parse error calling the file damaged. A
    missing file, .onnx or not, is a MissingFileError (ArtifactError is for a damaged file)."""
    if onnx_path.is_dir():
        raise ConfigError(f"{onnx_path} is a folder, not an ONNX file: {BUILD_TAKES}; give that file")
    name = onnx_path.name
    if is_range_cache(onnx_path):
        # calibrate -o part.int8.onnx writes part.int8.calib.json beside it: that .onnx is the model
        beside = onnx_path.with_name(name[: -len(RANGE_CACHE_SUFFIX)] + ".onnx")
        there = "" if beside.is_file() else "; it is not there: calibrate again to write it"
        raise ConfigError(f"{onnx_path} holds calibrate's activation ranges, not a model: build the INT8 .onnx "
                          f"calibrate wrote beside it, {beside}{there}")
    suffix = onnx_path.suffix.lower()
    if not onnx_path.exists() and (suffix == ".onnx" or not onnx_path.is_symlink()):
        raise MissingFileError(f"{onnx_path}: no such file; {BUILD_TAKES}")
    if suffix == ".onnx":
        return
    if suffix == ".edgecmg":
        raise ArtifactError(f"{onnx_path} is an edgecmg model, not ONNX: export it first (`edgecmg export "
                            f"{onnx_path} --format onnx -o M.onnx`, or `edgecmg calibrate` for INT8) and use that file")
    if suffix in ENGINE_SUFFIXES:
        from edgecmg import magic

        try:
            with open(onnx_path, "rb") as handle:
                ours = handle.read(len(magic.ENGINE)) == magic.ENGINE
        except OSError:
            ours = False
        raise ArtifactError(f"{onnx_path} is a TensorRT engine{' built by edgecmg' if ours else ''}, not ONNX: it is "
                            "already built; run it (Detector.load / edgecmg stream), or build again from its ONNX "
                            "file")
    from edgecmg.imageio import IMAGE_EXTENSIONS

    if suffix in IMAGE_EXTENSIONS:
        raise ConfigError(f"{onnx_path} is an image, not a model: {BUILD_TAKES}")
    kind = f"a {suffix} file" if suffix else "a file without a suffix"
    raise ConfigError(f"{onnx_path}: {BUILD_TAKES}, not {kind}")


def check_timing_cache_path(path: str | Path, onnx_path: Path, out_path: Path) -> Path:
    """``--timing-cache``'s file, before any work: writing it replaces the file, so a model file, the
    input or the output (``check_cache_path``), an image, or calibrate's range cache is refused."""
    path = Path(path)
    example = "trt.cache"
    if is_range_cache(path):
        raise ConfigError(f"timing cache {path}: that names calibrate's activation-range cache ({RANGE_CACHE_SUFFIX}), "
                          f"which writing the timing cache would replace; give it a name of its own (e.g. {example})")
    from edgecmg.imageio import IMAGE_EXTENSIONS

    if path.suffix.lower() in IMAGE_EXTENSIONS:
        raise ConfigError(f"timing cache {path}: that names an image ({path.suffix}), which writing the timing cache "
                          f"would replace; give it a name of its own (e.g. {example})")
    return check_cache_path(path, "timing cache", onnx_path, out_path, example=example)


def _check_precision_matches(onnx_path: Path, precision: str, quantized: bool) -> None:
    """INT8 needs a Q/DQ graph, and a Q/DQ graph builds as INT8 only."""
    if precision == "int8" and not quantized:
        raise EngineBuildError(
            f"{onnx_path} has no QuantizeLinear/DequantizeLinear nodes: INT8 needs explicit quantisation "
            "(TensorRT 10.1 deprecated and 11 removed implicit calibration). Make one with "
            f"`edgecmg calibrate M.edgecmg --data DIR -o M.int8.onnx`, then build that file")
    if quantized and precision != "int8":
        raise EngineBuildError(f"{onnx_path} is quantised (Q/DQ nodes): build it with precision='int8' "
                               "(--precision int8)")


def _engine_header(onnx_path: Path, config: EngineConfig, model_header: dict[str, Any], shapes: dict[str, Any],
                   platform: Platform, *, strongly: bool, fp16_cast: bool, started: float) -> dict[str, Any]:
    """The engine file's JSON header; build_seconds counts from ``started`` to now."""
    from edgecmg.fileio import file_sha256

    export_info = model_header.get("export", {})
    return {
        "tensorrt": platform.tensorrt,
        "gpu": {"name": platform.gpu_name, "compute_capability": platform.compute_capability},
        "precision": config.precision,
        "strongly_typed": bool(strongly),
        "fp16_cast_pass": bool(fp16_cast),
        "dla_core": config.dla_core,
        "inputs": shapes,
        "outputs": export_info.get("outputs"),
        "graph": export_info.get("graph"),
        "artifact_sha256": export_info.get("artifact_sha256"),
        "onnx_sha256": file_sha256(onnx_path),
        "source_onnx": str(onnx_path),
        "edgecmg": __version__,
        "created": datetime.now().astimezone().isoformat(timespec="seconds"),
        "build_seconds": round(time.perf_counter() - started, 2),
        "model": model_header,
    }
