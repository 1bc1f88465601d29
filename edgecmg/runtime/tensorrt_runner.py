"""TensorRT runner: an edgecmg ``.engine`` file through TensorRT's Python API (10.x / 11.x).

Device memory: torch CUDA tensors when torch has CUDA (the usual case: JetPack's torch, desktop
torch), else cuda-python (``cuda.bindings.runtime``). pycuda is not needed: it would add a second
CUDA context and a compiled dependency for what ``tensor.data_ptr()`` or ``cudaMalloc`` already
give. Inference uses the name-based API: ``set_input_shape`` for the dynamic batch,
``set_tensor_address`` per I/O tensor and ``execute_async_v3`` on the runner's own stream.
``tensorrt`` is imported only on ``activate()``; without it, BackendUnavailableError carries the
JetPack install hint.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from edgecmg.engine import check_engine_compatible, current_platform, import_tensorrt, rebuild_command
from edgecmg.engine_file import ENGINE_SUFFIXES, read_engine_file, read_engine_header
from edgecmg.errors import ArtifactError, BackendUnavailableError, DataError, EdgeCMGError, EngineIncompatibleError
from edgecmg.runtime.base import FEATURIZER_OUTPUTS, Runner, device_index, run_in_batches

_NP_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
              "BOOL": np.bool_, "UINT8": np.uint8}


def _np_dtype(trt, dtype) -> np.dtype:
    nptype = getattr(trt, "nptype", None)
    if nptype is not None:
        try:
            return np.dtype(nptype(dtype))
        except TypeError:
            pass
    name = str(dtype).split(".")[-1].upper()
    if name not in _NP_DTYPES:
        raise EdgeCMGError(f"engine tensor type {name} has no numpy equivalent here")
    return np.dtype(_NP_DTYPES[name])


class TorchCudaMemory:
    """Device buffers as torch CUDA tensors, on a private CUDA stream."""

    def __init__(self, device: str) -> None:
        import torch

        if not torch.cuda.is_available():
            raise BackendUnavailableError("tensorrt", "torch has no CUDA device here",
                                          "install the CUDA build of torch (JetPack: NVIDIA's torch wheel)")
        self.torch = torch
        self.device = torch.device(device if ":" in device else f"{device}:0")
        torch.cuda.set_device(self.device)
        self.stream = torch.cuda.Stream(device=self.device)

    def make_current(self) -> None:
        """Make this device the calling thread's current one (CUDA's is per thread)."""
        self.torch.cuda.set_device(self.device)

    @property
    def stream_handle(self) -> int:
        return int(self.stream.cuda_stream)

    def upload(self, array: np.ndarray):
        with self.torch.cuda.stream(self.stream):
            return self.torch.from_numpy(np.ascontiguousarray(array)).to(self.device, non_blocking=True)

    def empty(self, shape: tuple[int, ...], dtype: np.dtype):
        torch_dtype = self.torch.from_numpy(np.empty(0, dtype=dtype)).dtype
        with self.torch.cuda.stream(self.stream):
            return self.torch.empty(shape, dtype=torch_dtype, device=self.device)

    @staticmethod
    def ptr(buffer) -> int:
        return int(buffer.data_ptr())

    def synchronize(self) -> None:
        self.stream.synchronize()

    def download(self, buffer) -> np.ndarray:
        return buffer.cpu().numpy()

    def close(self) -> None:
        self.stream.synchronize()


class CudaPythonMemory:
    """Device buffers from cuda-python's runtime API (``cudaMalloc``), for torch builds without CUDA."""

    class Buffer:
        def __init__(self, ptr: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
            self.ptr, self.shape, self.dtype = ptr, shape, dtype

    def __init__(self, device: str) -> None:
        from edgecmg.engine import _cuda_python_runtime

        self.cudart = _cuda_python_runtime()
        if self.cudart is None:
            raise BackendUnavailableError("tensorrt", "neither torch with CUDA nor cuda-python is installed",
                                          "pip install cuda-python (or the CUDA build of torch)")
        self._device_index = device_index(device)
        self.make_current()
        self.stream = self._check(self.cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._live: list[int] = []

    def make_current(self) -> None:
        """Make this device the calling thread's current one (CUDA's is per thread)."""
        self._check(self.cudart.cudaSetDevice(self._device_index), "cudaSetDevice")

    def _check(self, result, what: str):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise EdgeCMGError(f"CUDA {what} failed with error {int(err)}")
        return rest[0] if len(rest) == 1 else rest

    @property
    def stream_handle(self) -> int:
        return int(self.stream)

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> "CudaPythonMemory.Buffer":
        nbytes = max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize)
        ptr = int(self._check(self.cudart.cudaMalloc(nbytes), "cudaMalloc"))
        self._live.append(ptr)
        return self.Buffer(ptr, tuple(shape), np.dtype(dtype))

    def upload(self, array: np.ndarray) -> "CudaPythonMemory.Buffer":
        array = np.ascontiguousarray(array)
        buf = self.empty(array.shape, array.dtype)
        self._check(self.cudart.cudaMemcpyAsync(buf.ptr, array.ctypes.data, array.nbytes,
                                                self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream),
                    "cudaMemcpyAsync")
        buf.host = array  # keep the source alive until the stream synchronises
        return buf

    @staticmethod
    def ptr(buffer) -> int:
        return buffer.ptr

    def synchronize(self) -> None:
        self._check(self.cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def download(self, buffer) -> np.ndarray:
        out = np.empty(buffer.shape, buffer.dtype)
        self._check(self.cudart.cudaMemcpy(out.ctypes.data, buffer.ptr, out.nbytes,
                                           self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost), "cudaMemcpy")
        return out

    def release(self) -> None:
        for ptr in self._live:
            self.cudart.cudaFree(ptr)
        self._live.clear()

    def close(self) -> None:
        self.release()
        self.cudart.cudaStreamDestroy(self.stream)


def default_memory(device: str):
    """torch CUDA tensors when possible, else cuda-python."""
    try:
        return TorchCudaMemory(device)
    except (BackendUnavailableError, ImportError):
        return CudaPythonMemory(device)


def _smaller_batch_hint(header: dict[str, Any]) -> str:
    """How to rebuild ``header``'s engine for less activation memory: a smaller largest batch, in the
    Python and the CLI spelling, halved from the one it was built for where the header says it."""
    try:
        built = max(int(shape["max"][0]) for shape in header["inputs"].values())
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        built = 0
    if built > 1:
        return (f"rebuild it with a smaller batch than its {built}: max_batch={built // 2} "
                f"(--max-batch {built // 2})")
    return "rebuild it with a smaller max_batch (--max-batch)"


class TensorRTRunner(Runner):
    """Runs an edgecmg engine file; ``metadata`` is the model header plus an ``engine`` section."""

    backend = "tensorrt"

    def __init__(self, path: str | Path, metadata: Optional[dict[str, Any]] = None, device: str = "cuda:0", *,
                 memory: Optional[Callable[[str], Any]] = None, check_platform: bool = True) -> None:
        if Path(path).suffix.lower() not in ENGINE_SUFFIXES:
            raise DataError(f"{path}: the tensorrt runner takes engine files ({', '.join(ENGINE_SUFFIXES)}); "
                            "build one with `edgecmg build M.onnx -o M.engine`")
        header = read_engine_header(path)
        if metadata is None:
            metadata = dict(header["model"])
            metadata["engine"] = {k: v for k, v in header.items() if k != "model"}
        if not str(device).startswith("cuda"):
            raise DataError(f"device={device!r}: TensorRT engines run on a CUDA device ('cuda' or 'cuda:N')")
        super().__init__(str(path), metadata, device)
        self.header = header
        self._memory_factory = memory or default_memory
        self._check_platform = check_platform
        self._memory = None
        self._runtime = self._engine = self._context = None
        self._inputs: list[str] = []
        self._outputs: list[str] = []
        self._dtypes: dict[str, np.dtype] = {}
        self._min_batch = self._max_batch = 1
        self._input_hw: Optional[tuple[int, int]] = None
        # One execution context and one set of buffers: one infer at a time.
        self._lock = threading.Lock()

    @property
    def label(self) -> str:
        dla = self.header.get("dla_core")
        return f"tensorrt|{self.device}" + (f"|dla{dla}" if dla is not None else "")

    def _activate(self) -> None:
        trt = import_tensorrt()
        header, _scorer, plan = read_engine_file(self.path)
        if self._check_platform:
            dla = header["dla_core"] is not None
            check_engine_compatible(header, current_platform(trt, device_index(self.device), dla=dla), path=self.path)
        self._memory = self._memory_factory(self.device)
        from edgecmg.engine import _LogBridge

        self._runtime = trt.Runtime(_LogBridge.make(trt))
        if header["dla_core"] is not None:
            self._runtime.DLA_core = header["dla_core"]
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise EngineIncompatibleError(
                f"{self.path}: TensorRT {trt.__version__} could not deserialize this engine (built with TensorRT "
                f"{header['tensorrt']} for {header['gpu']['name']}); rebuild it here: "
                f"{rebuild_command(header, self.path, getattr(self._runtime, 'num_DLA_cores', None))}")
        self._context = self._engine.create_execution_context()
        if self._context is None:  # TensorRT returns None, e.g. when the activation memory cannot be had
            raise EdgeCMGError(
                f"{self.path}: TensorRT could not create an execution context (see the TensorRT log); the "
                "usual cause is device memory: on a Jetson the GPU shares RAM with the CPU, so close other "
                f"GPU programs, or {_smaller_batch_hint(header)}")
        self._inputs, self._outputs = [], []
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            is_input = self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self._inputs if is_input else self._outputs).append(name)
            self._dtypes[name] = _np_dtype(trt, self._engine.get_tensor_dtype(name))
        # The header (checked when read) says what the plan takes and gives; the plan must agree, or an
        # output the header promises is a KeyError at the first frame and a batch or size it does not
        # take an error blamed on every frame.
        shapes = header["inputs"]
        if self._inputs != list(shapes) or sorted(self._outputs) != sorted(header["outputs"]):
            raise ArtifactError(f"{self.path}: the plan's inputs {self._inputs} and outputs {self._outputs} are not "
                                f"the {list(shapes)} and {header['outputs']} its header gives: the header was "
                                f"edited or the plan replaced; rebuild it: {rebuild_command(header, self.path)}")
        name = self._inputs[0]
        profile = [[int(d) for d in dims] for dims in self._engine.get_tensor_profile_shape(name, 0)]
        if [profile[0], profile[2]] != [shapes[name]["min"], shapes[name]["max"]]:
            raise ArtifactError(f"{self.path}: the plan takes '{name}' from {profile[0]} to {profile[2]}, but its "
                                f"header gives {shapes[name]['min']} to {shapes[name]['max']}: the header was edited "
                                f"or the plan replaced; rebuild it: {rebuild_command(header, self.path)}")
        self._min_batch, self._max_batch = profile[0][0], profile[2][0]
        self._input_hw = (profile[2][1], profile[2][2])

    def _run_batch(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        name = self._inputs[0]
        memory = self._memory
        # The current CUDA device is per thread: a stream's inference thread, or any thread of the
        # caller's, starts on device 0, and TensorRT enqueues on the current one (cuda:1 ran on 0).
        memory.make_current()
        buffers = {name: memory.upload(frames.astype(self._dtypes[name], copy=False))}
        # False (not an exception) when the shape is outside the profile: running anyway would read
        # past the input buffer and return rows of garbage.
        if not self._context.set_input_shape(name, tuple(frames.shape)):
            # Chunks are padded and split to the profile's batch range, which activation read from the
            # plan: TensorRT contradicts itself (a safety net, never met).
            raise DataError(f"{self.path}: a batch of {frames.shape[0]} is outside the engine's optimisation "
                            f"profile, though the plan gives batch {self._min_batch}..{self._max_batch}; "
                            f"rebuild the engine: {rebuild_command(self.header, self.path)}")
        self._context.set_tensor_address(name, memory.ptr(buffers[name]))
        for out in self._outputs:
            shape = tuple(int(d) for d in self._context.get_tensor_shape(out))
            if any(d < 0 for d in shape):
                raise EdgeCMGError(f"{self.path}: output {out} has unresolved shape {shape}")
            buffers[out] = memory.empty(shape, self._dtypes[out])
            self._context.set_tensor_address(out, memory.ptr(buffers[out]))
        if not self._context.execute_async_v3(memory.stream_handle):
            raise EdgeCMGError(f"{self.path}: TensorRT execution failed (see the TensorRT log)")
        memory.synchronize()
        result = {out: memory.download(buffers[out]) for out in self._outputs}
        if hasattr(memory, "release"):
            memory.release()
        return result

    def _infer(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        self.check_input_size(frames, self._input_hw)
        with self._lock:  # split to the profile's batch range; a fixed-batch or DLA engine given one frame is padded
            return run_in_batches(frames, self._run_batch, self._min_batch, self._max_batch)

    def _deactivate(self) -> None:
        self._context = self._engine = self._runtime = None
        if self._memory is not None:
            self._memory.close()
            self._memory = None

    @property
    def produces_features(self) -> bool:
        return tuple(self.header["outputs"]) == FEATURIZER_OUTPUTS
