"""Per-frame result type.

The array fields carry the names of the exported graph's outputs (``score``, ``anomaly_map``,
``kept_mask``), so one contract runs from the torch model through ONNX to a TensorRT engine.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from edgecmg.errors import DataError, EdgeCMGError

# Output names of every exported graph and engine, in order.
OUTPUT_NAMES = ("score", "anomaly_map", "kept_mask")
INPUT_NAME = "image"


@dataclass(frozen=True)
class Timings:
    """Wall times of one frame, in milliseconds.

    preprocess, inference, postprocess: the stages of judging the frame; ``total`` is their sum,
        the frame's processing time.
    capture_wait (streams): how long the consumer waited for this frame to be captured; idle time,
        not part of ``total`` (large values mean the camera, not the model, sets the pace).
    latency (streams): capture -> result, queueing included: how stale the verdict is when it
        arrives.
    Both are None for ``predict`` and ``predict_batch``, which have no capture (null in JSON: not
    measured, rather than a 0 that reads like a measurement).
    """

    capture_wait: Optional[float] = None
    preprocess: float = 0.0
    inference: float = 0.0
    postprocess: float = 0.0
    latency: Optional[float] = None

    @property
    def total(self) -> float:
        return self.preprocess + self.inference + self.postprocess

    def to_dict(self) -> dict[str, Optional[float]]:
        return {
            "capture_wait_ms": None if self.capture_wait is None else round(self.capture_wait, 3),
            "preprocess_ms": round(self.preprocess, 3),
            "inference_ms": round(self.inference, 3),
            "postprocess_ms": round(self.postprocess, 3),
            "total_ms": round(self.total, 3),
            "latency_ms": None if self.latency is None else round(self.latency, 3),
        }


@dataclass(frozen=True, eq=False)  # compared by identity: == on the arrays inside would raise
class Result:
    """What a detector says about one frame.

    score: image-level anomaly score (higher = more anomalous).
    is_anomaly: ``score >= threshold``; also True for a score that is not a finite number (NaN, or an
        infinity of either sign: a computation that overflowed), which no good part gives: a part the
        model could not score is not passed.
    anomaly_map: float32 [H, W] at the input frame's resolution (at the model's input size where the
        detector's ``map_size`` is "model"), measured from the normal level: about
        0 where the part scores as good parts do at that place, negative below, positive above.
    kept_mask: bool [g, g], the CMER grid cells that gate the image score (all True when CMER is off).
    timings: this frame's stage times; frames judged in one call (``predict_batch``, a stream's
        batch) share the call's time divided by their number.
    frame_index: a stream's frame number (counted from 0 at the source); the position in the list
        for ``predict_batch``; 0 for ``predict``.
    timestamp: ``time.time()`` when a stream captured the frame, or when ``predict`` judged it.
    source: where a stream's frame came from (the source, or an image folder's file).
    """

    score: float
    threshold: float
    anomaly_map: np.ndarray
    kept_mask: np.ndarray
    timings: Timings = field(default_factory=Timings)
    frame_index: int = 0
    timestamp: float = 0.0
    source: str = ""
    #: the frame that was judged, so overlays can be drawn: the caller's own array when it was contiguous
    #: uint8 RGB already (a reference, not a copy), otherwise its converted copy
    frame: Optional[np.ndarray] = field(default=None, repr=False, compare=False)

    @property
    def is_anomaly(self) -> bool:
        # `NaN >= t` and `-inf >= t` are False: a broken input or model would pass every part. Fail safe instead.
        return bool(self.score >= self.threshold) or not math.isfinite(self.score)

    def __repr__(self) -> str:
        # Short on purpose: the dataclass default would print the whole map.
        h, w = self.anomaly_map.shape[:2] if self.anomaly_map.ndim >= 2 else (0, 0)
        return (f"Result(score={self.score:.4g}, threshold={self.threshold:.4g}, is_anomaly={self.is_anomaly}, "
                f"map={h}x{w}, kept_cells={int(self.kept_mask.sum())}/{self.kept_mask.size}, "
                f"total_ms={self.timings.total:.1f}, frame_index={self.frame_index}, source={self.source!r})")

    def _repr_png_(self) -> Optional[bytes]:
        """PNG of :meth:`overlay`, which Jupyter shows as the result's picture: the heat map over the
        judged frame, or over black where the result carries no frame. None (the text repr is shown
        instead) where nothing can be drawn: a repr must not raise."""
        import cv2

        try:
            if self.frame is None:
                black = np.zeros((*self.anomaly_map.shape[-2:], 3), np.uint8)
                rgb = self.overlay(black, alpha=1.0)  # the heat map alone, with its outline and label
            else:
                rgb = self.overlay()
            ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        except (EdgeCMGError, cv2.error, ValueError, TypeError):  # an empty or malformed map, a non-finite threshold
            return None
        return png.tobytes() if ok else None

    def overlay(self, frame: Optional[np.ndarray] = None, alpha: float = 0.45, *,
                dst: Optional[np.ndarray] = None) -> np.ndarray:
        """Heat map blended over ``frame`` (default: the judged frame); returns uint8 RGB, drawn into
        ``dst`` where given (see :func:`edgecmg.visualize.overlay_heatmap`; ``dst=frame`` saves a
        frame-sized array when the frame is not needed after). RGB, as the frame: for ``cv2.imwrite``
        or ``cv2.imshow`` convert it with ``cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR)`` (or write it
        with :func:`edgecmg.visualize.save_png`)."""
        from edgecmg.visualize import overlay_heatmap

        if frame is None:
            frame = self.frame
        if frame is None:
            raise DataError("this result carries no frame: pass the frame to overlay()")
        if dst is None and isinstance(frame, np.ndarray) and frame.dtype != np.uint8:
            from edgecmg.imageio import to_rgb_uint8

            frame = to_rgb_uint8(frame)  # 16-bit or float, as predict() took it (dst= draws into uint8 only)
        return overlay_heatmap(frame, self.anomaly_map, self.threshold, alpha=alpha, label=self.label, dst=dst)

    @property
    def label(self) -> str:
        """What :meth:`overlay` writes in the corner: the verdict first (what a small frame keeps when
        the rest is cut), then the score against the threshold, e.g. ``ANOMALY 5.8141 (threshold 3.08)``.
        Both in one format: rounding is monotonic, so a score never reads as on the other side of the
        threshold than its verdict (12.385 against 12.38 read "12.385 (threshold 12.4)")."""
        return f"{'ANOMALY' if self.is_anomaly else 'ok'} {self.score:.5g} (threshold {self.threshold:.5g})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the map itself is left out; save it with ``overlay`` or numpy)."""
        return {
            "frame_index": self.frame_index,
            "timestamp": self.timestamp,
            "source": self.source,
            "score": _json_number(self.score),
            "threshold": _json_number(self.threshold),
            "is_anomaly": self.is_anomaly,
            "kept_mask": self.kept_mask.astype(int).tolist(),
            "map_max": _json_number(self.anomaly_map.max()) if self.anomaly_map.size else None,
            **self.timings.to_dict(),
        }


def _json_number(value: Any) -> Optional[float]:
    """A float for a JSON line, or None for NaN and infinities, which JSON has no words for (json.dumps
    writes them as NaN, which jq and most parsers refuse). Not rounded: a score rounded with its
    threshold could come out equal to it while ``is_anomaly`` said no (``score >= threshold`` in a
    script then disagreed with the record's own verdict), and read differently from scores.csv."""
    number = float(value)
    return number if math.isfinite(number) else None
