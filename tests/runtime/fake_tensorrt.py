"""A stand-in for the ``tensorrt`` module: the slice of TensorRT 10/11's Python API that edgecmg's
engine builder and TensorRT runner call, so their control flow runs on machines without TensorRT.

It does not imitate TensorRT's optimiser: the "serialized engine" is a small JSON record of the
build settings followed by the ONNX model itself, and ``execute_async_v3`` runs that model with
ONNX Runtime on the host buffers whose addresses the runner bound (``HostMemory`` below replaces
CUDA memory). What it checks is the API contract edgecmg relies on: network flags, builder flags,
the optimisation profile, timing-cache round trip, DLA settings, the name-based I/O of
``IExecutionContext`` and the dynamic batch.
"""
from __future__ import annotations

import ctypes
import enum
import json
import types

import numpy as np

_PLAN_MAGIC = b"FAKETRTPLAN\0"


def network_of(plan: bytes):
    """The ONNX model a fake plan was built from (the network TensorRT would have been given)."""
    import onnx

    n = int.from_bytes(plan[len(_PLAN_MAGIC):len(_PLAN_MAGIC) + 8], "little")
    return onnx.load_from_string(plan[len(_PLAN_MAGIC) + 8 + n:])


class HostMemory:
    """The runner's device-memory interface over host numpy buffers (addresses are real pointers)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.stream_handle = 0
        self.closed = False
        self.current_in: set[int] = set()  # the threads make_current was called in

    def make_current(self) -> None:
        import threading

        self.current_in.add(threading.get_ident())

    def upload(self, array):
        return np.ascontiguousarray(array).copy()

    def empty(self, shape, dtype):
        return np.zeros(shape, dtype=dtype)

    @staticmethod
    def ptr(buffer) -> int:
        return int(buffer.ctypes.data)

    def synchronize(self) -> None:
        pass

    def download(self, buffer):
        return buffer.copy()

    def close(self) -> None:
        self.closed = True


def make(version: str = "10.3.0.26", *, fp16_flag: bool = True, int8_flag: bool = True,
         strongly_typed: bool = True, explicit_batch: bool = True, dla_cores: int = 0) -> types.ModuleType:
    """A fake ``tensorrt`` module of the given flavour (TensorRT 11: ``fp16_flag=False, int8_flag=False,
    explicit_batch=False``)."""
    import onnx
    import onnxruntime as ort

    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.builds = []  # settings of every build, for the tests to inspect
    trt.context_fails = False  # a test sets it to see create_execution_context return None
    trt.dla_runs = lambda layer_name: True  # which layers can_run_on_DLA accepts (a test may narrow it)

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class ILogger:
        def __init__(self) -> None:
            pass

    ILogger.Severity = Severity

    class Logger(ILogger):
        WARNING = Severity.WARNING

        def __init__(self, severity=Severity.WARNING) -> None:
            super().__init__()

    trt.ILogger, trt.Logger = ILogger, Logger

    flags = {}
    if explicit_batch:
        flags["EXPLICIT_BATCH"] = 0
    if strongly_typed:
        flags["STRONGLY_TYPED"] = 1
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", flags) if flags else \
        types.SimpleNamespace()
    bflags = {"GPU_FALLBACK": 3, "TF32": 6, "PREFER_PRECISION_CONSTRAINTS": 10}  # TensorRT's own values
    if fp16_flag:
        bflags["FP16"] = 0
    if int8_flag:
        bflags["INT8"] = 1
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", bflags)
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0})
    trt.DeviceType = enum.IntEnum("DeviceType", {"GPU": 0, "DLA": 1})
    trt.TensorIOMode = enum.IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    trt.DataType = enum.IntEnum("DataType", {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4,
                                             "UINT8": 5, "INT64": 8})
    onnx_to_trt = {onnx.TensorProto.FLOAT: trt.DataType.FLOAT, onnx.TensorProto.FLOAT16: trt.DataType.HALF,
                   onnx.TensorProto.INT8: trt.DataType.INT8, onnx.TensorProto.INT32: trt.DataType.INT32,
                   onnx.TensorProto.BOOL: trt.DataType.BOOL, onnx.TensorProto.UINT8: trt.DataType.UINT8,
                   onnx.TensorProto.INT64: trt.DataType.INT64}
    np_types = {trt.DataType.FLOAT: np.float32, trt.DataType.HALF: np.float16, trt.DataType.INT8: np.int8,
                trt.DataType.INT32: np.int32, trt.DataType.BOOL: np.bool_, trt.DataType.UINT8: np.uint8,
                trt.DataType.INT64: np.int64}
    trt.nptype = lambda dt: np_types[dt]

    def dims_of(value_info) -> list[int]:
        return [d.dim_value if d.HasField("dim_value") else -1 for d in value_info.type.tensor_type.shape.dim]

    class ITensor:
        def __init__(self, name, shape, dtype) -> None:
            self.name, self.shape, self.dtype = name, shape, dtype

    class ILayer:
        """One layer per ONNX node; float outputs (the fake does no type inference)."""

        def __init__(self, name: str, num_outputs: int) -> None:
            self.name, self.num_outputs = name, num_outputs
            self.precision, self.output_types = None, {}
            self._outputs = [ITensor(f"{name}:{j}", [], trt.DataType.FLOAT) for j in range(num_outputs)]

        def get_output(self, j):
            return self._outputs[j]

        def set_output_type(self, j, dtype) -> None:
            self.output_types[j] = dtype

    class INetworkDefinition:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.inputs: list[ITensor] = []
            self.outputs: list[ITensor] = []
            self.layers: list[ILayer] = []
            self.model_bytes = b""

        @property
        def num_layers(self) -> int:
            return len(self.layers)

        def get_layer(self, i):
            return self.layers[i]

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i):
            return self.inputs[i]

    class OnnxParser:
        def __init__(self, network, logger) -> None:
            self.network, self.errors = network, []

        def parse(self, data: bytes, path: str = "") -> bool:
            try:
                model = onnx.load_from_string(data)
            except Exception as exc:  # noqa: BLE001
                self.errors.append(f"cannot parse: {exc}")
                return False
            bad = [n.op_type for n in model.graph.node if n.domain not in ("", "ai.onnx")]
            if bad:
                self.errors.append(f"unsupported ops {bad[:3]}")
                return False
            self.network.model_bytes = data
            inits = {i.name for i in model.graph.initializer}
            self.network.inputs = [ITensor(v.name, dims_of(v), onnx_to_trt[v.type.tensor_type.elem_type])
                                   for v in model.graph.input if v.name not in inits]
            self.network.outputs = [ITensor(v.name, dims_of(v), onnx_to_trt[v.type.tensor_type.elem_type])
                                    for v in model.graph.output]
            self.network.layers = [ILayer(n.name, len(n.output)) for n in model.graph.node]
            return True

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

    trt.OnnxParser = OnnxParser

    class IOptimizationProfile:
        def __init__(self) -> None:
            self.shapes = {}

        def set_shape(self, name, mins, opts, maxs) -> None:
            if not all(a <= b <= c for a, b, c in zip(mins, opts, maxs)) or min(mins, default=1) < 0:
                raise RuntimeError(f"inconsistent dimensions for {name}")  # as TensorRT's binding does
            self.shapes[name] = (list(mins), list(opts), list(maxs))

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def serialize(self) -> bytes:
            return b"fake-timing-cache:" + str(len(trt.builds)).encode()

    class IBuilderConfig:
        def __init__(self) -> None:
            self.flags, self.pools, self.profiles = {trt.BuilderFlag.TF32}, {}, []  # TF32: on by default
            self.default_device_type, self.DLA_core, self.cache = trt.DeviceType.GPU, -1, None

        def set_memory_pool_limit(self, pool, size) -> None:
            self.pools[pool] = size

        def set_flag(self, flag) -> None:
            self.flags.add(flag)

        def add_optimization_profile(self, profile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, data: bytes):
            if data and not bytes(data).startswith(b"fake-timing-cache"):
                return None  # as TensorRT does for a blob it cannot read
            return TimingCache(bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch: bool) -> bool:
            if cache.data.startswith(b"fake-timing-cache:other-gpu") and not ignore_mismatch:
                return False  # as TensorRT does for a cache made on another GPU or TensorRT version
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

        def can_run_on_DLA(self, layer) -> bool:  # noqa: N802 - TensorRT's name
            return self.default_device_type == trt.DeviceType.DLA and trt.dla_runs(layer.name)

    class Builder:
        def __init__(self, logger) -> None:
            self.logger = logger
            self.num_DLA_cores = dla_cores

        def create_network(self, flags: int = 0):
            return INetworkDefinition(flags)

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            major = version.split(".")[0]
            strongly = bool((major.isdigit() and int(major) >= 11)  # TensorRT 11: every network, flag or none
                            or (flags.get("STRONGLY_TYPED") is not None
                                and network.flags & (1 << flags.get("STRONGLY_TYPED", 63))))
            if strongly and config.flags & {getattr(trt.BuilderFlag, n, None) for n in ("FP16", "INT8")}:
                return None  # TensorRT refuses precision flags on strongly typed networks
            record = {
                "strongly_typed": strongly,
                "builder_flags": sorted(f.name for f in config.flags),
                "workspace": config.pools.get(trt.MemoryPoolType.WORKSPACE),
                "profile": config.profiles[0].shapes if config.profiles else {},
                "device": config.default_device_type.name, "dla_core": config.DLA_core,
                "timing_cache_in": config.cache.data.decode(errors="replace") if config.cache else None,
                "fp32_layers": sorted(la.name for la in network.layers if la.precision == trt.DataType.FLOAT),
            }
            trt.builds.append(record)
            meta = json.dumps(record).encode()
            return _PLAN_MAGIC + len(meta).to_bytes(8, "little") + meta + network.model_bytes

    trt.Builder = Builder

    class IExecutionContext:
        def __init__(self, engine) -> None:
            self.engine = engine
            self.shapes, self.addresses = {}, {}

        def set_input_shape(self, name, shape) -> bool:
            lo, _, hi = self.engine.profile[name]
            if not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
                return False
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            if name in self.shapes:
                return self.shapes[name]
            if not self.shapes:
                return tuple(self.engine.dims[name])
            return self.engine.output_shape(name, next(iter(self.shapes.values()))[0])

        def set_tensor_address(self, name, ptr) -> bool:
            self.addresses[name] = int(ptr)
            return True

        def execute_async_v3(self, stream) -> bool:
            feeds = {}
            for name in self.engine.inputs:
                shape, dtype = self.shapes[name], np.dtype(np_types[self.engine.types[name]])
                nbytes = int(np.prod(shape)) * dtype.itemsize
                raw = (ctypes.c_char * nbytes).from_address(self.addresses[name])
                feeds[name] = np.frombuffer(bytes(raw), dtype=dtype).reshape(shape)
            outputs = self.engine.session.run(self.engine.outputs, feeds)
            for name, value in zip(self.engine.outputs, outputs):
                value = np.ascontiguousarray(value.astype(np_types[self.engine.types[name]]))
                if tuple(value.shape) != tuple(self.get_tensor_shape(name)):
                    return False
                ctypes.memmove(self.addresses[name], value.ctypes.data, value.nbytes)
            return True

    class ICudaEngine:
        def __init__(self, record: dict, model_bytes: bytes) -> None:
            model = onnx.load_from_string(model_bytes)
            self.model, self._shapes = model, {}
            self.record = record
            inits = {i.name for i in model.graph.initializer}
            self.inputs = [v.name for v in model.graph.input if v.name not in inits]
            self.outputs = [v.name for v in model.graph.output]
            values = {v.name: v for v in (*model.graph.input, *model.graph.output)}
            self.dims = {n: dims_of(values[n]) for n in self.inputs + self.outputs}
            self.types = {n: onnx_to_trt[values[n].type.tensor_type.elem_type] for n in self.inputs + self.outputs}
            self.profile = record["profile"]
            options = ort.SessionOptions()
            options.log_severity_level = 3
            # ONNX's reference semantics, what TensorRT builds from: ONNX Runtime's CPU graph optimiser
            # mis-fuses the float16 Q/DQ of an INT8 engine's network.
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            self.session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])

        def output_shape(self, name, batch: int):
            """What TensorRT's shape analysis gives: the output shape at this batch size (here from one
            run on zeros: ONNX shape inference cannot follow the scorer's computed Pad sizes)."""
            if (name, batch) not in self._shapes:
                feeds = {n: np.zeros((batch, *self.dims[n][1:]), np_types[self.types[n]]) for n in self.inputs}
                for out, value in zip(self.outputs, self.session.run(self.outputs, feeds)):
                    self._shapes[(out, batch)] = tuple(value.shape)
            return self._shapes[(name, batch)]

        @property
        def num_io_tensors(self) -> int:
            return len(self.inputs) + len(self.outputs)

        def get_tensor_name(self, i: int) -> str:
            return (self.inputs + self.outputs)[i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name in self.inputs else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return self.types[name]

        def get_tensor_profile_shape(self, name, profile: int):
            return self.profile[name]

        def create_execution_context(self):
            # None, as TensorRT returns when the context's device memory cannot be allocated
            return None if trt.context_fails else IExecutionContext(self)

    class Runtime:
        def __init__(self, logger) -> None:
            self.DLA_core = -1
            self.num_DLA_cores = dla_cores

        def deserialize_cuda_engine(self, plan: bytes):
            plan = bytes(plan)
            if not plan.startswith(_PLAN_MAGIC):
                return None
            n = int.from_bytes(plan[len(_PLAN_MAGIC):len(_PLAN_MAGIC) + 8], "little")
            start = len(_PLAN_MAGIC) + 8
            record = json.loads(plan[start:start + n])
            return ICudaEngine(record, plan[start + n:])

    trt.Runtime = Runtime
    return trt
