"""Detector: the thin façade users hold. It wraps a runner (torch, ONNX Runtime or TensorRT), the
bank scoring for featurizer-only graphs, and a frame source for streams.

    det = Detector.load("part.edgecmg")            # or part.onnx / part.engine
    result = det.predict(frame)                     # uint8 HxWx3 RGB
    with det.stream("line3.mp4") as results:       # closes the capture when the loop is left
        for result in results: ...

Fitting, exporting and calibrating are functions of their own modules, not Detector methods:
``edgecmg.fit.fit``, ``edgecmg.export.export_onnx``, ``edgecmg.calibration.calibrate`` and
``edgecmg.engine.build_engine`` (README, "Use").
"""
from __future__ import annotations

import logging
import math
import os
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import cv2
import numpy as np

from edgecmg.config import ASPECT_TOLERANCE, TINY_FRAME_FACTOR, StreamConfig, aspect_stretch, expect_config
from edgecmg.errors import ConfigError, DataError, EdgeCMGError
from edgecmg.imageio import channels_first_batch, is_pil_image, is_tensor, resize_to_input, to_rgb_uint8
from edgecmg.result import Result, Timings
from edgecmg.runtime.base import Runner, RunnerInactiveError

log = logging.getLogger("edgecmg")

MAP_SIZES = ("frame", "model")  # Detector.map_size: the anomaly map at each frame's size, or the model's

if TYPE_CHECKING:  # torch is imported where torch runs something: a process running a whole-detector
    # .onnx on ONNX Runtime never loads it (about 1.5 s and 200 MB at every start, measured on 2 cores)
    import PIL.Image
    import torch

    from edgecmg.stream import StreamRun


class Detector:
    """Anomaly detector behind one of the runtime backends.

    Made with :meth:`load` (a model file: ``Detector.load("part.edgecmg")``) or :meth:`from_model`
    (the model ``edgecmg.fit.fit`` returned, in memory); the constructor takes an opened runner.

    Threads may share one Detector (predict, predict_batch, several stream() runs); results are those
    of calls made one after another. close() waits for calls under way, then refuses new ones.

    Attributes:
        input_size: the model's input as (height, width) in pixels, numpy's order; every frame is
            resized to it (:meth:`prepare`).
        metadata: the model file's header as a dict (what ``edgecmg info`` shows: input size,
            normalisation, prompt, threshold, how it was built); read it, do not edit it.
        threshold: the image score above which a frame is anomalous (see :attr:`threshold`).
        map_size: "frame" or "model", the size of each Result's anomaly map (see :attr:`map_size`).
    """

    def __init__(self, runner: Runner, *, threshold: Optional[float] = None, scorer: Optional[Any] = None,
                 map_size: str = "frame") -> None:
        # Everything is checked before the runner opens its session or engine, so a refusal leaks nothing.
        if isinstance(runner, (str, bytes, os.PathLike)):  # Detector("part.edgecmg") read like an open()
            raise ConfigError(f"Detector({runner!r}) takes an opened runner, not a file: open a model file with "
                              "Detector.load(path), or wrap a fitted model with Detector.from_model(model, metadata)")
        self.map_size = map_size
        self.metadata = runner.metadata
        self.input_size = tuple(self.metadata["input_size"])
        if threshold is None and not _is_number(self.metadata.get("threshold")):
            raise DataError(f"{runner.model_path}: the model file holds no usable threshold "
                            f"({self.metadata.get('threshold')!r}); pass threshold= or fit the model again")
        self.threshold = self.metadata["threshold"] if threshold is None else threshold
        self._frame_shapes_checked: set[tuple[int, int]] = set()
        self._runs: weakref.WeakSet = weakref.WeakSet()  # its stream() runs, closed with it
        # The stretch warning, once per height/width to about 10%: a folder of 139 photos turned 90 degrees,
        # each a few pixels apart in size, said the same thing 23 times.
        self._stretches_said: set[tuple[int, bool]] = set()
        # Host-side BankScorer for runners whose graph stops after the featurizer.
        self._scorer = scorer
        if runner.produces_features and scorer is None:
            raise DataError(f"{runner.path}: featurizer-only model without its memory bank; re-export it")
        self.runner = runner.activate()

    # --- construction --------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str], backend: str = "auto", *, device: str | int | torch.device | None = None,
             threshold: Optional[float] = None, threads: Optional[int] = None, spin: Optional[bool] = None,
             map_size: str = "frame") -> "Detector":
        """Open an ``.edgecmg`` artifact, an exported ``.onnx`` file or a TensorRT ``.engine``.

        backend: "auto" (fastest available), "torch", "onnxruntime" or "tensorrt".
        device: ``None`` (the backend's own choice: the GPU where the backend has one), "cpu",
            "cuda" or "cuda:N" (or a ``torch.device``, or N for "cuda:N"); a device the backend cannot use
            here is a BackendUnavailableError. The device is fixed here (see :attr:`device`).
        threshold: overrides the threshold stored at fit time.
        threads: ONNX Runtime intra-op threads (default: its own choice); the torch backend follows
            ``torch.set_num_threads``.
        spin: whether ONNX Runtime's idle threads spin-wait between frames. None: its default
            (spinning) for whole-detector graphs, off for featurizer graphs scored on the host.
            Spinning is for the lowest latency on cores nothing else needs; ``False`` uses about a third
            of the CPU per frame that spinning does on a paced stream, and is faster where other work
            shares the cores (see the README's "CPU use between frames"). Other backends take no
            setting (for torch: ``OMP_WAIT_POLICY``).
        map_size: see :attr:`map_size`.
        """
        from edgecmg.runtime.registry import make_runner

        if not isinstance(path, (str, os.PathLike)):  # None or 5 read as "None: no such model file"
            raise ConfigError(f"Detector.load takes the path of a model file (.edgecmg, .onnx or .engine), got "
                              f"{path!r:.60} ({type(path).__name__})")
        if threads is not None:
            if not isinstance(threads, (int, np.integer)) or isinstance(threads, bool) or threads < 1:
                raise ConfigError(f"threads={threads!r} must be an integer >= 1 (or None for the backend's default)")
            threads = int(threads)
        if spin is not None and not isinstance(spin, (bool, np.bool_)):
            raise ConfigError(f"spin={spin!r} must be True, False or None (ONNX Runtime's default)")
        # os.fspath, not str(): str() of a path-like object that is not a pathlib.Path is its repr
        runner = make_runner(os.fspath(path), backend=backend, device=device, threads=threads,
                             spin=None if spin is None else bool(spin))
        scorer = runner.host_scorer() if runner.produces_features else None
        return cls(runner, threshold=threshold, scorer=scorer, map_size=map_size)

    @classmethod
    def from_model(cls, model: Any, metadata: dict, *, device: str | int | torch.device | None = None,
                   threshold: Optional[float] = None, map_size: str = "frame") -> "Detector":
        """Wrap an in-memory fitted CMGModel (what ``edgecmg.fit.fit`` returns) with the torch runner.

        device: as in :meth:`load`: ``None`` (the GPU where torch sees one, else the CPU), "cpu",
            "cuda" or "cuda:N". The model is moved there in place, as torch's ``Module.to`` moves it.
        threshold: overrides the threshold stored at fit time.
        map_size: see :attr:`map_size`.
        """
        from edgecmg.artifact import check_fitted_pair
        from edgecmg.runtime.registry import check_torch_device, device_name, torch_cuda_available
        from edgecmg.runtime.torch_runner import TorchRunner

        if isinstance(model, (str, os.PathLike)):
            raise ConfigError(f"from_model takes the model fit returned, not a file ({model}): open files with "
                              "Detector.load(path)")
        check_fitted_pair(model, metadata, "from_model(model, metadata)")
        missing = [key for key in ("input_size", "threshold") if key not in metadata]
        if missing:
            raise ConfigError(f"from_model needs the metadata dict fit returned with the model (it holds "
                              f"{', '.join(missing)}), got dict without {', '.join(missing)}")
        device = device_name(device)
        if device is None:
            device = "cuda" if torch_cuda_available() else "cpu"
        runner = TorchRunner("<memory>", metadata, device=check_torch_device(device), model=model)
        return cls(runner, threshold=threshold, map_size=map_size)

    @property
    def map_size(self) -> str:
        """Where a result's ``anomaly_map`` is: "frame" (default), resized to the frame judged; or
        "model", the model's own map at :attr:`input_size`, as computed. Resizing to the frame costs
        host time and memory that grow with the frame (4 bytes a pixel: 48 MB at 12 MP); overlays and
        the score are the same either way (``overlay()`` resizes the map as it draws). Settable."""
        return self._map_size

    @map_size.setter
    def map_size(self, value: str) -> None:
        if value not in MAP_SIZES:
            raise ConfigError(f"map_size={value!r}: give 'frame' (the map resized to each frame) or 'model' (the "
                              f"model's map at its input size)")
        self._map_size = value

    @property
    def threshold(self) -> float:
        """Image scores at or above it are anomalies (``Result.is_anomaly``); settable."""
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        if not _is_number(value):
            raise ConfigError(f"threshold={value!r} (--threshold) must be a number (an image score)")
        number = float(value)
        if np.isnan(number):
            raise ConfigError("threshold=nan (--threshold): no score is ever at or above NaN, so nothing would be flagged; "
                              "give a number (an image score)")
        if np.isinf(number):
            raise ConfigError(f"threshold={number} (--threshold): every part would be {'passed' if number > 0 else 'flagged'}; "
                              "give a finite image score")
        self._threshold = number

    @property
    def backend(self) -> str:
        """The backend running the model: "torch", "onnxruntime" or "tensorrt" (what "auto" chose)."""
        return self.runner.backend

    @property
    def device(self) -> str:
        """Where the model runs: "cpu", "cuda" or "cuda:N" (chosen at load; there is no ``.to()``)."""
        return self.runner.device

    @property
    def precision(self) -> str:
        """"fp32", "fp16" or "int8": how the model file was built (engine) or exported (ONNX)."""
        md = self.metadata
        for section in (md.get("engine"), md.get("export"), md):
            if isinstance(section, dict) and section.get("precision"):
                return str(section["precision"])
        return "fp32"

    def close(self) -> None:
        """Release the backend (sessions, engines, device memory); the Detector cannot judge frames after it.
        Its stream() runs still open are closed first: their capture threads stop and release their sources."""
        for run in list(self._runs):
            run.close()
        self.runner.deactivate()

    @property
    def closed(self) -> bool:
        """True after :meth:`close` (or the end of a ``with`` block): the Detector judges no more frames."""
        return not self.runner.active

    def _check_open(self) -> None:
        if self.closed:
            raise EdgeCMGError(f"this Detector ({self.runner.model_path}) is closed; open the model again with "
                               "Detector.load, or keep it open until the last frame (close() ends a `with` block)")

    def __repr__(self) -> str:
        h, w = self.input_size
        closed = ", closed" if self.closed else ""
        return (f"Detector({self.runner.model_path!r}, backend={self.backend!r}, device={self.runner.device!r}, "
                f"precision={self.precision!r}, input={h}x{w}, threshold={self.threshold:.4g}{closed})")

    def __reduce__(self):
        # A runtime session (ONNX Runtime, a TensorRT engine) is no data to copy: say what to do instead of
        # pickle's "cannot pickle '_thread.RLock' object", which a process pool shows first.
        raise TypeError(f"a Detector cannot be pickled or copied: it holds a loaded {self.backend} session; give "
                        f"each worker process the model path and call Detector.load({str(self.runner.model_path)!r}) "
                        "there, in processes started with \"spawn\" (multiprocessing.get_context(\"spawn\"), or "
                        "ProcessPoolExecutor(mp_context=multiprocessing.get_context(\"spawn\"))): under Linux's "
                        "default \"fork\" a worker's torch runs on one thread once the parent loaded a model (threads "
                        "may share one Detector)")

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- inference -----------------------------------------------------------------------------
    def prepare(self, frame: np.ndarray) -> np.ndarray:
        """uint8 RGB frame of any size -> uint8 [H, W, 3] at the model's input size.

        See :func:`edgecmg.imageio.resize_to_input` (the same resize fit() uses).
        """
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            got = (f"{frame.dtype} array of shape {frame.shape}" if isinstance(frame, np.ndarray)
                   else type(frame).__name__)
            raise DataError(f"frame must be a uint8 HxWx3 RGB array, got a {got}; read files with "
                            "edgecmg.imageio.read_image, convert arrays with edgecmg.imageio.to_rgb_uint8 "
                            "(predict() does that for you)")
        if frame.shape[0] == 0 or frame.shape[1] == 0:
            raise DataError(f"frame is empty (shape {frame.shape}): the camera or decoder delivered no pixels")
        shape = (int(frame.shape[0]), int(frame.shape[1]))
        if shape not in self._frame_shapes_checked and len(self._frame_shapes_checked) < 64:
            self._frame_shapes_checked.add(shape)  # once per frame size: a stream's frames share one
            self._warn_if_tiny(shape) or self._warn_if_stretched(shape, frame)
        return resize_to_input(frame, self.input_size)

    def _warn_if_tiny(self, shape: tuple[int, int]) -> bool:
        """Say so where a frame is under an eighth of the model's input on a side (an empty or misplaced
        crop, most often): blown up to the input it holds no detail to judge, and its score says
        nothing about a part. True when said."""
        (h, w), (in_h, in_w) = shape, self.input_size
        if h * TINY_FRAME_FACTOR >= in_h and w * TINY_FRAME_FACTOR >= in_w:
            return False
        log.warning(
            "%s: a %dx%d frame (height x width) is judged blown up to the model's input of %dx%d, more than %dx "
            "on a side: its score says little about a part; check the crop or ROI that made it (an empty or "
            "misplaced one?)", self.runner.model_path, h, w, in_h, in_w, TINY_FRAME_FACTOR)
        return True

    def _warn_if_stretched(self, shape: tuple[int, int], frame: Optional[np.ndarray] = None) -> None:
        trained = self.metadata.get("training", {}).get("aspect_hw")
        if not _is_number(trained) or trained <= 0:
            return  # a file from before fit recorded it
        h, w = shape
        stretch = aspect_stretch(h / w, trained)
        if stretch <= ASPECT_TOLERANCE:
            return
        yuv_hint = _PLANAR_YUV_HINT if _looks_planar_yuv(shape, trained, frame) else ""
        # In steps of about 10% of the ratio (a tenth of its log): rounding the ratio itself put 0.16 and
        # 0.24 in one step; a colour frame of an I420 buffer's shape is told apart by its hint.
        said_as = (round(math.log(h / w) * 10), bool(yuv_hint))
        if said_as not in self._stretches_said:
            self._stretches_said.add(said_as)
            log.warning(
                "%s: a %dx%d frame (height x width) has height/width %.2f, the training images %.2f: the "
                "resize to the model's input stretches the part %.2fx against what fit saw, which moves its "
                "score; crop frames to the part as the training images were, or fit on frames of this camera%s",
                self.runner.model_path, h, w, h / w, trained, stretch, yuv_hint)

    def predict(self, frame: np.ndarray | torch.Tensor | PIL.Image.Image, *, bgr: bool = False) -> Result:
        """Judge one frame: uint8 HxWx3 RGB, or what :func:`edgecmg.imageio.to_rgb_uint8` converts
        (gray, RGBA, 16-bit, floats in [0, 1], PIL images, torch tensors HxWxC), as ``stream()`` takes them.

        The result's ``frame`` (what ``overlay()`` draws on) is your array itself where it was
        contiguous uint8 RGB already, not a copy: a camera SDK that refills one buffer for every frame
        changes it. Draw the overlay before the next capture, or pass ``frame.copy()``.

        bgr: the frame is in OpenCV's BGR order (``cv2.imread``, ``cv2.VideoCapture.read``); a colour
            part judged with its channels swapped scores differently. The result's ``frame`` and
            ``overlay()`` are RGB either way: ``cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR)`` before
            ``cv2.imwrite``.
        """
        return self._judge([frame], single=True, bgr=bgr)[0]

    def predict_batch(self, frames: Sequence[np.ndarray | torch.Tensor | PIL.Image.Image] | np.ndarray, *,
                      bgr: bool = False,
                      prepared: Optional[Sequence[np.ndarray]] = None, preprocess_ms: float = 0.0) -> list[Result]:
        """Judge several frames (a list, or an [N, H, W, C] array) in one inference call, same order
        back. Frames may differ in size; each is converted as in :meth:`predict` (``bgr`` too), and a
        result's ``frame`` may be your array, as there (of an [N, H, W, C] array: a view into it).

        prepared / preprocess_ms: frames already converted and resized by :meth:`prepare`, and the
        time that took (streams prepare on their capture thread); ``frames`` are then used as given,
        RGB, so ``bgr`` is refused beside them.
        """
        if prepared is not None and bgr:
            raise ConfigError("predict_batch(prepared=..., bgr=True): prepared frames are used as given; convert "
                              "BGR frames to RGB before prepare() (cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)) and "
                              "leave bgr unset")
        return self._judge(frames, prepared=prepared, preprocess_ms=preprocess_ms, bgr=bgr)

    def _judge(self, frames: Any, *, prepared: Optional[Sequence[np.ndarray]] = None, preprocess_ms: float = 0.0,
               single: bool = False, bgr: bool = False) -> list[Result]:
        self._check_open()
        t0 = time.perf_counter()  # the conversion counts as pre-processing
        if prepared is None:
            frames = _as_rgb_frames(frames, single=single, bgr=bgr)
        else:
            self._check_prepared(frames, prepared)
        if len(frames) == 0:
            return []
        batch = np.stack(prepared if prepared is not None else [self.prepare(f) for f in frames])
        t1 = time.perf_counter()
        try:
            outputs = self.runner.infer(batch)
        except RunnerInactiveError:
            self._check_open()  # closed by another thread since the check above: say that
            raise
        if self._scorer is not None:  # a featurizer-only graph: its memory bank is scored here, in torch
            import torch

            with torch.inference_mode():
                scored = self._scorer(torch.from_numpy(outputs["embeddings"]),
                                      torch.from_numpy(outputs["match_scores"]))
            outputs = {name: value.numpy() for name, value in scored._asdict().items()}
        t2 = time.perf_counter()
        results = []
        for i, frame in enumerate(frames):
            anomaly_map = outputs["anomaly_map"][i].astype(np.float32, copy=False)
            if self._map_size == "frame" and anomaly_map.shape != frame.shape[:2]:
                anomaly_map = cv2.resize(anomaly_map, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_LINEAR)
            results.append((float(outputs["score"][i]), anomaly_map, outputs["kept_mask"][i].astype(bool)))
        t3 = time.perf_counter()
        n = len(frames)
        timings = Timings(preprocess=(preprocess_ms + (t1 - t0) * 1e3) / n, inference=(t2 - t1) * 1e3 / n,
                          postprocess=(t3 - t2) * 1e3 / n)
        now = time.time()
        return [Result(score=s, threshold=self.threshold, anomaly_map=m, kept_mask=k, timings=timings,
                       frame_index=i, timestamp=now, frame=frame)
                for i, ((s, m, k), frame) in enumerate(zip(results, frames))]

    def _check_prepared(self, frames: Sequence[np.ndarray], prepared: Sequence[np.ndarray]) -> None:
        """predict_batch's ``prepared`` must pair with ``frames`` one to one, each at the model size."""
        if len(prepared) != len(frames):
            raise DataError(f"prepared holds {len(prepared)} frames for {len(frames)} frames; give one prepared "
                            "frame per frame (Detector.prepare(frame)), or leave prepared out")
        want = (*self.input_size, 3)
        for i, item in enumerate(prepared):
            if not isinstance(item, np.ndarray) or item.shape != want or item.dtype != np.uint8:
                got = f"{item.dtype} {item.shape}" if isinstance(item, np.ndarray) else type(item).__name__
                raise DataError(f"prepared frame {i} is {got}, not uint8 {want}: make it with Detector.prepare(frame), "
                                "or leave prepared out")

    # --- streams -------------------------------------------------------------------------------
    def stream(self, source: Any, *, policy: Optional[str] = None, batch: Optional[int] = None,
               max_queue: Optional[int] = None, config: Optional[StreamConfig] = None,
               opener: Optional[Any] = None, live: Optional[bool] = None, join_timeout_s: float = 5.0,
               stats_window: int = 10_000, bgr: bool = False) -> "StreamRun[Result]":
        """Judge frames from a camera index, video file, image folder or glob, a list of image paths,
        rtsp/http URL, GStreamer pipeline, ``csi://N``, a ``cv2.VideoCapture`` you opened and configured
        (left open: see :func:`~edgecmg.stream.sources.open_source`) or any iterable of frames. Returns a
        :class:`~edgecmg.stream.StreamRun`: an iterator of Results (one pass over the source; its
        ``.stats`` count frames judged, dropped and skipped) that is also a context manager: use it
        in a ``with`` block (or call ``.close()``) so that leaving the loop stops the capture thread
        and releases the source at once; a run left without either stops only when it is
        garbage-collected. Unusable frames (unreadable files, empty buffers) are skipped with a
        warning and counted in ``.stats.corrupt_skipped``; a result's ``frame_index`` is its frame's
        position in the source, the skipped ones counted (a live source's from the first frame after
        the one read at open to check it delivers, which is stale by then and not judged). Sources
        OpenCV reads are converted from its BGR order; an iterable's frames are taken as :meth:`predict` takes them: RGB, or BGR with
        ``bgr=True`` (the frames of your own ``cv2.VideoCapture``; refused for any other source).

        policy "latest" drops stale frames (counted in ``.stats.frames_dropped``) to stay real time;
        "all" applies back-pressure and loses none; "auto" (default) is "latest" for cameras and
        network or GStreamer sources, "all" for video files, folders and sequences. ``batch``: frames
        per inference call (default 1); ``max_queue``: frames held between capture and inference
        (default 4). Everything else (looping a file, real-time pacing, reconnect back-off, timeouts)
        is set in a :class:`~edgecmg.config.StreamConfig` passed as ``config``, which then also holds
        the policy, batch and queue. ``opener``, ``live``, ``join_timeout_s``, ``stats_window``: see
        :class:`~edgecmg.stream.StreamPipeline`.
        """
        from edgecmg.stream import StreamPipeline

        self._check_open()
        given = {name: value for name, value in (("policy", policy), ("batch", batch), ("max_queue", max_queue))
                 if value is not None}
        if config is None:
            config = StreamConfig(**given)
        elif not isinstance(config, StreamConfig):
            expect_config(config, StreamConfig, "stream()")
        elif given:
            raise ConfigError(f"stream(): {', '.join(given)} given beside config=; set them in the StreamConfig "
                              f"instead (e.g. StreamConfig({', '.join(f'{k}={v!r}' for k, v in given.items())}))")
        pipeline = StreamPipeline(source, config, preprocess=self.prepare, opener=opener, live=live,
                                  join_timeout_s=join_timeout_s, stats_window=stats_window, bgr=bgr)
        run = pipeline.run(lambda frames, prepared: self.predict_batch(
            [f.image for f in frames], prepared=prepared))
        self._runs.add(run)  # close() ends it: its capture thread held the camera after the Detector closed
        return run


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


_PLANAR_YUV_HINT = ("; if this is a raw YUV (I420/NV12) camera buffer, whose top 2/3 (the luma) would match, convert "
                    "it first, e.g. cv2.cvtColor(frame, cv2.COLOR_YUV2RGB_NV12) (COLOR_YUV2RGB_I420 for I420)")


def _looks_planar_yuv(shape: tuple[int, int], trained: float, frame: Optional[np.ndarray]) -> bool:
    """Whether a frame of ``shape`` may be a planar 4:2:0 YUV buffer (I420, NV12: a camera's or
    GStreamer's raw frame, (3H/2) x W uint8, one channel): gray (a 2-D frame converts to three equal
    channels; this runs on the converted frame, as streams prepare it too), and 2/3 of its height
    would match the training images' height/width within the stretch warning's tolerance."""
    h, w = shape
    if frame is None or h % 3 or aspect_stretch(h * 2 / 3 / w, trained) > ASPECT_TOLERANCE:
        return False
    return bool(np.array_equal(frame[..., 0], frame[..., 1]) and np.array_equal(frame[..., 0], frame[..., 2]))


def _not_an_array(value: Any) -> str:
    """What was given in an array's place, and how to get the array; short, whatever its size."""
    if isinstance(value, (bytes, bytearray)):
        return (f"{len(value):,} bytes (an encoded file?): decode them with cv2.imdecode(np.frombuffer(data, "
                "np.uint8), cv2.IMREAD_COLOR) and convert BGR to RGB, or read files with edgecmg.imageio.read_image")
    if value is None:  # most often a failed cv2.imread, which returns None rather than raising
        return ("None (what cv2.imread returns for a file it cannot read: check the path); read files with "
                "edgecmg.imageio.read_image, which names what is wrong")
    text = repr(str(value) if isinstance(value, Path) else value)
    return (f"the {type(value).__name__} {text[:120] + '...' if len(text) > 120 else text}; read files with "
            "edgecmg.imageio.read_image")


_READ_PAIR = ("the (ok, frame) pair cv2.VideoCapture.read() returns; unpack it: ok, frame = cap.read(), then "
              "predict(frame, bgr=True) where ok is True")


def _is_read_pair(value: Any) -> bool:
    """Whether ``value`` is what ``cv2.VideoCapture.read()`` returns, (ok, frame), passed whole."""
    return (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], (bool, np.bool_))
            and (value[1] is None or isinstance(value[1], np.ndarray)))


def _as_rgb_frames(frames: Any, single: bool = False, bgr: bool = False) -> list[np.ndarray]:
    """predict_batch's input as a list of uint8 HxWx3 RGB frames, or a DataError naming the bad one
    (``single``: predict()'s one frame, named without an index)."""
    if single:
        frame = frames[0]
        if frame is None or isinstance(frame, (str, bytes, bytearray, Path)):
            raise DataError(f"predict() takes an image array, got {_not_an_array(frame)}")
        if _is_read_pair(frame):
            raise DataError(f"predict() takes one frame, got {_READ_PAIR}")
        if isinstance(frame, (list, tuple)):
            raise DataError(f"predict() takes one frame, got a {type(frame).__name__} of {len(frame)}; judge "
                            "several with predict_batch(frames)")
        return [to_rgb_uint8(frame, bgr=bgr)]
    if is_pil_image(frames):  # iterating a Pillow image fails deep inside Pillow
        raise DataError("predict_batch takes a list of frames, got one Pillow image; for one frame use "
                        "predict(image), for several pass a list")
    if isinstance(frames, np.ndarray) or is_tensor(frames):
        # A tensor is checked as an array is: iterated, a C x H x W one would be judged as C gray frames.
        if frames.ndim != 4:
            # An N x H x W stack of gray frames has the shape of one H x W x C frame: which it is cannot be told
            # where C is a channel count, so it is refused, saying how to pass either.
            gray_stack = frames.ndim == 3 and frames.shape[-1] not in (1, 3, 4)
            kind = "tensor" if is_tensor(frames) else "array"
            channels_first = kind == "tensor" and frames.ndim == 3 and frames.shape[0] in (1, 3, 4)
            raise DataError(f"predict_batch takes a list of frames or an [N, H, W, C] array, got a{'n' * (kind == 'array')} "
                            f"{kind} of shape {tuple(frames.shape)}; for one frame use predict(frame)"
                            + ("; it looks channels-first (C x H x W, as torchvision's ToTensor gives): pass "
                               "x.permute(1, 2, 0) to predict, or a list of such frames to predict_batch"
                               if channels_first else "")
                            + ("; for N gray frames pass a list (list(x)) or x[..., None]"
                               if gray_stack and not channels_first else ""))
        if channels_first_batch(frames.shape):  # said once, not per frame
            raise DataError(f"predict_batch takes N x H x W x C frames, got shape {tuple(frames.shape)}, which looks "
                            "channels-first (N x C x H x W); pass x.permute(0, 2, 3, 1) (torch) or "
                            "x.transpose(0, 2, 3, 1) (numpy)")
        frames = list(frames)
    elif frames is None or isinstance(frames, (str, bytes, bytearray, Path)):
        raise DataError(f"predict_batch takes a list of image arrays, got {_not_an_array(frames)}")
    elif _is_read_pair(frames):
        raise DataError(f"predict_batch takes a list of frames, got {_READ_PAIR}")
    converted = []
    for i, frame in enumerate(frames):
        if frame is None or isinstance(frame, (str, bytes, bytearray, Path)):
            raise DataError(f"frame {i} is not an image array: got {_not_an_array(frame)}")
        if _is_read_pair(frame):
            raise DataError(f"frame {i} is not an image array: got {_READ_PAIR}")
        try:
            converted.append(to_rgb_uint8(frame, bgr=bgr))
        except DataError as exc:
            raise DataError(f"frame {i}: {exc}") from None
    return converted
