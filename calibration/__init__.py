"""INT8 calibration (installed as ``edgecmg.calibration``): images in, a Q/DQ ONNX model out.

    from edgecmg.calibration import calibrate
    calibrate("M.edgecmg", "good_images/", "M.int8.onnx")                      # TensorRT-buildable
    calibrate("M.edgecmg", "good_images/", "M.cpu.int8.onnx", profile="cpu")  # fastest on ONNX Runtime CPU

Explicit quantisation (QuantizeLinear/DequantizeLinear in the graph) is the portable INT8 path:
ONNX Runtime runs it, TensorRT 10 and 11 build it strongly typed (TensorRT 11 has no implicit
calibration). See ``calibration/quantize.py`` for what is quantised and the two profiles.
"""
from .cache import CalibrationCache
from .data import ImageFolderReader, select_images, select_with_spares
from .quantize import (
    DEFAULT_FLOAT_CONVS,
    DEFAULT_METHOD,
    DEFAULT_SAMPLES,
    METHODS,
    PROFILES,
    backbone_region,
    calibrate,
    compute_ranges,
    default_cache_path,
    quantize_graph,
)

__all__ = [
    "DEFAULT_FLOAT_CONVS",
    "DEFAULT_METHOD",
    "DEFAULT_SAMPLES",
    "METHODS",
    "PROFILES",
    "CalibrationCache",
    "ImageFolderReader",
    "backbone_region",
    "calibrate",
    "compute_ranges",
    "default_cache_path",
    "quantize_graph",
    "select_images",
    "select_with_spares",
]
