"""TensorRT engines: build from ONNX, the ``.engine`` file format, compatibility checks, and the
ONNX-side preparation (float16 cast pass, TensorRT-friendliness checks) that needs no TensorRT.

Engine file (little endian)::

    magic       8 bytes  b"EDGECMGE"
    version     uint32   engine file format version
    header_len  uint64   length of the JSON header
    header      JSON     TensorRT version, GPU name and compute capability, precision, input shapes,
                         artifact SHA-256, edgecmg version, the model header (threshold, ...), and
                         the length and SHA-256 of the two payloads that follow
    scorer      bytes    safetensors of the BankScorer (featurizer engines; empty for full graphs)
    engine      bytes    TensorRT's serialized engine

so ``Detector.load("M.engine")`` needs nothing else: host scoring comes from the scorer payload
(``load_scorer_from_engine``). TensorRT engines run only on the TensorRT version and GPU
architecture they were built for: ``check_engine_compatible`` says which and how to rebuild.

TensorRT 10 and 11: both take explicit-batch networks (the EXPLICIT_BATCH flag is deprecated in 10
and gone in 11); INT8 is explicit only (Q/DQ nodes from ``edgecmg calibrate``, built strongly
typed: TensorRT 10.1 deprecated and 11 removed implicit calibration and the INT8 flag), from a
float16 copy of the ONNX (``convert_to_fp16``, scales included) so that the layers left in float run
in FP16; FP16 is the builder flag on 10.x and, where the flag no longer exists (11.x), the float16
copy built strongly typed. Capabilities are detected on the imported module,
not inferred from version numbers.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import os
import re
import struct
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Optional

from edgecmg import __version__, magic
from edgecmg.config import EngineConfig, expect_config
from edgecmg.errors import (
    ArtifactError,
    BackendUnavailableError,
    ConfigError,
    EngineBuildError,
    EngineIncompatibleError,
    MissingFileError,
)
from edgecmg.fileio import atomic_path, atomic_write_bytes

log = logging.getLogger("edgecmg")

ENGINE_MAGIC = magic.ENGINE

# 2 (2026-11-24): the scorer state carries a fitted normal level; version 1 files load with level 0.
# 3 (2026-11-24): the image score may pool the hottest pixels (model spec "score_top_fraction"); files
# without it load with the maximum, and an older edgecmg, which would score by the maximum against a
# threshold set on the pool, refuses version 3.
ENGINE_FORMAT_VERSION = 3
# The header's own checksum, an entry of the header (older files lack it; older readers ignore it).
HEADER_SHA_KEY = "header_sha256"
_PREFIX = struct.Struct("<8sIQ")
ENGINE_SUFFIXES = (".engine", ".plan")
TENSORRT_INSTALL_HINT = (
    "on a Jetson TensorRT ships with JetPack 6.1 or later (TensorRT 10.3; sudo apt install nvidia-jetpack, "
    "then use the system python3-libnvinfer in a venv made with --system-site-packages); on an x86-64 Linux "
    "desktop GPU `pip install tensorrt-cu12` (the CUDA major of your torch and onnxruntime-gpu; plain `tensorrt` "
    "follows NVIDIA's newest CUDA; its libraries may come from NVIDIA's package index, pypi.nvidia.com), or "
    "NVIDIA's tar/deb packages")
MAX_TENSOR_VOLUME = (1 << 31) - 1
# DLA by TensorRT release (NVIDIA's "Working with DLA"): TensorRT 10 up to 10.7 builds DLA engines from
# precision flags; 11.4.1 (JetPack 7.2.2) is the first to place strongly typed networks on a DLA.
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
# engine file
# --------------------------------------------------------------------------------------------------
def write_engine_file(path: str | Path, header: dict[str, Any], engine: bytes, scorer: bytes = b"") -> Path:
    """Write header + scorer payload + serialized engine atomically; fills the payload entries."""
    path = Path(path)
    header = dict(header)
    header["format"] = "edgecmg-engine"
    header["format_version"] = ENGINE_FORMAT_VERSION
    header["scorer"] = {"bytes": len(scorer), "sha256": hashlib.sha256(scorer).hexdigest()}
    header["engine"] = {"bytes": len(engine), "sha256": hashlib.sha256(engine).hexdigest()}
    header[HEADER_SHA_KEY] = _header_sha256(header)  # computed without its own entry
    header_bytes = json.dumps(header, sort_keys=True).encode("utf-8")
    with atomic_path(path, what="the engine file") as tmp:
        with open(tmp, "wb") as handle:
            handle.write(_PREFIX.pack(ENGINE_MAGIC, ENGINE_FORMAT_VERSION, len(header_bytes)))
            handle.write(header_bytes)
            handle.write(scorer)
            handle.write(engine)
            handle.flush()
            os.fsync(handle.fileno())
    return path


def _header_sha256(header: dict[str, Any]) -> str:
    """SHA-256 of the header's canonical JSON, its own checksum entry left out."""
    rest = {k: v for k, v in header.items() if k != HEADER_SHA_KEY}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode("utf-8")).hexdigest()


def _read_prefix(handle, path: Path) -> dict[str, Any]:
    prefix = handle.read(_PREFIX.size)
    if len(prefix) < _PREFIX.size:
        raise ArtifactError(f"{path}: truncated ({len(prefix)} bytes): not an edgecmg engine file")
    magic, version, header_len = _PREFIX.unpack(prefix)
    if magic != ENGINE_MAGIC:
        raise ArtifactError(f"{path}: not an edgecmg engine file (bad magic {magic!r}); a bare TensorRT plan "
                            "lacks the model header: build it with `edgecmg build M.onnx -o M.engine`")
    if version > ENGINE_FORMAT_VERSION:
        raise ArtifactError(f"{path}: engine file format {version} is newer than this edgecmg understands "
                            f"({ENGINE_FORMAT_VERSION}); upgrade edgecmg")
    # Checked against the file's size before reading: a damaged length field must not ask for terabytes.
    if header_len > os.fstat(handle.fileno()).st_size - _PREFIX.size:
        raise ArtifactError(f"{path}: truncated inside the header (it claims {header_len} bytes); "
                            "copy the engine again")
    header_bytes = handle.read(header_len)
    try:
        header = json.loads(header_bytes)
    except ValueError as exc:
        raise ArtifactError(f"{path}: engine header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise ArtifactError(f"{path}: engine header is not a JSON object: the file is corrupted")
    # The header holds the threshold, input size and model spec: a change there is refused like one in
    # the engine. Files written before the header had a checksum have none to check.
    if HEADER_SHA_KEY in header and header[HEADER_SHA_KEY] != _header_sha256(header):
        raise ArtifactError(f"{path}: header checksum mismatch: the header (threshold, input size, model) "
                            "was damaged or edited after the build; copy the engine again or rebuild it")
    header.pop(HEADER_SHA_KEY, None)
    return header


def read_engine_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of an engine file (reads only the header, not the engine)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such engine file")
    with open(path, "rb") as handle:
        return _read_prefix(handle, path)


def read_engine_file(path: str | Path) -> tuple[dict[str, Any], bytes, bytes]:
    """(header, scorer payload, serialized engine), checksums verified."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such engine file")
    with open(path, "rb") as handle:
        header = _read_prefix(handle, path)
        parts = []
        for key in ("scorer", "engine"):
            entry = header.get(key) if isinstance(header.get(key), dict) else {}
            size = entry.get("bytes")
            if type(size) is not int or size < 0:  # noqa: E721 - bool is an int, and no byte count
                raise ArtifactError(f"{path}: the header's {key} entry has no byte count ({size!r}): the file is "
                                    "corrupted")
            data = handle.read(size)
            if len(data) != size:
                raise ArtifactError(f"{path}: truncated {key} payload ({len(data)} of {size} bytes); "
                                    "copy the engine again")
            if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
                raise ArtifactError(f"{path}: {key} payload checksum mismatch: the file is corrupted")
            parts.append(data)
        if handle.read(1):
            raise ArtifactError(f"{path}: trailing bytes after the engine: the file is corrupted")
    return header, parts[0], parts[1]


def load_scorer_from_engine(path: str | Path):
    """(BankScorer, model header) of a featurizer engine, for host-side scoring."""
    from edgecmg.export import scorer_from_bytes

    header, scorer, _ = read_engine_file(path)
    if not scorer:
        raise ArtifactError(f"{path}: engine of a {header.get('graph', '?')} graph carries no scorer "
                            "(full graphs score inside the engine)")
    model_header = header.get("model") or {}
    return scorer_from_bytes(model_header, scorer, str(path)), model_header


def rebuild_command(header: dict[str, Any], engine_path: str | Path, dla_cores: Optional[int] = None) -> str:
    """The build command for this engine's source. Its DLA core where this device has it (``dla_cores``:
    None when not known), else core 0 where there is one, else no --dla (the GPU)."""
    source = header.get("source_onnx") or "M.onnx"
    cmd = f"edgecmg build {source} --precision {header.get('precision', 'fp16')}"
    core = header.get("dla_core")
    if core is not None and dla_cores is not None and core >= dla_cores:
        core = 0 if dla_cores > 0 else None
    if core is not None:
        cmd += f" --dla {core}"
    return cmd + f" -o {engine_path}"


def check_engine_compatible(header: dict[str, Any], current: Optional[Platform] = None, *,
                            path: str | Path = "engine") -> None:
    """Raise EngineIncompatibleError when the engine was built for another TensorRT or GPU.

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
# ONNX helpers (no TensorRT needed)
# --------------------------------------------------------------------------------------------------
def _onnx():
    from edgecmg.export import _onnx as load

    return load()


def _as_model(model_or_path):
    from edgecmg.export import _load_proto

    return _load_proto(model_or_path)


def is_quantized(model_or_path) -> bool:
    """True when the graph holds QuantizeLinear/DequantizeLinear nodes (explicit quantisation)."""
    model = _as_model(model_or_path)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


# Operators of the default ONNX domain that TensorRT 10/11's ONNX parser imports at opsets 17..20
# (written from the onnx-tensorrt operator support matrix; restrictions checked separately below).
TENSORRT_OPS = frozenset("""
Abs Acos Acosh Add AffineGrid And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh
CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike
Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
Greater GreaterOrEqual GridSample GroupNormalization GRU HammingWindow HannWindow HardSigmoid HardSwish
Hardmax Identity If InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log
LogSoftmax Loop LpNormalization LpPool LRN LSTM MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish
Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear
RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2
ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu
Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu
Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze
Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())
TENSORRT_OPSETS = (17, 20)
# Ops TensorRT runs as INT8 kernels: with Q/DQ, their data and weight inputs must come from DQ.
QUANTIZABLE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_QUANT_TYPES = ("INT8", "FLOAT8E4M3FN", "INT4")
_RESIZE_COORDS = ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners")
_CONSTANT_INPUTS = {"TopK": (1,), "Conv": (1,), "ConvTranspose": (1,)}


def _attr(node, name: str, default=None):
    onnx = _onnx()
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _with_batch(model, batch: int):
    """A copy whose dynamic leading input dims are ``batch`` and whose shapes are re-inferred."""
    onnx = _onnx()
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for inp in m.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = batch
    del m.graph.value_info[:]
    try:
        return onnx.shape_inference.infer_shapes(m, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - report, do not crash the check
        log.warning("shape inference failed (%s); tensor volumes unchecked", exc)
        return m


def tensor_types(model) -> dict[str, Any]:
    """name -> TypeProto.tensor_type of every typed value (inputs, outputs, value_info, initializers)."""
    onnx = _onnx()
    types = {}
    for vi in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type
    for init in model.graph.initializer:
        t = onnx.TypeProto.Tensor()
        t.elem_type = init.data_type
        for d in init.dims:
            t.shape.dim.add().dim_value = d
        types[init.name] = t
    return types


def _constant_values(model) -> dict[str, Any]:
    """name -> numpy array of initializers and Constant-node outputs."""
    onnx = _onnx()
    values = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        value = _constant_tensor(node) if node.op_type == "Constant" else None
        if value is not None:
            values[node.output[0]] = onnx.numpy_helper.to_array(value)
    return values


def check_onnx_for_tensorrt(model_or_path, *, max_batch: int = 8, strict_shapes: bool = False) -> list[str]:
    """Problems that would stop (or silently degrade) a TensorRT 10/11 build of this ONNX graph.

    Checks, with no TensorRT needed:
    - default-domain opset in 17..20 and no other domains (com.microsoft contrib ops, ...);
    - every operator in TensorRT's supported set, plus the restrictions that matter here (constant
      conv weights and TopK k, Resize modes, 2-D/3-D pooling, no float64, uint8 only as graph I/O
      going through Cast);
    - tensor volumes with shape inference at batch = ``max_batch``: none may reach 2**31 elements
      (``strict_shapes`` also reports tensors whose shape could not be inferred);
    - Q/DQ: every QuantizeLinear feeds only DequantizeLinear; scales finite and strictly positive;
      zero points are 0 (TensorRT is symmetric) and quantised types int8/fp8/int4 (no int32 bias, no uint8); activation scales
      per-tensor; every quantised Conv/ConvTranspose/Gemm/MatMul takes all its data and weight
      inputs from DequantizeLinear.
    Returns a list of human-readable problems, empty when the graph looks TensorRT-friendly.
    """
    model = _as_model(model_or_path)
    problems = _opset_problems(model)
    lookups = _graph_lookups(model, max_batch)
    problems += _operator_problems(model.graph, lookups)
    problems += _tensor_problems(lookups, max_batch, strict_shapes)
    problems += _qdq_problems(model.graph, lookups)
    return problems


class _GraphLookups(NamedTuple):
    """What the sections of ``check_onnx_for_tensorrt`` read of the graph, built once for all of them."""

    types: dict[str, Any]  # name -> tensor type, shapes inferred at batch = max_batch
    constants: dict[str, Any]  # name -> numpy array of initializers and Constant-node outputs
    initializers: set[str]
    producers: dict[str, Any]  # tensor name -> the node that writes it
    consumers: dict[str, list]  # tensor name -> the nodes that read it


def _graph_lookups(model, max_batch: int) -> _GraphLookups:
    graph = model.graph
    types = tensor_types(_with_batch(model, max_batch))
    constants = _constant_values(model)
    initializers = {i.name for i in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return _GraphLookups(types, constants, initializers, producers, consumers)


def _node_label(node) -> str:
    return f"{node.op_type} node '{node.name or node.output[0]}'"


def _opset_problems(model) -> list[str]:
    """The default-domain opset outside TENSORRT_OPSETS, and every other domain that a node uses."""
    problems = []
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            if not TENSORRT_OPSETS[0] <= o.version <= TENSORRT_OPSETS[1]:
                problems.append(f"opset {o.version}: TensorRT 10/11 support is verified for opsets "
                                f"{TENSORRT_OPSETS[0]}..{TENSORRT_OPSETS[1]}; export with --opset 17")
        elif any(n.domain == o.domain for n in model.graph.node):
            problems.append(f"operator domain '{o.domain}' (e.g. ONNX Runtime contrib ops) is not parsed by TensorRT")
    return problems


def _operator_problems(graph, lookups: _GraphLookups) -> list[str]:
    """Operators outside TENSORRT_OPS, and the restrictions of those inside it."""
    problems = []
    for node in graph.node:
        label = _node_label(node)
        if node.domain not in ("", "ai.onnx"):
            continue  # reported with its domain by _opset_problems
        if node.op_type not in TENSORRT_OPS:
            problems.append(f"{label}: operator {node.op_type} is not supported by TensorRT's ONNX parser")
            continue
        for idx in _CONSTANT_INPUTS.get(node.op_type, ()):
            if idx < len(node.input) and node.input[idx]:
                src = node.input[idx]
                prod = lookups.producers.get(src)
                from_dq = (prod is not None and prod.op_type == "DequantizeLinear"
                           and prod.input[0] in lookups.constants)
                if src not in lookups.constants and not from_dq:
                    problems.append(f"{label}: input {idx} ('{src}') must be a constant for TensorRT")
        if node.op_type == "Resize":
            mode = _attr(node, "mode", b"nearest")
            coord = _attr(node, "coordinate_transformation_mode", b"half_pixel")
            mode, coord = (v.decode() if isinstance(v, bytes) else v for v in (mode, coord))
            if mode not in ("nearest", "linear", "cubic"):
                problems.append(f"{label}: Resize mode '{mode}' is not supported by TensorRT")
            if coord not in _RESIZE_COORDS:
                problems.append(f"{label}: Resize coordinate_transformation_mode '{coord}' is not supported "
                                "by TensorRT")
        if node.op_type in ("AveragePool", "MaxPool", "LpPool"):
            kernel = _attr(node, "kernel_shape", [])
            if len(kernel) not in (2, 3):
                problems.append(f"{label}: TensorRT pools in 2-D or 3-D only (kernel {list(kernel)})")
    return problems


def _tensor_problems(lookups: _GraphLookups, max_batch: int, strict_shapes: bool) -> list[str]:
    """float64 tensors, uint8 tensors read by more than Cast/DQ, and volumes past MAX_TENSOR_VOLUME at
    ``max_batch``; tensors of unresolved shape are a problem with ``strict_shapes``, else logged."""
    onnx = _onnx()
    problems = []
    unknown = []
    for name, ttype in lookups.types.items():
        elem = ttype.elem_type
        if elem == onnx.TensorProto.DOUBLE:
            problems.append(f"tensor '{name}' is float64: TensorRT has no double kernels; export float32")
        if elem == onnx.TensorProto.UINT8 and name not in lookups.initializers:
            bad = [n.op_type for n in lookups.consumers.get(name, [])
                   if n.op_type not in ("Cast", "DequantizeLinear")]
            if bad:  # uint8 Q/DQ tensors are reported with the Q/DQ checks
                problems.append(f"uint8 tensor '{name}' feeds {bad}: TensorRT takes uint8 only as network I/O "
                                "going through a Cast; cast it to float first")
        if name in lookups.initializers:
            continue
        dims = ttype.shape.dim if ttype.HasField("shape") else None
        if dims is None or any(not d.HasField("dim_value") for d in dims):
            unknown.append(name)
            continue
        volume = 1
        for d in dims:
            volume *= d.dim_value
        if volume > MAX_TENSOR_VOLUME:
            problems.append(f"tensor '{name}' has {volume} elements at batch {max_batch} "
                            f"(shape {[d.dim_value for d in dims]}): TensorRT's limit is 2**31 - 1; "
                            "lower the max batch or chunk it")
    if unknown:
        msg = (f"{len(unknown)} tensor(s) have shapes that inference could not resolve at batch {max_batch}, "
               f"their volume is unchecked (e.g. {unknown[:3]})")
        if strict_shapes:
            problems.append(msg)
        else:
            log.info(msg)
    return problems


def _qdq_problems(graph, lookups: _GraphLookups) -> list[str]:
    """The Q/DQ structure TensorRT needs, node by node (see check_onnx_for_tensorrt)."""
    problems = []
    for node in graph.node:
        label = _node_label(node)
        scale = lookups.constants.get(node.input[1]) if node.op_type in _QDQ_OPS and len(node.input) > 1 else None
        if node.op_type == "QuantizeLinear":
            problems += _quantize_problems(node, label, scale, lookups)
        if node.op_type in _QDQ_OPS:
            problems += _scale_and_zero_point_problems(node, label, scale, lookups)
        if node.op_type in QUANTIZABLE_OPS:
            problems += _quantised_input_problems(node, label, lookups)
    return problems


def _quantize_problems(node, label: str, scale, lookups: _GraphLookups) -> list[str]:
    """A QuantizeLinear that feeds more than DequantizeLinear, or whose scale is not one constant per tensor."""
    problems = []
    outs = lookups.consumers.get(node.output[0], [])
    if not outs or any(c.op_type != "DequantizeLinear" for c in outs):
        problems.append(f"{label}: its output must feed DequantizeLinear only (a Q/DQ pair), "
                        f"feeds {[c.op_type for c in outs] or 'nothing'}")
    if scale is None:
        problems.append(f"{label}: scale must be a constant")
    elif node.input[0] not in lookups.constants and scale.size != 1:
        problems.append(f"{label}: activation scale is per-channel ({scale.size} values); TensorRT "
                        "quantises activations per tensor")
    return problems


def _scale_and_zero_point_problems(node, label: str, scale, lookups: _GraphLookups) -> list[str]:
    """A Q/DQ scale not finite and positive, a zero point not a constant 0, a type outside _QUANT_TYPES."""
    elem_name = _onnx().TensorProto.DataType.Name
    problems = []
    as_float = None if scale is None else scale.astype("float64")
    if as_float is not None and not ((as_float > 0) & (as_float < float("inf"))).all():  # NaN fails too
        problems.append(f"{label}: scale from {float(as_float.min())} to {float(as_float.max())}; TensorRT "
                        "needs every scale finite and strictly positive")
    zp_name = node.input[2] if len(node.input) > 2 else ""
    qtype = None
    if zp_name:
        zp = lookups.constants.get(zp_name)
        if zp is None:
            problems.append(f"{label}: zero point must be a constant")
        elif zp.any():
            problems.append(f"{label}: zero point is not 0; TensorRT quantises symmetrically "
                            "(calibrate with the 'tensorrt' profile)")
        qtype = lookups.types.get(zp_name).elem_type if zp_name in lookups.types else None
    if node.op_type == "DequantizeLinear" and node.input[0] in lookups.types:
        qtype = lookups.types[node.input[0]].elem_type
    if qtype is not None and elem_name(qtype) not in _QUANT_TYPES:
        problems.append(f"{label}: quantised type {elem_name(qtype)}; TensorRT accepts "
                        f"{'/'.join(t.lower() for t in _QUANT_TYPES)} only (no int32 bias, no uint8)")
    return problems


def _quantised_input_problems(node, label: str, lookups: _GraphLookups) -> list[str]:
    """A Conv/ConvTranspose/Gemm/MatMul with DequantizeLinear on some of its data and weight inputs only."""
    data_inputs = [n for n in node.input[:2] if n]
    from_dq = [lookups.producers.get(n) is not None and lookups.producers[n].op_type == "DequantizeLinear"
               for n in data_inputs]
    if any(from_dq) and not all(from_dq):
        missing = [n for n, ok in zip(data_inputs, from_dq) if not ok]
        return [f"{label}: quantised op without a Q/DQ pair on input(s) {missing}; TensorRT "
                "needs DequantizeLinear on every data and weight input of an INT8 op"]
    return []


# --------------------------------------------------------------------------------------------------
# float16 cast pass (TensorRT 11: FP16 through the network's types, not a builder flag)
# --------------------------------------------------------------------------------------------------
# Inputs that must stay float32 whatever the node's precision: (op, input index).
_FP32_ONLY_INPUTS = {("Resize", 1), ("Resize", 2), ("Upsample", 1)}
_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# Ops kept in float32 by default: quantisation nodes (their scales define their output type).
DEFAULT_FP32_OPS = _QDQ_OPS
# QuantizeLinear / DequantizeLinear take float16 scales (and so give float16 outputs) from opset 19.
QDQ_FP16_OPSET = 19


def _integer_limits(dtype) -> Optional[tuple[int, int]]:
    """(min, max) code of an integer quantised type (ONNX int4/uint4 included); None for float8."""
    import numpy as np

    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return int(info.min), int(info.max)
    return {"int4": (-8, 7), "uint4": (0, 15)}.get(np.dtype(dtype).name)


def _constant_tensor(node):
    """The TensorProto a Constant node produces (value, value_float(s), value_int(s)); None for the
    sparse and string forms, which the cast pass leaves as nodes."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    for attribute in node.attribute:
        if attribute.name == "value":
            tensor = TensorProto()
            tensor.CopyFrom(attribute.t)
            return tensor
        if attribute.name == "value_float":
            return numpy_helper.from_array(np.array(attribute.f, np.float32))
        if attribute.name == "value_floats":
            return numpy_helper.from_array(np.array(attribute.floats, np.float32))
        if attribute.name == "value_int":
            return numpy_helper.from_array(np.array(attribute.i, np.int64))
        if attribute.name == "value_ints":
            return numpy_helper.from_array(np.array(attribute.ints, np.int64))
    return None


def _qdq_for_fp16(model):
    """A Q/DQ model made ready for float16 scales (INT8 with FP16 outside the quantised layers, as a
    strongly typed TensorRT network wants it): the default opset raised to 19 where lower (and the IR
    version with it), and every constant scale made a positive normal float16. A per-channel weight
    scale of a near-dead channel (1e-10 here) would flush to 0 in float16, which TensorRT refuses
    (scales must be strictly positive), so scales are clamped up to float16's smallest normal; the
    constant integer weights behind every scale that changed are quantised again against it, from
    their original codes and once per (weight, scale) pair, so they dequantize to the same values as
    before, to the new step. A scale beyond float16's range is refused. Changes ``model`` in place
    (``convert_to_fp16`` passes its own copy); returns it, or the opset-converted copy."""
    onnx = _onnx()
    from onnx import numpy_helper

    default = next((o for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if default is not None and default.version < QDQ_FP16_OPSET:
        model = onnx.version_converter.convert_version(model, QDQ_FP16_OPSET)
    model.ir_version = max(model.ir_version, onnx.helper.find_min_ir_version_for(list(model.opset_import)))
    inits = {i.name: i for i in model.graph.initializer}
    scales = _fp16_scales(model.graph, inits)
    _requantise_weights(model.graph, inits, scales)
    for name, (old, new) in scales.items():
        inits[name].CopyFrom(numpy_helper.from_array(new.reshape(old.shape), name))
    return model


def _fp16_scales(graph, inits: dict[str, Any]) -> dict[str, Any]:
    """Scale initializer of a Q/DQ node -> (old float32 values, new float16-exact float32 values), the
    new ones clamped up to float16's smallest normal; EngineBuildError for a scale beyond its range."""
    import numpy as np
    from onnx import numpy_helper

    tiny, largest = np.finfo(np.float16).tiny, np.finfo(np.float16).max
    scales = {}
    for node in graph.node:
        if node.op_type in _QDQ_OPS and len(node.input) > 1 and node.input[1] in inits:
            name = node.input[1]
            if name not in scales:
                old = numpy_helper.to_array(inits[name]).astype(np.float32)
                if not np.isfinite(old).all() or old.max() > largest:
                    raise EngineBuildError(
                        f"{node.op_type} node '{node.name}': scale up to {float(old.max()):g} is beyond float16's "
                        f"range ({float(largest):g}), so this INT8 graph cannot run its float layers in FP16; "
                        "calibrate again (its activation ranges are unusable)")
                scales[name] = (old, np.maximum(old, tiny).astype(np.float16).astype(np.float32))
    return scales


def _requantise_weights(graph, inits: dict[str, Any], scales: dict[str, Any]) -> None:
    """Re-quantise each constant integer weight behind a scale that changed against its new scale, from
    the original codes, once per (weight, scale) pair; a weight under a second scale gets its own copy."""
    import numpy as np
    from onnx import numpy_helper

    codes: dict[str, Any] = {}  # the original codes and zero points, read before any is re-quantised

    def original(name: str):
        if name not in codes:
            codes[name] = numpy_helper.to_array(inits[name])
        return codes[name]

    requantised: dict[str, str] = {}  # weight -> the scale its codes were re-quantised against
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits or node.input[1] not in scales:
            continue
        old, new = scales[node.input[1]]
        weight = node.input[0]
        q = original(weight)
        limits = _integer_limits(q.dtype)
        if np.array_equal(old, new) or limits is None:  # float8 codes carry their own exponent
            continue
        if requantised.get(weight) == node.input[1]:
            continue
        zp = original(node.input[2]).astype(np.float64) if len(node.input) > 2 and node.input[2] in inits else 0.0
        requant = _requantised_codes(node, q, zp, old, new, limits)
        if weight in requantised:  # shared with another scale: this node gets a copy of its own
            name = f"{weight}_{node.name or len(inits)}_fp16_codes"
            graph.initializer.append(numpy_helper.from_array(requant, name))
            inits[name] = graph.initializer[-1]
            node.input[0] = name
        else:
            inits[weight].CopyFrom(numpy_helper.from_array(requant, weight))
            requantised[weight] = node.input[1]


def _requantised_codes(node, q, zp, old, new, limits: tuple[int, int]):
    """Codes ``q`` (zero point ``zp``) dequantized with scale ``old`` and quantised again with ``new``."""
    import numpy as np

    shape = [1] * q.ndim
    if old.size > 1:  # per channel along the node's axis (default 1)
        shape[_attr(node, "axis", 1) % q.ndim] = old.size
    zp = np.reshape(zp, shape) if np.ndim(zp) else zp
    values = (q.astype(np.float64) - zp) * old.reshape(shape)
    return np.clip(np.round(values / new.reshape(shape)) + zp, *limits).astype(q.dtype)


def convert_to_fp16(model_or_path, *, keep_fp32_ops: Iterable[str] = DEFAULT_FP32_OPS,
                    keep_fp32_prefixes: Iterable[str] = (), keep_fp32_nodes: Iterable[str] = ()):
    """Float16 copy of an ONNX model: float initializers, constants and activations become float16,
    with Cast nodes where float32 and float16 parts meet. Graph inputs and outputs keep their types
    (Cast after float inputs, before float outputs), so callers see the same interface.

    Nodes whose op type is in ``keep_fp32_ops``, whose name starts with one of ``keep_fp32_prefixes``
    (e.g. ``"scorer/"``: the norm-expanded distances lose too much in float16) or whose name is in
    ``keep_fp32_nodes`` stay float32. Resize roi/scales inputs stay float32 (the ONNX spec).
    With QuantizeLinear/DequantizeLinear left out of ``keep_fp32_ops`` their scales become float16
    too (``_qdq_for_fp16``: opset 19, positive normal scales): an INT8 graph whose float layers run
    in FP16 and whose DequantizeLinear feeds each quantised op directly, with no Cast between them.
    Subgraphs (If/Loop bodies) are not converted.
    """
    onnx = _onnx()
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    src = _as_model(model_or_path)
    keep_ops, keep_prefixes, keep_nodes = set(keep_fp32_ops), tuple(keep_fp32_prefixes), set(keep_fp32_nodes)
    model = onnx.ModelProto()
    model.CopyFrom(src)
    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16

    _constants_to_initializers(model.graph)
    if not set(_QDQ_OPS) <= keep_ops and any(n.op_type in _QDQ_OPS for n in model.graph.node):
        model = _qdq_for_fp16(model)  # after the step above, so that every scale is an initializer
    graph = model.graph

    del graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(model)
    elem = {name: t.elem_type for name, t in tensor_types(inferred).items()}
    inits = {i.name: i for i in graph.initializer}
    fresh = _fresh_names(graph)
    precision: dict[str, int] = {v.name: FLOAT for v in graph.input if elem.get(v.name) == FLOAT}
    half_inits: dict[str, str] = {}
    casts: dict[tuple[str, int], str] = {}
    new_nodes = []

    def provide(name: str, want: int) -> str:
        """Name of ``name`` in precision ``want`` (an fp16 initializer copy or a Cast)."""
        if name in inits and inits[name].data_type == FLOAT:
            if want == FLOAT:
                return name
            if name not in half_inits:
                half = numpy_helper.from_array(numpy_helper.to_array(inits[name]).astype(np.float16),
                                               fresh(name + "_fp16"))
                graph.initializer.append(half)
                half_inits[name] = half.name
            return half_inits[name]
        have = precision.get(name)
        if have is None or have == want:
            return name
        key = (name, want)
        if key not in casts:
            out = fresh(f"{name}_to_{'fp16' if want == HALF else 'fp32'}")
            new_nodes.append(helper.make_node("Cast", [name], [out], to=want, name=fresh(f"cast_{out}")))
            casts[key] = out
        return casts[key]

    for node in graph.node:
        fp32_node = (node.op_type in keep_ops or node.name in keep_nodes
                     or (keep_prefixes and node.name.startswith(keep_prefixes)))
        want_default = FLOAT if fp32_node else HALF
        for i, name in enumerate(node.input):
            if not name or elem.get(name) != FLOAT:
                continue
            want = FLOAT if (node.op_type, i) in _FP32_ONLY_INPUTS else want_default
            node.input[i] = provide(name, want)
        if not fp32_node:
            _float_attributes_to_fp16(node)
        for out in node.output:
            if out and elem.get(out) == FLOAT:
                precision[out] = FLOAT if fp32_node else HALF
        new_nodes.append(node)

    _cast_outputs_back_to_fp32(graph, new_nodes, precision, fresh)
    del graph.node[:]
    graph.node.extend(new_nodes)
    _drop_unread_initializers(graph)
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model)
    return model


def _constants_to_initializers(graph) -> None:
    """Constant nodes become initializers, so that the cast pass handles every constant alike (a scale
    written as value_float would otherwise stay float32 behind a node marked float16)."""
    nodes = []
    for node in graph.node:
        value = _constant_tensor(node) if node.op_type == "Constant" else None
        if value is not None:
            value.name = node.output[0]
            graph.initializer.append(value)
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)


def _fresh_names(graph):
    """A function that returns ``base``, or ``base_1``, ``base_2``, ..., never a name ``graph`` uses
    nor one it returned before."""
    used_names = {n for node in graph.node for n in (*node.input, *node.output)} | \
        {i.name for i in graph.initializer} | {v.name for v in (*graph.input, *graph.output)}

    def fresh(base: str) -> str:
        name, i = base, 0
        while name in used_names:
            i += 1
            name = f"{base}_{i}"
        used_names.add(name)
        return name

    return fresh


def _float_attributes_to_fp16(node) -> None:
    """A float16 node's float32 attributes made float16: a Cast's target type, a ConstantOfShape's value."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    if node.op_type == "Cast" and _attr(node, "to") == TensorProto.FLOAT:
        for a in node.attribute:
            if a.name == "to":
                a.i = TensorProto.FLOAT16
    if node.op_type == "ConstantOfShape":
        for a in node.attribute:
            if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))


def _cast_outputs_back_to_fp32(graph, new_nodes: list, precision: dict[str, int], fresh) -> None:
    """Graph outputs keep float32: the fp16 producer's tensor is renamed in ``new_nodes`` and a Cast
    appended to them gives it back under the old name."""
    from onnx import TensorProto, helper

    renames = {}
    for out in graph.output:
        if precision.get(out.name) == TensorProto.FLOAT16:
            renames[out.name] = fresh(out.name + "_fp16")
    if renames:
        for node in new_nodes:
            node.input[:] = [renames.get(n, n) for n in node.input]
            node.output[:] = [renames.get(n, n) for n in node.output]
        for old, new in renames.items():
            new_nodes.append(helper.make_node("Cast", [new], [old], to=TensorProto.FLOAT,
                                              name=fresh(f"cast_{old}_to_fp32")))


def _drop_unread_initializers(graph) -> None:
    """Drop the initializers nobody reads any more (the float32 originals of float16 copies)."""
    read = {n for node in graph.node for n in node.input}
    outputs = {o.name for o in graph.output}
    keep = [i for i in graph.initializer if i.name in read or i.name in outputs]
    del graph.initializer[:]
    graph.initializer.extend(keep)


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
    """create_network's flags: STRONGLY_TYPED when asked for, EXPLICIT_BATCH before TensorRT 10."""
    flags = 0
    if strongly_typed:
        if not caps.strongly_typed_flag:
            raise EngineBuildError(f"TensorRT {trt.__version__} has no strongly typed networks; this build "
                                   "needs TensorRT >= 10 (JetPack 6.1 or later; JetPack 6.0 ships TensorRT 8.6)")
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
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
            f"cannot place on a DLA. Build an FP16 engine for the DLA from the FP32 export (edgecmg export "
            f"M.edgecmg --with-scoring -o M.onnx; edgecmg build M.onnx --precision fp16 --dla {dla_core}), "
            "or this INT8 model without --dla, on the GPU")
    bconfig.default_device_type = trt.DeviceType.DLA
    bconfig.DLA_core = int(dla_core)
    bconfig.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    layers = network.num_layers
    on_dla = sum(bool(bconfig.can_run_on_DLA(network.get_layer(i))) for i in range(layers))
    if on_dla == 0:
        raise EngineBuildError(f"none of the {layers} layers of {source} can run on a DLA: the engine would run "
                               "on the GPU alone; build it without --dla")
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
    from edgecmg.export import GRAPH_FEATURIZER, SCORER_KEY, SCORER_PREFIX, metadata_props, read_onnx_header

    onnx_path = Path(onnx_path)
    out_path = Path(out_path) if out_path is not None else onnx_path.with_suffix(".engine")
    if out_path.suffix.lower() not in ENGINE_SUFFIXES:
        raise ConfigError(f"engine path {out_path} must end in {' or '.join(ENGINE_SUFFIXES)}")
    model = _as_model(onnx_path)
    model_header = read_onnx_header(model, str(onnx_path))
    props = metadata_props(model)
    quantized = is_quantized(model)
    _check_precision_matches(onnx_path, config.precision, quantized)
    trt = import_tensorrt()
    caps = _capabilities(trt)
    # Strongly typed networks take their precision from the tensor types, not from builder flags: FP16
    # without the flag (TensorRT 11), and INT8's float layers in FP16 rather than FP32 (Q/DQ scales in
    # float16 too, so each DequantizeLinear still feeds its quantised op directly).
    fp16_cast = (config.precision == "fp16" and not caps.fp16_flag) or quantized
    strongly = fp16_cast or (caps.major >= 11 and caps.strongly_typed_flag)  # fp16_cast covers quantized
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
    scorer = base64.b64decode(props[SCORER_KEY]) if SCORER_KEY in props else b""
    write_engine_file(out_path, header, plan, scorer)
    log.info("built %s engine %s in %.1f s (%s)", config.precision, out_path, header["build_seconds"],
             platform.describe())
    if header.get("graph") == GRAPH_FEATURIZER:
        log.info("%s computes patch features only: each frame's memory-bank search then runs on the host CPU "
                 "after a copy; an engine of the whole detector keeps it on the GPU (build from the output "
                 "of export or calibrate with --with-scoring)", out_path)
    return out_path


def _check_precision_matches(onnx_path: Path, precision: str, quantized: bool) -> None:
    """INT8 needs a Q/DQ graph, and a Q/DQ graph builds as INT8 only."""
    if precision == "int8" and not quantized:
        raise EngineBuildError(
            f"{onnx_path} has no QuantizeLinear/DequantizeLinear nodes: INT8 needs explicit quantisation "
            "(TensorRT 10.1 deprecated and 11 removed implicit calibration). Make one with "
            f"`edgecmg calibrate M.edgecmg --data DIR -o M.int8.onnx`, then build that file")
    if quantized and precision != "int8":
        raise EngineBuildError(f"{onnx_path} is quantised (Q/DQ nodes): build it with --precision int8")


def _engine_header(onnx_path: Path, config: EngineConfig, model_header: dict[str, Any], shapes: dict[str, Any],
                   platform: Platform, *, strongly: bool, fp16_cast: bool, started: float) -> dict[str, Any]:
    """The engine file's JSON header; build_seconds counts from ``started`` to now."""
    from edgecmg.export import file_sha256

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
