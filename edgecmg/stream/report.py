"""Latency statistics and the benchmark report (``edgecmg bench`` / ``edgecmg stream``).

Everything here keeps bounded memory so it can run for days on a Jetson: :class:`LatencyStats`
holds a fixed-size ring of recent samples plus running totals. The latency plot is drawn with
OpenCV alone, so reports need no matplotlib on the device.
"""
from __future__ import annotations

import csv
import datetime as _dt
import importlib
import importlib.metadata as _md
import io
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, TextIO, Union

import numpy as np

from edgecmg import distributions
from edgecmg.errors import ConfigError, DataError
from edgecmg.fileio import atomic_write_bytes

__all__ = ["LatencyStats", "LiveStatusLine", "environment_info", "write_report", "plot_latency", "markdown_table"]


# --------------------------------------------------------------------------------------------
# latency statistics
# --------------------------------------------------------------------------------------------
class LatencyStats:
    """Streaming latency statistics in bounded memory.

    ``count``, ``mean``, ``min`` and ``max`` cover every sample ever added. Quantiles
    (``p50``/``p90``/``p99``, :meth:`percentile`) and ``fps`` cover the most recent ``window``
    samples (a ring buffer), which is exact for any benchmark shorter than the window and "the
    recent past" for a long-running stream, where that is what one wants to watch anyway.

    Empty statistics report ``nan`` (``None`` in :meth:`summary`), never a misleading 0.
    """

    def __init__(self, window: int = 10_000) -> None:
        if int(window) < 2:
            raise ConfigError(f"LatencyStats window={window} must be >= 2")
        self.window = int(window)
        self._ms = np.zeros(self.window, dtype=np.float64)
        self._t = np.zeros(self.window, dtype=np.float64)  # perf_counter() of each add, for fps
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._next = 0  # ring write position
            self._count = 0
            self._sum = 0.0
            self._min = math.inf
            self._max = -math.inf

    # ---- adding ---------------------------------------------------------------------------
    def add(self, ms: float) -> None:
        """Record one latency sample in milliseconds (finite, >= 0)."""
        value = float(ms)
        if not (math.isfinite(value) and value >= 0.0):
            raise DataError(f"latency sample {ms!r} ms must be a finite number >= 0")
        now = time.perf_counter()
        with self._lock:
            self._ms[self._next] = value
            self._t[self._next] = now
            self._next = (self._next + 1) % self.window
            self._count += 1
            self._sum += value
            self._min = min(self._min, value)
            self._max = max(self._max, value)

    def extend(self, samples: Iterable[float]) -> "LatencyStats":
        for ms in samples:
            self.add(ms)
        return self

    @classmethod
    def from_samples(cls, samples: Iterable[float], window: Optional[int] = None) -> "LatencyStats":
        values = [float(v) for v in samples]
        stats = cls(window or max(2, len(values)))
        return stats.extend(values)

    # ---- reading --------------------------------------------------------------------------
    def samples(self) -> np.ndarray:
        """The samples in the window, oldest first (a copy)."""
        with self._lock:
            n = min(self._count, self.window)
            if self._count <= self.window:
                return self._ms[:n].copy()
            return np.concatenate([self._ms[self._next:], self._ms[: self._next]])

    def __len__(self) -> int:
        return self._count

    @property
    def count(self) -> int:
        return self._count

    @property
    def mean(self) -> float:
        return self._sum / self._count if self._count else math.nan

    @property
    def min(self) -> float:
        return self._min if self._count else math.nan

    @property
    def max(self) -> float:
        return self._max if self._count else math.nan

    def percentile(self, q: float) -> float:
        """The q-th percentile (0..100) of the windowed samples, linear interpolation."""
        if not 0.0 <= float(q) <= 100.0:
            raise ConfigError(f"percentile q={q} must be within 0..100")
        data = self.samples()
        return float(np.percentile(data, q)) if data.size else math.nan

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p90(self) -> float:
        return self.percentile(90)

    @property
    def p99(self) -> float:
        return self.percentile(99)

    @property
    def fps(self) -> float:
        """Samples per second of wall time over the window (throughput, not 1000/latency).

        Falls back to ``1000 / mean`` while fewer than two samples span measurable time.
        """
        with self._lock:
            n = min(self._count, self.window)
            if n >= 2:
                newest = self._t[(self._next - 1) % self.window]
                oldest = self._t[self._next % self.window] if self._count > self.window else self._t[0]
                span = newest - oldest
                if span > 0:
                    return (n - 1) / span
        mean = self.mean
        return 1000.0 / mean if self._count and mean > 0 else math.nan

    def summary(self, prefix: str = "") -> dict[str, Optional[float]]:
        """JSON-ready numbers (``None`` where undefined), keys optionally prefixed."""
        data = self.samples()
        q = np.percentile(data, [50, 90, 99]) if data.size else [math.nan] * 3
        values = {
            "count": self._count,
            "mean_ms": self.mean,
            "p50_ms": float(q[0]),
            "p90_ms": float(q[1]),
            "p99_ms": float(q[2]),
            "min_ms": self.min,
            "max_ms": self.max,
            "fps": self.fps,
        }
        return {f"{prefix}{k}": _clean_number(v) for k, v in values.items()}

    def __repr__(self) -> str:
        if not self._count:
            return "LatencyStats(empty)"
        return (
            f"LatencyStats(n={self._count}, mean={self.mean:.3f} ms, p50={self.p50:.3f} ms, "
            f"p99={self.p99:.3f} ms, max={self.max:.3f} ms)"
        )


def _clean_number(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return round(v, 4) if math.isfinite(v) else None
    return v


# --------------------------------------------------------------------------------------------
# environment
# --------------------------------------------------------------------------------------------
def _read_text(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8", "replace").replace("\x00", "").strip() or None
    except OSError:
        return None


def _cpu_model() -> Optional[str]:
    info = _read_text("/proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "Processor", "cpu model"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", info, re.MULTILINE)
        if m:
            return m.group(1).strip()
    return platform.processor() or platform.machine() or None


def _dist_version(*names: str) -> Optional[str]:
    for name in names:
        try:
            return _md.version(name)
        except _md.PackageNotFoundError:
            continue
    return None


def _module_version(module: str, *dists: str) -> Optional[str]:
    """Version from package metadata, else from the module (JetPack installs TensorRT/OpenCV
    through apt, without pip metadata)."""
    version = _dist_version(*dists) if dists else None
    if version:
        return version
    try:
        mod = importlib.import_module(module)
    except Exception:  # not installed, or broken native libraries: report as absent
        return None
    return str(getattr(mod, "__version__", "") or "") or None


def _nvidia_driver() -> Optional[str]:
    text = _read_text("/proc/driver/nvidia/version")
    if text:
        m = re.search(r"Kernel Module\s+(?:for\s+\S+\s+)?([0-9][0-9.]+)", text)
        if m:
            return m.group(1)
    exe = shutil.which("nvidia-smi")
    if exe:
        try:
            out = subprocess.run(
                [exe, "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=5, check=False,
            ).stdout.strip()
            return out.splitlines()[0].strip() if out else None
        except (OSError, subprocess.SubprocessError):
            return None
    return None


def _onnxruntime_version() -> Optional[str]:
    return _dist_version(*distributions.ONNXRUNTIME)


def _triton_version() -> Optional[str]:
    try:
        from edgecmg.kernels import _common
    except Exception:  # noqa: BLE001  (edgecmg.kernels imports torch, which environment_info must survive without)
        return _dist_version(*distributions.TRITON)
    if not _common.triton_installed():
        return None
    return _common.triton_version() or "installed, version unknown"


def environment_info() -> dict[str, Any]:
    """What a benchmark ran on: device, CPU, drivers and library versions (None = absent).

    ``device`` is the CUDA device name when torch sees one, else the CPU model (``/proc/cpuinfo``,
    or the board name on a Jetson via ``/proc/device-tree/model``).
    """
    board = _read_text("/proc/device-tree/model")
    cpu = _cpu_model()
    info: dict[str, Any] = {
        "device": None,
        "device_type": "cpu",
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "board": board,
        "jetson_l4t": _read_text("/etc/nv_tegra_release"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "nvidia_driver": None,
        "cuda_runtime": None,
        "cudnn": None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": None,
        "onnxruntime": _onnxruntime_version(),
        "tensorrt": _module_version("tensorrt", "tensorrt", "tensorrt-cu12", "tensorrt-cu11"),
        "triton": _triton_version(),  # the kernels need 3.4 or later
        "opencv": _module_version("cv2"),
        "edgecmg": _dist_version("edgecmg"),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda_runtime"] = torch.version.cuda
        if torch.cuda.is_available():
            info["device"] = torch.cuda.get_device_name(0)
            info["device_type"] = "cuda"
            try:
                info["cudnn"] = torch.backends.cudnn.version()
            except Exception:
                pass
    except Exception:  # torch absent or its CUDA libraries broken: still report the rest
        pass
    if info["device_type"] == "cuda" or info["jetson_l4t"]:
        info["nvidia_driver"] = _nvidia_driver()
    if info["device"] is None:
        info["device"] = board if info["jetson_l4t"] and board else cpu
    return info


# --------------------------------------------------------------------------------------------
# report files
# --------------------------------------------------------------------------------------------
def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (Path, os.PathLike)):
        return os.fspath(obj)
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    return str(obj)


def _sanitize(obj: Any) -> Any:
    """NaN/inf -> None (strict JSON has no NaN), numpy scalars -> Python."""
    if isinstance(obj, Mapping):
        return {str(k): _sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_sanitize(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _is_latency_summary(v: Any) -> bool:
    return isinstance(v, Mapping) and "p50_ms" in v and "p99_ms" in v


def _fmt_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if not math.isfinite(f):
            return "-"
        a = abs(f)
        if a == 0:
            return "0"
        if a >= 100:
            return f"{f:.1f}"
        if a >= 1:
            return f"{f:.2f}"
        return f"{f:.3g}"
    if _is_latency_summary(v):
        # A latency summary reads as its median and tail; the JSON and CSV keep every quantile.
        return f"{_fmt_cell(v['p50_ms'])} / {_fmt_cell(v['p99_ms'])}"
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(_sanitize(v), default=_json_default)
    return str(v)


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    cols: dict[str, None] = {}
    for row in rows:
        for key in row:
            cols.setdefault(str(key), None)
    return list(cols)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[str]] = None) -> str:
    """Rows as a GitHub markdown table (columns in first-seen order; missing cells blank; a latency
    summary, a dict with ``p50_ms`` and ``p99_ms``, shows as "p50 / p99")."""
    if not rows:
        return "_(no rows)_\n"
    cols = list(columns) if columns is not None else _columns(rows)

    def esc(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    def header(col: str) -> str:
        summaries = [r.get(col) for r in rows if r.get(col) is not None]
        return f"{col} p50 / p99" if summaries and all(_is_latency_summary(v) for v in summaries) else col

    lines = ["| " + " | ".join(esc(header(c)) for c in cols) + " |"]
    lines.append("|" + "|".join("---:" if _numeric_column(rows, c) else "---" for c in cols) + "|")
    for row in rows:
        lines.append("| " + " | ".join(esc(_fmt_cell(row.get(c))) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _numeric_column(rows: Sequence[Mapping[str, Any]], col: str) -> bool:
    values = [r.get(col) for r in rows if r.get(col) is not None]
    return bool(values) and all(
        isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) for v in values
    )


def write_report(
    rows: Sequence[Mapping[str, Any]],
    out_dir: Union[str, os.PathLike],
    stem: str,
    *,
    environment: Optional[Mapping[str, Any]] = None,
    echo: bool = False,
) -> str:
    """Write ``<out_dir>/<stem>.json``, ``.csv`` and ``.md``; return the markdown table.

    The JSON holds ``{"created", "environment", "rows"}`` so a result is never separated from
    the machine it was measured on; the CSV holds the rows only (one column per key, first-seen
    order; nested values JSON-encoded), for spreadsheets.

    Args:
        rows: one dict per measured configuration (e.g. backend x batch size).
        environment: what to record as the environment; default :func:`environment_info`.
            Pass ``{}`` to leave it out.
        echo: also print the table to stdout.

    Raises:
        DataError: a row is not a mapping.
        ConfigError: ``stem`` is empty or contains a path separator.
    """
    if isinstance(rows, Mapping) or not isinstance(rows, Sequence):
        raise DataError(f"rows must be a list of dicts (one per configuration), got {type(rows).__name__}")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise DataError(f"rows[{i}] is a {type(row).__name__}; every row must be a dict of column -> value")
    if not stem or not str(stem).strip() or any(sep in stem for sep in ("/", "\\", os.sep)):
        raise ConfigError(f"stem={stem!r} must be a plain file name without folders, e.g. 'bench_orin'")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the report folder {out}: {exc}; choose a writable out_dir") from exc

    clean_rows = [_sanitize(dict(r)) for r in rows]
    env = environment_info() if environment is None else dict(environment)
    payload = {
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "environment": _sanitize(env),
        "rows": clean_rows,
    }
    text = json.dumps(payload, indent=2, default=_json_default, allow_nan=False) + "\n"
    atomic_write_bytes(out / f"{stem}.json", text.encode("utf-8"), what="the report", sync=False)

    cols = _columns(clean_rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in clean_rows:
        writer.writerow({
            c: (json.dumps(row[c], default=_json_default) if isinstance(row.get(c), (dict, list)) else row.get(c))
            for c in cols
        })
    atomic_write_bytes(out / f"{stem}.csv", buf.getvalue().encode("utf-8"), what="the report", sync=False)

    table = markdown_table(clean_rows, cols)
    device = env.get("device") if env else None
    header = f"# {stem}\n\n" + (f"Device: {device}\n\n" if device else "")
    atomic_write_bytes(out / f"{stem}.md", (header + table).encode("utf-8"), what="the report", sync=False)
    if echo:
        print(table, end="")
    return table


# --------------------------------------------------------------------------------------------
# latency plot (OpenCV only)
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# live terminal status
# --------------------------------------------------------------------------------------------
class LiveStatusLine:
    """One self-overwriting terminal line: ``12.3 fps | p50 41.2 ms | p99 80.4 ms | drops 3``.

    Rendering is throttled to ``min_interval_s`` (a few per second: faster only costs CPU and
    flickers). When the stream is not a terminal (logs, CI), carriage returns would garble the
    file, so complete lines, each starting with the local time, are written instead, at most every
    ``max(min_interval_s, 5)`` s.

    ``update(...)`` takes the numbers; ``update_from(stats)`` takes a
    :class:`~edgecmg.stream.pipeline.StreamStats` (or anything with the same attributes).
    """

    def __init__(
        self,
        stream: Optional[TextIO] = None,
        *,
        min_interval_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        width: Optional[int] = None,
    ) -> None:
        if not min_interval_s >= 0:
            raise ConfigError(f"min_interval_s={min_interval_s} must be >= 0")
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.is_tty = bool(isatty()) if callable(isatty) else False
        self.interval_s = min_interval_s if self.is_tty else max(min_interval_s, 5.0)
        self._clock = clock
        self._width = width
        self._last: Optional[float] = None
        self._last_text = ""
        self._dirty = False  # a TTY line is on screen without a newline after it

    @staticmethod
    def format(
        *,
        fps: float,
        p50_ms: float,
        p99_ms: float,
        drops: int = 0,
        reconnects: int = 0,
        frames: Optional[int] = None,
        extra: str = "",
    ) -> str:
        def num(v: Optional[float], fmt: str) -> str:
            return format(v, fmt) if v is not None and math.isfinite(v) else "-"

        parts = [f"{num(fps, '6.1f')} fps", f"p50 {num(p50_ms, '.1f')} ms", f"p99 {num(p99_ms, '.1f')} ms",
                 f"drops {int(drops)}"]
        if reconnects:
            parts.append(f"reconnects {int(reconnects)}")
        if frames is not None:
            parts.append(f"frames {int(frames)}")
        if extra:
            parts.append(extra)
        return " | ".join(parts)

    def update(self, *, force: bool = False, **fields: Any) -> bool:
        """Render if ``min_interval_s`` has passed (or ``force``); True if something was written.

        Fields: ``fps``, ``p50_ms``, ``p99_ms``, ``drops``, optional ``reconnects``, ``frames``,
        ``extra`` (see :meth:`format`).
        """
        now = self._clock()
        if not force and self._last is not None and now - self._last < self.interval_s:
            return False
        self._last = now
        text = self.format(**fields)
        self._write(text)
        return True

    def update_from(self, stats: Any, *, force: bool = False, extra: str = "") -> bool:
        """Render from a StreamStats-like object (``fps``/``recent_fps``, ``latency_ms`` or
        ``capture_wait_ms``, ``frames_dropped``, ``reconnects``, ``frames_yielded``)."""
        now = self._clock()
        if not force and self._last is not None and now - self._last < self.interval_s:
            return False  # decided before computing quantiles: they are the expensive part
        lat = getattr(stats, "latency_ms", None)
        if lat is None or not getattr(lat, "count", 0):
            lat = getattr(stats, "capture_wait_ms", None)
        fps = getattr(stats, "recent_fps", None)
        if fps is None or not math.isfinite(fps):
            fps = getattr(stats, "fps", math.nan)
        return self.update(
            force=True,
            fps=fps,
            p50_ms=lat.p50 if lat is not None else math.nan,
            p99_ms=lat.p99 if lat is not None else math.nan,
            drops=getattr(stats, "frames_dropped", 0),
            reconnects=getattr(stats, "reconnects", 0),
            frames=getattr(stats, "frames_yielded", None),
            extra=extra,
        )

    def _write(self, text: str) -> None:
        if self.is_tty:
            cols = self._width or shutil.get_terminal_size((100, 20)).columns
            text = text[: max(10, cols - 1)]  # a wrapped line could not be overwritten with \r
            self.stream.write("\r" + text + "\x1b[K")
            self._dirty = True
        else:  # a log file or a service's log: each line says when (not every log adds a time)
            self.stream.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
        self._last_text = text
        self.stream.flush()

    @property
    def last_text(self) -> str:
        return self._last_text

    def close(self) -> None:
        """End the line so following output starts on a fresh one."""
        if self._dirty:
            self.stream.write("\n")
            self.stream.flush()
            self._dirty = False

    def __enter__(self) -> "LiveStatusLine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
