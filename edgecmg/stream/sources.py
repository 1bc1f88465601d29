"""Frame sources: one small interface over everything a detector can watch.

``open_source`` turns what a user types (a camera index, a video file, an image folder or glob,
an ``rtsp://`` / ``http(s)://`` URL, a GStreamer pipeline, ``csi://N`` on a Jetson) or what a
program holds (any iterable of numpy frames) into a :class:`FrameSource`. Every source hands out
:class:`Frame` objects whose image is ``uint8`` ``[H, W, 3]`` **RGB**, the SDK-wide convention;
OpenCV's BGR never leaks past this module.

Live sources (cameras, network streams, GStreamer, CSI) are reopened with exponential back-off
when they fail mid-stream; files simply end. Video-capture objects are created through an
``opener`` callable (default: ``cv2.VideoCapture`` with the right backend), which is also the
seam tests use to inject captures that fail on purpose, and the way a capture the user opened
(``open_source(cap)``) is read: its opener hands back the user's object instead of a new one.
"""
from __future__ import annotations

import logging
import math
import os
import re
import stat
import threading
import time
from abc import ABC, abstractmethod
from decimal import Decimal
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Protocol, Union
from urllib.parse import parse_qs, urlsplit, urlunsplit

import cv2
import numpy as np

from edgecmg.config import StreamConfig
from edgecmg.distributions import major_minor
from edgecmg.errors import ConfigError, DataError, MissingFileError, MissingSourceError, StreamError
from edgecmg.imageio import channels_first_batch, is_pil_image, is_tensor, to_rgb_uint8
from edgecmg.magic import git_lfs_pointer

__all__ = [
    "Frame",
    "FrameSource",
    "CaptureSource",
    "ImageFilesSource",
    "IterableSource",
    "VideoCaptureLike",
    "Opener",
    "open_source",
    "csi_pipeline",
    "NETWORK_SCHEMES",
]

_log = logging.getLogger("edgecmg")
V4L2_MAJOR = 81  # Linux's character-device major number of video4linux (/dev/videoN)

#: URL schemes opened through FFmpeg as live network streams.
NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
# A URL whose path names one of these is a recording served over the network where its capture counts
# frames: read to its end, every frame, as a local file is (read as a live camera, each end of the file
# was an outage, and each "reconnect" replayed it from frame 0, for ever).
RECORDING_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm")
# Containers without a frame index, whose frame count OpenCV estimates as duration x frame rate.
ESTIMATED_COUNT_SUFFIXES = (".mkv", ".webm", ".ts", ".m2ts", ".mts", ".flv")
# Files a folder may hold that stream reads only when given one by one (named where a folder is given).
VIDEO_SUFFIXES = tuple(dict.fromkeys(RECORDING_SUFFIXES + ESTIMATED_COUNT_SUFFIXES + (".mjpeg", ".h264", ".h265",
                                                                                   ".hevc")))

# Back-off doubles per attempt; past this it stops growing so a long outage is still polled
# (unless the user's own base delay is longer, which we respect).
_MAX_BACKOFF_S = 30.0
# A recording's read() returns False both at its end and on a frame it cannot decode, and OpenCV
# carries on after a damaged frame; only this many failed reads in a row mean the end of the file.
_FILE_END_READS = 16

# csi:// sensors default to a mode every Jetson CSI camera module supports.
_CSI_DEFAULT_SIZE = (1280, 720)
_CSI_DEFAULT_FPS = 30.0
_CSI_QUERY_KEYS = ("width", "height", "fps", "flip")


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured frame.

    image: ``uint8`` ``[H, W, 3]`` RGB.
    index: the frame's position in its source, from 0: the items and frames the source skipped
        (unreadable files, ``None`` or unusable items, undecodable video frames) are counted, so
        the index names the item of a list or the frame of a video file; monotonic across
        reconnects and loops. A live source's index starts at the first frame after the one read
        at open to check it delivers (not delivered: stale by the time it would be judged).
    timestamp: ``time.time()`` when the frame was captured (wall clock, for logs and results).
    source: the source's display name (credentials masked).
    """

    image: np.ndarray = field(repr=False)  # the whole array was some 70 lines of repr: its shape says enough
    index: int
    timestamp: float
    source: str

    def __repr__(self) -> str:
        return (f"Frame(index={self.index}, timestamp={self.timestamp!r}, source={self.source!r}, "
                f"image_shape={getattr(self.image, 'shape', None)})")


class VideoCaptureLike(Protocol):
    """The part of ``cv2.VideoCapture`` a :class:`CaptureSource` uses (``set``/``get`` optional)."""

    def isOpened(self) -> bool: ...  # noqa: N802 (OpenCV's spelling)

    def read(self) -> tuple[bool, Optional[np.ndarray]]: ...

    def release(self) -> None: ...


#: Frames a second --realtime (``StreamConfig.realtime``) plays a source without a rate of its own at
#: (image files, an iterable, a video whose container says none) where capture_fps is not given.
DEFAULT_PACE_FPS = 30.0

#: Makes a capture object from a target: an int camera index, a path, a URL or a pipeline string.
Opener = Callable[[Union[int, str]], VideoCaptureLike]


# --------------------------------------------------------------------------------------------
# the interface
# --------------------------------------------------------------------------------------------
class FrameSource(ABC):
    """Where frames come from. Subclasses implement ``_next_image`` and ``_release``.

    ``read()`` returns the next :class:`Frame`, or ``None`` at the end of the stream (or once
    closed). ``close()`` may be called from any thread, also while another thread is blocked in
    ``read()`` (e.g. sleeping in a reconnect back-off): the read then returns ``None`` promptly
    and the underlying device is released by whichever thread finishes last with it, so OpenCV
    never sees a capture released under a running ``read``.

    Counters: ``frames_read``, ``corrupt_skipped`` (unreadable images / missing frames skipped),
    ``reconnects`` (successful reopenings of a live source; for a capture the user passed, which
    cannot be reopened, the outages it came back from).
    """

    def __init__(self, name: str, *, is_live: bool, config: StreamConfig) -> None:
        self.name = name
        self.is_live = bool(is_live)
        self.config = config
        self.frames_read = 0
        self.corrupt_skipped = 0
        self.reconnects = 0
        self.reconnecting = False  # in a reconnect's back-off or reopen (the pipeline's stall warning waits)
        self._closed = threading.Event()
        self._io_lock = threading.Lock()
        self._released = False
        # Real-time pacing of non-live sources (StreamConfig.realtime); None = as fast as possible.
        self._pace_fps: Optional[float] = None
        self._pace_next: Optional[float] = None

    @property
    def frame_rate(self) -> Optional[float]:
        """Frames per second the source reports (a video file's or camera's rate), None if unknown."""
        return None

    # ---- subclass hooks -------------------------------------------------------------------
    @abstractmethod
    def _next_image(self) -> Optional[np.ndarray]:
        """Next RGB uint8 image, or None at the end. Called with the I/O lock held."""

    def _release(self) -> None:
        """Free the device or file handles. Called once, with the I/O lock held."""

    # ---- public ---------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def read(self) -> Optional[Frame]:
        """Next frame, or ``None`` at the end of the stream or after ``close()``.

        Raises:
            StreamError: the source failed beyond recovery (e.g. reconnects exhausted).
        """
        with self._io_lock:
            frame = self._read_locked()
        if self._closed.is_set():
            # close() may have run while we held the lock and could not release; do it now.
            self._release_if_idle()
        return frame

    def close(self) -> None:
        """Stop the source and release the device; idempotent and safe from any thread."""
        self._closed.set()
        self._release_if_idle()

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        """Frames until the end of the stream (synchronous; StreamPipeline adds a capture thread)."""
        while True:
            frame = self.read()
            if frame is None:
                return
            yield frame

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"{type(self).__name__}({self.name!r}, live={self.is_live}, {state}, frames_read={self.frames_read})"

    # ---- internals ------------------------------------------------------------------------
    def _read_locked(self) -> Optional[Frame]:
        if self._closed.is_set():
            self._release_once()
            return None
        image = self._next_image()
        if image is None or self._closed.is_set():
            return None
        if self._pace_fps and not self._pace():
            return None
        frame = Frame(image=image, index=self.frames_read + self.corrupt_skipped, timestamp=time.time(),
                      source=self._frame_source())
        self.frames_read += 1
        return frame

    def _frame_source(self) -> str:
        """What a frame's ``source`` names: the source itself; an image folder, the file."""
        return self.name

    def _pace(self) -> bool:
        """Sleep until this frame's slot at ``_pace_fps``; False if closed meanwhile."""
        period = 1.0 / self._pace_fps
        now = time.perf_counter()
        if self._pace_next is None or self._pace_next < now - period:
            # First frame, or the consumer stalled (back-pressure): resynchronise instead of
            # releasing a burst of catch-up frames, which no real camera would do.
            self._pace_next = now
        delay = self._pace_next - now
        self._pace_next += period
        return not (delay > 0 and self._closed.wait(delay))

    def _wait(self, seconds: float) -> bool:
        """Sleep that close() interrupts; True if still open afterwards."""
        return not self._closed.wait(seconds)

    def _release_if_idle(self) -> None:
        if self._io_lock.acquire(blocking=False):
            try:
                self._release_once()
            finally:
                self._io_lock.release()
        # else: another thread is inside read(); it releases on its way out (see read()).

    def _release_once(self) -> None:
        if self._released:
            return
        self._released = True
        try:
            self._release()
        except Exception as exc:  # a failing release must not mask the reason we are closing
            _log.warning("%s: error while releasing the source: %s", self.name, exc)


# --------------------------------------------------------------------------------------------
# OpenCV captures: cameras, files, network, GStreamer, CSI
# --------------------------------------------------------------------------------------------
class CaptureSource(FrameSource):
    """Frames from a ``cv2.VideoCapture``-like object made by ``opener(target)``.

    kind: ``"camera"``, ``"file"``, ``"network"``, ``"gstreamer"`` or ``"csi"`` (for messages and
    defaults), or ``"capture"`` for a capture the user opened and passed (see :func:`open_source`):
    ``opener`` then returns that object, never releases it, and a "reconnect" reads it again. The
    first frame is read at open time so a device that opens but delivers nothing fails here, with a
    message, rather than later in a background thread. For files (and a user's capture of a
    recording) that frame is kept; for live sources it is discarded because it would be stale by
    the time it is consumed.
    """

    def __init__(
        self,
        target: Union[int, str],
        *,
        name: str,
        kind: str,
        is_live: bool,
        config: StreamConfig,
        opener: Opener,
        open_hint: str = "",
        counted_is_recording: bool = False,
    ) -> None:
        super().__init__(name, is_live=is_live, config=config)
        self.kind = kind
        # A network URL naming a video file: a recording where the opened capture counts its frames.
        self._counted_is_recording = counted_is_recording
        self._borrowed = kind == "capture"  # the user's own capture: not ours to release or reopen
        # Read to its end, its frame count compared; looped by reopening (a user's capture refuses loop).
        self._recording = kind == "file" or (self._borrowed and not is_live)
        self._target = target
        self._opener = opener
        self._cap: Optional[VideoCaptureLike] = None
        self._pending: Optional[np.ndarray] = None
        self._outage_attempts = 0  # reconnect attempts since the last good frame
        self._frames_since_open = 0
        self._frame_rate: Optional[float] = None
        self._frame_count: Optional[int] = None  # the container's own count, video files only
        self._skipped_before_pass = 0  # corrupt_skipped when this pass over a file began
        self._short_warned = False
        self._open_first(open_hint)

    # ---- opening --------------------------------------------------------------------------
    def _try_open(self) -> tuple[Optional[VideoCaptureLike], str]:
        """(capture, "") when opened, else (None, why); never raises."""
        try:
            cap = self._opener(self._target)
        except Exception as exc:
            return None, f"{type(exc).__name__}: {exc}"
        if cap is None:
            return None, "the opener returned None"
        try:
            opened = bool(cap.isOpened())
        except Exception as exc:
            opened, why = False, f"{type(exc).__name__}: {exc}"
        else:
            why = "it is not open (isOpened() is False)" if self._borrowed else "the capture backend could not open it"
        if not opened:
            _safe_release(cap)
            return None, why
        return cap, ""

    def _open_first(self, hint: str) -> None:
        cap, why = self._try_open()
        if cap is None:
            raise StreamError(f"cannot open {self.kind} source {self.name}: {why}. {hint}".rstrip())
        self._cap = cap
        ok, raw, why = self._grab()
        if not ok:
            self._release_cap()
            if self._recording:
                raise StreamError(
                    f"{self.name} opened but holds no decodable video frame ({why}); the file is empty, "
                    "truncated or in a codec this OpenCV build lacks; re-encode it "
                    "(e.g. ffmpeg -i in.mp4 -c:v libx264 out.mp4)"
                )
            raise StreamError(f"{self.kind} source {self.name} opened but delivered no frame ({why}). {hint}".rstrip())
        self._frames_since_open = 1
        counted = self._container_frames() if self._counted_is_recording else None
        if counted is not None:
            self.is_live, self._recording = False, True  # a camera's stream counts no frames
            _log.info("%s: a recording (its container counts %d frames): read to its end, every frame", self.name,
                      counted)
        # Read once here: later the capture thread owns the device (and may be reopening it).
        self._frame_rate = self._native_fps()
        if self._recording:
            self._frame_count = self._container_frames()
        if not self.is_live:
            self._pending = self._convert(raw)
            if self.config.realtime:
                self._pace_fps = self._frame_rate or self.config.capture_fps or DEFAULT_PACE_FPS

    @property
    def frame_rate(self) -> Optional[float]:
        return self._frame_rate

    def _native_fps(self) -> Optional[float]:
        # From a time-lapse's frame a minute to a high-speed camera's; backends say 0 (or 90000) for "unknown".
        return self._cap_value(cv2.CAP_PROP_FPS, 0.01, 10000)

    def _container_frames(self) -> Optional[int]:
        count = self._cap_value(cv2.CAP_PROP_FRAME_COUNT, 1, 1e9)
        return None if count is None else int(count)

    def _cap_value(self, prop: int, lo: float, hi: float) -> Optional[float]:
        """A capture property, or None where the backend (or a fake capture) has no sensible value."""
        try:
            value = float(self._cap.get(prop))
        except Exception:
            return None
        return value if math.isfinite(value) and lo <= value <= hi else None

    def _warn_if_short(self) -> None:
        """A cut-off recording decodes up to the cut and then ends like a whole one: compare.

        Called at the end of each pass over the file; said once, as a looping benchmark would
        otherwise repeat it every pass.
        """
        seen = self._frames_since_open + self.corrupt_skipped - self._skipped_before_pass
        self._skipped_before_pass = self.corrupt_skipped
        # Containers' counts can be off: by a frame or two (edit lists, B-frame delay), or more where
        # the count is estimated from duration x fps (MKV, WebM, TS, variable frame rates).
        if self._frame_count is not None and not self._short_warned and seen < 0.95 * self._frame_count - 2:
            self._short_warned = True
            target = str(self._target)  # a URL's path; a local file's name may hold '#' or '?'
            if (urlsplit(target).path if self.kind == "network" else target).lower().endswith(ESTIMATED_COUNT_SUFFIXES):
                # a complete file whose frame rate varies (a 10 s pause in a recording) reads short of it too
                _log.warning("%s: ended after %d of about %d frames (its duration x frame rate: this container "
                             "holds no frame count); the file may be truncated (check it plays to the end), or "
                             "its frame rate varies", self.name, seen, self._frame_count)
            else:
                _log.warning("%s: ended after %d of the %d frames its container lists; the file looks truncated "
                             "or damaged (check it plays to the end, or copy it again)", self.name, seen,
                             self._frame_count)

    # ---- reading --------------------------------------------------------------------------
    def _grab(self) -> tuple[bool, Optional[np.ndarray], str]:
        cap = self._cap
        if cap is None:
            return False, None, "the capture is closed"
        try:
            ok, raw = cap.read()
        except Exception as exc:  # OpenCV and fake captures alike
            return False, None, f"read() raised {type(exc).__name__}: {exc}"
        if not ok or raw is None or getattr(raw, "size", 0) == 0:
            return False, None, "read() returned no frame"
        return True, raw, ""

    def _convert(self, raw: np.ndarray) -> np.ndarray:
        try:
            return to_rgb_uint8(raw, bgr=True)
        except DataError as exc:
            raise StreamError(f"{self.name} delivered an unusable frame: {exc}") from exc

    def _next_image(self) -> Optional[np.ndarray]:
        if self._pending is not None:
            image, self._pending = self._pending, None
            return image
        failed_reads = 0
        while not self._closed.is_set():
            ok, raw, why = self._grab()
            if ok:
                if failed_reads:
                    last_good = self.frames_read + self.corrupt_skipped - 1  # its index (Frame.index)
                    self.corrupt_skipped += failed_reads
                    _log.warning("%s: skipped %d undecodable frame(s) after frame %d", self.name, failed_reads,
                                 last_good)
                if self._outage_attempts and self._borrowed:
                    # Nothing was reopened (see _reopen): the capture came back by itself.
                    self.reconnects += 1
                    _log.warning("%s: delivers frames again after %d attempt(s)", self.name, self._outage_attempts)
                self._outage_attempts = 0
                self._frames_since_open += 1
                return self._convert(raw)
            if self.is_live:
                if not self._reconnect(why):
                    return None  # closed during the back-off
                continue
            if why.startswith("read() raised"):
                raise StreamError(f"{self.name}: decoding failed after {self.frames_read} frames: {why}")
            failed_reads += 1
            if failed_reads < _FILE_END_READS:
                continue  # a damaged frame, or the end: the next reads tell
            if self.config.loop and self._frames_since_open > 0:
                self._warn_if_short()
                # Reopen rather than seek: CAP_PROP_POS_FRAMES is unreliable for many codecs.
                self._release_cap()
                cap, why = self._try_open()
                if cap is None:
                    raise StreamError(f"{self.name}: could not reopen the file to loop it: {why}")
                self._cap = cap
                self._frames_since_open = 0
                failed_reads = 0
                continue
            self._warn_if_short()
            return None
        return None

    def _reconnect(self, reason: str) -> bool:
        """Reopen a failed live source with exponential back-off. False if closed meanwhile.

        The attempt budget covers one outage: it is reset only by a good frame, so a device that
        reopens but never delivers still ends in StreamError instead of looping forever.
        """
        self.reconnecting = True
        try:
            return self._reopen(reason)
        finally:
            self.reconnecting = False

    def _reopen(self, reason: str) -> bool:
        attempts = self.config.reconnect_attempts
        base = self.config.reconnect_backoff_s
        self._release_cap()
        # A capture the user passed cannot be reopened: edgecmg does not know what it was opened on, nor
        # how it was configured, and must not release it. Its "reopen" is the opener handing the same
        # object back, so the same back-off and attempt budget decide: each attempt reads it again. A
        # backend that recovers by itself (a triggered camera's read timeout, a network hiccup) goes on;
        # one that does not ends in StreamError, as any live source lost beyond its reconnects (not in
        # a quiet end of stream, which would read as a camera that merely stopped).
        if self._outage_attempts == 0:
            _log.warning(
                "%s: stream failed after %d frames (%s); %s (up to %d attempts)",
                self.name, self.frames_read, reason,
                "reading it again: edgecmg cannot reopen a capture it was given" if self._borrowed
                else "reconnecting", attempts,
            )
        waited = 0.0
        while self._outage_attempts < attempts:
            delay = min(base * (2 ** self._outage_attempts), max(_MAX_BACKOFF_S, base))
            self._outage_attempts += 1
            if not self._wait(delay):
                return False
            waited += delay
            cap, why = self._try_open()
            if cap is not None and self._borrowed:
                self._cap = cap  # the same object: counted as a reconnect only once it delivers (_next_image)
                return True
            if cap is not None:
                self._cap = cap
                self._frames_since_open = 0
                self.reconnects += 1
                _log.warning(
                    "%s: reconnected on attempt %d/%d (%d reconnect(s) in total)",
                    self.name, self._outage_attempts, attempts, self.reconnects,
                )
                return True
            if self._borrowed:  # closed (released by its owner?): no wait makes it open again
                raise StreamError(f"capture source {self.name} failed ({reason}) and now reports it is closed "
                                  "(isOpened() is False); edgecmg cannot reopen a capture it was given: open it "
                                  "again and call stream() again")
            _log.warning("%s: reconnect attempt %d/%d failed: %s", self.name, self._outage_attempts, attempts, why)
        if self._borrowed:
            raise StreamError(
                f"capture source {self.name} failed ({reason}) and could not be read again after {attempts} "
                "attempt(s) with back-off between them; edgecmg cannot reopen a capture it was given: open it "
                "again and call stream() again, or pass the camera index, URL or pipeline so that edgecmg "
                "reconnects it itself (allow more attempts with StreamConfig(reconnect_attempts=))"
            )
        raise StreamError(
            f"{self.kind} source {self.name} failed ({reason}) and could not be reopened after "
            f"{attempts} attempt(s) over {waited:.1f}s of back-off; check the camera, cable or network, "
            "or allow more attempts (edgecmg stream --reconnect-attempts N; in Python "
            "StreamConfig(reconnect_attempts=, reconnect_backoff_s=))"
        )

    def _release_cap(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            _safe_release(cap)

    def _release(self) -> None:
        self._pending = None
        self._release_cap()


def _safe_release(cap: Any) -> None:
    try:
        cap.release()
    except Exception as exc:
        _log.debug("ignoring error from capture.release(): %s", exc)


class _BorrowedCapture:
    """A capture the user opened, as :class:`CaptureSource` reads it (the opener of ``kind="capture"``).

    ``release()`` does nothing: the capture is the user's, who may read it again after the stream or
    hand it to another one. An object with only ``read()`` counts as open (no ``isOpened()``) and
    as having no properties (no ``get()``: no frame rate or count).
    """

    def __init__(self, cap: Any) -> None:
        self.cap = cap

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's spelling)
        is_opened = getattr(self.cap, "isOpened", None)
        return True if is_opened is None else bool(is_opened())

    def read(self) -> tuple[bool, Optional[np.ndarray]]:
        return self.cap.read()

    def get(self, prop: int) -> float:
        return self.cap.get(prop)  # an AttributeError here reads as "no value" (CaptureSource._cap_value)

    def release(self) -> None:
        pass


# --------------------------------------------------------------------------------------------
# image folders / globs
# --------------------------------------------------------------------------------------------
class ImageFilesSource(FrameSource):
    """Frames from a list of image files, in order. Unreadable files are skipped and counted.

    If *every* file fails to decode the stream ends with a StreamError, because a folder of
    nothing but corrupt files is a mistake worth stopping for.
    """

    def __init__(self, paths: list[Path], *, name: str, config: StreamConfig, is_live: bool = False) -> None:
        super().__init__(name, is_live=is_live, config=config)
        if not paths:
            raise StreamError(f"{name}: no image files to read")
        self._paths = list(paths)
        self._pos = 0
        self._good_this_pass = 0
        self._last_path: Optional[Path] = None
        if config.realtime and not is_live:
            self._pace_fps = config.capture_fps or DEFAULT_PACE_FPS

    def _next_image(self) -> Optional[np.ndarray]:
        from edgecmg.imageio import read_image

        while not self._closed.is_set():
            if self._pos >= len(self._paths):
                if self.config.loop and self._good_this_pass:
                    self._pos, self._good_this_pass = 0, 0
                    continue
                if self.frames_read == 0 and self.corrupt_skipped:
                    raise StreamError(
                        f"{self.name}: none of the {len(self._paths)} image(s) could be decoded; "
                        "check the files (see the warnings above for each one)"
                    )
                return None
            path = self._paths[self._pos]
            self._pos += 1
            try:
                image = read_image(path)
            except (DataError, OSError, ValueError) as exc:
                self.corrupt_skipped += 1
                _log.warning("%s: skipping unreadable image %s: %s", self.name, path, exc)
                continue
            self._good_this_pass += 1
            self._last_path = path
            return image
        return None

    def _frame_source(self) -> str:
        return str(self._last_path) if self._last_path is not None else self.name


# --------------------------------------------------------------------------------------------
# in-memory frames
# --------------------------------------------------------------------------------------------
class IterableSource(FrameSource):
    """Frames from any iterable of arrays (list, generator, camera-SDK iterator, N×H×W×C array).

    Items are normalised with :func:`to_rgb_uint8` (``bgr``: from OpenCV's BGR order) and copied
    (producers may reuse one buffer). ``None`` items mean "no frame this time" (SDK timeouts):
    skipped and counted as corrupt. An item that is not a usable frame (an empty buffer, a wrong
    shape) is skipped with a warning and counted too, so one bad buffer does not stop an inspection
    line; if no item at all was usable (none given, every one None or unusable), the stream ends
    with a StreamError.
    """

    def __init__(self, frames: Iterable[Any], *, name: str, is_live: bool, config: StreamConfig,
                 bgr: bool = False) -> None:
        super().__init__(name, is_live=is_live, config=config)
        self._bgr = bool(bgr)
        self._iterable = frames
        try:
            self._it = iter(frames)
        except TypeError as exc:
            raise StreamError(f"{name}: the object is not iterable: {exc}") from exc
        if config.loop and self._it is frames:
            raise ConfigError(
                f"{name}: StreamConfig.loop needs a re-iterable sequence (a list or array), not a one-shot "
                "iterator or generator; pass list(frames) or turn loop off"
            )
        self._items_this_pass = 0
        self._good_this_pass = 0  # a pass that yields no frame is not repeated: loop=True would spin
        self._passes = 0
        self._unusable = 0  # items that were neither a frame nor None
        if config.realtime and not is_live:
            self._pace_fps = config.capture_fps or DEFAULT_PACE_FPS

    def _next_image(self) -> Optional[np.ndarray]:
        while not self._closed.is_set():
            try:
                item = next(self._it)
            except StopIteration:
                if self.config.loop and self._good_this_pass:
                    self._it, self._items_this_pass, self._good_this_pass = iter(self._iterable), 0, 0
                    self._passes += 1
                    continue
                if self.frames_read == 0:
                    raise StreamError(self._why_no_frame())
                return None
            except Exception as exc:
                raise StreamError(
                    f"{self.name}: the frame iterator raised {type(exc).__name__} after {self.frames_read} "
                    f"frames: {exc}"
                ) from exc
            position = self._items_this_pass
            self._items_this_pass += 1
            if item is None:
                self.corrupt_skipped += 1
                _log.debug("%s: item %d is None; skipped", self.name, position)
                continue
            if isinstance(item, (str, os.PathLike)):
                raise StreamError(f"{self.name}: item {position} is the path {os.fspath(item)!r}, not a frame: pass "
                                  "a list of paths (read as image files), a folder or a glob, or read each "
                                  "file with edgecmg.imageio.read_image")
            try:
                frame = to_rgb_uint8(item, bgr=self._bgr, copy=True)
            except DataError as exc:
                self.corrupt_skipped += 1
                self._unusable += 1
                # Once per item: a looped sequence would say it again on every pass.
                _log.log(logging.WARNING if self._passes == 0 else logging.DEBUG,
                         "%s: skipping item %d, not a usable frame: %s", self.name, position, exc)
                continue
            self._good_this_pass += 1
            return frame
        return None

    def _why_no_frame(self) -> str:
        items = self.corrupt_skipped  # every item so far was skipped: None or unusable
        if items == 0:
            return (f"{self.name}: the frames given hold no item (an empty list, array or iterator); a camera "
                    "SDK's iterator that ends at once ends here too")
        if self._unusable == 0:
            return (f"{self.name}: each of its {items} item(s) was None (no frame): the camera or SDK delivered "
                    "nothing; check its trigger and timeouts")
        return (f"{self.name}: none of its {items} item(s) was a usable frame ({self._unusable} not a frame, "
                f"{items - self._unusable} None); see the warnings above for each one")

    def _release(self) -> None:
        # Drop our references; the iterator belongs to the caller, so we do not close() it.
        self._it = iter(())
        self._iterable = ()


# --------------------------------------------------------------------------------------------
# Jetson CSI
# --------------------------------------------------------------------------------------------
def csi_pipeline(
    sensor_id: int = 0,
    width: int = _CSI_DEFAULT_SIZE[0],
    height: int = _CSI_DEFAULT_SIZE[1],
    fps: float = _CSI_DEFAULT_FPS,
    flip_method: int = 0,
    output_size: Optional[tuple[int, int]] = None,
) -> str:
    """GStreamer pipeline string for a Jetson CSI camera (``nvarguscamerasrc``), for OpenCV.

    The sensor delivers NV12 into NVMM (GPU) memory; ``nvvidconv`` (hardware) flips/scales and
    converts to BGRx in system memory; ``videoconvert`` drops the padding byte to the BGR that
    ``appsink`` hands OpenCV. ``drop=1 max-buffers=1`` keep only the newest frame in appsink:
    ``drop`` alone does nothing while ``max-buffers`` is unlimited (its default), and a slow
    consumer would otherwise see ever older frames.

    Args:
        sensor_id: CSI port (``sensor-id`` of nvarguscamerasrc).
        width, height, fps: sensor mode to request (must be one the sensor offers).
        flip_method: nvvidconv flip-method, 0..7 (0 none, 2 rotate 180, ...).
        output_size: (width, height) after nvvidconv scaling; default = sensor size.
    """
    if isinstance(sensor_id, bool) or not isinstance(sensor_id, (int, np.integer)) or sensor_id < 0:
        raise ConfigError(f"CSI sensor_id={sensor_id!r} must be an integer >= 0")
    if int(width) < 1 or int(height) < 1:
        raise ConfigError(f"CSI size {width}x{height} must be positive")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ConfigError(f"CSI fps={fps!r} must be a positive number")
    if flip_method not in range(8):
        raise ConfigError(f"CSI flip_method={flip_method!r} must be 0..7 (see nvvidconv flip-method)")
    out_w, out_h = output_size if output_size is not None else (width, height)
    if int(out_w) < 1 or int(out_h) < 1:
        raise ConfigError(f"CSI output_size {output_size} must be positive")
    rate = _framerate_fraction(float(fps))
    return (
        f"nvarguscamerasrc sensor-id={int(sensor_id)} ! "
        f"video/x-raw(memory:NVMM), width=(int){int(width)}, height=(int){int(height)}, "
        f"format=(string)NV12, framerate=(fraction){rate.numerator}/{rate.denominator} ! "
        f"nvvidconv flip-method={int(flip_method)} ! "
        f"video/x-raw, width=(int){int(out_w)}, height=(int){int(out_h)}, format=(string)BGRx ! "
        "videoconvert ! video/x-raw, format=(string)BGR ! "
        "appsink drop=1 max-buffers=1"
    )


def _framerate_fraction(fps: float) -> Fraction:
    """fps as GStreamer's fraction; NTSC-style rates (29.97, 59.94) become k*1000/1001 exactly,
    which is what sensor drivers advertise (2997/100 would not match their caps)."""
    if float(fps).is_integer():
        return Fraction(int(fps), 1)
    k = round(fps * 1.001)
    if abs(k * 1000 / 1001 - fps) < 0.005:
        return Fraction(k * 1000, 1001)
    return Fraction(fps).limit_denominator(1000)


def _parse_csi(text: str, config: StreamConfig) -> str:
    """``csi://N[?width=W&height=H&fps=F&flip=K]`` -> pipeline string (query overrides config)."""
    parts = urlsplit(text)
    sensor = (parts.netloc or parts.path.lstrip("/")).strip()
    if not sensor.isdigit():
        raise StreamError(f"{text!r}: expected csi://N with N the sensor id (e.g. csi://0)")
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = sorted(set(query) - set(_CSI_QUERY_KEYS))
    if unknown:
        raise StreamError(f"{text!r}: unknown option(s) {unknown}; allowed: {', '.join(_CSI_QUERY_KEYS)}")
    width, height = config.capture_size or _CSI_DEFAULT_SIZE
    fps = config.capture_fps or _CSI_DEFAULT_FPS
    flip = 0
    try:
        width = int(query.get("width", width))
        height = int(query.get("height", height))
        fps = float(query.get("fps", fps))
        flip = int(query.get("flip", flip))
        return csi_pipeline(int(sensor), width, height, fps, flip)
    except (ValueError, ConfigError) as exc:
        raise StreamError(f"{text!r}: {exc}") from exc


# --------------------------------------------------------------------------------------------
# opening
# --------------------------------------------------------------------------------------------
def _mask_url(url: str) -> str:
    """The URL with any password replaced, so names and logs never leak camera credentials."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _default_opener(kind: str, config: StreamConfig) -> Opener:
    """cv2.VideoCapture with the backend and properties each kind of source needs."""

    said_mode = False  # a camera's refused mode is said on the first open, not on every reconnect

    def open_capture(target: Union[int, str]) -> VideoCaptureLike:
        nonlocal said_mode
        if kind == "camera":
            cap = _open_camera_capture(target)
            if cap.isOpened():
                if config.policy in ("latest", "auto"):  # a camera is live: "auto" means "latest"
                    # Drivers queue several frames by default; one keeps what we read current.
                    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
                said_mode = _ask_capture_mode(cap, target, config, quiet=said_mode) or said_mode
            return cap
        if kind == "network":
            return cv2.VideoCapture(str(target), cv2.CAP_FFMPEG, _timeouts(config))
        if kind == "csi" and _opencv_at_least(4, 7):  # GStreamer refuses to open with them before 4.7
            return cv2.VideoCapture(str(target), cv2.CAP_GSTREAMER, _timeouts(config))
        if kind in ("gstreamer", "csi"):
            # A pipeline of the user's own keeps OpenCV's timeouts (30 s from 4.7, none before): it may be
            # a network stream that needs one or a triggered camera that needs none, which edgecmg cannot
            # tell apart. (A camera silent for longer is reconnected as a lost one.)
            return cv2.VideoCapture(str(target), cv2.CAP_GSTREAMER)
        return cv2.VideoCapture(str(target))

    return open_capture


def _timeouts(config: StreamConfig) -> list[int]:
    """OpenCV's open and read timeouts at ``config.timeout_s``, so that a dead camera (or a hung
    nvargus-daemon behind csi://) fails and is reconnected instead of blocking the capture thread."""
    ms = int(config.timeout_s * 1000)
    return [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]


def _open_camera_capture(target: Union[int, str]) -> VideoCaptureLike:
    """A camera by index or device path: through V4L2 on Linux where this OpenCV has it, else
    OpenCV's own choice. For an index, that choice is GStreamer when both are built in (JetPack's
    OpenCV), which ignores the one-frame buffer and reopens its pipeline for each size or rate asked.
    (OpenCV's own warnings as it fails are the process's to keep or not: the CLI holds them back,
    :func:`edgecmg.commands.opencv_warnings_held`; a library must not change process-wide state.)"""
    if os.name == "posix" and _opencv_has_backend(cv2.CAP_V4L2):
        return cv2.VideoCapture(target, cv2.CAP_V4L2)
    return cv2.VideoCapture(target)


def _ask_capture_mode(cap: VideoCaptureLike, target: Union[int, str], config: StreamConfig, *,
                      quiet: bool = False) -> bool:
    """Ask the camera for --capture-size / --capture-fps; say (unless ``quiet``) when it delivers
    something else, since drivers fall back to their nearest mode without an error. True when said
    or when it would have been."""
    asked: list[tuple[str, int, float]] = []
    if config.capture_size is not None:
        asked += [("width", cv2.CAP_PROP_FRAME_WIDTH, config.capture_size[0]),
                  ("height", cv2.CAP_PROP_FRAME_HEIGHT, config.capture_size[1])]
    if config.capture_fps is not None:
        asked.append(("fps", cv2.CAP_PROP_FPS, config.capture_fps))
    accepted = [bool(cap.set(prop, value)) for _, prop, value in asked]
    delivered = [(name, cap.get(prop), value) for name, prop, value in asked]
    refused = [f"{name} {got:g} (asked {value:g})" for name, got, value in delivered
               if got > 0 and abs(got - value) > 0.01 * value]  # 0: the backend cannot tell
    if not refused:
        return False
    if not quiet:
        backend = cap.getBackendName() if hasattr(cap, "getBackendName") else "?"
        why = "" if all(accepted) else f" (OpenCV's {backend} backend did not take every request)"
        _log.warning("camera %s delivers %s%s; v4l2-ctl --list-formats-ext lists its modes: many USB cameras reach "
                     "their full size and rate only in MJPG, which a GStreamer pipeline can ask for", target,
                     ", ".join(refused), why)
    return True


def _opencv_at_least(major: int, minor: int) -> bool:
    """Whether the imported OpenCV is this version or newer (its version reads as 4.8.0, 4.10.0-dev, ...)."""
    found = major_minor(getattr(cv2, "__version__", ""))
    return found is not None and found >= (major, minor)


def _opencv_has_backend(backend: int) -> Optional[bool]:
    """Whether this OpenCV has a video backend; None when it cannot tell (no videoio registry)."""
    try:
        return bool(cv2.videoio_registry.hasBackend(backend))
    except Exception:  # noqa: BLE001 - an OpenCV without the registry API
        return None


def opencv_has_gstreamer() -> Optional[bool]:
    """Whether this OpenCV can open GStreamer pipelines; None when it cannot tell (no videoio registry)."""
    return _opencv_has_backend(cv2.CAP_GSTREAMER)


#: What a Jetson does about an OpenCV without GStreamer (the pip wheel shadowing JetPack's own); env says it too.
JETSON_OPENCV_FIX = ("pip uninstall opencv-python-headless, so that JetPack's own OpenCV (sudo apt install "
                     "nvidia-jetpack) is the one imported, in a venv made with --system-site-packages")


def _gstreamer_hint(custom_opener: bool) -> str:
    if not custom_opener and opencv_has_gstreamer() is False:
        return ("This OpenCV build has no GStreamer support (the pip opencv-python wheels lack it); on Jetson, "
                f"{JETSON_OPENCV_FIX}; elsewhere build OpenCV with -DWITH_GSTREAMER=ON.")
    return "Check the pipeline with gst-launch-1.0 (replace appsink by fakesink) and that it ends in appsink."


def open_source(
    source: Any,
    config: Optional[StreamConfig] = None,
    *,
    opener: Optional[Opener] = None,
    live: Optional[bool] = None,
    bgr: bool = False,
) -> FrameSource:
    """Open anything frames can come from.

    Args:
        source: an int camera index (or a string of digits) or a camera's device path
            (``/dev/video0``, ``/dev/v4l/by-id/...``); a video file path; an image folder,
            single image or glob (``"parts/*.png"``); an ``rtsp://``, ``rtsps://``, ``rtmp://``,
            ``http(s)://``, ``udp://``, ``tcp://`` or ``srt://`` URL; a GStreamer pipeline string
            (contains ``!``, must end in ``appsink``); ``csi://N`` for Jetson CSI sensor N
            (options ``?width=&height=&fps=&flip=``); a list of image file paths; any iterable of
            numpy frames (RGB); an already open :class:`FrameSource` (returned unchanged); or a
            capture you opened and configured yourself: a ``cv2.VideoCapture`` (exposure, size,
            FOURCC set with ``cap.set``) or any other object, not itself iterable, whose ``read()``
            returns ``(ok, frame)`` with BGR frames as OpenCV's does. Such a capture stays yours:
            it is read from the stream's capture thread (do not read it elsewhere meanwhile), never
            released (it is still open when the stream ends; release it yourself), and its settings
            are left alone (``capture_size``/``capture_fps`` are not applied, nor the one-frame
            ``CAP_PROP_BUFFERSIZE`` edgecmg gives the cameras it opens). It is live unless it
            reports a frame count (a video file or image sequence opened with OpenCV, then read as
            its path would be; ``StreamConfig.loop`` is refused, as it cannot be rewound). A live
            one that fails is not reopened, which edgecmg cannot do: after each reconnect back-off
            it is read again, and when no attempt brings a frame the stream ends in StreamError.
        config: stream settings (reconnects, loop, realtime, capture size/fps, timeouts).
        opener: makes a ``cv2.VideoCapture``-like object from the target (int index, path, URL
            or pipeline string) for capture-based sources; default: OpenCV with the right backend.
            Refused with a capture you pass, which is read as it is.
        live: override whether the source counts as live (reconnected on failure, batches not
            waited for). Default: cameras, URLs, GStreamer and CSI are live; files and iterables not;
            a capture you pass, unless it reports a frame count (see above).
        bgr: the frames of an iterable are in OpenCV's BGR order (``cap.read()`` of your own
            capture, ``cv2.imread``) and are swapped to RGB, as ``Detector.predict(bgr=True)`` does.
            Refused for every other source: edgecmg converts what it reads itself.

    A live source must open (and deliver a first frame) on the first try, so a wrong URL or
    camera index fails fast here; reconnects with back-off cover failures after that.

    Raises:
        MissingSourceError: the source names a file, folder or camera device that does not exist
            (a StreamError that is also a FileNotFoundError, as the SDK's loaders raise).
        StreamError: the source cannot be opened (message names it and says what to check).
        ConfigError: an invalid combination of options (e.g. loop over a one-shot generator).
    """
    config = config if config is not None else StreamConfig()
    if not isinstance(config, StreamConfig):
        raise ConfigError(f"config must be a StreamConfig, got {type(config).__name__}")
    if bgr and not _frames_in_memory(source):
        raise ConfigError(
            f"bgr=True is for frames passed in memory (a list, array or iterator of arrays), not a "
            f"{type(source).__name__} source: edgecmg converts the frames it reads from cameras, files and URLs to "
            "RGB itself; leave bgr unset")
    if isinstance(source, FrameSource):
        return source
    if isinstance(source, (bool, np.bool_)):
        raise StreamError(f"source={source!r} is a bool; pass a camera index such as 0, a path or a URL")
    if isinstance(source, (int, np.integer)):
        return _open_camera(int(source), config, opener, live)
    if isinstance(source, (str, os.PathLike)):
        return _open_text(os.fspath(source), config, opener, live)
    if isinstance(source, (bytes, bytearray)):
        raise StreamError("source is bytes; pass a path as str, or decode the image to a numpy array first")
    tensor = is_tensor(source)
    if (isinstance(source, np.ndarray) or tensor) and source.ndim != 4:
        # Iterated, a C x H x W tensor would be judged as C gray frames and an H x W x C one as H rows.
        raise StreamError(
            f"a single {'tensor' if tensor else 'numpy array'} of shape {tuple(source.shape)} is ambiguous as a "
            "source; pass [frame] for one frame (H x W x C; a C x H x W tensor: x.permute(1, 2, 0)), or an "
            "N x H x W x C array / a list of frames for a sequence"
        )
    if (tensor or isinstance(source, np.ndarray)) and channels_first_batch(source.shape):
        raise StreamError(f"a{' tensor' if tensor else 'n array'} of shape {tuple(source.shape)} looks channels-first "
                          "(N x C x H x W); pass x.permute(0, 2, 3, 1) (torch) or x.transpose(0, 2, 3, 1) (numpy) "
                          "for the N x H x W x C frames a stream takes")
    if is_pil_image(source):
        raise StreamError("source is one Pillow image; pass [image] for one frame, or a list of images")
    if _paths_listed(source):
        # Image files named one by one: read like a folder's, the unreadable ones skipped and counted.
        return ImageFilesSource([Path(s) for s in source], name=f"files:{len(source)}", config=config,
                                is_live=bool(live))
    if hasattr(source, "__iter__") or hasattr(source, "__next__"):
        name = f"frames:{type(source).__name__}"
        return IterableSource(source, name=name, is_live=bool(live), config=config, bgr=bgr)
    if callable(getattr(source, "read", None)):
        return _open_user_capture(source, config, opener, live)
    raise StreamError(
        f"cannot make a frame source from a {type(source).__name__}; pass a camera index, a video file, an "
        "image folder or glob, an rtsp/http URL, a GStreamer pipeline, csi://N, an opened cv2.VideoCapture, or "
        "an iterable of numpy frames"
    )


def _open_user_capture(cap: Any, config: StreamConfig, opener: Optional[Opener],
                       live: Optional[bool]) -> CaptureSource:
    """A capture the user opened and configured (a ``cv2.VideoCapture`` with its exposure, size or
    FOURCC set, or any object whose ``read()`` returns ``(ok, frame)`` as OpenCV's does; frames BGR),
    read through the same :class:`CaptureSource` as edgecmg's own captures: its opener hands back the
    user's object, which is never released (see ``kind="capture"`` there).

    Live unless ``live`` says otherwise or the capture reports a frame count, as a video file or an
    image sequence does (cameras, network streams and pipelines report none, 0 or -1): a recording
    is then read as its path would be, every frame to its end.
    """
    if opener is not None:
        raise ConfigError("opener= makes the captures of the sources edgecmg opens; a capture passed as the "
                          "source is read as it is: leave opener out")
    borrowed = _BorrowedCapture(cap)
    try:
        backend = str(cap.getBackendName())  # FFMPEG, V4L2, GSTREAMER...; raises where not open
    except Exception:  # noqa: BLE001 - not open, or not an OpenCV capture
        backend = type(cap).__name__
    name = f"capture:{backend}"
    if live is None:
        try:
            count = float(borrowed.get(cv2.CAP_PROP_FRAME_COUNT))
        except Exception:  # noqa: BLE001 - no get(): nothing says it is a recording
            count = 0.0
        live = not (math.isfinite(count) and count >= 1)
    if config.loop and not live:
        raise ConfigError(f"{name}: StreamConfig.loop rewinds a file by opening it again, which edgecmg cannot do "
                          "with a capture it was given; to loop a recording, pass the file's path")
    if live and (config.capture_size is not None or config.capture_fps is not None):
        _log.warning("%s: StreamConfig capture_size and capture_fps are asked of the cameras edgecmg opens, not of "
                     "a capture passed to it; set them on the capture (cap.set(cv2.CAP_PROP_FRAME_WIDTH, ...))", name)
    return CaptureSource(
        name, name=name, kind="capture", is_live=live, config=config, opener=lambda _target: borrowed,
        open_hint=("Check what the capture was opened on (a camera plugged in that no other program holds, a path "
                   "that exists) and that its read() delivers frames."),
    )


def _paths_listed(source: Any) -> bool:
    return isinstance(source, (list, tuple)) and bool(source) and all(isinstance(s, (str, os.PathLike)) for s in source)


def _frames_in_memory(source: Any) -> bool:
    """Whether open_source makes an IterableSource of ``source``: frames the caller holds."""
    if isinstance(source, (FrameSource, str, os.PathLike, bytes, bytearray, bool, int, np.integer)):
        return False
    if isinstance(source, np.ndarray):
        return source.ndim == 4
    return not _paths_listed(source) and (hasattr(source, "__iter__") or hasattr(source, "__next__"))


def _is_v4l2_device(path: Path) -> bool:
    """A video4linux device node (Linux character-device major 81: /dev/videoN), symlinks followed."""
    info = path.stat()
    return stat.S_ISCHR(info.st_mode) and hasattr(os, "major") and os.major(info.st_rdev) == V4L2_MAJOR


def _open_camera(device: Union[int, str], config: StreamConfig, opener: Optional[Opener],
                 live: Optional[bool]) -> FrameSource:
    """A camera by index (0 is /dev/video0 on Linux) or by device path (/dev/video0, or a udev name
    such as /dev/v4l/by-id/...-video-index0, which stays with the camera when the ports change)."""
    if isinstance(device, int) and device < 0:
        raise StreamError(f"camera index {device} must be >= 0")
    node = f"/dev/video{device}" if isinstance(device, int) else device
    csi = f"'csi://{device}'" if isinstance(device, int) else "'csi://N', not its /dev/video node"
    csi = f" (a Jetson CSI sensor is opened with {csi})"
    return CaptureSource(
        device,
        name=f"camera:{device}",
        kind="camera",
        is_live=True if live is None else live,
        config=config,
        opener=opener or _default_opener("camera", config),
        open_hint=(
            f"Check the camera is plugged in, that {node} exists and that no other program holds it{csi}; "
            "v4l2-ctl --list-devices lists the cameras."
        ),
    )


def _natural_order(path: Path) -> tuple:
    """Sort key: the numbers in ``path`` compared as numbers (frame_2 before frame_10; a time stamp's
    fraction as a fraction: 1733600000.25 before 1733600000.5)."""
    parts = re.split(r"(\d+(?:\.\d+)?)", str(path))
    return tuple(Decimal(part) if index % 2 else part for index, part in enumerate(parts))


def _open_text(text: str, config: StreamConfig, opener: Optional[Opener], live: Optional[bool]) -> FrameSource:
    s = text.strip()
    if not s:
        raise StreamError("source is an empty string; pass a camera index, a path, a URL or a pipeline")
    is_live = True if live is None else live
    scheme = urlsplit(s).scheme.lower() if "://" in s else ""

    if scheme == "csi":
        pipeline = _parse_csi(s, config)
        return CaptureSource(
            pipeline, name=s, kind="csi", is_live=is_live, config=config,
            opener=opener or _default_opener("csi", config),
            open_hint=(
                "Check the sensor is connected to that CSI port (ls /dev/video*), that nvargus-daemon runs "
                "(sudo systemctl restart nvargus-daemon) and that the size/fps is a mode of the sensor. "
                + _gstreamer_hint(opener is not None)
            ),
        )
    if scheme == "file":
        s = urlsplit(s).path
        scheme = ""
    elif scheme in NETWORK_SCHEMES and not any(c.isspace() for c in s):
        return CaptureSource(
            s, name=_mask_url(s), kind="network", is_live=is_live, config=config,
            opener=opener or _default_opener("network", config),
            open_hint=(
                f"Check the URL, the credentials and that the camera is reachable (open/read timeout "
                f"{config.timeout_s:g}s); try it with ffplay."
            ),
            counted_is_recording=live is None and urlsplit(s).path.lower().endswith(RECORDING_SUFFIXES),
        )
    if "!" in s and not Path(s).expanduser().exists():  # a folder or file may have a "!" in its name
        first = s.split("!", 1)[0].strip().split(" ", 1)[0] or "pipeline"
        return CaptureSource(
            s, name=f"gstreamer:{first}", kind="gstreamer", is_live=is_live, config=config,
            opener=opener or _default_opener("gstreamer", config),
            open_hint=_gstreamer_hint(opener is not None),
        )
    if scheme:
        raise StreamError(
            f"unsupported URL scheme {scheme!r} in {_mask_url(s)!r}; supported: {', '.join(NETWORK_SCHEMES)}, csi, file"
        )

    path = Path(s).expanduser()
    if s.isdigit() and not path.exists():
        return _open_camera(int(s), config, opener, live)
    from edgecmg.imageio import IMAGE_EXTENSIONS, image_frame_count, is_glob_pattern, list_images_naming_subfolders

    if is_glob_pattern(str(path)) or path.is_dir():
        try:
            videos = sorted(f.name for f in path.iterdir() if f.suffix.lower() in VIDEO_SUFFIXES) if path.is_dir() \
                else []
        except OSError:  # unreadable: the listing below says so
            videos = []
        one = f"edgecmg stream {path / videos[0]}" if videos else ""
        try:  # a folder is read without its sub-folders: those that hold images are named (stream, capture)
            paths = list_images_naming_subfolders(s, "read")
        except MissingFileError as exc:  # the folder went away since we looked
            raise MissingSourceError(str(exc)) from exc
        except DataError as exc:
            if videos:  # not the listing's advice (images in the folder, or a glob): what it holds is videos
                raise StreamError(f"{path} holds no image files but video file(s), {', '.join(videos[:3])}: give one "
                                  f"as the source ({one})") from exc
            raise StreamError(str(exc)) from exc
        if videos:
            _log.warning("%s: its video file(s) %s are not read (a folder's images are); give a video as the source "
                         "of its own (%s)", s, ", ".join(videos[:3]) + (" ..." if len(videos) > 3 else ""), one)
        # In natural order (img_2 before img_10): a folder of frames is a sequence in time. The list is a
        # snapshot: images added while it streams are not judged.
        paths = sorted(paths, key=_natural_order)
        return ImageFilesSource(paths, name=s, config=config, is_live=bool(live))
    if not path.exists():
        if s.startswith(("/dev/video", "/dev/v4l/")):
            raise MissingSourceError(f"camera {path} is not present: unplugged, not yet enumerated after a boot, or "
                                     "under another number; v4l2-ctl --list-devices lists the cameras")
        numbered = re.sub(r"%0?\d*d", "*", s)
        if numbered != s:  # OpenCV's image-sequence pattern: the glob reads the same files, in order
            raise MissingSourceError(f"no such file or folder: {path}; for a numbered sequence of images pass a "
                                     f"glob: '{numbered}' (quoted)")
        raise MissingSourceError(
            f"no such file or folder: {path}; pass a video file, an image folder or glob, a camera index, "
            "a URL or a GStreamer pipeline"
        )
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        frames = image_frame_count(path)
        if frames > 1:  # an animated GIF or a multi-page TIFF: read_image decodes the first
            _log.warning("%s holds %d frames (an animation or a multi-page file): only its first is judged; to "
                         "judge every one, make it a video (ffmpeg -i '%s' out.mp4) or a folder of images",
                         path, frames, path)
        return ImageFilesSource([path], name=str(path), config=config, is_live=bool(live))
    if path.is_char_device():  # /dev/video0 and its udev names: a camera, live, not a file to read to its end
        if not _is_v4l2_device(path):
            raise StreamError(f"{path} is a device, but not a V4L2 camera (video4linux); pass a camera's "
                              "/dev/videoN (v4l2-ctl --list-devices lists them), its index, or csi://N")
        return _open_camera(str(path), config, opener, live)
    if path.is_file() and path.stat().st_size == 0:  # named as such, not as a codec OpenCV may lack
        raise StreamError(f"{path} is empty (0 bytes): a recording that never started or a copy cut short; copy it "
                          "again or record it again")
    pointer = git_lfs_pointer(path)
    if pointer:
        raise StreamError(pointer)
    return CaptureSource(
        str(path), name=str(path), kind="file", is_live=bool(live), config=config,
        opener=opener or _default_opener("file", config),
        open_hint=(
            f"{path} is not a video OpenCV can decode: a text file, a truncated download or an unsupported "
            "container gives this error; check it plays (ffplay) or re-encode it to H.264 .mp4 / MJPG .avi."
        ),
    )
