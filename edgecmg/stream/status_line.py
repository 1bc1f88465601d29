"""The live status of a running stream (:class:`LiveStatusLine`): one self-overwriting line on a
terminal, lines that each start with the time in a log.
"""
from __future__ import annotations

import math
import os
import shutil
import sys
import time
from typing import Any, Callable, Optional, TextIO

from edgecmg.errors import ConfigError

__all__ = ["LiveStatusLine"]


#: How log and status lines say when: local time with its UTC offset (+0200), so that a log read in
#: another zone, or the hour a daylight-saving change repeats, is not ambiguous.
LOG_TIME = "%Y-%m-%d %H:%M:%S%z"


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
        # A dumb terminal (TERM=dumb: an editor's shell, some CI consoles) shows escape codes as text.
        self.is_tty = callable(isatty) and bool(isatty()) and os.environ.get("TERM") != "dumb"
        self.interval_s = min_interval_s if self.is_tty else max(min_interval_s, 5.0)
        self._clock = clock
        self._width = width
        self._last: Optional[float] = None
        self._last_text = ""
        self._dirty = False  # a TTY line is on screen without a newline after it
        self._lost: Optional[OSError] = None  # the error that ended the output (a reader gone): silent since

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
        """Render if ``min_interval_s`` has passed (or ``force``); True if something was written (in a
        log, not a line the same as the one before it).

        Fields: ``fps``, ``p50_ms``, ``p99_ms``, ``drops``, optional ``reconnects``, ``frames``,
        ``extra`` (see :meth:`format`).
        """
        now = self._clock()
        if not force and self._last is not None and now - self._last < self.interval_s:
            return False
        self._last = now
        return self._write(self.format(**fields))

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
        frames = getattr(stats, "frames_yielded", None)
        if frames is not None and frames < 2:
            fps = math.nan  # one frame's rate is its start-up time, not a rate (it read 85 fps at 10)
        return self.update(
            force=True,
            fps=fps,
            p50_ms=lat.p50 if lat is not None else math.nan,
            p99_ms=lat.p99 if lat is not None else math.nan,
            drops=getattr(stats, "frames_dropped", 0),
            reconnects=getattr(stats, "reconnects", 0),
            frames=frames,
            extra=extra,
        )

    def _write(self, text: str) -> bool:
        """Show ``text``; False where a log already ends with it (a log keeps every line: the end's
        forced update repeated the last periodic one; a terminal's line is redrawn in place either way)."""
        if not self.is_tty and text == self._last_text:
            return False
        self._last_text = text
        if self.is_tty:
            cols = self._width or shutil.get_terminal_size((100, 20)).columns
            text = text[: max(10, cols - 1)]  # a wrapped line could not be overwritten with \r
            self._put("\r" + text + "\x1b[K")
            self._dirty = self._lost is None
        else:  # a log file or a service's log: each line says when (not every log adds a time)
            self._put(f"{time.strftime(LOG_TIME)} {text}\n")
        return True

    def _put(self, text: str) -> None:
        """Write and flush; an output that fails (the pipe's reader gone, a full disk, a closed terminal)
        is given up quietly, as logging gives up a line: a status line must never stop the stream."""
        if self._lost is not None:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed
            self._lost = exc if isinstance(exc, OSError) else OSError(str(exc))
            self._dirty = False

    @property
    def lost(self) -> Optional[OSError]:
        """Why the status output stopped (its reader went away, ...); None while it works."""
        return self._lost

    @property
    def last_text(self) -> str:
        return self._last_text

    def close(self) -> None:
        """End the line so following output starts on a fresh one."""
        if self._dirty:
            self._put("\n")
            self._dirty = False

    def __enter__(self) -> "LiveStatusLine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
