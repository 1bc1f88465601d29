"""Latency statistics in bounded memory (:class:`LatencyStats`), for the stream pipeline,
``edgecmg bench`` and ``edgecmg stream``.

It keeps a fixed-size ring of recent samples plus running totals, so it can run for days on a
Jetson.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Any, Iterable, Optional

import numpy as np

from edgecmg.errors import ConfigError, DataError

__all__ = ["LatencyStats"]


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
