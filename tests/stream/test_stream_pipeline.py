"""StreamPipeline: policies, batching, preprocess overlap, reconnects, errors, clean shutdown."""
from __future__ import annotations

import gc
import itertools
import signal
import threading
import time
import tracemalloc

import numpy as np
import pytest

from edgecmg.config import StreamConfig
from edgecmg.errors import ConfigError, StreamError
from edgecmg.result import Result, Timings
from edgecmg.stream import StreamPipeline


def tiny_frames(n, size=4):
    return [np.full((size, size, 3), i % 256, np.uint8) for i in range(n)]


def endless_frames(delay_s=0.0):
    for i in itertools.count():
        if delay_s:
            time.sleep(delay_s)
        yield np.full((4, 4, 3), i % 256, np.uint8)


# ---------------------------------------------------------------------------- policies
def test_policy_all_delivers_every_frame_once_in_order(video_file):
    path = video_file(n=23, fourcc="mp4v", ext=".mp4")
    cfg = StreamConfig(policy="all", batch=4, max_queue=2)
    seen, sizes = [], []
    with StreamPipeline(path, cfg) as pipe:
        for batch in pipe:
            sizes.append(len(batch))
            seen.extend(item.frame.index for item in batch)
            time.sleep(0.002)  # slower than capture: back-pressure, not loss
    assert seen == list(range(23))
    assert sizes == [4, 4, 4, 4, 4, 3]  # full batches for a file, the remainder at the end
    s = pipe.stats
    assert (s.frames_captured, s.frames_dropped, s.frames_yielded) == (23, 0, 23)
    assert pipe.source.closed and not pipe.running


def test_policy_latest_with_a_slow_consumer_drops_and_counts(helpers):
    cfg = StreamConfig(policy="latest", batch=1, max_queue=2)
    seen = []
    with StreamPipeline(tiny_frames(300), cfg) as pipe:
        for batch in pipe:
            seen.extend(item.frame.index for item in batch)
            time.sleep(0.003)
    s = pipe.stats
    assert s.frames_dropped > 0
    assert all(a < b for a, b in zip(seen, seen[1:])), "frames must stay in capture order"
    assert s.frames_captured == 300
    assert s.frames_yielded == len(seen) == s.frames_captured - s.frames_dropped
    assert seen[-1] == 299  # the newest frame is never the one dropped
    # the repr names the attributes as they are spelled, so what a log shows can be looked up
    assert repr(s).startswith(f"StreamStats(frames_captured=300, frames_dropped={s.frames_dropped}, "
                              f"frames_yielded={s.frames_yielded}, reconnects=0, corrupt_skipped=0, fps=")


@pytest.mark.parametrize("batch", [1, 2])
def test_latest_hands_a_slow_consumer_the_newest_frames(batch):
    # The consumer arrives after the camera has delivered 50 frames: it judges the newest, not the
    # oldest of the max_queue frames still queued (that would be max_queue frame periods stale).
    cfg = StreamConfig(policy="latest", batch=batch, max_queue=4)
    with StreamPipeline(tiny_frames(50), cfg, live=True) as pipe:
        deadline = time.monotonic() + 5.0
        while pipe.running and time.monotonic() < deadline:  # the thread ends after queueing the last
            time.sleep(0.01)
        # The capture side never holds more than max_queue frames: each put past it drops one, counted.
        assert len(pipe._state.queue) == 4 and pipe.stats.frames_dropped == 50 - 4
        batches = [[item.frame.index for item in b] for b in pipe]
    assert batches == [list(range(50 - batch, 50))]
    s = pipe.stats
    assert (s.frames_captured, s.frames_dropped, s.frames_yielded) == (50, 50 - batch, batch)


def test_live_latest_takes_what_is_queued_instead_of_waiting_for_a_full_batch():
    cfg = StreamConfig(policy="latest", batch=8, max_queue=8)
    sizes = []
    with StreamPipeline(endless_frames(delay_s=0.01), cfg, live=True) as pipe:
        for batch in pipe:
            sizes.append(len(batch))
            if len(sizes) == 6:
                break
    assert all(1 <= n <= 8 for n in sizes)
    assert min(sizes) < 8  # a 10 ms camera never fills 8 frames between immediate takes
    # The wait for a batch is about one frame period, never eight of them.
    assert pipe.stats.capture_wait_ms.max < 60


def test_a_live_source_that_goes_silent_is_reported(caplog):
    def stalls_after_one_frame():
        yield np.zeros((4, 4, 3), np.uint8)
        time.sleep(1.5)  # a camera whose read blocks: no error, no frame
        yield np.ones((4, 4, 3), np.uint8)

    cfg = StreamConfig(policy="latest", stall_warn_s=0.3)
    with caplog.at_level("WARNING", logger="edgecmg"):
        with StreamPipeline(stalls_after_one_frame(), cfg, live=True) as pipe:
            seen = [item.frame.index for batch in pipe for item in batch]
    assert seen == [0, 1]  # the stream goes on when the source does
    stalls = [r.getMessage() for r in caplog.records if "no frame for" in r.getMessage()]
    assert 2 <= len(stalls) <= 5 and "camera stalled" in stalls[0]
    # off for triggered cameras, silent between parts
    caplog.clear()
    with caplog.at_level("WARNING", logger="edgecmg"):
        with StreamPipeline(stalls_after_one_frame(), StreamConfig(stall_warn_s=None), live=True) as pipe:
            assert [item.frame.index for batch in pipe for item in batch] == [0, 1]
    assert "no frame for" not in caplog.text


def test_live_policy_all_fills_batches():
    cfg = StreamConfig(policy="all", batch=3, max_queue=4)
    sizes = []
    with StreamPipeline(endless_frames(delay_s=0.002), cfg, live=True) as pipe:
        for batch in pipe:
            sizes.append(len(batch))
            if len(sizes) == 4:
                break
    assert sizes == [3, 3, 3, 3]


def test_default_policy_judges_every_frame_of_a_recording(video_file):
    # A video file read by a slow consumer: "auto" resolves to "all", so nothing is dropped.
    path = video_file(n=15, fourcc="mp4v", ext=".mp4")
    seen = []
    with StreamPipeline(path, StreamConfig(max_queue=2)) as pipe:
        assert pipe.config.policy == "all"
        for batch in pipe:
            seen.extend(item.frame.index for item in batch)
            time.sleep(0.005)
    assert seen == list(range(15)) and pipe.stats.frames_dropped == 0


@pytest.mark.parametrize("live, realtime, resolved", [(True, False, "latest"), (False, True, "latest"),
                                                       (False, False, "all")])
def test_default_policy_stays_current_on_live_and_paced_sources(live, realtime, resolved):
    cfg = StreamConfig(max_queue=2, realtime=realtime, capture_fps=1000.0)
    with StreamPipeline(tiny_frames(5), cfg, live=live) as pipe:
        assert pipe.config.policy == resolved
        assert pipe._state.queue.keep_newest == (resolved == "latest")
        list(pipe)


def test_unknown_policy_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="'latest'.*'all'.*'auto'"):
        StreamConfig(policy="newest")


# ---------------------------------------------------------------------------- preprocess and run()
def test_preprocess_runs_in_the_capture_thread_and_travels_with_the_frame():
    threads = set()

    def prep(image):
        threads.add(threading.current_thread().name)
        return float(image.mean()) * 2

    with StreamPipeline(tiny_frames(10), StreamConfig(policy="all", batch=3), preprocess=prep) as pipe:
        items = [item for batch in pipe for item in batch]
    assert [it.preprocessed for it in items] == [2.0 * i for i in range(10)]
    assert threads and all(name.startswith("edgecmg-capture") for name in threads)
    assert all(it.preprocess_ms >= 0 and it.capture_wait_ms >= 0 and it.age_ms >= 0 for it in items)
    assert pipe.stats.preprocess_ms.count == 10 and pipe.stats.capture_wait_ms.count == 10


def test_run_calls_infer_batch_and_stamps_results():
    calls = []

    def infer(frames, pre):
        calls.append(([f.index for f in frames], pre))
        return [
            Result(score=float(f.image[0, 0, 0]), threshold=5.0, anomaly_map=np.zeros((2, 2), np.float32),
                   kept_mask=np.ones((2, 2), bool), timings=Timings(postprocess=0.5))
            for f in frames
        ]

    cfg = StreamConfig(policy="all", batch=4)
    pipe = StreamPipeline(tiny_frames(10), cfg, preprocess=lambda im: im.shape)
    results = list(pipe.run(infer))
    assert [c[0] for c in calls] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert calls[0][1] == [(4, 4, 3)] * 4
    assert [r.frame_index for r in results] == list(range(10))
    assert [r.score for r in results] == [float(i) for i in range(10)]
    assert all(r.source == "frames:list" and r.timestamp > 0 for r in results)
    assert all(r.timings.inference > 0 and r.timings.postprocess == 0.5 for r in results)
    assert results[6].is_anomaly and not results[4].is_anomaly
    assert pipe.stats.latency_ms.count == 10 and pipe.stats.inference_ms.count == 3
    assert pipe.closed and pipe.source.closed


def test_run_counts_the_results_handed_out_and_stamps_their_latency():
    def infer(frames, pre):
        time.sleep(0.01)
        return [Result(score=0.0, threshold=1.0, anomaly_map=np.zeros((2, 2), np.float32),
                       kept_mask=np.ones((2, 2), bool), timings=Timings(preprocess=1.0, postprocess=0.5))
                for _ in frames]

    run = StreamPipeline(tiny_frames(10), StreamConfig(policy="all", batch=4)).run(infer)
    with run:
        results = [next(run) for _ in range(5)]  # one batch and a frame of the next
    assert run.stats.frames_yielded == 5  # not the 8 frames pulled into two batches
    for r in results:
        t = r.timings
        # total is the frame's processing time; the wait for capture is idle time, reported apart
        assert t.capture_wait >= 0 and t.total == pytest.approx(t.preprocess + t.inference + t.postprocess)
        assert t.latency >= 10.0 and r.to_dict()["latency_ms"] == round(t.latency, 3)


def test_total_is_processing_time_without_the_wait_for_capture():
    t = Timings(capture_wait=40.0, preprocess=1.0, inference=20.0, postprocess=2.0, latency=70.0)
    assert t.total == 23.0 and t.to_dict()["capture_wait_ms"] == 40.0 and t.to_dict()["latency_ms"] == 70.0


def test_capture_starts_when_the_consumer_first_asks():
    pipe = StreamPipeline(endless_frames(), StreamConfig(policy="all", max_queue=2), live=True)
    run = pipe.run(lambda frames, pre: [f.index for f in frames])
    time.sleep(0.1)
    assert not pipe.running and pipe.stats.frames_captured == 0 and pipe.stats.elapsed_s == 0.0
    with run:
        assert next(run) == 0 and pipe.running


def test_run_passes_non_result_outputs_through_and_checks_the_count():
    pipe = StreamPipeline(tiny_frames(5), StreamConfig(policy="all", batch=2))
    assert list(pipe.run(lambda frames, pre: [f.index * 10 for f in frames])) == [0, 10, 20, 30, 40]
    pipe = StreamPipeline(tiny_frames(5), StreamConfig(policy="all", batch=2))
    with pytest.raises(StreamError, match="returned 1 output.*batch of 2"):
        list(pipe.run(lambda frames, pre: [0]))
    with pytest.raises(ConfigError, match="callable"):
        StreamPipeline(tiny_frames(1)).run("not callable")


def test_a_pipeline_is_consumed_once_and_validates_arguments():
    pipe = StreamPipeline(tiny_frames(2))
    list(pipe)
    with pytest.raises(StreamError, match="already consumed"):
        list(pipe)
    with pytest.raises(ConfigError, match="preprocess"):
        StreamPipeline(tiny_frames(2), preprocess=3)
    with pytest.raises(ConfigError, match="StreamConfig"):
        StreamPipeline(tiny_frames(2), config={"batch": 2})


# ---------------------------------------------------------------------------- errors and reconnects
def test_capture_errors_are_reraised_in_the_consumer_after_queued_frames():
    def prep(image):
        if image[0, 0, 0] == 3:
            raise ValueError("bad frame in preprocess")
        return None

    seen = []
    pipe = StreamPipeline(tiny_frames(10), StreamConfig(policy="all", max_queue=16), preprocess=prep)
    with pytest.raises(ValueError, match="bad frame in preprocess"):
        for batch in pipe:
            seen.extend(it.frame.index for it in batch)
    assert seen == [0, 1, 2]
    assert pipe.source.closed and pipe.closed


def test_source_that_fails_mid_stream_recovers_in_the_pipeline(scripted_opener, fake_capture, helpers):
    opener = scripted_opener([fake_capture(range(0, 6)), fake_capture(range(6, 12))])
    cfg = StreamConfig(policy="all", batch=2, reconnect_attempts=2, reconnect_backoff_s=0.005)
    ids = []
    with StreamPipeline("rtsp://cam/live", cfg, opener=opener) as pipe:
        for batch in pipe:
            ids.extend(helpers.frame_id(it.image) for it in batch)
            if ids[-1] == 11:
                break
    assert ids == list(range(1, 12))  # id 0 was the discarded open-time probe
    assert pipe.stats.reconnects == 1 and pipe.stats.frames_dropped == 0


def test_reconnect_exhaustion_raises_stream_error_in_the_consumer(scripted_opener, fake_capture):
    opener = scripted_opener([fake_capture(range(0, 4))])
    cfg = StreamConfig(policy="all", reconnect_attempts=2, reconnect_backoff_s=0.005)
    received = 0
    with pytest.raises(StreamError, match="could not be reopened after 2 attempt"):
        with StreamPipeline(0, cfg, opener=opener) as pipe:
            for batch in pipe:
                received += len(batch)
    assert received == 3
    assert pipe.source.closed


def test_no_stall_warning_while_a_reconnect_is_under_way(scripted_opener, fake_capture, caplog):
    # the reconnect logs its own attempts; "no frame for ..." beside them would only confuse
    opener = scripted_opener([fake_capture(range(0, 2))])
    cfg = StreamConfig(policy="all", reconnect_attempts=2, reconnect_backoff_s=0.4, stall_warn_s=0.1)
    with caplog.at_level("WARNING", logger="edgecmg"), pytest.raises(StreamError, match="could not be reopened"):
        with StreamPipeline(0, cfg, opener=opener) as pipe:
            for _ in pipe:
                pass
    assert "reconnect attempt 1/2 failed" in caplog.text and "no frame for" not in caplog.text


# ---------------------------------------------------------------------------- shutdown
def test_break_in_the_middle_stops_the_thread_and_closes_the_source(helpers):
    pipe = StreamPipeline(endless_frames(), StreamConfig(policy="latest", max_queue=2), live=True)
    for n, _ in enumerate(pipe):
        if n == 5:
            break
    # No `with`: breaking out of the for loop closes the generator, which shuts down.
    assert pipe.closed and pipe.source.closed
    assert helpers.capture_threads() == []


def test_exception_in_the_consumer_shuts_down(helpers):
    with pytest.raises(RuntimeError, match="consumer bug"):
        with StreamPipeline(endless_frames(), live=True) as pipe:
            for _ in pipe:
                raise RuntimeError("consumer bug")
    assert pipe.source.closed and helpers.capture_threads() == []


def test_keyboard_interrupt_in_the_consumer_shuts_down(helpers):
    with pytest.raises(KeyboardInterrupt):
        for _ in StreamPipeline(endless_frames(), live=True):
            raise KeyboardInterrupt
    assert helpers.capture_threads() == []


def test_closing_the_run_generator_shuts_down(helpers):
    pipe = StreamPipeline(endless_frames(), StreamConfig(policy="all", max_queue=1), live=True)
    gen = pipe.run(lambda frames, pre: [f.index for f in frames])
    assert [next(gen) for _ in range(3)] == [0, 1, 2]
    gen.close()
    assert pipe.closed and helpers.capture_threads() == []


def test_garbage_collection_of_an_abandoned_pipeline_shuts_down(helpers):
    src_holder = []

    def start_and_forget():
        pipe = StreamPipeline(endless_frames(), StreamConfig(policy="all", max_queue=2), live=True).start()
        src_holder.append(pipe.source)
        time.sleep(0.02)
        assert helpers.capture_threads()

    start_and_forget()
    gc.collect()
    assert src_holder[0].closed
    assert helpers.capture_threads() == []


def test_close_unblocks_a_producer_held_by_back_pressure(helpers):
    pipe = StreamPipeline(endless_frames(), StreamConfig(policy="all", max_queue=1), live=True).start()
    time.sleep(0.05)  # the capture thread is now blocked on the full queue
    t0 = time.perf_counter()
    pipe.close()
    assert time.perf_counter() - t0 < 1.0 and helpers.capture_threads() == []


def test_close_during_a_reconnect_back_off_is_prompt(scripted_opener, fake_capture, helpers):
    opener = scripted_opener([fake_capture([0, 1])])
    cfg = StreamConfig(reconnect_attempts=5, reconnect_backoff_s=30.0)
    pipe = StreamPipeline(0, cfg, opener=opener)
    with pipe:
        batches = iter(pipe)  # kept: dropping the generator would itself close the pipeline
        next(batches)
        deadline = time.monotonic() + 5.0
        while not opener.made[0].released and time.monotonic() < deadline:
            time.sleep(0.01)
        # The capture failed, was released, and the thread now sleeps in the 30 s back-off.
        assert opener.made[0].released and pipe.running and len(opener.made) == 1
        t0 = time.perf_counter()
    assert time.perf_counter() - t0 < 2.0
    assert helpers.capture_threads() == [] and pipe.source.closed


def test_a_second_interrupt_during_close_still_joins_the_capture_thread(helpers):
    # Ctrl-C pressed twice (or `timeout`, which signals the whole process group): the second
    # KeyboardInterrupt lands in close()'s join. A capture thread abandoned inside the camera's
    # read aborts the process at exit, so close() finishes the join and re-raises after.
    class InterruptedOnce:
        def __init__(self, thread):
            self.thread, self.raised = thread, False

        def join(self, timeout=None):
            if not self.raised:
                self.raised = True
                raise KeyboardInterrupt
            self.thread.join(timeout)

        def is_alive(self):
            return self.thread.is_alive()

    pipe = StreamPipeline(endless_frames(delay_s=0.2), StreamConfig(policy="latest"), live=True).start()
    time.sleep(0.05)  # the capture thread is inside a 0.2 s read
    pipe._state.thread = InterruptedOnce(pipe._state.thread)
    with pytest.raises(KeyboardInterrupt):
        pipe.close()
    assert pipe._state.thread.raised and helpers.capture_threads() == [] and pipe.source.closed


def test_interrupts_during_close_do_not_cut_short_the_wait_for_a_blocked_capture_thread(helpers, caplog):
    # Two real SIGINTs (Ctrl-C twice, or `timeout` and a service manager both signalling) while close()
    # waits for a capture thread stuck in the source's read: close() still waits its full join timeout,
    # warns, and re-raises the interrupt after. On CPython 3.10-3.12 a signal raising inside
    # Thread.join() once made is_alive() False for the running thread, which ended the wait at once.
    assert threading.current_thread() is threading.main_thread()
    release = threading.Event()

    def blocks_after_one_frame():
        yield np.zeros((4, 4, 3), np.uint8)
        release.wait(30)  # a camera read that does not return
        yield np.ones((4, 4, 3), np.uint8)

    sent, handled = [], []
    armed = [True]  # Ctrl-C raises only during close(): a signal late on a loaded machine must not reach pytest

    def interrupt():
        # To the main thread, as the kernel delivers a process's SIGINT: it lands inside close()'s wait.
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        sent.append(time.monotonic())

    class FirstStop(KeyboardInterrupt):  # as SIGTERM's Terminated is: the stop close() must re-raise
        pass

    def on_sigint(signum, frame):
        handled.append(signum)
        if armed[0]:
            raise FirstStop if len(handled) == 1 else KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    timers = [threading.Timer(delay, interrupt) for delay in (0.3, 0.8)]
    try:
        pipe = StreamPipeline(blocks_after_one_frame(), StreamConfig(policy="latest"), live=True,
                              join_timeout_s=3.0).start()
        deadline = time.monotonic() + 5.0
        while pipe.stats.frames_captured < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)  # the capture thread is now blocked in the second read
        with caplog.at_level("WARNING", logger="edgecmg"):
            t0 = time.monotonic()
            for timer in timers:
                timer.start()
            try:
                with pytest.raises(KeyboardInterrupt) as stopped:  # caught whole: one escaping would end pytest
                    pipe.close()
            finally:
                armed[0] = False
            waited = time.monotonic() - t0
        deadline = time.monotonic() + 5.0
        while len(handled) < 2 and time.monotonic() < deadline:  # both sent and handled before the handler goes
            time.sleep(0.05)
    finally:
        armed[0] = False
        for timer in timers:
            timer.cancel()
        signal.signal(signal.SIGINT, previous)
        release.set()
    assert len(sent) == 2 and waited >= 2.9, f"close() returned after {waited:.2f}s"
    assert isinstance(stopped.value, FirstStop)  # the first interrupt says how the run was stopped, not the last
    assert "capture thread still blocked in the source after 3.0s" in caplog.text
    assert pipe.closed and pipe.source.closed
    deadline = time.monotonic() + 5.0
    while helpers.capture_threads() and time.monotonic() < deadline:  # released: the read returns
        time.sleep(0.01)
    assert helpers.capture_threads() == []


def test_enter_and_exit_without_iterating():
    with StreamPipeline(endless_frames(), live=True) as pipe:
        assert pipe.running
    assert not pipe.running and pipe.closed
    with pytest.raises(StreamError, match="closed"):
        pipe.start()


# ---------------------------------------------------------------------------- stats and memory
def test_stats_snapshot_and_memory_stays_flat():
    cfg = StreamConfig(policy="all", batch=4, max_queue=4)
    pipe = StreamPipeline(endless_frames(), cfg, live=True, stats_window=64)
    tracemalloc.start()
    try:
        mark = None
        for n, result in enumerate(pipe.run(lambda frames, pre: [f.index for f in frames])):
            if n == 1000:
                gc.collect()
                mark = tracemalloc.get_traced_memory()[0]
            if n == 4000:
                gc.collect()
                growth = tracemalloc.get_traced_memory()[0] - mark
                break
    finally:
        tracemalloc.stop()
    assert growth < 150_000, f"memory grew by {growth} bytes over 3000 frames"
    s = pipe.stats
    assert s.latency_ms.count == s.frames_yielded >= 4000 and len(s.latency_ms.samples()) == 64
    snap = s.to_dict()
    for key in ("frames_captured", "frames_dropped", "frames_yielded", "reconnects", "corrupt_skipped", "fps"):
        assert key in snap
    assert snap["fps"] > 0 and set(snap["latency_ms"]) >= {"p50_ms", "p99_ms"}
    assert snap["percentiles_of_last_frames"] == 64  # past the window: its percentiles are said to be the last frames'
    assert s.recent_fps > 0
    short = StreamPipeline([np.zeros((4, 4, 3), np.uint8)] * 5, StreamConfig(policy="all"), stats_window=64)
    list(short.run(lambda frames, pre: [f.index for f in frames]))
    assert "percentiles_of_last_frames" not in short.stats.to_dict()


def test_run_handle_exposes_stats_and_shuts_down_when_dropped(helpers):
    with StreamPipeline(endless_frames(), StreamConfig(policy="all"), live=True).run(
        lambda frames, pre: [f.index for f in frames]
    ) as results:
        assert [next(results) for _ in range(4)] == [0, 1, 2, 3]
        assert results.stats.frames_yielded == 4 and results.stats.latency_ms.count == 4
    assert results.pipeline.closed and helpers.capture_threads() == []

    def iterate_and_drop():
        results = StreamPipeline(endless_frames(), live=True).run(lambda frames, pre: frames)
        next(results)
        return results.pipeline.source

    source = iterate_and_drop()
    gc.collect()
    assert source.closed and helpers.capture_threads() == []


def test_stream_config_refuses_values_that_would_stall_or_spin_by_name():
    import re

    for kwargs, expected in ((dict(max_queue=0), "max_queue=0 (--max-queue) must be >= 1"),
                             (dict(batch=0), "batch=0 (--batch) must be >= 1"),
                             (dict(stall_warn_s=0.0), "stall_warn_s=0.0 must be > 0 seconds, or None"),
                             (dict(timeout_s=0.0), "timeout_s=0.0 must be > 0 and <= 2,147,483 seconds"),
                             (dict(timeout_s=float("inf")), "timeout_s=inf must be > 0"),  # OpenCV takes an int32
                             (dict(reconnect_attempts=-1), "reconnect_attempts=-1 (--reconnect-attempts) must be >= 0"),
                             (dict(reconnect_backoff_s=-0.5), "reconnect_backoff_s=-0.5 must be >= 0"),
                             (dict(capture_fps=0.0), "capture_fps=0.0 (--capture-fps) must be > 0"),
                             (dict(capture_size=(640, 0)), "capture_size=(640, 0) (--capture-size 640 0) must be (width, height)"),
                             (dict(policy="newest"), "policy='newest': choose 'latest'")):
        with pytest.raises(ConfigError, match=re.escape(expected)):
            StreamConfig(**kwargs)
    StreamConfig(max_queue=1, batch=1, stall_warn_s=None, reconnect_attempts=0, reconnect_backoff_s=0.0)


def test_the_longest_timeout_opencv_takes_is_accepted_and_one_past_it_refused():
    from edgecmg.config import MAX_TIMEOUT_S

    assert StreamConfig(timeout_s=MAX_TIMEOUT_S).timeout_s == MAX_TIMEOUT_S == 2_147_483  # int32 milliseconds
    with pytest.raises(ConfigError, match="must be > 0 and <= 2,147,483 seconds"):
        StreamConfig(timeout_s=MAX_TIMEOUT_S + 1)


def _consume_in_a_thread(run, *, results: int, work_s: float = 0.0):
    """Iterate ``run`` in a daemon thread (a stuck one must not hold pytest open), ``work_s`` of the
    loop's own work per result, until it has ``results``. Returns (thread, results seen, exceptions
    raised in it, [what the loop's end left: (capture running, source closed, pipeline closed)])."""
    seen, failed, at_end = [], [], []

    def consume():
        try:
            for index in run:
                seen.append(index)
                time.sleep(work_s)
            at_end.append((run.pipeline.running, run.pipeline.source.closed, run.pipeline.closed))
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            failed.append(exc)

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    deadline = time.monotonic() + 10
    while len(seen) < results and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(seen) >= results, "too few frames judged"
    return consumer, seen, failed, at_end


def test_a_run_closed_from_another_thread_stops_the_loop_that_iterates_it():
    """The way a service stops its loop: `run.close()` from a control thread raised "generator already
    executing" there and left the loop, the capture thread and the source running."""
    run = StreamPipeline(endless_frames(delay_s=0.005), StreamConfig(policy="latest", max_queue=2),
                         live=True).run(lambda frames, pre: [f.index for f in frames])
    consumer, seen, failed, at_end = _consume_in_a_thread(run, results=1)
    judged = len(seen)
    run.close()  # from this thread while the consumer is inside next() (waiting 5 ms for each frame)
    consumer.join(timeout=10)
    assert not consumer.is_alive() and not failed, failed
    assert at_end == [(False, True, True)]
    assert len(seen) - judged <= 2  # the result being handed over, and at most the batch (1) in hand
    assert run.pipeline.closed and not run.pipeline.running
    assert not [t for t in threading.enumerate() if t.name.startswith("edgecmg-capture")]
    run.close()  # again: nothing left to do
    assert list(run) == []


def test_a_run_closed_by_a_signal_handler_inside_its_own_loop_ends_the_loop(helpers):
    """SIGTERM handled with `run.close()` while the loop is inside next() ended it with a bare ValueError."""
    if not hasattr(signal, "setitimer"):
        pytest.skip("needs signal.setitimer (POSIX)")
    assert threading.current_thread() is threading.main_thread()
    run = StreamPipeline(endless_frames(delay_s=0.005), StreamConfig(policy="latest", max_queue=2),
                         live=True).run(lambda frames, pre: [f.index for f in frames])
    count, closed_at = 0, []

    def on_alarm(*_):
        closed_at.append(count)
        run.close()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        for _ in run:  # ends when the handler closes the run, whichever line it lands on
            count += 1
            if count == 1:
                # Armed once a frame has come through, so a slow start on a loaded machine cannot outrun it.
                signal.setitimer(signal.ITIMER_REAL, 0.05)
                deadline = time.monotonic() + 30
            elif time.monotonic() > deadline:
                break  # a run the close did not end: reported below
        ended = (run.pipeline.running, run.pipeline.source.closed, run.pipeline.closed)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        run.close()
    assert closed_at, "the timer never fired"
    assert ended == (False, True, True), "the loop ended with the capture thread joined and the source released"
    assert count - closed_at[0] <= 1  # at most the batch (1) in hand after the close
    assert helpers.capture_threads() == []
    run.close()  # again: nothing left to do


def test_a_run_closed_from_another_thread_between_two_results_ends_at_the_next(helpers):
    """A loop busy with its result (not inside next()) when another thread closes the run: the pipeline is
    stopped at once, and the loop's next next() ends it without a "generator already executing" error,
    once that close has joined the capture thread."""
    for _ in range(5):
        run = StreamPipeline(endless_frames(delay_s=0.001), StreamConfig(policy="latest", max_queue=2),
                             live=True).run(lambda frames, pre: [f.index for f in frames])
        consumer, seen, failed, at_end = _consume_in_a_thread(run, results=3, work_s=0.01)  # closes land in its work
        judged = len(seen)
        run.close()
        consumer.join(timeout=10)
        assert not consumer.is_alive() and not failed, failed
        assert at_end == [(False, True, True)] and len(seen) - judged <= 2
        assert run.pipeline.closed and run.pipeline.source.closed and helpers.capture_threads() == []
        run.close()


def test_closes_from_a_signal_handler_on_a_source_that_never_waits_end_the_loop_cleanly(helpers, caplog):
    """Stress: SIGALRM closes the run wherever the consumer is, at times inside the queue's lock in get()
    (a frame source that never sleeps keeps it busy there). A close that took the (re-entrant) lock from
    the handler cleared the queue under get(): "IndexError: pop from an empty deque", or a handler that
    waited the join timeout for a capture thread blocked on that very lock ("still blocked in the
    source", the thread left alive after the loop)."""
    if not hasattr(signal, "setitimer"):
        pytest.skip("needs signal.setitimer (POSIX)")
    assert threading.current_thread() is threading.main_thread()
    current, alarms = [], []

    def on_alarm(*_):
        alarms[-1] += 1
        if alarms[-1] > 20:  # 10 s of closes every 0.5 s: the loop does not end
            raise TimeoutError("the close did not end the loop")
        current[-1].close()  # again on each repeat of the timer: nothing left to do after the first

    previous = signal.signal(signal.SIGALRM, on_alarm)
    problems = []
    t_start = time.monotonic()
    try:
        with caplog.at_level("WARNING", logger="edgecmg"):
            for trial in range(250):
                if time.monotonic() - t_start > 8:  # a bound on a very slow machine, never reached otherwise
                    break
                # Both policies; "all" keeps the consumer in get() most (the capture thread waits for room).
                cfg = StreamConfig(policy=("all", "all", "latest")[trial % 3], batch=4, max_queue=4)
                run = StreamPipeline(endless_frames(), cfg, live=True, join_timeout_s=0.5).run(
                    lambda frames, pre: [f.index for f in frames])
                current.append(run)
                alarms.append(0)
                try:
                    signal.setitimer(signal.ITIMER_REAL, 0.001 * (1 + trial % 19), 0.5)  # many phases
                    for _ in run:
                        pass  # nothing here: the consumer's time is the pipeline's
                    if run.pipeline.running or not run.pipeline.source.closed:
                        problems.append((trial, "the loop ended before the capture thread was joined"))
                except Exception as exc:  # noqa: BLE001 - the test reports it
                    problems.append((trial, repr(exc)))
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                    run.close()
                    run.close()  # a second close: nothing left to do
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    stalls = [r.getMessage() for r in caplog.records if "still blocked" in r.getMessage()]
    assert not problems and not stalls, (problems, stalls)
    assert trial >= 20, "too few closes to mean anything"
    assert helpers.capture_threads() == []


def test_a_signal_handled_inside_the_queue_lock_only_requests_the_stop(helpers, caplog):
    """The race above, made certain: the signal is raised in get() while it holds the queue's lock, between
    seeing an item and taking it. The handler's close must leave the queue alone (it emptied it under get():
    IndexError) and not wait for the capture thread (blocked on that lock: a stall of the join timeout)."""
    if not hasattr(signal, "raise_signal"):
        pytest.skip("needs signal.raise_signal")
    assert threading.current_thread() is threading.main_thread()
    run = StreamPipeline(endless_frames(delay_s=0.001), StreamConfig(policy="latest", max_queue=4), live=True,
                         join_timeout_s=0.5).run(lambda frames, pre: [f.index for f in frames])
    queue = run.pipeline._state.queue
    drop_oldest, raised = queue._drop_oldest, []

    def drop_oldest_then_a_signal(keep):  # called by get() (and put()) with the lock held
        drop_oldest(keep)
        if threading.current_thread() is threading.main_thread() and len(raised) == 2:
            raised.append("signal")
            signal.raise_signal(signal.SIGALRM)  # the handler runs here, inside get()
        elif threading.current_thread() is threading.main_thread() and len(raised) < 2:
            raised.append(None)  # a couple of frames first

    queue._drop_oldest = drop_oldest_then_a_signal
    previous = signal.signal(signal.SIGALRM, lambda *_: run.close())
    try:
        with caplog.at_level("WARNING", logger="edgecmg"):
            count = sum(1 for _ in run)
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert len(raised) == 3 and count == 3  # the frame taken when the signal came is handed over, then the end
    assert "still blocked" not in caplog.text  # no wait for the join timeout inside the handler
    assert run.pipeline.closed and not run.pipeline.running and run.pipeline.source.closed
    assert helpers.capture_threads() == []
