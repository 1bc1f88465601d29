"""The checks of an edgecmg model header's fields (an .edgecmg file's, and the copy every export and
engine carries): each field's JSON kind and range, refused by name. No torch: a process that runs a
whole-detector .onnx on ONNX Runtime reads and checks its header without loading it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from edgecmg.config import ModelConfig
from edgecmg.errors import ArtifactError
from edgecmg.model.layouts import FEATURE_LAYOUTS, LEGACY_LAYOUT, feature_layout

# The .edgecmg file format.
# 2 (2026-11-24): the scorer carries a fitted normal level; version 1 files load with level 0.
# 3 (2026-11-24): the image score may pool the hottest pixels (model spec "score_top_fraction", in every
# version 3 file: one without it is refused); older files load with the maximum, and an older edgecmg,
# which would score by the maximum against a threshold set on the pool, refuses version 3.
FORMAT_VERSION = 3
# Largest input side a header may give (fit never picks more; about 256 by default, config max_side):
# it stops an edited size from allocating gigabytes before the payload's tensors are compared with it.
MAX_INPUT_SIDE = ModelConfig.MAX_INPUT_SIDE
MAX_GRID = 32  # fit accepts 2..8; older files stay readable down to 1
# kernels.knn.MAX_K, the most neighbours the kNN search takes (tests/test_layering.py holds them
# equal): imported from there, it would load torch.
MAX_KNN_K = 16
FLOAT32_MAX = 3.4028234663852886e38  # the scorer holds the threshold as float32


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not a size


def is_number(value: Any) -> bool:
    if not (is_int(value) or isinstance(value, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer past float's reach (JSON has no limit on digits)
        return False


_JSON_KINDS = {
    "an object": lambda v: isinstance(v, dict),
    "a string": lambda v: isinstance(v, str),
    "true or false": lambda v: isinstance(v, bool),
    "an integer": is_int,
    "a finite number": is_number,
    "a list": lambda v: isinstance(v, list),
    "a list of strings": lambda v: isinstance(v, list) and all(isinstance(item, str) for item in v),
}
_ABSENT = object()


class FieldError(ArtifactError):
    """An ArtifactError about one header field; ``problem`` is what is wrong with it, without the
    file's path and the loader's advice (save refuses such metadata with advice of its own)."""

    def __init__(self, message: str, problem: str = "") -> None:
        super().__init__(message)
        self.problem = problem or message


def bad_field(path: Path, field: str, why: str) -> ArtifactError:
    problem = f"header field '{field}' {why}"
    return FieldError(f"{path}: {problem}: the metadata was edited or written wrongly; "
                       "fit the model again or copy the original file", problem)


def header_field(path: Path, header: dict, field: str, kind: str, default: Any = _ABSENT) -> Any:
    """``header``'s ``field`` (dotted: "model.bank_size"; its parents already checked as objects),
    which must be of JSON kind ``kind``; ``default`` where it may be absent."""
    table = header
    *parents, key = field.split(".")
    for parent in parents:
        table = table[parent]
    if key not in table:
        if default is _ABSENT:
            raise bad_field(path, field, "is missing")
        return default
    value = table[key]
    if not _JSON_KINDS[kind](value):
        raise bad_field(path, field, f"is {json.dumps(value)[:40]}, not {kind}")
    return value


def int_field(path: Path, header: dict, field: str, low: int, high: int | None = None) -> int:
    value = header_field(path, header, field, "an integer")
    if value < low or (high is not None and value > high):
        limits = f">= {low}" if high is None else f"in {low}..{high}"
        raise bad_field(path, field, f"is {value}, not {limits}")
    return value


def check_header(path: Path, header: Any, prefix_version: int, *, model_file: bool = False) -> None:
    """Refuse a header whose fields are missing, of the wrong JSON type, or out of range.

    ``model_file``: the header is an .edgecmg file's own (load, save), not an export's copy of one,
    and the fields its format version always writes are required (see below)."""
    if not isinstance(header, dict):
        raise ArtifactError(f"{path}: the header is a JSON {type(header).__name__}, not an object; "
                            "the file was edited or written wrongly")
    version = int_field(path, header, "format_version", 1)
    # The prefix's version is outside every checksum; the header's copy is covered by the header's.
    if version != prefix_version:
        raise bad_field(path, "format_version", f"is {version} but the file's prefix says {prefix_version}")
    header_field(path, header, "payload", "an object")
    int_field(path, header, "payload.bytes", 0)
    header_field(path, header, "payload.sha256", "a string")
    header_field(path, header, "backbone", "an object")
    header_field(path, header, "backbone.id", "a string")
    header_field(path, header, "backbone.sha256", "a string")
    input_size = header_field(path, header, "input_size", "a list")
    if len(input_size) != 2 or not all(is_int(side) and 64 <= side <= MAX_INPUT_SIDE and side % 32 == 0
                                       for side in input_size):
        raise bad_field(path, "input_size", f"is {json.dumps(input_size)[:40]}, not [height, width] in "
                                             f"multiples of 32 from 64 to {MAX_INPUT_SIDE}")
    int_field(path, header, "grid", 1, MAX_GRID)
    threshold = header_field(path, header, "threshold", "a finite number")
    # The scorer holds it as float32 for CMER's rule: beyond that range it would be infinite there.
    if abs(threshold) > FLOAT32_MAX:
        raise bad_field(path, "threshold", f"is {threshold}, beyond float32's range")
    if header_field(path, header, "features", "a string", None) not in (None, *FEATURE_LAYOUTS):
        raise bad_field(path, "features", f"is {header['features']!r}, not one of {sorted(FEATURE_LAYOUTS)}")
    if header_field(path, header, "matcher", "an object", None) is not None:
        kind = header_field(path, header, "matcher.kind", "a string")
        if kind not in ("zeroshot", "clip"):
            raise bad_field(path, "matcher.kind", f"is {kind!r}, not 'zeroshot' or 'clip'")
        if kind == "clip":
            for key in ("arch", "weights", "sha256"):
                header_field(path, header, f"matcher.{key}", "a string")
    header_field(path, header, "model", "an object")
    for key in ("use_cmer", "use_cmle"):
        header_field(path, header, f"model.{key}", "true or false")
    # CMLE projects the layout's channels to at most as many dims (without CMLE, to all of them).
    int_field(path, header, "model.feature_dim", 1, feature_layout(header.get("features", LEGACY_LAYOUT)).channels)
    # Positive here; bounded by the payload's bank tensor, which load compares it with.
    bank_size = int_field(path, header, "model.bank_size", 1)
    # The kNN search takes 1..MAX_K neighbours (ops.knn; MAX_KNN_K), and a bank holds at most bank_size.
    int_field(path, header, "model.knn_k", 1, min(MAX_KNN_K, bank_size))
    # Format 3 writes the image score's pool in every file, and its threshold was set on that pool:
    # without the field a file would load scored by the map's maximum (other scores, the same
    # threshold) without a word. Files of formats 1 and 2 have none and are scored by the maximum,
    # as they were fitted. Not required of an export's copy (check_model_header): one with no
    # format_version is taken as the current format, and in-memory exports made before format 3
    # carry neither field.
    required = model_file and version >= 3
    if required and "score_top_fraction" not in header["model"]:
        raise bad_field(path, "model.score_top_fraction", f"is missing, which every format-{version} model file "
                                                           "has (the threshold was set on the score it pools)")
    fraction = header_field(path, header, "model.score_top_fraction", "a finite number", 0.0)
    if not 0.0 <= fraction < 1.0:
        raise bad_field(path, "model.score_top_fraction", f"is {fraction}, not in [0, 1)")
    # Read only for reports and warnings (edgecmg info, the Detector's stretch warning), and absent
    # from older files: of the JSON type their readers take where present.
    for section in ("normalization", "training", "created", "threshold_set", "export", "quantization"):
        header_field(path, header, section, "an object", None)
    if "training" in header:
        header_field(path, header, "training.aspect_hw", "a finite number", None)
        header_field(path, header, "training.threshold_left_out", "a list of strings", None)
    if "export" in header:
        header_field(path, header, "export.outputs", "a list of strings", None)
