"""Post-training INT8: calibrate activation ranges on images, write a Q/DQ ONNX model.

What is quantised: the backbone only, i.e. every node that lies between two convolutions of the
featurizer graph (the Convs, and the Clip/Add between them). Pre-processing, the feature taps
(resize, concat, pooling, CMLE projection), the matching head (masked pooling, ImageNet head,
softmax, text similarity) and the scoring head (bank distances, smoothing, CMER gating) stay in
floating point: the scoring head is appended after quantisation, so it is float by construction.
The stem and blocks 0-4 (``float_convs=15``: every layer at stride 8 or finer) stay float too:
quantising them costs more accuracy than the rest of the network together and, on ONNX Runtime CPU,
is not even faster (measured in benchmarks/results/int8.md).
Weights are per-channel, activations per-tensor.

Profiles (what the Q/DQ nodes look like):

- ``"tensorrt"`` (default): symmetric int8 activations and weights (zero point 0), float bias, no
  Q/DQ on convolution outputs (TensorRT fuses conv + activation + residual around Q/DQ placed on
  inputs). Passes ``edgecmg.onnx_checks.check_onnx_for_tensorrt``; build it with ``--precision int8``.
- ``"cpu"``: what ONNX Runtime's CPU kernels fuse into QLinearConv/QLinearAdd: uint8 asymmetric
  activations (ReLU6 folds into the quantisation range), int8 weights, Q/DQ on conv outputs. Fastest
  on ONNX Runtime CPU; not TensorRT-buildable (TensorRT needs zero points of 0).

Ranges come from ONNX Runtime's calibrators (minmax, percentile, entropy), are cached as JSON
(``calibration/cache.py``) and fed to ONNX Runtime's QDQ quantiser.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from edgecmg import __version__
from edgecmg.config import ExportConfig
from edgecmg.distributions import extra_install_hint, onnxruntime_telemetry_off
from edgecmg.errors import BackendUnavailableError, ConfigError
from edgecmg.fileio import RANGE_CACHE_SUFFIX, check_cache_path

from .cache import CalibrationCache
from .data import ImageFolderReader, fingerprint, select_with_spares

log = logging.getLogger("edgecmg")

METHODS = ("entropy", "percentile", "minmax")
PROFILES = ("tensorrt", "cpu")
# Range method per profile when none is given, from benchmarks/results/int8.md (KolektorSDD, elpv,
# elpv with a small bank). cpu: percentile kept the image AUROC within 0.0011 of FP32 everywhere
# where entropy missed by 0.006 on KolektorSDD. tensorrt: min-max. The runs that chose "entropy"
# here were in fact min-max (ONNX Runtime's entropy calibrator at its default bins returns the
# min-max range); a real entropy calibration (2,048 bins) clips the rare large activations a defect
# produces, and cost image AUROC 0.012 on KolektorSDD and 0.037-0.046 on elpv.
DEFAULT_METHOD = {"tensorrt": "minmax", "cpu": "percentile"}
# ONNX Runtime's entropy calibrator defaults to 128 histogram bins and 128 quantised bins: with as
# many candidate bins as levels its KL search has no threshold to try below the maximum, so it
# returns the min-max range. TensorRT's own entropy calibration uses 2,048 bins against 128 levels.
CALIBRATOR_OPTIONS: dict[str, dict[str, Any]] = {"entropy": {"num_bins": 2048, "num_quantized_bins": 128}}
# Frames per ONNX Runtime collect_data call (see _collect_in_chunks). The histogram calibrators set
# their bin width on the first chunk and add bins of that width when a later chunk goes further, so
# the ranges depend a little on the chunk size: it is part of the cache key.
CHUNK_IMAGES = 16
_ORT_HINT = extra_install_hint("onnx") + ": onnxruntime ships the calibrators and the QDQ quantiser"
# Op types quantised inside the backbone region, per profile.
_OP_TYPES = {"tensorrt": ("Conv", "Add"), "cpu": ("Conv", "Add", "Clip")}
# Convolutions kept in float by default: EfficientNet-Lite0's stem and blocks 0-4 (1 + 2 + 4 x 3 convs),
# every layer at stride 8 or finer. With 6 (stem, blocks 0-1) the tensorrt profile lost 0.0084 image
# AUROC on KolektorSDD and 0.0065 on elpv-small; with 15 every delta of both profiles is within 0.0025
# (benchmarks/results/int8.md), for 0.1-0.3 ms of ONNX Runtime CPU time per frame.
DEFAULT_FLOAT_CONVS = 15
# Calibration images used by default (fewer when the folder has fewer). Activation ranges from 64
# images moved KolektorSDD's image AUROC by +0.0053 (tensorrt profile) and -0.0009 (cpu profile);
# from 256 by +0.0027 and -0.0020, with pixel AUROC deltas of 0.0000 and -0.0009
# (benchmarks/results/int8.md). TensorRT's own guidance is a few hundred images. Costs about
# 0.3 s per image on a 2-core CPU, once: the ranges are cached.
DEFAULT_SAMPLES = 256


def _ort_quantization():
    onnxruntime_telemetry_off()
    try:
        from onnxruntime import quantization
    except ImportError as exc:
        raise BackendUnavailableError("onnxruntime", f"cannot import onnxruntime.quantization ({exc})",
                                      _ORT_HINT) from exc
    return quantization


def _ort_version() -> str:
    onnxruntime_telemetry_off()
    import onnxruntime

    return str(onnxruntime.__version__)


def backbone_region(model, float_convs: int = 0) -> list[str]:
    """Names of the nodes to quantise: the backbone's Conv nodes, and the nodes that are both
    descendants and ancestors of one, so pre-processing (before the first conv) and everything after
    the last conv of each path (feature taps, projection, matching head) fall outside. The first
    ``float_convs`` convolutions (graph order) stay float, with the nodes that only they feed.

    Only convolutions under ``/backbone/`` count: others (a CLIP matcher's patch embedding) are part
    of the matching head and stay float. A graph with no ``/backbone/`` names (not exported by
    edgecmg) is taken to be all backbone."""
    graph = model.graph
    producers = {out: i for i, node in enumerate(graph.node) for out in node.output}
    children: dict[int, list[int]] = {i: [] for i in range(len(graph.node))}
    parents: dict[int, list[int]] = {i: [] for i in range(len(graph.node))}
    for i, node in enumerate(graph.node):
        for name in node.input:
            if name in producers:
                parents[i].append(producers[name])
                children[producers[name]].append(i)
    convs = [i for i, n in enumerate(graph.node) if n.op_type == "Conv"]
    backbone_convs = [i for i in convs if graph.node[i].name.startswith("/backbone/")]
    convs = backbone_convs or convs
    quantised = convs[float_convs:]

    def reach(starts: list[int], edges: dict[int, list[int]]) -> set[int]:
        seen: set[int] = set()
        stack = list(starts)
        while stack:
            i = stack.pop()
            for j in edges[i]:
                if j not in seen:
                    seen.add(j)
                    stack.append(j)
        return seen

    below = reach(quantised, children)  # strict descendants of a quantised conv
    above = reach(convs, parents)       # strict ancestors of some conv
    region = set(quantised) | (below & above)
    for i in region:  # the quantiser selects nodes by name
        if not graph.node[i].name:
            graph.node[i].name = f"node_{i}_{graph.node[i].op_type}"
    return [graph.node[i].name for i in sorted(region)]


def _tensors_to_calibrate(model, region: set[str], op_types: tuple[str, ...]) -> list[str]:
    """Float activations read or written by the region's quantisable nodes (what needs a range)."""
    initializers = {i.name for i in model.graph.initializer}
    names: list[str] = []
    for node in model.graph.node:
        if node.name in region and node.op_type in op_types:
            for n in (*node.input, *node.output):
                if n and n not in initializers and n not in names:
                    names.append(n)
    return names


def _quant_options(profile: str) -> dict[str, Any]:
    if profile == "tensorrt":
        return {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                "OpTypesToExcludeOutputQuantization": ["Conv"],
                # the weight-scale widening only protects int32 biases, which this profile has none of
                "QDQDisableWeightAdjustForInt32Bias": True}
    # Float bias here too: ONNX Runtime folds it into QLinearConv itself, and an int32 bias would
    # make the quantiser widen weight scales wherever the bias is large (costly for accuracy).
    return {"WeightSymmetric": True, "QuantizeBias": False}


class _Chunk:
    """A calibration data reader over the next ``size`` frames of ``reader``, ``first`` among them."""

    def __init__(self, first: dict[str, np.ndarray], reader, size: int) -> None:
        self._first: Optional[dict[str, np.ndarray]] = first
        self._reader = reader
        self._left = size

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        if self._left <= 0:
            return None
        self._left -= 1
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return self._reader.get_next()


def _collect_in_chunks(calibrator, reader, size: int) -> None:
    """Feeds ``reader`` to ``calibrator`` ``size`` frames at a time. ONNX Runtime's calibrators keep
    every activation of the frames of one ``collect_data`` call until its end (about 85 MB a frame for
    a 416x160 model: 256 frames needed 22 GB); between calls the histogram calibrators keep only their
    histograms and min-max its ranges, so memory stays at one chunk's."""
    while True:
        first = reader.get_next()
        if first is None:  # never hand ONNX Runtime an empty chunk: it raises "No data is collected"
            return
        calibrator.collect_data(_Chunk(first, reader, size))


def compute_ranges(fp32_path: Path, reader: ImageFolderReader, method: str, op_types: tuple[str, ...], *,
                   symmetric: bool, work_dir: Path) -> dict[str, tuple[float, float]]:
    """Run ONNX Runtime's calibrator of ``method`` over ``reader``: {tensor: (low, high)}."""
    q = _ort_quantization()
    cal_method = {"entropy": q.CalibrationMethod.Entropy, "percentile": q.CalibrationMethod.Percentile,
                  "minmax": q.CalibrationMethod.MinMax}[method]
    options: dict[str, Any] = {"symmetric": symmetric, **CALIBRATOR_OPTIONS.get(method, {})}
    calibrator = q.create_calibrator(Path(fp32_path), list(op_types),
                                     augmented_model_path=str(work_dir / "augmented.onnx"),
                                     calibrate_method=cal_method, extra_options=options)
    chatter = io.StringIO()  # ONNX Runtime's histogram calibrators print their progress
    with _prints_of_calibrate_into(chatter):
        _collect_in_chunks(calibrator, reader, CHUNK_IMAGES)
        data = calibrator.compute_data()
    if chatter.getvalue().strip():
        log.debug("onnxruntime calibrator: %s", chatter.getvalue().strip())
    ranges = {}
    for name, td in data.data.items():
        lo, hi = (td.range_value if hasattr(td, "range_value") else (td.lowest, td.highest))
        ranges[name] = (float(np.asarray(lo).reshape(-1)[0]), float(np.asarray(hi).reshape(-1)[0]))
    return ranges


@contextlib.contextmanager
def _prints_of_calibrate_into(chatter: io.StringIO):
    """ONNX Runtime's calibrate module's print() calls written into ``chatter`` while this holds, by a
    ``print`` in that module's own namespace: redirect_stdout swapped sys.stdout for the whole process,
    and a host application's threads printing meanwhile lost their lines."""
    import builtins

    from onnxruntime.quantization import calibrate as ort_calibrate

    def to_chatter(*values: Any, **options: Any) -> None:
        options.pop("file", None)
        builtins.print(*values, file=chatter, **options)

    ort_calibrate.print = to_chatter  # a module global: found before the builtin by that module's code
    try:
        yield
    finally:
        vars(ort_calibrate).pop("print", None)  # gone already where two calibrations ran side by side


def quantize_graph(model, ranges: dict[str, tuple[float, float]], region: list[str], profile: str, *,
                   reduce_range: Optional[bool] = None):
    """Insert Q/DQ nodes into ``model`` (a ModelProto) for ``region``: returns the quantised ModelProto.

    reduce_range: 7-bit weights; default True for the cpu profile (x86 CPUs without VNNI saturate
    the 16-bit pair sums of uint8 x int8 products otherwise), False for tensorrt.
    """
    if reduce_range is None:
        reduce_range = profile == "cpu"
    from edgecmg.export import _onnx

    onnx = _onnx()
    q = _ort_quantization()
    # onnxruntime.quantization re-exports TensorsData only from 1.27; calibrate has held it throughout.
    from onnxruntime.quantization.calibrate import TensorsData

    model = onnx.shape_inference.infer_shapes(model)
    tensors = TensorsData(q.CalibrationMethod.MinMax,
                            {k: (np.float32(lo), np.float32(hi)) for k, (lo, hi) in ranges.items()})
    activation = q.QuantType.QInt8 if profile == "tensorrt" else q.QuantType.QUInt8
    kwargs = dict(model=model, per_channel=True, reduce_range=reduce_range, weight_qType=q.QuantType.QInt8,
                  activation_qType=activation, tensors_range=tensors, nodes_to_quantize=list(region),
                  nodes_to_exclude=[], op_types_to_quantize=list(_OP_TYPES[profile]),
                  extra_options=_quant_options(profile))
    params = inspect.signature(q.QDQQuantizer.__init__).parameters
    if "mode" in params:  # onnxruntime < 1.18
        kwargs.update(mode=q.QuantizationMode.QLinearOps, static=True)

    def demote(record: logging.LogRecord) -> bool:
        """ONNX Runtime's quantiser logs on the root logger itself (``logging.info``): ~60 lines of
        "Increased scale[278] for weight ..." a model in any program logging at INFO. Those below
        WARNING go to edgecmg's debug log instead; its warnings, and everyone else's records, pass."""
        if (record.name != "root" or record.levelno >= logging.WARNING
                or "/onnxruntime/quantization/" not in Path(record.pathname).as_posix()):
            return True
        log.debug("onnxruntime quantizer: %s", record.getMessage())
        return False

    root = logging.getLogger()
    root.addFilter(demote)  # a logger's filters see the records logged on it, before any handler
    # logging.info on a root logger without handlers runs basicConfig() itself, which left a handler on
    # a host application's root logger and made its own basicConfig later do nothing: one is there
    # while the quantiser runs, taken away after.
    placeholder = logging.NullHandler() if not root.handlers else None
    if placeholder is not None:
        root.addHandler(placeholder)
    try:
        quantizer = q.QDQQuantizer(**kwargs)
        quantizer.quantize_model()
    finally:
        root.removeFilter(demote)
        if placeholder is not None:
            root.removeHandler(placeholder)
    quantizer.model.topological_sort()
    return quantizer.model.model


def default_cache_path(out_path: str | Path) -> Path:
    out = Path(out_path)
    return out.with_name(out.stem + RANGE_CACHE_SUFFIX)


# What an output name given to calibrate may end in that its suggested name leaves out: another
# kind of file (the model, its range cache) or the INT8 markers the suggestion adds back once.
_NAME_TAILS = (RANGE_CACHE_SUFFIX, ".json", ".edgecmg", ".onnx", ".engine", ".plan", ".int8", ".cpu", ".calib")


def int8_output_name(path: str | Path, profile: str = "tensorrt") -> Path:
    """A name for calibrate's INT8 file built from ``path``'s stem, as the README names them:
    ``part.edgecmg``, ``part.onnx``, ``part.int8.calib.json`` all give ``part.int8.onnx`` (for the cpu
    profile ``part.cpu.int8.onnx``): never ``part.onnx``, the FP32 export's name, nor a doubled tail."""
    path = Path(path)
    name = path.name
    while True:
        lowered = name.lower()
        tail = next((t for t in _NAME_TAILS if lowered.endswith(t) and len(name) > len(t)), None)
        if tail is None:
            break
        name = name[: -len(tail)]
    return path.with_name(name + _int8_tail(profile))


def _int8_tail(profile: str) -> str:
    """How an INT8 file's name ends, by profile (the README's part.int8.onnx, part.cpu.int8.onnx)."""
    return ".cpu.int8.onnx" if profile == "cpu" else ".int8.onnx"


def _free_output_name(out_path: Path, profile: str) -> Path:
    """An output name to suggest instead of ``out_path``: :func:`int8_output_name`, numbered where that
    file or its range cache is there already."""
    first = int8_output_name(out_path, profile)
    tail = _int8_tail(profile)
    stem = first.name[: -len(tail)]
    number = 1
    candidate = first
    while candidate == out_path or candidate.exists() or default_cache_path(candidate).exists():
        number += 1
        candidate = first.with_name(f"{stem}-{number}{tail}")
    return candidate


def _check_output_name(out_path: str | Path, profile: str) -> Path:
    """calibrate's ``out_path`` before any work: a name not ending in .onnx is refused with one built
    from its stem (``-o part.edgecmg`` suggested ``part.onnx``, which would replace the FP32 export,
    and ``-o part.int8.calib.json`` ``part.int8.calib.json.onnx``); a folder or an empty name as
    ``check_onnx_suffix`` says."""
    from edgecmg.export import check_onnx_suffix

    path = Path(out_path)
    if path.name and not path.is_dir() and path.suffix.lower() != ".onnx":
        raise ConfigError(f"{path}: calibrate writes an ONNX file, whose name must end in .onnx; use "
                          f"{int8_output_name(path, profile)}")
    return check_onnx_suffix(path)


def _checked_method(profile: str, method: Optional[str]) -> str:
    """The range method to use (``method``, or the profile's default when None); an unknown profile or
    method is a ConfigError, raised before anything is read or written."""
    if profile not in PROFILES:
        raise ConfigError(f"profile={profile!r}: choose 'tensorrt' (TensorRT-buildable Q/DQ) or 'cpu' "
                          "(fastest on ONNX Runtime CPU)")
    method = DEFAULT_METHOD[profile] if method is None else method
    if method not in METHODS:
        raise ConfigError(f"method={method!r}: choose one of {', '.join(METHODS)}")
    return method


def _cache_key(method: str, samples: int, symmetric: bool, artifact_sha256: str, input_size,
               images: list[Path], seed: int) -> dict[str, Any]:
    """What cached ranges must match to be reused (the exported graph's hash is added once it exists)."""
    return {"method": method, "samples": int(samples), "symmetric": symmetric, "artifact_sha256": artifact_sha256,
            "input_size": list(input_size), "data": fingerprint(images),
            "images": len(images), "seed": int(seed),
            # Ranges depend on the calibrator's settings and version too, and on the exported graph
            # (an edgecmg that exports it differently under the same tensor names must not reuse them).
            "calibrator": {**CALIBRATOR_OPTIONS.get(method, {}), "chunk_images": CHUNK_IMAGES},
            "onnxruntime": _ort_version()}


def _export_fp32(model, header: dict, work: Path, export_config: ExportConfig, source_sha256: str,
                 float_convs: int):
    """(path, ModelProto, region): the FP32 featurizer exported into ``work``, saved again with the node
    names the quantiser selects the region by, and the names of the region's nodes."""
    import onnx

    from edgecmg.export import export_model

    fp32_path = export_model(model, header, work / "fp32.onnx", export_config, source_sha256=source_sha256)
    fp32 = onnx.load(str(fp32_path))
    region = backbone_region(fp32, float_convs)
    onnx.save(fp32, str(fp32_path))  # node names may have been filled in
    return fp32_path, fp32, region


def _reusable_cache(cache_path: Path, key: dict[str, Any], needed: list[str]) -> Optional[CalibrationCache]:
    """The cache at ``cache_path`` when its ranges fit ``key`` and cover ``needed``, else None (logged
    where a cache exists but does not fit)."""
    cache = CalibrationCache.load(cache_path)
    if cache is None:
        return None
    reason = cache.mismatch(key, needed)
    if reason is not None:
        log.info("calibration: not reusing %s: %s", cache_path, reason)
        return None
    if not cache.sealed:
        # Without a checksum, ranges edited or damaged since (all of them a twentieth, say) look like
        # any others, and reused they make an INT8 model that flags good parts run after run.
        log.warning("calibration cache %s was written by an edgecmg that did not yet save a checksum of its "
                    "ranges, so edits or damage to them cannot be told; recalibrating (the file is written again, "
                    "with one)", cache_path)
        return None
    log.info("calibration: reusing the ranges of %s", cache_path)
    return cache


def _measure_ranges(fp32_path: Path, images: list[Path], spares: list[Path], input_size, method: str,
                    profile: str, work: Path, progress: Optional[bool]) -> tuple[dict[str, tuple[float, float]], int]:
    """(ranges, images read): the activation ranges calibrated on ``images`` (spares stand in for
    unreadable ones), with a warning when fewer images than asked for could be read."""
    reader = ImageFolderReader(images, input_size, spares=spares, progress=progress,
                               desc=f"calibration ({method})")
    ranges = compute_ranges(fp32_path, reader, method, _OP_TYPES[profile], symmetric=profile == "tensorrt",
                            work_dir=work)
    images_read = reader.used
    if images_read < len(images):
        log.warning("calibration: %d of the %d images asked for were readable; the ranges come from %d",
                    images_read, len(images), images_read)
    return ranges, images_read


def _int8_header(fp32, profile: str, method: str, images_read: int, *, reduce_range: Optional[bool],
                 float_convs: int, quantized_nodes: int, cache_name: str, cache_reused: bool,
                 with_scoring: bool) -> dict[str, Any]:
    """The INT8 file's edgecmg header: the FP32 export's, with the precision, the graph the file holds
    and how it was quantised (``cache_reused``: the ranges came from the cache an earlier run wrote,
    which calibrate's check names where the model flags good parts: rerun alike, it is reused again)."""
    from edgecmg.export import GRAPH_FEATURIZER, GRAPH_FULL, read_onnx_header
    from edgecmg.result import OUTPUT_NAMES

    onnx_header = read_onnx_header(fp32)
    onnx_header["export"]["precision"] = "int8"
    onnx_header["quantization"] = {
        "method": method, "samples": images_read, "profile": profile, "weights": "int8 per-channel symmetric",
        "activations": "int8 per-tensor symmetric" if profile == "tensorrt" else "uint8 per-tensor asymmetric",
        "bias": "float", "reduce_range": profile == "cpu" if reduce_range is None else reduce_range,
        "float_convs": float_convs,
        "quantized_nodes": quantized_nodes, "cache": cache_name, "cache_reused": cache_reused,
        "edgecmg": __version__,
        "float_parts": ["pre-processing", "feature taps and projection", "matching head", "scoring head"],
    }
    if with_scoring:
        onnx_header["export"]["graph"] = GRAPH_FULL
        onnx_header["export"]["outputs"] = list(OUTPUT_NAMES)
    else:
        onnx_header["export"]["graph"] = GRAPH_FEATURIZER
    return onnx_header


def _save_int8(quantized, onnx_header: dict[str, Any], out_path: Path, profile: str, method: str,
               images_read: int, max_batch: int) -> None:
    """Writes ``quantized`` to ``out_path`` (atomically) with its header and description, once ONNX's
    checker passed it; for the tensorrt profile, what TensorRT would refuse is logged as a warning first."""
    import onnx

    from edgecmg.export import HEADER_KEY, _save_atomic, set_metadata_props
    from edgecmg.onnx_checks import check_onnx_for_tensorrt

    set_metadata_props(quantized, {HEADER_KEY: json.dumps(onnx_header, sort_keys=True)})
    counted = f"{images_read} image{'' if images_read == 1 else 's'}"  # the ones read, as in the header
    quantized.doc_string = f"edgecmg INT8 ({profile} profile, {method} calibration on {counted})"
    onnx.checker.check_model(quantized)
    if profile == "tensorrt":
        for problem in check_onnx_for_tensorrt(quantized, max_batch=max_batch):
            log.warning("%s: %s", out_path, problem)
    _save_atomic(quantized, out_path)


def calibrate(artifact_path: str | Path, data_dir: str | Path | Sequence[str | Path], out_path: str | Path,
              method: Optional[str] = None,
              samples: int = DEFAULT_SAMPLES, *, profile: str = "tensorrt", with_scoring: bool = False,
              cache_path: Optional[str | Path] = None, reuse_cache: bool = True, opset: int = 17,
              max_batch: int = 16, float_convs: int = DEFAULT_FLOAT_CONVS, reduce_range: Optional[bool] = None,
              seed: int = 0, progress: Optional[bool] = None) -> Path:
    """``edgecmg calibrate M.edgecmg --data DIR --method entropy|percentile|minmax --samples N -o M.int8.onnx``.

    Writes a Q/DQ ONNX model of the artifact: the featurizer graph (default; the file carries the
    scorer for host scoring, like an FP32 export) or, with ``with_scoring``, the full detector with
    the scoring head in float. The ranges go to ``cache_path`` (default: the output's name with
    ``.calib.json`` for ``.onnx``, e.g. ``part.int8.calib.json``) and are reused by later runs with
    the same model, data, method and sample count (not where they no longer match the checksum saved
    with them, or the file has none: those are calibrated again, with a warning naming it).

    data_dir: a folder of good images (an MVTec root: its train/good; sub-folders are walked), a
        glob pattern, or a list of image paths; ``samples`` of them are drawn with ``seed``.
    method: how activation ranges are set; ``None`` takes ``DEFAULT_METHOD[profile]`` (minmax for
        tensorrt, percentile for cpu: measured, see benchmarks/results/int8.md).
    float_convs: the first convolutions kept in float (default 15: the stem and blocks 0-4, every
        layer at stride 8 or finer; quantising them is less accurate and, on ONNX Runtime CPU, not
        faster; measured, see benchmarks/results/int8.md). reduce_range: see ``quantize_graph``.
    progress: a progress bar; by default where it can be seen (a terminal or a notebook), not in a log.
    Returns ``out_path``.
    """
    from edgecmg import artifact
    from edgecmg.export import _onnx, append_scorer, check_artifact_input, export_scorer_graph, graph_sha256

    method = _checked_method(profile, method)
    check_artifact_input(artifact_path, "calibrate")  # an image or an export given as the model: said first
    # onnx and onnxruntime (which calibrates): where either is missing, said before any folder is made
    onnx = _onnx()
    _ort_quantization()
    out_path = artifact.prepare_output(_check_output_name(out_path, profile))  # before any work, like the cache's
    if cache_path is not None:  # written after calibrating: never over the model or the output
        check_cache_path(cache_path, "cache_path", artifact_path, out_path, example=default_cache_path(out_path).name)
    elif default_cache_path(out_path).is_dir():
        # The ranges go beside the output under its name: a folder of that name is in their way, and
        # the CLI has no flag for another cache name, so another output name is what to give.
        raise ConfigError(f"{default_cache_path(out_path)} is a folder, and calibrate keeps the activation ranges of "
                          f"{out_path} under that name; give the output another name, e.g. "
                          f"{_free_output_name(out_path, profile)}")
    cache_path = artifact.prepare_output(cache_path if cache_path is not None else default_cache_path(out_path))
    data, sha = artifact.read_file(artifact_path)  # the key's hash and the model from the same bytes
    model, header = artifact.load(artifact_path, data=data)
    images, spares = select_with_spares(data_dir, samples, seed)
    key = _cache_key(method, samples, profile == "tensorrt", sha, model.geometry.input_size, images, seed)
    export_config = ExportConfig(opset=opset, with_scoring=False, max_batch=max_batch)

    with tempfile.TemporaryDirectory(prefix="edgecmg-calibrate-") as tmp:
        work = Path(tmp)
        fp32_path, fp32, region = _export_fp32(model, header, work, export_config, sha, float_convs)
        needed = _tensors_to_calibrate(fp32, set(region), _OP_TYPES[profile])
        key["graph_sha256"] = graph_sha256(fp32)
        cache = _reusable_cache(cache_path, key, needed) if reuse_cache else None
        if cache is not None:
            ranges = cache.ranges
            images_read = cache.images_read if cache.images_read is not None else len(images)
        else:
            ranges, images_read = _measure_ranges(fp32_path, images, spares, model.geometry.input_size, method,
                                                  profile, work, progress)
            CalibrationCache(key, ranges, images_read).save(cache_path)

        quantized = quantize_graph(fp32, ranges, region, profile, reduce_range=reduce_range)
        onnx_header = _int8_header(fp32, profile, method, images_read, reduce_range=reduce_range,
                                   float_convs=float_convs, quantized_nodes=len(region), cache_name=cache_path.name,
                                   cache_reused=cache is not None, with_scoring=with_scoring)
        if with_scoring:  # the scoring head is appended after quantisation: float by construction
            scorer = onnx.load(str(export_scorer_graph(model, work / "scorer.onnx", export_config)))
            quantized = append_scorer(quantized, scorer)
        _save_int8(quantized, onnx_header, out_path, profile, method, images_read, max_batch)
    log.info("wrote INT8 %s (%s profile, %s ranges, %d image%s)", out_path, profile, method, images_read,
             "" if images_read == 1 else "s")
    return out_path
