"""The latency plot (:func:`plot_latency`): one violin and box row per backend, drawn with OpenCV
alone, so reports need no matplotlib on the device.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from edgecmg.errors import ConfigError, DataError
from edgecmg.fileio import atomic_write_bytes
from edgecmg.stream.latency import LatencyStats

__all__ = ["plot_latency"]


# Distinct, colour-blind-friendly hues (Okabe-Ito), in BGR for OpenCV.
_PALETTE_BGR = [
    (178, 114, 0), (0, 159, 230), (115, 158, 0), (167, 121, 204),
    (0, 94, 213), (233, 180, 86), (66, 228, 240), (0, 0, 0),
]


def _nice_step(span: float, max_ticks: int = 8) -> float:
    raw = span / max_ticks
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= raw:
            return m * mag
    return 10 * mag


def _nice_125(v: float, up: bool) -> float:
    """The 1-2-5 series value just above (up) or below v."""
    mag = 10 ** math.floor(math.log10(v))
    steps = (1, 2, 5, 10) if up else (10, 5, 2, 1)
    for m in steps:
        if (up and m * mag >= v) or (not up and m * mag <= v):
            return m * mag
    return mag


class _Axis:
    """Value -> pixel mapping, bin edges and ticks, linear or logarithmic."""

    def __init__(self, lo: float, hi: float, log: bool, x0: int, width: int) -> None:
        self.log, self.x0, self.width = log, x0, width
        if log:
            self.lo, self.hi = _nice_125(lo, up=False), _nice_125(hi, up=True)
            decades = range(math.floor(math.log10(self.lo)), math.ceil(math.log10(self.hi)) + 1)
            self.ticks = [m * 10.0**d for d in decades for m in (1, 2, 5) if self.lo <= m * 10.0**d <= self.hi * 1.0001]
        else:
            step = _nice_step(hi)
            self.lo, self.hi = 0.0, math.ceil(hi / step) * step
            self.ticks = list(np.arange(0.0, self.hi + step / 2, step))

    def _t(self, v: float) -> float:
        v = min(max(v, self.lo), self.hi)
        if self.log:
            return (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        return (v - self.lo) / (self.hi - self.lo)

    def px(self, v: float) -> int:
        return int(round(self.x0 + self._t(float(v)) * self.width))

    def edges(self, n: int) -> np.ndarray:
        if self.log:
            return np.geomspace(self.lo, self.hi, n + 1)
        return np.linspace(self.lo, self.hi, n + 1)


# Plot layout in pixels: a fixed width, one row per backend.
_PLOT_WIDTH, _PLOT_LEFT, _PLOT_RIGHT, _PLOT_TOP, _PLOT_ROW_H, _PLOT_BOTTOM = 1100, 230, 40, 70, 96, 80
_INK, _GRID, _MUTED = (40, 40, 40), (225, 225, 225), (110, 110, 110)


def _latency_series(samples_by_backend: Mapping[str, Any]) -> list[tuple[str, np.ndarray]]:
    """(printable name, finite non-negative samples) per backend, in the mapping's order."""
    from edgecmg.visualize import ascii_text

    if not isinstance(samples_by_backend, Mapping) or not samples_by_backend:
        raise DataError("plot_latency needs a non-empty dict of backend name -> latency samples")
    series: list[tuple[str, np.ndarray]] = []
    for name, values in samples_by_backend.items():
        data = values.samples() if isinstance(values, LatencyStats) else np.asarray(values, dtype=np.float64).ravel()
        data = data[np.isfinite(data) & (data >= 0)]
        series.append((ascii_text(str(name)), data))
    if not any(d.size for _, d in series):
        raise DataError("plot_latency: none of the backends has a finite latency sample to plot")
    return series


def _latency_range(nonempty: list[np.ndarray], log_scale: Optional[bool]) -> tuple[float, float, bool]:
    """(lo, hi, logarithmic) of the shared x axis: from about the smallest p1 to just past the
    largest p99, logarithmic when that spans more than 30x unless ``log_scale`` says otherwise."""
    hi = max(max(float(np.percentile(d, 99)) for d in nonempty) * 1.1, 1e-3)
    positive = [d[d > 0] for d in nonempty]
    lo = min((float(np.percentile(d, 1)) for d in positive if d.size), default=hi / 10)
    lo = max(lo / 1.2, hi * 1e-6)
    return lo, hi, log_scale if log_scale is not None else hi / lo > 30


def _draw_plot_frame(img: np.ndarray, axis: "_Axis", rows: int, title: str, unit: str) -> None:
    """Row shading, grid, ticks, axis label, title and legend."""
    import cv2

    from edgecmg.visualize import ascii_text

    font = cv2.FONT_HERSHEY_SIMPLEX
    width, height = img.shape[1], img.shape[0]
    top, right = _PLOT_TOP, width - _PLOT_RIGHT
    axis_y = top + _PLOT_ROW_H * rows
    # Alternate row shading, then the grid on top of it so the ticks stay visible.
    for i in range(1, rows, 2):
        cv2.rectangle(img, (axis.x0, top + i * _PLOT_ROW_H), (right, top + (i + 1) * _PLOT_ROW_H),
                      (247, 247, 247), -1)
    for t in axis.ticks:
        x = axis.px(float(t))
        cv2.line(img, (x, top), (x, axis_y), _GRID, 1)
        cv2.line(img, (x, axis_y), (x, axis_y + 6), _INK, 1)
        label = f"{float(t):g}"
        (tw, th), _ = cv2.getTextSize(label, font, 0.45, 1)
        cv2.putText(img, label, (x - tw // 2, axis_y + 12 + th), font, 0.45, _INK, 1, cv2.LINE_AA)
    cv2.line(img, (axis.x0, axis_y), (right, axis_y), _INK, 1)
    axis_label = ascii_text(f"latency ({unit}{', log scale' if axis.log else ''})")
    (tw, _), _ = cv2.getTextSize(axis_label, font, 0.55, 1)
    cv2.putText(img, axis_label, (axis.x0 + axis.width // 2 - tw // 2, height - 20), font, 0.55, _INK, 1,
                cv2.LINE_AA)
    cv2.putText(img, ascii_text(title), (axis.x0, 32), font, 0.75, _INK, 2, cv2.LINE_AA)
    legend = "violin: distribution   box: p25-p75   bar: p50   whiskers: p1-p99"
    cv2.putText(img, legend, (axis.x0, 56), font, 0.42, _MUTED, 1, cv2.LINE_AA)


def _draw_latency_row(img: np.ndarray, axis: "_Axis", edges: np.ndarray, i: int, name: str,
                      data: np.ndarray) -> None:
    """Row ``i``: the name and p50/p99/n on the left, then violin, whiskers, box, median bar and a
    count of the samples beyond the axis."""
    import cv2

    from edgecmg.visualize import ascii_text

    font, px = cv2.FONT_HERSHEY_SIMPLEX, axis.px
    colour = _PALETTE_BGR[i % len(_PALETTE_BGR)]
    light = tuple(int(255 - (255 - c) * 0.35) for c in colour)
    cy = _PLOT_TOP + i * _PLOT_ROW_H + _PLOT_ROW_H // 2
    name_text = name if len(name) <= 24 else name[:23] + "~"
    cv2.putText(img, name_text, (12, cy - 8), font, 0.58, _INK, 1, cv2.LINE_AA)
    if not data.size:
        cv2.putText(img, "no samples", (12, cy + 16), font, 0.45, _MUTED, 1, cv2.LINE_AA)
        return
    q1, q25, q50, q75, q99 = np.percentile(data, [1, 25, 50, 75, 99])
    stats_text = f"p50 {q50:.3g}  p99 {q99:.3g}  n={data.size}"
    cv2.putText(img, ascii_text(stats_text), (12, cy + 16), font, 0.42, (90, 90, 90), 1, cv2.LINE_AA)

    violin = _violin_outline(axis, edges, data, cy)
    if violin is not None:
        cv2.fillPoly(img, [violin], light, cv2.LINE_AA)
        cv2.polylines(img, [violin], True, colour, 1, cv2.LINE_AA)

    cv2.line(img, (px(q1), cy), (px(q99), cy), _INK, 1, cv2.LINE_AA)
    for q in (q1, q99):
        cv2.line(img, (px(q), cy - 6), (px(q), cy + 6), _INK, 1, cv2.LINE_AA)
    box = ((px(q25), cy - 9), (max(px(q75), px(q25) + 2), cy + 9))
    cv2.rectangle(img, box[0], box[1], colour, -1)
    cv2.rectangle(img, box[0], box[1], _INK, 1)
    cv2.line(img, (px(q50), cy - 14), (px(q50), cy + 14), _INK, 3)
    beyond = int(np.count_nonzero(data > axis.hi))
    if beyond:
        note = f"+{beyond} > {axis.hi:g}"
        (tw, _), _ = cv2.getTextSize(note, font, 0.4, 1)
        cv2.putText(img, note, (img.shape[1] - _PLOT_RIGHT - tw, cy - _PLOT_ROW_H // 2 + 16), font, 0.4,
                    (0, 0, 200), 1, cv2.LINE_AA)


def _violin_outline(axis: "_Axis", edges: np.ndarray, data: np.ndarray, cy: int) -> Optional[np.ndarray]:
    """The violin's polygon: the smoothed histogram mirrored about row centre ``cy``, drawn only
    over the bins that hold samples (None when none does)."""
    counts, _ = np.histogram(np.clip(data, axis.lo, None), bins=edges)
    kernel = np.array([1, 2, 3, 2, 1], np.float64) / 9.0  # light smoothing: a shape, not noise
    dens = np.convolve(counts.astype(np.float64), kernel, mode="same")
    nz = np.flatnonzero(dens > dens.max() * 1e-3) if dens.max() > 0 else []
    if not len(nz):
        return None
    mids = np.sqrt(edges[:-1] * edges[1:]) if axis.log else (edges[:-1] + edges[1:]) / 2
    a, b = int(nz[0]), int(nz[-1]) + 1
    xs = [axis.px(float(c)) for c in mids[a:b]]
    half = dens[a:b] / dens.max() * (_PLOT_ROW_H * 0.42)
    upper = [(x, int(cy - h)) for x, h in zip(xs, half)]
    lower = [(x, int(cy + h)) for x, h in zip(reversed(xs), half[::-1])]
    return np.array(upper + lower, np.int32)



def plot_latency(
    samples_by_backend: Mapping[str, Union[Sequence[float], np.ndarray, LatencyStats]],
    path: Union[str, os.PathLike],
    *,
    title: str = "Latency per frame",
    unit: str = "ms",
    log_scale: Optional[bool] = None,
) -> Path:
    """Draw the latency distribution of each backend as a violin + box row; write an image.

    Per row: a mirrored histogram (the violin: where the samples lie), a box from p25 to p75,
    a bar at the median, whiskers p1..p99, and the name with p50/p99/n on the left. All rows
    share one x axis that ends just past the largest p99, so a few slow outliers do not squash
    everything (samples beyond it are counted at the row's right edge). When backends differ by
    more than ~30x (TensorRT next to torch on CPU), the axis is logarithmic so the fast ones stay
    visible; ``log_scale`` forces either.

    Args:
        samples_by_backend: name -> latency samples in ``unit`` (or a LatencyStats).
        path: output file; ``.png`` (recommended), ``.jpg`` or ``.bmp``.

    Returns:
        The path written.

    Raises:
        DataError: no backend has any finite sample.
        ConfigError: unsupported file extension, or the file cannot be written.
    """
    import cv2

    out = Path(path)
    ext = out.suffix.lower()
    if ext not in (".png", ".jpg", ".jpeg", ".bmp"):
        raise ConfigError(f"plot path {out} must end in .png (or .jpg/.bmp)")
    series = _latency_series(samples_by_backend)
    lo, hi, use_log = _latency_range([d for _, d in series if d.size], log_scale)

    height = _PLOT_TOP + _PLOT_ROW_H * len(series) + _PLOT_BOTTOM
    img = np.full((height, _PLOT_WIDTH, 3), 255, np.uint8)
    axis = _Axis(lo, hi, use_log, _PLOT_LEFT, _PLOT_WIDTH - _PLOT_LEFT - _PLOT_RIGHT)
    _draw_plot_frame(img, axis, len(series), title, unit)
    edges = axis.edges(max(20, min(150, axis.width // 5)))
    for i, (name, data) in enumerate(series):
        _draw_latency_row(img, axis, edges, i, name, data)

    ok, encoded = cv2.imencode(ext, img)
    if not ok:
        raise ConfigError(f"OpenCV could not encode the plot as {ext}")
    return atomic_write_bytes(out, encoded.tobytes(), what="the plot", sync=False)  # bytes: any path on every OS
