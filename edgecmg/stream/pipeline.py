"""The streaming pipeline: a capture thread feeding batches to a (model-agnostic) consumer.

::

    source.read() -> preprocess() ->  bounded queue  -> batches of <= config.batch -> infer_batch()
    \\_________ capture thread ________/              \\________ consumer (caller's thread) ________/

Capture and pre-processing overlap inference. The queue's policy decides what happens when
inference is slower than the camera: ``"latest"`` drops stale frames (counted): the oldest when
the queue is full, and, when the consumer takes a batch, every frame older than the newest ones
that fill it, so each batch is the newest the camera has delivered; ``"all"`` blocks capture
(back-pressure) and loses nothing.

Capture starts when the consumer first asks for a frame (or on ``start()`` / ``with``). Shutdown
is deterministic however the consumer stops (end of stream, an exception, Ctrl-C, leaving a
``with`` block, closing the iterator, or dropping the last reference to it, which a ``break``
out of ``for r in pipeline.run(...)`` does): the capture thread is stopped and joined, and the
source closed. The capture thread holds no reference to the pipeline object, so garbage
collection of an abandoned pipeline triggers the same shutdown (``weakref.finalize``).
"""
from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Generator, Generic, Iterator, Optional, Sequence, TypeVar

import numpy as np

from edgecmg.config import StreamConfig
from edgecmg.errors import ConfigError, StreamError
from edgecmg.result import Result
from edgecmg.stream.latency import LatencyStats
from edgecmg.stream.sources import Frame, FrameSource, Opener, open_source

__all__ = ["StreamPipeline", "StreamItem", "StreamStats", "StreamRun"]

_log = logging.getLogger("edgecmg")

# Blocking waits are cut into slices this long so Ctrl-C reaches the main thread promptly and a
# stop request is noticed even if a notify is missed.
_WAIT_SLICE_S = 0.1


@dataclass(frozen=True, slots=True)
class StreamItem:
    """A frame as the consumer receives it.

    preprocessed: what ``preprocess(frame.image)`` returned in the capture thread (None without).
    capture_wait_ms: how long the consumer waited for this frame (0 when it was already queued);
        large values mean inference is starved by capture.
    preprocess_ms: time ``preprocess`` took for this frame.
    age_ms: how old the frame was when handed to the consumer (queueing delay).
    captured_perf_s: ``time.perf_counter()`` at capture, for latency arithmetic.
    """

    frame: Frame
    preprocessed: Any = field(repr=False)  # an array or tensor of the whole frame: pages of repr
    capture_wait_ms: float
    preprocess_ms: float
    age_ms: float
    captured_perf_s: float

    @property
    def image(self) -> np.ndarray:
        return self.frame.image


@dataclass(slots=True)
class _Queued:
    frame: Frame
    preprocessed: Any
    preprocess_ms: float
    captured_perf_s: float


_END = object()  # the producer finished (end of stream, error or stop)
_EMPTY = object()  # non-blocking get found nothing


class _FrameQueue:
    """Bounded FIFO that can be stopped. With ``keep_newest`` (the "latest" policy) it drops stale
    frames, counted in ``dropped``; otherwise a put waits for room.

    Written on a Condition rather than queue.Queue because "drop the oldest and insert" must be
    one atomic step, and both sides must be wakeable for shutdown. Both threads drop frames, so
    the count lives here, under the lock.
    """

    def __init__(self, maxsize: int, *, keep_newest: bool) -> None:
        self._items: deque[_Queued] = deque()
        self._max = maxsize
        self.keep_newest = keep_newest
        self.dropped = 0
        self._cond = threading.Condition()
        self._ended = False
        self._stopped = False
        # Set without the lock by request_stop(); read at each check and wait slice.
        self._stop_requested = False

    def put(self, item: _Queued) -> bool:
        """Insert; False if the queue was stopped (or a stop requested)."""
        with self._cond:
            if self.keep_newest:
                self._drop_oldest(keep=self._max - 1)
            else:
                while len(self._items) >= self._max and not (self._stopped or self._stop_requested):
                    self._cond.wait(_WAIT_SLICE_S)
            if self._stopped or self._stop_requested:
                return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get(self, *, block: bool, room: int = 1, timeout_s: Optional[float] = None) -> Any:
        """Next item; ``_END`` once ended/stopped and drained, or at once after a stop request;
        ``_EMPTY`` if not blocking, or when ``timeout_s`` passed without one.

        room: frames the consumer still takes for its batch. With ``keep_newest``, frames older than
        the newest ``room`` are dropped first, so a slow consumer judges the newest frames.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while True:
                if self._stop_requested:
                    return _END
                if self._items:
                    if self.keep_newest:
                        self._drop_oldest(keep=room)
                    item = self._items.popleft()
                    self._cond.notify_all()  # a producer may be waiting for room
                    return item
                if self._ended or self._stopped:
                    return _END
                if not block or (deadline is not None and time.monotonic() >= deadline):
                    return _EMPTY
                self._cond.wait(_WAIT_SLICE_S)

    def _drop_oldest(self, keep: int) -> None:
        """Drop (and count) the oldest items until ``keep`` remain; the caller holds the lock."""
        while len(self._items) > keep:
            self._items.popleft()
            self.dropped += 1

    def request_stop(self) -> None:
        """Ask both sides to stop, taking no lock and changing no item: safe from a signal handler
        that interrupted this thread inside get() or put() (the lock is re-entrant there, so
        stop() would clear the items under the interrupted call). get() then returns ``_END`` and
        put() False, at their next check: within a wait slice. stop() still follows (shutdown)."""
        self._stop_requested = True

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    def end(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def stop(self) -> None:
        """Wake everyone and discard queued frames (the consumer is gone)."""
        with self._cond:
            self._stopped = True
            self._items.clear()
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class StreamStats:
    """Counters and latency statistics of one pipeline, all in bounded memory.

    frames_captured: frames the capture thread read from the source.
    frames_dropped: stale frames discarded by the ``"latest"`` policy (see the module docstring).
    frames_yielded: frames handed to the consumer (by :meth:`StreamPipeline.run`: results).
    reconnects / corrupt_skipped: from the source.
    fps: frames yielded per second since capture started; ``recent_fps`` over the last
        ~120 frames (what a live display wants).
    capture_wait_ms / preprocess_ms / age_ms: per frame. inference_ms: per batch, and
    latency_ms: capture -> result per frame; both filled by :meth:`StreamPipeline.run` only.
    """

    def __init__(self, source: FrameSource, *, queue: _FrameQueue, window: int = 10_000) -> None:
        self._source = source
        self._queue = queue
        self.frames_captured = 0
        self.frames_yielded = 0
        self.capture_wait_ms = LatencyStats(window)
        self.preprocess_ms = LatencyStats(window)
        self.age_ms = LatencyStats(window)
        self.inference_ms = LatencyStats(window)
        self.latency_ms = LatencyStats(window)
        self._yield_times: deque[float] = deque(maxlen=120)
        self._t_start: Optional[float] = None
        self._t_end: Optional[float] = None

    @property
    def frames_dropped(self) -> int:
        return self._queue.dropped

    @property
    def reconnects(self) -> int:
        return self._source.reconnects

    @property
    def corrupt_skipped(self) -> int:
        return self._source.corrupt_skipped

    @property
    def elapsed_s(self) -> float:
        if self._t_start is None:
            return 0.0
        end = self._t_end if self._t_end is not None else time.perf_counter()
        return end - self._t_start

    @property
    def fps(self) -> float:
        elapsed = self.elapsed_s
        return self.frames_yielded / elapsed if elapsed > 0 else 0.0

    @property
    def recent_fps(self) -> float:
        times = self._yield_times
        if len(times) >= 2 and times[-1] > times[0]:
            return (len(times) - 1) / (times[-1] - times[0])
        return self.fps

    def _started(self) -> None:
        self._t_start = time.perf_counter()

    def _finished(self) -> None:
        if self._t_start is not None and self._t_end is None:
            self._t_end = time.perf_counter()

    def _yielded(self, n: int) -> None:
        now = time.perf_counter()
        for _ in range(n):
            self._yield_times.append(now)
        self.frames_yielded += n  # last: see StreamPipeline.run

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready snapshot (for the stream report and logs)."""
        out: dict[str, Any] = {
            "source": self._source.name,
            "frames_captured": self.frames_captured,
            "frames_dropped": self.frames_dropped,
            "frames_yielded": self.frames_yielded,
            "reconnects": self.reconnects,
            "corrupt_skipped": self.corrupt_skipped,
            "elapsed_s": round(self.elapsed_s, 3),
            "fps": round(self.fps, 3),
        }
        for name in ("latency_ms", "inference_ms", "capture_wait_ms", "preprocess_ms", "age_ms"):
            stats: LatencyStats = getattr(self, name)
            if stats.count:
                s = stats.summary()
                out[name] = {k: s[k] for k in ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms")}
        if self.latency_ms.count > self.latency_ms.window:
            # Past the window the percentiles describe its last frames while mean and max cover the run:
            # said, so a long run's p99 is not read as the whole run's.
            out["percentiles_of_last_frames"] = self.latency_ms.window
        return out

    def __repr__(self) -> str:
        return (
            f"StreamStats(frames_captured={self.frames_captured}, frames_dropped={self.frames_dropped}, "
            f"frames_yielded={self.frames_yielded}, reconnects={self.reconnects}, "
            f"corrupt_skipped={self.corrupt_skipped}, fps={self.fps:.1f})"  # the attributes' own names
        )


def auto_policy(is_live: bool, realtime: bool) -> str:
    """What ``policy="auto"`` means for a source: a camera, network stream or GStreamer pipeline
    (or a recording paced like one, ``realtime``) runs "latest", so the results stay current; a
    video file, image folder or sequence runs "all", so every recorded frame is judged."""
    return "latest" if is_live or realtime else "all"


class _CaptureState:
    """Everything the capture thread touches; deliberately no reference to the pipeline."""

    def __init__(self, source: FrameSource, queue: _FrameQueue, preprocess: Optional[Callable[[np.ndarray], Any]],
                 stats: StreamStats) -> None:
        self.source = source
        self.queue = queue
        self.preprocess = preprocess
        self.stats = stats
        self.stop = threading.Event()
        self.error: Optional[BaseException] = None
        self.thread: Optional[threading.Thread] = None
        # Set by the capture thread as its last step; _shutdown waits on it, not on the thread (see there).
        self.done = threading.Event()
        # The thread running _shutdown, and set once it has returned: a consumer whose loop ends while
        # another thread shuts down waits for it (StreamPipeline._await_shutdown).
        self.closing_thread: Optional[int] = None
        self.shut = threading.Event()


def _capture_loop(st: _CaptureState) -> None:
    try:
        while not (st.stop.is_set() or st.queue.stop_requested):
            frame = st.source.read()
            if frame is None:
                break
            t_cap = time.perf_counter()
            st.stats.frames_captured += 1
            pre, pre_ms = None, 0.0
            if st.preprocess is not None:
                pre = st.preprocess(frame.image)
                pre_ms = (time.perf_counter() - t_cap) * 1000.0
            if not st.queue.put(_Queued(frame, pre, pre_ms, t_cap)):
                break
    except BaseException as exc:  # handed to the consumer, which re-raises it
        st.error = exc
    finally:
        try:
            st.source.close()
        except Exception as exc:
            _log.warning("%s: error while closing the source: %s", st.source.name, exc)
        # After close, so a consumer that sees the end also sees a closed source.
        st.queue.end()
        st.done.set()  # last: nothing is left for the thread to do but return


def _shutdown(st: _CaptureState, join_timeout_s: float) -> None:
    st.closing_thread = threading.get_ident()  # first: a consumer sees the stop only after this
    try:
        _stop_and_join(st, join_timeout_s)
    finally:
        st.shut.set()


def _stop_and_join(st: _CaptureState, join_timeout_s: float) -> None:
    st.stop.set()
    st.queue.stop()  # wakes a producer blocked on a full queue
    st.source.close()  # wakes a reconnect back-off; thread-safe while a read is running
    thread = st.thread
    interrupted: Optional[BaseException] = None
    if thread is not None and thread is not threading.current_thread():
        # A second Ctrl-C (or `timeout -s INT`, which signals the process group too) must not cut the
        # join short: a capture thread left inside OpenCV's read when the interpreter exits
        # aborts the process. Finish the join, then let the interrupt through.
        # Wait on st.done, not on thread.is_alive(): on CPython 3.10-3.12 (fixed in 3.13) an exception
        # raised by a signal handler inside Thread.join() marks the thread stopped while it still runs,
        # so is_alive() turns False and the join returns at once. Join only once the thread is done.
        deadline = time.monotonic() + join_timeout_s
        while time.monotonic() < deadline:
            wait_s = min(_WAIT_SLICE_S, max(deadline - time.monotonic(), 0.0))
            try:
                if st.done.wait(wait_s):
                    thread.join(wait_s)
                    if not thread.is_alive():
                        break
            except KeyboardInterrupt as exc:
                interrupted = interrupted or exc  # the first says how the run was stopped (SIGTERM, then Ctrl-C)
        if not st.done.is_set():
            _log.warning(
                "%s: capture thread still blocked in the source after %.1fs; it is a daemon thread and "
                "will exit (releasing the device) when the read returns",
                st.source.name, join_timeout_s,
            )
    st.stats._finished()
    if interrupted is not None:
        raise interrupted


class StreamPipeline:
    """Capture thread + bounded queue + batching, around any :class:`FrameSource`.

    Iterate it for batches (``list[StreamItem]``), or call :meth:`run` with an inference callable
    for per-frame results. Use it as a context manager (or iterate it to the end) so shutdown is
    deterministic; exceptions, Ctrl-C and garbage collection also stop it cleanly.
    A pipeline is consumed once, by one consumer.

    Args:
        source: anything :func:`~edgecmg.stream.sources.open_source` accepts; the pipeline owns
            the opened source and closes it.
        config: queue policy, batch size, queue length, reconnect settings.
        preprocess: optional ``f(image: np.ndarray) -> Any`` run in the capture thread for every
            frame (e.g. resize + normalise to the model's input), so it overlaps inference; its
            output travels with the frame as ``StreamItem.preprocessed``. Exceptions it raises
            stop the stream and are re-raised in the consumer.
        opener, live, bgr: passed to ``open_source`` (``bgr``: an iterable's frames are BGR).
        join_timeout_s: how long close() waits for the capture thread.
        stats_window: samples kept for the latency quantiles.

    Example::

        with StreamPipeline("rtsp://cam/stream", StreamConfig(batch=4)) as pipe:
            for result in pipe.run(lambda frames, pre: detector.predict_batch([f.image for f in frames])):
                ...
    """

    def __init__(
        self,
        source: Any,
        config: Optional[StreamConfig] = None,
        *,
        preprocess: Optional[Callable[[np.ndarray], Any]] = None,
        opener: Optional[Opener] = None,
        live: Optional[bool] = None,
        join_timeout_s: float = 5.0,
        stats_window: int = 10_000,
        bgr: bool = False,
    ) -> None:
        self.config = config if config is not None else StreamConfig()
        if not isinstance(self.config, StreamConfig):
            raise ConfigError(f"config must be a StreamConfig, got {type(self.config).__name__}")
        if preprocess is not None and not callable(preprocess):
            raise ConfigError(f"preprocess must be callable (image -> anything), got {type(preprocess).__name__}")
        if (isinstance(join_timeout_s, bool) or not isinstance(join_timeout_s, (int, float))
                or not math.isfinite(join_timeout_s) or join_timeout_s <= 0):
            raise ConfigError(f"join_timeout_s={join_timeout_s!r}: give the seconds close() waits for the capture "
                              "thread, a number above 0 (default 5)")
        self.source = open_source(source, self.config, opener=opener, live=live, bgr=bgr)
        if self.config.policy == "auto":
            self.config = replace(self.config, policy=auto_policy(self.source.is_live, self.config.realtime))
        queue = _FrameQueue(self.config.max_queue, keep_newest=self.config.policy == "latest")
        try:
            self.stats = StreamStats(self.source, queue=queue, window=stats_window)
        except BaseException:
            self.source.close()
            raise
        self._preprocess_set = preprocess is not None
        self._state = _CaptureState(self.source, queue, preprocess, self.stats)
        self._consumed = False
        self._join_timeout_s = join_timeout_s
        self._finalizer = weakref.finalize(self, _shutdown, self._state, join_timeout_s)

    # ---- lifecycle ------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    @property
    def running(self) -> bool:
        thread = self._state.thread
        return thread is not None and thread.is_alive()

    def start(self) -> "StreamPipeline":
        """Start the capture thread (idempotent); the first frame asked for and ``with`` call it."""
        self._check_open()
        if self._state.thread is None:
            thread = threading.Thread(
                target=_capture_loop, args=(self._state,), name=f"edgecmg-capture[{self.source.name}]", daemon=True
            )
            self._state.thread = thread
            self.stats._started()
            thread.start()
        return self

    def close(self) -> None:
        """Stop and join the capture thread and close the source (idempotent)."""
        self._finalizer()

    def _await_shutdown(self) -> None:
        """Where another thread is closing the pipeline (its close() came while this consumer's loop ran),
        wait for it to join the capture thread and close the source: a loop that has ended has them
        released. Never for a shutdown running on this thread (a signal handler's, below this frame)."""
        st = self._state
        if st.closing_thread not in (None, threading.get_ident()):
            st.shut.wait(self._join_timeout_s + 1.0)

    def __enter__(self) -> "StreamPipeline":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- consuming ------------------------------------------------------------------------
    def __iter__(self) -> Iterator[list[StreamItem]]:
        return self.batches()

    def batches(self) -> Iterator[list[StreamItem]]:
        """Batches of 1..config.batch frames in capture order.

        A batch is filled up to ``config.batch`` unless the stream ends, except for a live source
        under ``"latest"``: there the consumer waits only for the first frame and takes whatever
        else is already queued, because waiting for a full batch would add latency for nothing.
        """
        self._claim()
        return self._batch_gen()

    def _claim(self) -> None:
        """A pipeline has one consumer: batches() or run(), once."""
        if self._consumed:
            raise StreamError("this StreamPipeline was already consumed; create a new one per run")
        self._check_open()
        self._consumed = True

    def _check_open(self) -> None:
        if self.closed:
            raise StreamError(f"the pipeline over {self.source.name} is closed; create a new StreamPipeline")

    def _batch_gen(self, count_yielded: bool = True) -> Iterator[list[StreamItem]]:
        """count_yielded: False when :meth:`run` counts its results one by one instead."""
        self.start()  # here, not in batches(): capture (and fps) starts when the consumer first asks
        st = self._state
        size = self.config.batch
        # A batch takes what is queued rather than wait to fill, where frames come at a camera's pace: a
        # live source, or a recording played like one (realtime; it waited 4 frames for each batch).
        greedy = (self.source.is_live or self.config.realtime) and self.config.policy == "latest"
        # A live source silent this long is reported (and again at each interval): a stalled camera
        # or pipeline can block its read indefinitely, which no reconnect notices until it returns.
        stall_s = self.config.stall_warn_s if self.source.is_live else None
        stats = self.stats
        try:
            ended = False
            while not ended:
                batch: list[StreamItem] = []
                while len(batch) < size:
                    t0 = time.perf_counter()
                    blocking = not (greedy and batch)
                    got = st.queue.get(block=blocking, room=size - len(batch), timeout_s=stall_s)
                    while got is _EMPTY and blocking:
                        if not self.source.reconnecting:  # a reconnect logs its own steps
                            _log.warning("%s: no frame for %.1f s; the capture is still waiting on the source "
                                         "(camera stalled or disconnected?)", self.source.name,
                                         time.perf_counter() - t0)
                        got = st.queue.get(block=True, room=size - len(batch), timeout_s=stall_s)
                    if got is _EMPTY:
                        break
                    if got is _END:
                        ended = True
                        break
                    now = time.perf_counter()
                    item = StreamItem(
                        frame=got.frame,
                        preprocessed=got.preprocessed,
                        capture_wait_ms=(now - t0) * 1000.0,
                        preprocess_ms=got.preprocess_ms,
                        age_ms=(now - got.captured_perf_s) * 1000.0,
                        captured_perf_s=got.captured_perf_s,
                    )
                    stats.capture_wait_ms.add(item.capture_wait_ms)
                    stats.age_ms.add(item.age_ms)
                    if self._preprocess_set:
                        stats.preprocess_ms.add(item.preprocess_ms)
                    batch.append(item)
                if batch:
                    if count_yielded:
                        stats._yielded(len(batch))
                    yield batch
            if st.error is not None:
                # Re-raise the capture thread's own exception (its traceback included).
                raise st.error
        finally:
            self.close()
            self._await_shutdown()

    def run(self, infer_batch: Callable[[list[Frame], list[Any]], Sequence[Output]]) -> "StreamRun[Output]":
        """Run ``infer_batch(frames, preprocessed)`` per batch and yield its outputs one by one.

        ``infer_batch`` gets the batch's :class:`Frame` objects and their preprocessed payloads
        (None without ``preprocess``) and must return one output per frame, in order. Outputs
        that are :class:`~edgecmg.result.Result` are stamped with the frame's index, timestamp and
        source and with the stream timings (``capture_wait``, ``preprocess`` when the pipeline
        ran it, ``inference`` = the batch time shared per frame unless already set, ``latency`` =
        capture -> result). The latencies are also recorded in ``stats.latency_ms``.

        Returns a :class:`StreamRun`: an iterator of outputs that also exposes ``stats`` and
        ``close()`` and works as a context manager, so a wrapper such as ``Detector.stream()``
        can return it directly.
        """
        if not callable(infer_batch):
            raise ConfigError(f"infer_batch must be callable (frames, preprocessed) -> outputs, got {infer_batch!r}")
        self._claim()
        return StreamRun(self, self._run_gen(self._batch_gen(count_yielded=False), infer_batch))

    def _run_gen(self, batches: Generator[list[StreamItem], None, None],
                 infer_batch: Callable[..., Sequence[Any]]) -> Iterator[Any]:
        stats = self.stats
        try:
            for batch in batches:
                frames = [it.frame for it in batch]
                t0 = time.perf_counter()
                outputs = infer_batch(frames, [it.preprocessed for it in batch])
                outputs = list(outputs) if outputs is not None else []
                t1 = time.perf_counter()
                if len(outputs) != len(batch):
                    raise StreamError(
                        f"infer_batch returned {len(outputs)} output(s) for a batch of {len(batch)} frame(s); "
                        "it must return exactly one per frame, in order"
                    )
                batch_ms = (t1 - t0) * 1000.0
                stats.inference_ms.add(batch_ms)
                per_frame_ms = batch_ms / len(batch)
                for item, out in zip(batch, outputs):
                    latency_ms = (t1 - item.captured_perf_s) * 1000.0
                    stats.latency_ms.add(latency_ms)
                    result = self._stamp(out, item, per_frame_ms, latency_ms)
                    # Last before the yield: a frame counted is a frame handed over (edgecmg stream holds a
                    # stop from this count on, so a frame the summary counts has its record).
                    stats._yielded(1)
                    yield result
        finally:
            batches.close()  # now, not whenever it is collected: this stops capture
            self.close()

    def _stamp(self, out: Any, item: StreamItem, per_frame_ms: float, latency_ms: float) -> Any:
        if not isinstance(out, Result):
            return out
        t = out.timings
        timings = replace(
            t,
            capture_wait=item.capture_wait_ms,
            latency=latency_ms,
            preprocess=item.preprocess_ms if self._preprocess_set else t.preprocess,
            inference=t.inference if t.inference > 0 else per_frame_ms,
        )
        return replace(
            out, timings=timings, frame_index=item.frame.index, timestamp=item.frame.timestamp, source=item.frame.source
        )

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("running" if self.running else "ready")
        cfg = self.config
        return f"StreamPipeline({self.source.name!r}, policy={cfg.policy!r}, batch={cfg.batch}, {state})"


Output = TypeVar("Output")  # what a run yields: Result, for Detector.stream()


class StreamRun(Generic[Output]):
    """The iterator :meth:`StreamPipeline.run` returns: outputs one by one, plus ``stats``.

    Closing it (``close()``, leaving a ``with`` block, or dropping the last reference to it, as a
    ``break`` out of ``for r in det.stream(...)`` does) shuts the pipeline down. A ``break`` out of
    a loop over a StreamRun kept in a variable only pauses it: capture goes on until ``close()``.
    Like any Python iterator it runs once: a second loop over an ended run yields nothing (keep the
    results in a list, or call ``stream()`` again).
    """

    def __init__(self, pipeline: StreamPipeline, gen: Iterator[Output]) -> None:
        self.pipeline = pipeline
        self._gen = gen
        self._consumer: Optional[int] = None  # the thread that last asked for a result

    @property
    def stats(self) -> StreamStats:
        """The run's counts so far (frames captured, judged, dropped, skipped as unusable) and its
        latency figures; read it during the loop or after it."""
        return self.pipeline.stats

    def __iter__(self) -> "StreamRun[Output]":
        return self

    def __next__(self) -> Output:
        self._consumer = threading.get_ident()  # a plain store: close() reads it without a lock
        return next(self._gen)

    def close(self) -> None:
        """Stop the run (idempotent; a second call does nothing): safe from any thread, and from a
        signal handler (a service's stop) whichever line of the loop it interrupts.

        Called on the thread that iterates the run, between two results (or before any), it stops
        and joins the capture thread, closes the source and ends the iterator before returning.
        While a loop is inside ``next()`` (in another thread, or the frame a signal handler
        interrupted), it only requests the stop, taking no lock: that loop finishes the batch in
        hand (its remaining results are still yielded), then ends, and on its way out joins the
        capture thread and closes the source. A loop in another thread that is between two results
        ends the same way at its next ``next()``; here the pipeline is closed at once. Either way
        a loop has released the capture thread and the source by the time it ends.

        So close() from another thread returns before that thread's loop has ended, and its
        inference may still be running: join that thread before closing the Detector.
        """
        queue = self.pipeline._state.queue
        if getattr(self._gen, "gi_running", False):
            # A signal handler may have interrupted this very thread inside the queue's lock (re-entrant:
            # taking it again here would clear the items under the interrupted get()), or inside the
            # shutdown itself. The loop's own `finally` shuts down on its way out.
            queue.request_stop()
            return
        consumer = self._consumer
        if consumer is not None and consumer != threading.get_ident():
            # Another thread's loop, between two results: it may call next() at any moment, and a generator
            # closed here meanwhile would raise "generator already executing" in that thread. Stop the
            # pipeline (thread-safe from here); the loop ends at its next next(), closing its generator
            # once this shutdown has finished.
            self.pipeline.close()
            return
        self.pipeline.close()
        try:
            self._gen.close()
        except ValueError:  # started running in another thread since the check: it ends as above
            pass

    def __enter__(self) -> "StreamRun[Output]":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"StreamRun({self.pipeline!r})"
