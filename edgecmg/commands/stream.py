"""``edgecmg stream``: a detector on a live source, with overlay video, JSON lines and a status line."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import uuid
from collections import deque
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from edgecmg.commands import (
    STOP_SIGNALS,
    Terminated,
    held_while_updating,
    install_handlers,
    missing_folders,
    output_file,
    refuse_model_among,
    remove_empty_folders,
    restore_handlers,
    source_from_args,
    warn_unused_capture_flags,
)
from edgecmg.config import StreamConfig
from edgecmg.errors import ConfigError, EdgeCMGError, OutputError, StreamError
from edgecmg.fileio import JsonLinesFile, json_text, same_file, write_problem
from edgecmg.stream.sources import DEFAULT_PACE_FPS, ImageFilesSource
from edgecmg.stream.status_line import LiveStatusLine

log = logging.getLogger("edgecmg")

WINDOW_NAME = "edgecmg"


def stream_source(sources: list[str], model: str | None) -> str | list[str]:
    """The source the command line names (see :func:`edgecmg.commands.source_from_args`). A model
    file among them is named, since every other command takes the model first and stream takes it
    by ``-m``; where -m names the source instead (the two swapped), the command shown swaps them back."""
    from edgecmg.runtime.registry import KNOWN_SUFFIXES

    def usage(found: str, others: list[str]) -> str:
        if model is None or Path(model).suffix.lower() in KNOWN_SUFFIXES:
            return f"edgecmg stream {' '.join(others) or 'SOURCE'} -m {model or found}"
        return f"edgecmg stream {' '.join([*others, model])} -m {found}"  # -m named the source: swapped

    # every other command's model-first habit (edgecmg stream part.edgecmg ...)
    refuse_model_among(sources, "a source",
                       lambda found, others: f"stream takes the model by -m ({usage(found, others)})")
    if model is None:
        others = " ".join(sources) or "SOURCE"
        raise ConfigError(f"no model given: stream takes the model by -m (edgecmg stream {others} -m MODEL)")
    return source_from_args(sources, "stream")


def run_stream(args: argparse.Namespace) -> int:
    from edgecmg.detector import Detector

    check_frame_limits(args)
    source = stream_source(args.source, args.model)
    check_output_names(args)  # a --jsonl naming the model would be appended to: refused before it loads
    config = stream_config(args)  # checked before the model loads
    if args.show:
        open_window()
    model_sha256 = file_sha256_or_none(args.model)  # before it loads: what the summary names
    detector = Detector.load(args.model, backend=args.backend, threshold=args.threshold, spin=args.spin)
    tally = RunTally(detector, model_sha256)
    run = start_run(detector, source, config)  # before any output: a mistyped source creates no file
    tally.source = run.pipeline.source.name  # what its warnings name: several streams may share one log
    warn_unused_capture_flags(args, run.pipeline.source, realtime=args.realtime)
    created = CreatedOutputs(args)  # what is there before the outputs are made: a run that fails at once removes them
    check_outputs_or_close(args, run, detector, created)
    # The video plays at the rate the frames came: the source's own, else the pace --realtime gave them.
    pace = run.pipeline.source.frame_rate or ((args.capture_fps or DEFAULT_PACE_FPS) if args.realtime else None)
    if pace is None and isinstance(run.pipeline.source, ImageFilesSource):
        pace = STILLS_FPS  # at 25 a second, a folder of 12 parts played as a half-second flash
    video = OverlayVideo(args.save, pace) if args.save else None
    jsonl = None
    status = None if args.quiet else LiveStatusLine()
    finished = False  # the loop ended without an exception: a summary that cannot be written is then the error
    stopped = False  # a stop signal (Ctrl-C, SIGTERM, SIGHUP) ended it: the summary says so, frames judged or not
    try:
        # Line-buffered: every judged frame's record is on disk, whatever ends the run.
        jsonl = open_records(args.jsonl) if args.jsonl else None
        with run, StopBetweenRecords(lambda: run.stats.frames_yielded) as stop:
            judge_frames(args, run, stop, jsonl, video, status, tally)
        finished = True
    except Terminated as stop:
        tally.end("signal", f"terminated ({stop.signal_name})")
        stopped = True
        raise
    except KeyboardInterrupt:
        tally.end("interrupt", "interrupted (Ctrl-C)")
        stopped = True
        raise
    except StreamError as exc:
        tally.end("stream_error", f"stream error: {exc}")
        raise
    except BrokenPipeError:  # --jsonl - into `| head`: its reader has what it wanted
        tally.end("reader_gone", "the reader of the --jsonl records went away (a closed pipe)")
        raise
    except Exception as exc:  # e.g. --jsonl on a full disk: the summary says what stopped the run
        tally.end("error", f"error: {exc}")
        raise
    finally:
        # A run that failed before judging a frame (no frame of the source could be decoded, the camera
        # was lost before the first) never started: its error line is all it reports, and it leaves no
        # file behind, neither an empty --jsonl nor a summary of nothing (which would replace the row of
        # this stream's last real run). A stop signal's run is summarised even then: it ran until stopped.
        started = finished or stopped or run.stats.frames_yielded > 0
        try:
            close_run(status if started else None, video, jsonl, run, detector, finished, tally)
        finally:  # a close that fails (a video on a full disk) still leaves the summary of what was judged
            if started:
                write_final_summary(args, run, tally, finished)
            else:
                created.remove()
    return 0


def check_frame_limits(args: argparse.Namespace) -> None:
    """Refuses a negative --stall-warn and a --max-frames below 1, before anything is opened."""
    if not args.stall_warn >= 0:
        raise ConfigError(f"--stall-warn {args.stall_warn}: give seconds >= 0 (0: never warn, for a triggered "
                          "camera that is silent between parts)")
    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError(f"--max-frames {args.max_frames}: give a positive frame count, or leave it out to run "
                          "until the source ends")


def stream_config(args: argparse.Namespace) -> StreamConfig:
    """The StreamConfig the flags ask for (it checks them: a bad value fails before the model loads)."""
    return StreamConfig(policy=args.policy, batch=args.batch, max_queue=args.max_queue, realtime=args.realtime,
                        reconnect_attempts=args.reconnect_attempts, stall_warn_s=args.stall_warn or None,
                        capture_size=tuple(args.capture_size) if args.capture_size else None,
                        capture_fps=args.capture_fps)


def start_run(detector, source, config: StreamConfig):
    """The detector's stream run on ``source``, its source opened; the detector is closed where that fails."""
    try:
        # The source opens here: a mistyped path fails before any output file is created or truncated.
        # A string of digits is a camera index unless a file or folder has that name (open_source).
        return detector.stream(source, config=config)
    except BaseException:
        detector.close()
        raise


def check_outputs_or_close(args: argparse.Namespace, run, detector, created: CreatedOutputs) -> None:
    """:func:`check_outputs`; the run and the detector are closed where an output is refused, and the
    folders an output checked before it created are removed again."""
    try:
        check_outputs(args)  # after the source opened: a mistyped source leaves no folder behind
    except BaseException:
        created.remove()
        run.close()
        detector.close()
        raise


class CreatedOutputs:
    """What the outputs of a run will create, noted before they are checked: the --jsonl file where
    none was there, and the folders --save, --jsonl and --report are made in. :meth:`remove` takes
    away what is still empty, for a run that ends before judging a frame (a file of records it never
    wrote, a folder it never wrote into)."""

    def __init__(self, args: argparse.Namespace) -> None:
        records = args.jsonl if args.jsonl and not records_on_stdout(args.jsonl) else None
        self.records = Path(records) if records and not os.path.lexists(records) else None
        self.folders = [missing_folders(Path(path).parent) for path in (args.save, records) if path]
        if args.report:
            self.folders.append(missing_folders(Path(args.report)))

    def remove(self) -> None:
        with contextlib.suppress(OSError):  # best effort: the run's own error is the one to report
            if self.records is not None and self.records.is_file() and self.records.stat().st_size == 0:
                self.records.unlink()
        for folders in self.folders:
            with contextlib.suppress(OSError):
                remove_empty_folders(folders)


MOSTLY_FLAGGED = 0.5  # a stream that flags more than this share of its frames ends with how to set a threshold
MOSTLY_FLAGGED_FRAMES = 20  # on fewer frames, a run of defects is as likely
#: Frames a running stream looks back over to say, while it runs (a service runs for days before its
#: end would say it), that most frames are flagged: the line's light, position or focus drifting since
#: fit raises good parts' scores until nearly all are (KolektorSDD 30% brighter: 78% of good parts).
RECENT_FRAMES = 200
STILLS_FPS = 2.0  # --save's frame rate for image files read without --realtime: each part on screen half a second


#: A summary row's ``ended_by``: what ended the run, for a script (``ended`` says it in words).
ENDED_BY = ("source_ended", "max_frames", "window", "signal", "interrupt", "stream_error", "reader_gone", "error")


class RunTally:
    """What the summary reports of a run besides the stream's own figures: which model judged (a
    service's model is replaced between runs), the anomalies so far and what ended the run, kept up
    to date while it runs (an exception may end it at any frame)."""

    def __init__(self, detector, model_sha256: str | None) -> None:
        # When and with what: a restarted service's summary replaces the one before it, and a model
        # file replaced under the same name is told apart by its hash.
        # run_id: two starts within a second, or a Jetson without a clock battery booting to the same
        # time before NTP sets it, share "started"; the id tells their records apart.
        self.judged_by = {"started": datetime.now().astimezone().isoformat(timespec="seconds"),
                          "run_id": uuid.uuid4().hex[:12],
                          "model": str(Path(detector.runner.model_path).resolve()), "model_sha256": model_sha256,
                          "backend": detector.backend, "device": detector.device, "threshold": detector.threshold}
        self.anomalies = 0
        self.source = "the stream"  # set to the source's name once it is open
        self.ended_by, self.ended = "source_ended", "the source ended"
        self.recent: deque[bool] = deque(maxlen=RECENT_FRAMES)  # the last frames' verdicts
        self.recent_flagged = 0
        self.drift_said = False  # the mostly-flagged warning: said once per run, again after it recovered

    def end(self, code: str, text: str) -> None:
        """What ended the run: ``code`` for a script (one of ENDED_BY), ``text`` for a person."""
        if code not in ENDED_BY:  # a script matches on these: a new one goes into the tuple (and the docs)
            raise ValueError(f"ended_by {code!r} is not one of {ENDED_BY}")
        self.ended_by, self.ended = code, text

    def count(self, is_anomaly: bool) -> None:
        """One judged frame's verdict; warns when most of the last RECENT_FRAMES frames are flagged: once,
        and again only after the flagged share has fallen under a quarter (a share hovering at half
        would otherwise repeat it every few frames)."""
        self.anomalies += is_anomaly
        if len(self.recent) == self.recent.maxlen:
            self.recent_flagged -= self.recent[0]
        self.recent.append(bool(is_anomaly))
        self.recent_flagged += bool(is_anomaly)
        mostly = len(self.recent) == self.recent.maxlen and self.recent_flagged > MOSTLY_FLAGGED * len(self.recent)
        if mostly and not self.drift_said:
            log.warning("%s: %d of the last %d frames were flagged at threshold %.4g: if these parts are good, the "
                        "line changed since fit (light, position, focus, camera) or this camera's frames differ "
                        "from the images fit read; fit again on good frames taken now (edgecmg capture) and check "
                        "it with edgecmg eval on defects", self.source, self.recent_flagged, len(self.recent),
                        self.judged_by["threshold"])
        recovered = self.recent_flagged < MOSTLY_FLAGGED / 2 * len(self.recent)
        self.drift_said = mostly or (self.drift_said and not recovered)


def file_sha256_or_none(path: str) -> str | None:
    """The model file's SHA-256, None where it cannot be read (loading it then says why)."""
    from edgecmg.fileio import file_sha256

    if not Path(path).is_file():  # a FIFO or /dev/zero would be read for ever; the loader refuses them
        return None
    try:
        return file_sha256(path)
    except OSError:
        return None


def judge_frames(args: argparse.Namespace, run, stop: StopBetweenRecords, jsonl, video: OverlayVideo | None,
                 status: LiveStatusLine | None, tally: RunTally) -> None:
    """Takes the run's judged frames until the source ends, --max-frames is reached or q is pressed in
    the --show window: each frame's record goes to --jsonl, its overlay to --save and --show."""
    for count, result in enumerate(run, start=1):
        # A SIGTERM or Ctrl-C from the frame's count in the pipeline on (StopBetweenRecords' counted),
        # not only from here, waits until this frame's record is written.
        stop.hold()
        tally.count(result.is_anomaly)
        if jsonl:
            try:
                # run_started and run_id: a restarted service appends to the same file, and its frame_index
                # starts at 0 again; the summary row of that run has the same "started" and "run_id"
                jsonl.write({**result.to_dict(), "run_started": tally.judged_by["started"],
                             "run_id": tally.judged_by["run_id"]})  # whole or not at all
            except OSError as exc:  # a full disk on a long run: the error names the file
                if records_on_stdout(args.jsonl):  # the reader of a pipe went away: `| head` says it has enough
                    with contextlib.suppress(OSError):  # closed now: its close at the end would fail again
                        jsonl.close()
                    raise
                raise OutputError(write_problem(Path(args.jsonl), exc, "the --jsonl records")) from exc
        # Released once the frame's overlay is in the video too: a stop held during the record came
        # out before it, and left the video a frame short of the records.
        stopped_from_window = bool(video or args.show) and show_and_save_overlay(result, video, args.show)
        stop.release()
        if stopped_from_window:
            tally.end("window", "stopped from the window (q)")
            break
        if status:
            status.update_from(run.stats, extra=f"flagged {tally.anomalies}")
        if args.max_frames and count >= args.max_frames:
            tally.end("max_frames", f"--max-frames {args.max_frames} reached")
            break


def show_and_save_overlay(result, video: OverlayVideo | None, show: bool) -> bool:
    """Writes the frame's overlay to the --save video and shows it in the --show window: True when q
    was pressed there (the run stops)."""
    overlay = result.overlay()
    if video:
        video.write(overlay, result.frame_index)
    if show:
        cv2.imshow(WINDOW_NAME, cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
        if cv2.waitKey(1) & 0xFF == ord("q"):
            return True
    return False


def close_run(status: LiveStatusLine | None, video: OverlayVideo | None, jsonl, run, detector,
              finished: bool, tally: RunTally) -> None:
    """Closes the status line (with the final figures), the video, --jsonl, the run and the detector;
    each is closed even where one before it fails. The first failure is raised after a run that
    ``finished``; after one that failed (a stop signal, a lost camera) it is logged, so the run's own
    error, and its exit status, is the one that ends the command."""
    closes = []
    if status:
        closes += [lambda: status.update_from(run.stats, force=True, extra=f"flagged {tally.anomalies}"),
                   status.close]  # the final figures
    if video:
        closes.append(video.close)
    if jsonl:
        closes.append(jsonl.close)
    closes += [run.close, detector.close]  # also where the loop never started (--jsonl could not be opened)
    first_error = None
    for close in closes:
        try:
            close()
        except BaseException as exc:  # noqa: BLE001 - raised or logged below, once the others are closed
            first_error = first_error or exc
    if first_error is not None:
        if finished:
            raise first_error
        # The type too: a second Ctrl-C during the close has no message of its own.
        log.error("while stopping the stream: %s: %s", type(first_error).__name__, first_error)


def write_final_summary(args: argparse.Namespace, run, tally: RunTally, finished: bool) -> None:
    """Writes the run's summary; where the run already failed (``finished`` False), a summary that
    cannot be written is logged, so the run's own error is the one raised."""
    # Also after Ctrl-C (how a camera run is stopped) or a lost camera: what was judged is reported.
    try:
        write_summary(args, run, tally)
    except (OSError, EdgeCMGError) as exc:
        if finished:
            raise
        # The run already failed (perhaps on the same disk): its error is the one to report.
        log.error("the stream summary could not be written or shown: %s", exc)


class StopBetweenRecords:
    """SIGTERM, SIGHUP and Ctrl-C stop the stream as always, except between receiving a judged frame
    and writing its record: a signal there is held until the record is on disk (the summary counts
    the frame as judged, so its record must exist). Installed as :func:`install_handlers` sets
    handlers (main thread only, ignored signals left ignored); the ones before it are put back on
    leaving.

    counted: the run's count of judged frames (``run.stats.frames_yielded``, what the summary reports).
    The pipeline counts a frame before handing it over, so a stop between that count and hold() is
    held too: it once ended the run there, the summary a frame ahead of the records."""

    _SIGNALS = (signal.SIGINT, *STOP_SIGNALS)

    def __init__(self, counted: Callable[[], int] | None = None) -> None:
        self._holding = False
        self._held: BaseException | None = None
        self._previous: dict[int, Any] = {}
        self._counted = counted
        self._recorded = 0  # the count at the last release(): frames whose records are written

    def __enter__(self) -> "StopBetweenRecords":
        self._recorded = self._counted() if self._counted else 0  # frames counted before the block hold nothing
        self._previous = install_handlers(self._SIGNALS, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        self._holding, self._held = False, None  # a run that ended inside a record holds nothing after it
        restore_handlers(self._previous)

    def _on_signal(self, number: int, frame: object) -> None:
        stop = KeyboardInterrupt() if number == signal.SIGINT else Terminated(number)
        if self._holding or (self._counted is not None and self._counted() > self._recorded):
            self._held = stop  # raised by release(), once the frame in hand has its record
        else:
            raise stop

    def hold(self) -> None:
        self._holding = True

    def release(self) -> None:
        self._holding = False
        if self._counted is not None:
            self._recorded = self._counted()
        if self._held is not None:
            raise self._held


VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")  # containers OpenCV writes MPEG-4 ("mp4v") into


#: What each output is, and what to give it instead of a name it may not take (check_output_names).
_OUTPUT_GIVE = {
    "--save": f"give the overlay video a file of its own (ending in {', '.join(VIDEO_SUFFIXES)})",
    "--jsonl": "give the records a file of their own (e.g. frames.jsonl)",
    "--report": "give the summary a folder of its own (e.g. report/)",
}


def check_output_names(args: argparse.Namespace) -> None:
    """--save, --jsonl and --report, checked by name before the model loads or any file is opened:
    --jsonl is appended to and --save replaced (with --overwrite), so a name that is the model being
    run, a source, or any model, image or video file would be damaged by the run (``--jsonl
    part.edgecmg`` appended the records to the model, and every later load failed); --report is the
    folder for stream_summary.json, .csv and .md."""
    from edgecmg.fileio import MODEL_FILE_SUFFIXES  # edgecmg's own (KNOWN_SUFFIXES) and other frameworks'
    from edgecmg.imageio import IMAGE_EXTENSIONS

    if args.save and Path(args.save).suffix.lower() not in VIDEO_SUFFIXES:  # before any folder is made
        raise ConfigError(f"--save {args.save}: give a video file name ending in {', '.join(VIDEO_SUFFIXES)}")
    kinds = ((MODEL_FILE_SUFFIXES, "a model file"), (IMAGE_EXTENSIONS, "an image file"),
             (VIDEO_SUFFIXES, "a video file"))
    for flag, output in (("--save", args.save), ("--jsonl", args.jsonl), ("--report", args.report)):
        if not output or (flag == "--jsonl" and output == "-"):
            continue
        if same_file(output, args.model):
            raise ConfigError(f"{flag} {output} is the model being run (-m {args.model}); {_OUTPUT_GIVE[flag]}")
        read = next((source for source in args.source if same_file(output, source)), None)
        if read is not None:  # --overwrite would replace the recording being judged with its own overlays
            raise ConfigError(f"{flag} {output} is the source being read ({read}); give the output another name")
        suffix = Path(output).suffix.lower()
        kind = next((kind for suffixes, kind in kinds if suffix in suffixes), None)
        if flag != "--save" and kind is not None:
            written = "the records would be appended to it" if flag == "--jsonl" else \
                "--report takes the folder the summary is written into"
            raise ConfigError(f"{flag} {output}: that names {kind} ({suffix}), and {written}; {_OUTPUT_GIVE[flag]}")


def check_outputs(args: argparse.Namespace) -> None:
    """--save, --jsonl and --report, checked before the first frame (their names were checked before
    the model loaded, :func:`check_output_names`): an unwritable folder or an earlier video would
    otherwise end the run after it."""
    if args.save:
        output_file(args.save, "--save", overwrite=args.overwrite)
    if args.jsonl and not records_on_stdout(args.jsonl):
        output_file(args.jsonl, "--jsonl")  # appended to: an earlier run's records stay
    if args.report:
        output_file(Path(args.report) / "stream_summary.json", "--report")


def records_on_stdout(jsonl: str | None) -> bool:
    """Whether the --jsonl records are the command's standard output: ``--jsonl -``, or a path that
    is the same file (``/dev/stdout``). What the stream says besides them then goes to stderr, so a
    reader (``| jq``) gets JSON lines only."""
    if not jsonl:
        return False
    if jsonl == "-":
        return True
    try:
        named, stdout = os.stat(jsonl), os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no such file yet, or no stdout with a descriptor
        return False
    return (named.st_dev, named.st_ino) == (stdout.st_dev, stdout.st_ino)


def open_records(jsonl: str):
    """Where the --jsonl records go: standard output itself (:func:`records_on_stdout`), else the file,
    appended to (:func:`open_appending`). Either takes a record (a dict) a line."""
    if records_on_stdout(jsonl):
        return StdoutRecords()
    return open_appending(jsonl)


def open_appending(path: str) -> JsonLinesFile:
    """--jsonl, appended to record by record, each whole or not at all (a full disk cuts it back to its
    last whole line); a last line an earlier run left cut short is ended first."""
    return JsonLinesFile(Path(path), "the --jsonl records", append=True, alone=True, flag="--jsonl")


class StdoutRecords:
    """--jsonl - : a record a line on standard output, through its descriptor, left open at the end."""

    def __init__(self) -> None:
        sys.stdout.flush()
        self._handle = open(sys.stdout.fileno(), "w", encoding="utf-8", buffering=1, closefd=False)

    def write(self, record: dict) -> None:
        self._handle.write(json_text(record) + "\n")

    def close(self) -> None:
        self._handle.close()


def open_window() -> None:
    """The ``--show`` window, opened before anything else so a build of OpenCV without GUI support
    (opencv-python-headless, which edgecmg installs) or a missing display fails at once, clearly."""
    try:
        cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
    except cv2.error as exc:
        reason = (getattr(exc, "err", "") or str(exc)).split(".")[0].strip()  # OpenCV's first sentence
        raise StreamError(f"--show cannot open a window ({reason}): it needs OpenCV with GUI support and a "
                          "display; pip install opencv-python (in place of opencv-python-headless) on a "
                          "machine with a screen, or leave --show out and use --save") from exc


def write_summary(args: argparse.Namespace, run, tally: RunTally) -> None:
    from edgecmg.stream.environment import environment_info
    from edgecmg.stream.report import field_lines, write_report

    stats = {**run.stats.to_dict(), **tally.judged_by, "anomalies": tally.anomalies, "ended_by": tally.ended_by,
             "ended": tally.ended,
             # when, on the wall clock (elapsed_s is the monotonic clock's: a clock set by NTP mid-run
             # would otherwise leave the run nowhere in time)
             "ended_at": datetime.now().astimezone().isoformat(timespec="seconds"),
             # which stream the row is: the summary keeps one row per stream (see summary_rows)
             "records": None if not args.jsonl or records_on_stdout(args.jsonl) else str(Path(args.jsonl).resolve()),
             "video": str(Path(args.save).resolve()) if args.save else None}
    report_dir = summary_folder(args)
    say = sys.stderr if records_on_stdout(args.jsonl) else sys.stdout  # stdout may be the records' alone
    # One field a line: as a one-row table the 21 fields wrapped into a block no one could read.
    if report_dir is None:
        print(field_lines(stats), end="", file=say)
    else:
        try:
            # Held while the rows are read and written again: streams stopped together (a box shutting
            # down) each read the rows, and the last to write dropped the others'.
            with held_while_updating(report_dir):
                # torch's details only where the run loaded torch: an .onnx or an engine ends without it
                write_report(summary_rows(report_dir / "stream_summary.json", stats), report_dir, "stream_summary",
                             environment=environment_info(import_torch=False), schema="edgecmg.stream_summary.v1")
        finally:  # the output (a service's log) keeps what the files could not
            print(field_lines(stats), end="", file=say)
        print(f"summary: {report_dir / 'stream_summary.json'} (.csv, .md)", file=say)
    if not run.pipeline.source.is_live and not args.realtime:
        print("\nlatency counts the time frames waited in the queue: a recording is read as fast as it decodes; "
              "--realtime plays it at its frame rate, as a camera would deliver it", file=say)
    judged = stats.get("frames_yielded") or 0
    if judged >= MOSTLY_FLAGGED_FRAMES and tally.anomalies > MOSTLY_FLAGGED * judged:
        # A camera's frames often score above the image files the threshold was set on (compression,
        # light, a frame's crop), and then nearly every part is flagged, with nothing else to say why.
        print(f"\n{tally.anomalies} of {judged} frames were flagged at threshold {tally.judged_by['threshold']:.4g}. "
              "If most of these parts were good, this camera's frames score above the images the threshold was "
              "set on: set one on them (edgecmg capture SOURCE -o good_frames/ while good parts pass, then "
              f"edgecmg threshold {args.model} good_frames/); if the line changed since fit (light, position, "
              "focus), defects' scores rose too: fit again on good frames taken now", file=say)


def letterboxed(rgb, size: tuple[int, int]):
    """``rgb`` scaled to fit ``size`` (width, height) with its proportions kept, centred on black: an image
    folder's frames of other shapes were stretched to the first one's (a portrait part became a band)."""
    width, height = size
    h, w = rgb.shape[:2]
    scale = min(width / w, height / h)
    inner = (max(1, min(width, round(w * scale))), max(1, min(height, round(h * scale))))
    out = np.zeros((height, width, 3), np.uint8)
    left, top = (width - inner[0]) // 2, (height - inner[1]) // 2
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out[top:top + inner[1], left:left + inner[0]] = cv2.resize(rgb, inner, interpolation=interpolation)
    return out


class OverlayVideo:
    """The ``--save`` video: MPEG-4 at the source's frame rate (25 fps when it has none).

    It plays at the source's speed: a frame judged after frames the "latest" policy dropped is held
    for their time. Every frame is written at the first frame's size (OpenCV's writer silently drops
    frames of any other size, and image folders mix sizes; another shape is fitted in, letterboxed),
    scaled down to MAX_VIDEO_SIDE. OpenCV's
    writer says nothing of a failed write either: the file is read back when it is closed.
    """

    #: The longest side written: MPEG-4 Part 2 encoders refuse 8192 pixels or more (a line-scan frame of
    #: 9000x200 failed as "OpenCV could not open it"), and players' decoders stop at 4096.
    MAX_VIDEO_SIDE = 4096

    def __init__(self, path: str, frame_rate: float | None) -> None:
        self.path = path
        self.fps = frame_rate or 25.0
        self._writer = None
        self._size: tuple[int, int] | None = None
        self._last_index: int | None = None
        self.frames_written = 0  # repeats included: what the file must hold

    def write(self, overlay_rgb, frame_index: int) -> None:
        h, w = overlay_rgb.shape[:2]
        if self._writer is None:
            scale = min(1.0, self.MAX_VIDEO_SIDE / max(w, h))
            # Even sides when scaled: MPEG-4 codes in 2x2-subsampled chroma (an odd side was cut by one).
            self._size = (w, h) if scale == 1.0 else (2 * max(1, round(w * scale / 2)),
                                                      2 * max(1, round(h * scale / 2)))
            if scale < 1.0:
                log.info("--save %s: frames of %dx%d are written at %dx%d (a video side stops at %d pixels)",
                         self.path, w, h, *self._size, self.MAX_VIDEO_SIDE)
            self._writer = cv2.VideoWriter(self.path, cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self._size)
            if not self._writer.isOpened():  # OpenCV fails silently otherwise: no file, no error
                raise StreamError(f"cannot write the overlay video {self.path}: OpenCV could not open it for "
                                  f"MPEG-4 output; use a {', '.join(VIDEO_SUFFIXES)} name in a writable folder")
        if (w, h) != self._size:
            overlay_rgb = letterboxed(overlay_rgb, self._size)
        repeats = 1 if self._last_index is None else max(1, frame_index - self._last_index)
        self._last_index = frame_index
        frame_bgr = cv2.cvtColor(overlay_rgb, cv2.COLOR_RGB2BGR)
        for _ in range(repeats):
            self._writer.write(frame_bgr)
        self.frames_written += repeats

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.release()
        # The records are kept, and the summary says what was judged.
        if not video_holds_frames(self.path, self.frames_written):
            raise OutputError(f"the overlay video {self.path} was not written whole (its last frame cannot be read "
                              "back: is the disk full?); free space or choose another place for --save")


def video_holds_frames(path: str, frames: int) -> bool:
    """Whether the video at ``path`` reads back through its frame ``frames - 1``: OverlayVideo's check
    that nothing was lost, as OpenCV's writer says nothing of a failed write.

    A full disk leaves an .mp4 without its index (it does not open), or an .mkv or .avi cut short whose
    first frames read: Matroska and AVI are made to survive a cut. When the cut also kept the writer
    from filling in the header, the file has no length: OpenCV's seek then stops at frame 0, reports
    success, and the read gives the first frame. So the position after the read must be ``frames``
    (OpenCV's next frame), not just any frame read. One seek and one decode from the nearest key frame,
    through the file's index: milliseconds for an hour of video too, where reading every frame back
    would take about as long as writing them.
    """
    capture = cv2.VideoCapture(path)
    try:
        return (capture.isOpened() and capture.set(cv2.CAP_PROP_POS_FRAMES, frames - 1) and capture.read()[0]
                and capture.get(cv2.CAP_PROP_POS_FRAMES) == frames)
    finally:
        capture.release()


def summary_rows(path: Path, row: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows the summary at ``path`` holds after this run: the earlier rows of other streams, and
    ``row``. A stream is its --jsonl file, else its --save video, else its source: a restarted service
    replaces its own row, and two streams writing into one folder keep a row each (the second's
    summary replaced the first's); a stream judged by another model keeps a row of its own."""
    def stream(r: dict[str, Any]) -> Any:  # and the model: two parts judged on one camera keep a row each
        return r.get("records") or r.get("video") or r.get("source"), r.get("model_sha256")

    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))["rows"]
    except FileNotFoundError:
        earlier = []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s cannot be read (%s): it is replaced by this run's summary alone", path, exc)
        earlier = []
    kept = [r for r in earlier if isinstance(r, dict) and stream(r) != stream(row)] if isinstance(earlier, list) else []
    return [*kept, row]


def summary_folder(args: argparse.Namespace) -> Path | None:
    """Where stream_summary.{json,csv,md} go: --report, else beside --jsonl or --save, else nowhere
    (a plain camera run prints its summary and leaves no files behind)."""
    if args.report:
        return Path(args.report)
    for path in (args.jsonl, args.save):
        # Not beside standard output, a pipe or a device (--jsonl -, /dev/stdout): no folder is theirs.
        if path and not records_on_stdout(path) and (Path(path).is_file() or not Path(path).exists()):
            return Path(path).resolve().parent
    return None
