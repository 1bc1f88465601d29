"""The calibration cache: activation ranges of a calibration run, reusable across quantisations.

A JSON file (``M.int8.calib.json`` beside the output by default)::

    {"format": "edgecmg-calibration-cache", "version": 1,
     "key": {"method", "samples", "symmetric", "artifact_sha256", "input_size", "data", "images"},
     "ranges": {tensor name: [low, high]}, "images_read": N, "sha256": "..."}

``images_read`` is how many images the ranges came from: fewer than asked for when the folder ran out
of readable ones (absent in caches written before it was recorded). ``sha256`` seals the key and the
ranges (SHA-256 of their canonical JSON, see ``_checksum``): ranges edited or damaged after calibrate
wrote them look like any others, and reused they make an INT8 model that flags good parts run after
run, so a cache whose ranges no longer match it is recalibrated. A cache written before it existed
loads (``sealed`` False) but calibrate does not reuse it either.

It is reused when its key matches the current run (same method, sample count, histogram symmetry,
model file and data files) and it holds a range for every tensor to quantise; otherwise the ranges
are computed again and the file is rewritten. Ranges are plain floats: any Q/DQ tool can use them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from edgecmg.fileio import atomic_write_bytes, not_ours

log = logging.getLogger("edgecmg")

CACHE_FORMAT = "edgecmg-calibration-cache"
CACHE_VERSION = 1

#: float16's largest value: TensorRT runs the layers it does not quantise in float16, so a range past
#: it is no activation of a working engine (the ranges of edgecmg's graphs stay under 100).
LARGEST_RANGE = 65504.0


def _plausible(lo: float, hi: float) -> bool:
    """A damaged or edited range (NaN, 1e38) made a quantiser's assertion or an INT8 model that flags
    every part: only finite ranges inside float16's reach are used. Their order is not checked: the
    percentile calibrator writes a constant tensor's range the wrong way round ([6.0, 5.994] for
    ReLU6's), and ONNX Runtime quantises it as it is."""
    return math.isfinite(lo) and math.isfinite(hi) and max(abs(lo), abs(hi)) <= LARGEST_RANGE


def _checksum(key: Any, ranges: dict[str, list[float]]) -> str:
    """SHA-256 of ``key`` and ``ranges`` as canonical JSON (sorted keys, no spaces), as read back from
    the file: indenting or reordering the file leaves it, any changed number or name does not.
    ``images_read`` is left out: it only counts images for the header (and older caches lack it)."""
    canonical = json.dumps({"key": key, "ranges": ranges}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass
class CalibrationCache:
    key: dict[str, Any]
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    images_read: Optional[int] = None
    #: False for a cache loaded from a file written before caches carried a checksum: its ranges may
    #: have been edited or damaged since, and nothing tells, so calibrate measures them again.
    sealed: bool = field(default=True, compare=False)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "key": self.key,
                   "ranges": {k: [float(lo), float(hi)] for k, (lo, hi) in sorted(self.ranges.items())}}
        # Sealed as load will see it: through JSON (tuples become lists, keys strings), so the two agree.
        as_read = json.loads(json.dumps({"key": payload["key"], "ranges": payload["ranges"]}))
        payload["sha256"] = _checksum(as_read["key"], as_read["ranges"])
        if self.images_read is not None:
            payload["images_read"] = int(self.images_read)
        return atomic_write_bytes(path, json.dumps(payload, indent=1, sort_keys=True).encode("utf-8"),
                                  what="the calibration cache", sync=False)

    @classmethod
    def load(cls, path: str | Path) -> Optional["CalibrationCache"]:
        """The cache at ``path``, or None when absent, unreadable or changed since it was written (logged)."""
        path = Path(path)
        if not path.is_file():
            return None
        foreign = not_ours(path)
        if foreign is not None:  # its checksum tells damage, not who wrote it: another user's ranges are not used
            log.warning("calibration cache %s %s; recalibrating (the file is written again)", path, foreign)
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != CACHE_FORMAT or int(data.get("version", 0)) > CACHE_VERSION:
                log.warning("%s is not an edgecmg calibration cache (or a newer one); recalibrating", path)
                return None
            ranges = {str(k): (float(v[0]), float(v[1])) for k, v in data["ranges"].items()}
            bad = next((name for name, (lo, hi) in ranges.items() if not _plausible(lo, hi)), None)
            if bad is not None:
                log.warning("calibration cache %s holds the range %s for %s, which no activation of a working "
                            "engine has (not finite, or beyond float16's 65,504); recalibrating", path,
                            list(ranges[bad]), bad)
                return None
            key = dict(data["key"])
            sealed = "sha256" in data
            if sealed and data["sha256"] != _checksum(key, {k: list(v) for k, v in ranges.items()}):
                log.warning("calibration cache %s does not match the checksum calibrate saved in it: its ranges or "
                            "key were edited or damaged since, and reused they would make a wrong INT8 model; "
                            "recalibrating (the file is written again)", path)
                return None
            images_read = data.get("images_read")
            return cls(key, ranges, None if images_read is None else int(images_read), sealed=sealed)
        # Damaged, or JSON of another shape. Numbers past float's reach (1e400 is infinity, which int()
        # refuses; a 400-digit integer, which float() refuses) and JSON nested deeper than Python's
        # recursion limit are damage too: they ended calibrate with a traceback.
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, OverflowError, RecursionError) as exc:
            log.warning("calibration cache %s is unreadable (%s); recalibrating", path, exc)
            return None

    def mismatch(self, key: dict[str, Any], tensors: Iterable[str]) -> Optional[str]:
        """Why this cache cannot serve a run with ``key`` needing ``tensors``; None when it can."""
        for name in sorted(set(key) | set(self.key)):
            if self.key.get(name) != key.get(name):
                return f"{name} differs (cache {self.key.get(name)!r}, now {key.get(name)!r})"
        missing = [t for t in tensors if t not in self.ranges]
        if missing:
            return f"{len(missing)} tensor range(s) missing (e.g. {missing[:3]})"
        return None
