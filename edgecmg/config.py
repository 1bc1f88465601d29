"""Configuration: one frozen dataclass per concern, passed to constructors.

The CLI turns flags into these; no config dicts are threaded through layers.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, Optional

import numpy as np

from edgecmg.errors import ConfigError
from edgecmg.model.layouts import feature_layout

# A frame whose height / width differs from the training images' by more than this factor is
# stretched visibly by the resize to the model's input (the training images were resized the same
# way, so only a difference from them matters). fit holds its training images to it too.
ASPECT_TOLERANCE = 1.25

# A frame under 1/TINY_FRAME_FACTOR of the model's input on a side is blown up so far by the resize
# that it holds no detail to judge (an empty or misplaced crop, most often): Detector warns about such
# frames, fit about such training images.
TINY_FRAME_FACTOR = 8


def aspect_stretch(aspect_hw: float, reference_hw: float) -> float:
    """How much resizing a frame of height/width ``aspect_hw`` to the model's input stretches it
    against training images of height/width ``reference_hw``: 1 for the same shape, else above 1
    whichever way (compared with ``ASPECT_TOLERANCE``)."""
    ratio = aspect_hw / reference_hw
    return max(ratio, 1 / ratio)


_KIND_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "True or False",
               "dict": "a dict", "tuple[int, int]": "a pair of integers"}


def _check_field_types(config: Any) -> None:
    """Every field of a config dataclass against its annotation, so that ``max_side="256"`` or
    ``input_size=416`` is refused by name instead of failing later inside a comparison. numpy
    scalars become Python numbers and a list pair a tuple (the config ends up in JSON metadata)."""
    for spec in fields(config):
        kind, value = str(spec.type), getattr(config, spec.name)
        optional = kind.startswith("Optional[")
        kind = kind[len("Optional["):-1] if optional else kind
        if kind not in _KIND_WORDS or (value is None and optional):
            continue
        if isinstance(value, np.generic):
            value = value.item()
        if kind == "tuple[int, int]" and isinstance(value, list):
            value = tuple(value)
        ok = {"int": isinstance(value, int) and not isinstance(value, bool),
              "float": isinstance(value, (int, float)) and not isinstance(value, bool),
              "str": isinstance(value, str), "bool": isinstance(value, bool), "dict": isinstance(value, dict),
              "tuple[int, int]": isinstance(value, tuple) and len(value) == 2
              and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)}[kind]
        if not ok:
            raise ConfigError(f"{type(config).__name__}: {spec.name}={value!r} must be {_KIND_WORDS[kind]}"
                              f"{' or None' if optional else ''}, got {type(value).__name__}")
        if kind == "tuple[int, int]":
            value = tuple(int(v) for v in value)
        object.__setattr__(config, spec.name, value)  # frozen: the normalised value replaces the given one


def _valid_sizes_near(h: int, w: int, largest: int) -> str:
    """The input sizes nearest (h, w) that ModelConfig takes (sides of 64..largest, multiples of 32):
    the one below and the one above, as Python and CLI write them, e.g. "(96, 96) or (128, 128)
    (--input-size 96 96 or 128 128)"."""
    def side(value: int, up: bool) -> int:
        rounded = (value + 31) // 32 * 32 if up else value // 32 * 32
        return min(max(rounded, 64), largest // 32 * 32)

    sizes = list(dict.fromkeys((side(h, up), side(w, up)) for up in (False, True)))
    return (f"{' or '.join(str(size) for size in sizes)} (--input-size "
            f"{' or '.join(f'{a} {b}' for a, b in sizes)})")


def expect_config(value: Any, cls: type, where: str) -> Any:
    """``value`` if it is a ``cls``, else a ConfigError saying how to make one (a prompt passed where
    fit takes a ModelConfig is the usual slip)."""
    if isinstance(value, cls):
        return value
    if isinstance(value, str) and cls.__name__ == "ModelConfig":
        how = f"ModelConfig(prompt={value!r})"
    elif isinstance(value, dict):
        how = f"{cls.__name__}(**{value!r})"
    else:
        how = f"{cls.__name__}(...)"
    article = "an" if cls.__name__[0] in "AEIOU" else "a"
    raise ConfigError(f"{where} takes {article} {cls.__name__} as config, got {type(value).__name__}: pass {how}")


@dataclass(frozen=True)
class ModelConfig:
    """How a CMG detector is built and fitted.

    input_size: (height, width) the frames are resized to; ``None`` picks it at fit time from the
        training images' aspect ratio (about ``max_side**2`` pixels, both sides multiples of 32), because
        squashing a 1:2.5 part into a square destroys the detail defects live in.
    features: patch-feature layout, a key of ``edgecmg.model.layouts.FEATURE_LAYOUTS``.
    score_top_fraction: the image score is the mean of this share of the map's hottest pixels
        (0: the single hottest pixel). A defect that stands out over a small area beats a one-pixel
        peak of noise; see ``BankScorer.image_score``.
    matcher: "zeroshot" (offline: the backbone's ImageNet head + MiniLM) or "clip" (an open_clip
        model ``clip_arch`` read from the local safetensors file ``clip_weights``).
    """

    prompt: str = "a photo of a flawless industrial part"
    input_size: Optional[tuple[int, int]] = None
    max_side: int = 256
    features: str = "s16"
    cmer: bool = True
    grid: int = 2
    cmer_quantile: float = 1.0
    cmer_slack: float = 1.0
    cmle: bool = True
    cmle_dim: int = 128
    cmle_neighbors: int = 10
    coreset_ratio: float = 0.1
    max_bank_size: int = 10000
    knn_k: int = 1
    smoothing_sigma: float = 4.0
    score_top_fraction: float = 0.01
    threshold_quantile: float = 0.99
    matcher: str = "zeroshot"
    clip_weights: Optional[str] = None
    clip_arch: str = "ViT-B-32"
    batch_size: int = 8
    seed: int = 0

    # Smallest max_side: the backbone's head has stride 32 and 64 px (a 2 x 2 head map) is the
    # smallest side input_size accepts; below 64, choose_input_size would quietly clamp to 64 x 64.
    MIN_MAX_SIDE: ClassVar[int] = 64
    # Largest: about 4 MP through the backbone a frame (its stride-8 features alone ~0.5 GB at 2048), and
    # a fit holding every training image at that size; 100000 ended in OpenCV's out-of-memory error.
    MAX_MAX_SIDE: ClassVar[int] = 2048
    # An input_size side, the longest a model file may have (the loader's limit too): choose_input_size
    # shrinks a long line-scan frame's size to it, keeping the aspect.
    MAX_INPUT_SIDE: ClassVar[int] = 4096
    # The seeds torch.Generator.manual_seed and numpy's generators both take.
    MAX_SEED: ClassVar[int] = 2**64 - 1

    def __post_init__(self) -> None:
        # A non-string prompt (prompt=123) would otherwise fail deep inside as "'int' object has no
        # attribute 'strip'".
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ConfigError(f"prompt={self.prompt!r}: the prompt must be a non-empty string describing the "
                              "normal part, e.g. 'a photo of a metal commutator'")
        try:
            self.prompt.encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates: bytes a terminal or shell in another encoding passed through undecoded
            # (the tokenizer would fail after the whole feature pass).
            raise ConfigError(f"prompt={self.prompt!r} holds characters that are not text (bytes that did not "
                              "decode as UTF-8); write the prompt in UTF-8 or in plain ASCII") from None
        _check_field_types(self)
        if self.input_size is not None:
            given = f"input_size={tuple(self.input_size)} (--input-size {' '.join(map(str, self.input_size))})"
            if len(self.input_size) != 2:
                raise ConfigError(f"{given} must be (height, width): two sides, e.g. (256, 256) (--input-size 256 256)")
            h, w = self.input_size
            if h % 32 or w % 32 or h < 64 or w < 64:
                raise ConfigError(f"{given} must be >= 64 and multiples of 32 in both sides; the nearest that are: "
                                  f"{_valid_sizes_near(h, w, self.MAX_INPUT_SIDE)}")
            if h > self.MAX_INPUT_SIDE or w > self.MAX_INPUT_SIDE:
                raise ConfigError(f"{given}: sides of at most {self.MAX_INPUT_SIDE} (the model "
                                  "sees each frame resized to it; crop the part's region for finer detail)")
        if self.max_side > self.MAX_MAX_SIDE:
            raise ConfigError(f"max_side={self.max_side} (--max-side) is too large: the input would have about "
                              f"max_side**2 pixels; use at most {self.MAX_MAX_SIDE} (default 256, 256..512 typical; crop "
                              "the part's region for finer detail)")
        if not self.max_side >= self.MIN_MAX_SIDE:
            raise ConfigError(f"max_side={self.max_side} (--max-side) is too small: the automatic input size has "
                              f"about max_side**2 pixels, in sides that are multiples of 32; use at least "
                              f"{self.MIN_MAX_SIDE} (a 2 x 2 map of the stride-32 head; default 256, 256..512 typical)")
        feature_layout(self.features)
        if not 2 <= self.grid <= 8:  # 1 would leave CMER one cell, whose drop-one variant keeps nothing
            raise ConfigError(f"grid={self.grid} (--grid) must be between 2 and 8 (default 2)")
        if not self.cmer_slack >= 0.0:
            raise ConfigError(f"cmer_slack={self.cmer_slack} must be >= 0 (1 = a cell's margin sits above its largest "
                              "normal gain by that gain's distance from the median)")
        if not 0.0 < self.cmer_quantile <= 1.0:
            raise ConfigError(f"cmer_quantile={self.cmer_quantile} must be in (0, 1] (1 = a cell's largest gain on normal images)")
        if not 0.0 < self.coreset_ratio <= 1.0:
            raise ConfigError(f"coreset_ratio={self.coreset_ratio} must be in (0, 1]")
        if not 1 <= self.knn_k <= 16:
            raise ConfigError(f"knn_k={self.knn_k} must be in 1..16")
        if not 0.0 <= self.score_top_fraction <= 0.25:
            raise ConfigError(f"score_top_fraction={self.score_top_fraction} (--score-top-fraction) must be in "
                              "[0, 0.25] (0 = the map's maximum; 0.01 = the mean of its hottest 1% of pixels)")
        if not 8 <= self.cmle_dim <= 1024:
            raise ConfigError(f"cmle_dim={self.cmle_dim} (--cmle-dim) must be in 8..1024 (default 128)")
        if self.cmle_neighbors < 1:
            raise ConfigError(f"cmle_neighbors={self.cmle_neighbors} must be >= 1 (default 10)")
        # Checked here, not after the feature pass: 0 would end a long fit in an IndexError, and a
        # negative cap in a RuntimeError from the coreset.
        if self.max_bank_size < 1:
            raise ConfigError(f"max_bank_size={self.max_bank_size} (--bank-size) must be >= 1: it caps the "
                              "memory bank's rows (default 10000; fewer rows score faster)")
        # sigma 0 gives NaN smoothing taps (0/0); a negative one has no meaning.
        if not self.smoothing_sigma > 0:
            raise ConfigError(f"smoothing_sigma={self.smoothing_sigma} must be > 0 pixels (default 4)")
        if not 0.0 < self.threshold_quantile <= 1.0:
            raise ConfigError(f"threshold_quantile={self.threshold_quantile} must be in (0, 1] (default 0.99: "
                              "1% of held-out good parts flagged; 1: the highest of their scores, strays far above the rest "
                              "left out)")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size} must be >= 1 (default 8)")
        # Checked here: out of range, torch's manual_seed failed with an overflow after the whole feature pass.
        if not 0 <= self.seed <= self.MAX_SEED:
            raise ConfigError(f"seed={self.seed} (--seed) must be in 0..2**64-1 ({self.MAX_SEED}), the seeds torch's "
                              "and numpy's random generators take; any seed in that range will do (default 0)")
        if self.matcher not in ("zeroshot", "clip"):
            raise ConfigError(f"matcher={self.matcher!r}: choose 'zeroshot' (offline default) or 'clip'")
        if self.matcher == "clip" and not self.clip_weights:
            raise ConfigError("matcher='clip' needs clip_weights=<path to local open_clip weights>")


@dataclass(frozen=True)
class ExportConfig:
    """How a fitted model is written to ONNX.

    opset: ONNX opset of the default domain (17..20: what TensorRT 10/11 parse and torch exports).
    with_scoring: ``True`` puts the whole detector in one graph (memory-bank distances as chunked
        matmuls, smoothing, CMER gating; outputs ``score``, ``anomaly_map``, ``kept_mask``);
        ``False`` stops after the featurizer (outputs ``embeddings``, ``match_scores``) and the
        bank scoring runs on the host, from tensors stored in the file's metadata.
    dynamic_batch: batch axis symbolic (``True``) or fixed to ``batch``.
    batch: the fixed batch size when ``dynamic_batch`` is ``False``.
    max_batch: the largest batch the graph must serve; sizes the distance chunks so that no tensor
        exceeds ``max_chunk_elements`` (and never 2**31 elements) at that batch.
    max_chunk_elements: elements of the largest [batch, patches, bank rows] distance block.
    """

    opset: int = 17
    with_scoring: bool = False
    dynamic_batch: bool = True
    batch: int = 1
    max_batch: int = 16
    max_chunk_elements: int = 1 << 26

    def __post_init__(self) -> None:
        _check_field_types(self)
        if not 17 <= self.opset <= 20:
            raise ConfigError(f"opset={self.opset} (--opset): choose 17..20 (TensorRT 10/11 and torch's exporter cover "
                              "these; default 17)")
        if self.batch < 1 or self.max_batch < 1:
            raise ConfigError(f"batch={self.batch} and max_batch={self.max_batch} must be >= 1")
        if not self.dynamic_batch and self.batch > self.max_batch:
            raise ConfigError(f"batch={self.batch} exceeds max_batch={self.max_batch}; raise max_batch")
        if not 1 << 16 <= self.max_chunk_elements < 1 << 31:
            raise ConfigError(f"max_chunk_elements={self.max_chunk_elements} must be in [2**16, 2**31)")



@dataclass(frozen=True)
class EngineConfig:
    """How a TensorRT engine is built.

    precision: ``"fp32"``; ``"fp16"`` (TensorRT 10: the FP16 builder flag on a weakly typed
        network; TensorRT 11, which has no such flag: the ONNX is cast to float16 and built
        strongly typed); ``"int8"`` needs an ONNX with Q/DQ nodes (``edgecmg calibrate``) and is
        built strongly typed (no implicit calibration: TensorRT 11 removed it), from a float16 copy
        of the ONNX, so the layers outside the quantised region run in FP16 (the scorer in FP32).
    timing_cache: file of TensorRT's timing cache, read when present and written after the build.
    workspace_mib: builder workspace memory pool limit.
    dla_core: run on this DLA core (Jetson Orin: 0 or 1) with GPU fallback; DLA needs fp16 or int8
        and a fixed batch (min_batch == max_batch).
    min_batch / opt_batch / max_batch: the optimisation profile of the dynamic batch axis. The runner
        pads a smaller batch up to min_batch and splits a larger one into max_batch chunks.
    """

    PRECISIONS: ClassVar[tuple[str, ...]] = ("fp32", "fp16", "int8")

    precision: str = "fp16"
    timing_cache: Optional[str] = None
    workspace_mib: int = 1024
    dla_core: Optional[int] = None
    max_batch: Optional[int] = None  # 8; on a DLA core min_batch (a fixed batch)
    min_batch: int = 1
    opt_batch: Optional[int] = None

    def __post_init__(self) -> None:
        _check_field_types(self)
        if self.max_batch is None:
            object.__setattr__(self, "max_batch", self.min_batch if self.dla_core is not None else 8)
        if self.precision not in self.PRECISIONS:
            raise ConfigError(f"precision={self.precision!r}: choose one of {', '.join(self.PRECISIONS)}")
        if self.workspace_mib < 16:
            raise ConfigError(f"workspace_mib={self.workspace_mib} is too small; use at least 16 (default 1024)")
        if self.dla_core is not None:
            if self.dla_core < 0:
                raise ConfigError(f"dla_core={self.dla_core} must be >= 0 (Jetson Orin has DLA cores 0 and 1)")
            if self.precision == "fp32":
                raise ConfigError(f"DLA runs fp16 or int8 only: with dla_core={self.dla_core} (--dla {self.dla_core}) "
                                  "use precision='fp16' or 'int8' (--precision fp16 or int8)")
            if self.min_batch != self.max_batch:
                # With a dynamic profile TensorRT puts every layer on the GPU (GPU fallback): a "DLA"
                # engine that never uses the DLA.
                raise ConfigError(f"DLA runs fixed shapes only: min_batch={self.min_batch} and max_batch="
                                  f"{self.max_batch} must be equal (1 for a stream; the runner pads smaller "
                                  "batches up to it)")
        if not 1 <= self.min_batch <= self.max_batch:
            raise ConfigError(f"batch range min_batch={self.min_batch}..max_batch={self.max_batch} is empty")
        if self.opt_batch is not None and not self.min_batch <= self.opt_batch <= self.max_batch:
            raise ConfigError(f"opt_batch={self.opt_batch} must lie in {self.min_batch}..{self.max_batch}")

    @property
    def profile_batches(self) -> tuple[int, int, int]:
        """(min, opt, max) batch of the optimisation profile; opt defaults to min (streams run batch 1)."""
        return self.min_batch, self.opt_batch or self.min_batch, self.max_batch


STREAM_POLICIES = ("auto", "latest", "all")


#: The longest StreamConfig.timeout_s: OpenCV takes timeouts in milliseconds as a 32-bit int.
MAX_TIMEOUT_S = (2**31 - 1) // 1000


@dataclass(frozen=True)
class StreamConfig:
    """How frames flow from a source to the detector.

    policy: ``"latest"`` keeps the consumer on fresh frames (the oldest queued frame is dropped
        when the queue is full, and the consumer takes the newest frames, dropping older ones;
        all counted); ``"all"`` applies back-pressure and loses nothing;
        ``"auto"`` (default) is "latest" for live sources (cameras, network streams, GStreamer,
        ``csi://``) and for ``realtime``-paced ones, "all" for video files, folders and sequences.
    batch: frames handed to the detector at once. With a live source and ``"latest"`` a batch is
        not waited for: the consumer takes what is queued (1..batch frames).
    max_queue: frames buffered between capture and inference (``"latest"`` hands the consumer the
        newest of them and drops the older ones).
    reconnect_attempts / reconnect_backoff_s: a live source (camera, network, GStreamer) that fails
        mid-stream is reopened up to this many times, waiting ``backoff * 2**k`` seconds (k = 0,
        1, ..., at most 30 s or the backoff itself) before each try; 0 attempts = fail at the first
        error. The defaults back off for about a minute (0.5 + 1 + 2 + 4 + 8 + 16 + 30 = 61.5 s,
        plus the time each reopen takes), an IP camera's reboot.
    capture_size: (width, height) requested from cameras and ``csi://`` sensors; ``None`` keeps
        the device default (``csi://`` uses 1280x720).
    capture_fps: frame rate requested from cameras / ``csi://``; also the pace of a non-video
        source when ``realtime`` is set. ``None`` = device default (30 for ``csi://``).
    timeout_s: open and read timeout of network streams and ``csi://`` sensors (the latter with
        OpenCV 4.7 or newer), so a dead camera or a hung nvargus-daemon errors (and is reconnected)
        instead of hanging the capture thread. Pipelines of your own keep OpenCV's (30 s from 4.7,
        none before).
    stall_warn_s: a live source that delivers no frame for this long (outside a reconnect) is
        reported in the log, again at each interval; ``None`` for triggered cameras that are
        silent between parts.
    loop: restart video files, image folders and re-iterable sequences at their end (benchmarks).
    realtime: pace non-live sources (files, folders, sequences) at their frame rate so they
        behave like a camera, e.g. to see what ``"latest"`` drops at a given inference speed.
    """

    policy: str = "auto"
    batch: int = 1
    max_queue: int = 4
    reconnect_attempts: int = 7
    reconnect_backoff_s: float = 0.5
    capture_size: Optional[tuple[int, int]] = None
    capture_fps: Optional[float] = None
    timeout_s: float = 10.0
    stall_warn_s: Optional[float] = 10.0
    loop: bool = False
    realtime: bool = False

    def __post_init__(self) -> None:
        _check_field_types(self)
        if self.policy not in STREAM_POLICIES:
            raise ConfigError(f"policy={self.policy!r}: choose 'latest' (drop stale frames), 'all' (lose none) "
                              "or 'auto' (latest for live sources, all for files)")
        if self.batch < 1:
            raise ConfigError(f"batch={self.batch} (--batch) must be >= 1 (default 1)")
        if self.max_queue < 1:
            raise ConfigError(f"max_queue={self.max_queue} (--max-queue) must be >= 1 (default 4)")
        if self.reconnect_attempts < 0:
            raise ConfigError(f"reconnect_attempts={self.reconnect_attempts} (--reconnect-attempts) must be >= 0 "
                              "(0 = never reconnect; default 7)")
        if not self.reconnect_backoff_s >= 0:
            raise ConfigError(f"reconnect_backoff_s={self.reconnect_backoff_s} must be >= 0 seconds")
        if self.capture_size is not None:
            if len(self.capture_size) != 2 or min(self.capture_size) < 1:
                raise ConfigError(f"capture_size={tuple(self.capture_size)} (--capture-size "
                                  f"{' '.join(map(str, self.capture_size))}) must be (width, height), both >= 1, e.g. "
                                  "(1920, 1080) (--capture-size 1920 1080)")
        if self.capture_fps is not None and not self.capture_fps > 0:
            raise ConfigError(f"capture_fps={self.capture_fps} (--capture-fps) must be > 0, or leave it unset (leave "
                              "--capture-fps out) for the device's default")
        if not 0 < self.timeout_s <= MAX_TIMEOUT_S:  # OpenCV takes milliseconds as a 32-bit int
            raise ConfigError(f"timeout_s={self.timeout_s} must be > 0 and <= {MAX_TIMEOUT_S:,} seconds")
        if self.stall_warn_s is not None and not self.stall_warn_s > 0:
            raise ConfigError(f"stall_warn_s={self.stall_warn_s} must be > 0 seconds, or None for no warning")
