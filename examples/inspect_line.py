"""A production-line loop: judge every frame of a camera or a recording, act on each defective part,
and print a shift report at the end.

    python examples/inspect_line.py part.edgecmg 0                       # camera 0
    python examples/inspect_line.py part.engine line3.mp4 --rejects rejects/ --max-frames 500

For every anomaly, ``reject()`` is called (replace its body with your PLC, GPIO or MQTT call) and,
with ``--rejects DIR``, the heat-map overlay is saved there as the evidence an operator looks at,
named by the run's start time and the frame (``20261206-064512_frame000012.png``), so a restarted run
never replaces an earlier shift's pictures. A model, source or folder that cannot be used is an
error line (exit 2), not a traceback; a camera lost for good ends the run with the report, then the
error line (exit 2).
Ctrl-C ends the run cleanly and still prints the report; so do SIGTERM (``systemctl stop``, ``docker
stop``) and SIGHUP (the terminal closed), for a run as a service. A live camera that drops out is reopened
by the stream (``StreamConfig.reconnect_attempts``); frames that arrive faster than the model judges
them are dropped and counted, so the verdicts stay current.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from edgecmg.detector import Detector
from edgecmg.errors import EdgeCMGError
from edgecmg.fileio import check_writable
from edgecmg.result import Result
from edgecmg.visualize import save_png


def reject(result: Result, source: str) -> None:
    """The line's action for a defective part; here a log line (naming the file where a folder is read)."""
    ratio = f" ({result.score / result.threshold:.2f}x the threshold)" if result.threshold > 0 else ""
    where = f" ({result.source})" if result.source and result.source != source else ""
    print(f"REJECT frame {result.frame_index}{where}: score {result.score:.3f}{ratio}", flush=True)


def stop_as_ctrl_c(signum: int, frame: object) -> None:
    """A service is stopped with SIGTERM, not Ctrl-C: it ends the run the same way. (Without a
    handler the process dies at once, with no report, and as PID 1 in a container it ignores SIGTERM
    until docker kills it.)"""
    raise KeyboardInterrupt


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="model file: .edgecmg, .onnx or .engine")
    parser.add_argument("source", help="camera index, video file, image folder, rtsp:// URL or csi://N")
    parser.add_argument("--backend", default="auto", help="auto, torch, onnxruntime or tensorrt (default: auto)")
    parser.add_argument("--threshold", type=float, help="override the model's threshold (see `edgecmg threshold`)")
    parser.add_argument("--rejects", type=Path, help="save the overlay of every rejected part here")
    parser.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (default: 0 = no limit)")
    args = parser.parse_args(argv)
    if args.max_frames < 0:
        parser.error(f"--max-frames {args.max_frames}: give a number of frames, or 0 for no limit")
    previous = {}
    if threading.current_thread() is threading.main_thread():  # only there can Python set handlers
        for name in ("SIGTERM", "SIGHUP"):  # Windows has no SIGHUP
            number = getattr(signal, name, None)
            # Left alone: an ignored signal (nohup), and a handler set outside Python (it cannot be put back).
            if number is not None and signal.getsignal(number) not in (signal.SIG_IGN, None):
                previous[number] = signal.signal(number, stop_as_ctrl_c)
    try:
        return inspect(args)
    except EdgeCMGError as exc:  # an unusable model, source, threshold or --rejects folder
        print(f"inspect_line: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # outside the loop: loading the model, opening or closing the camera
        print("stopped (Ctrl-C or a stop signal) while starting or closing the stream", file=sys.stderr)
        return 130
    finally:  # main() called from a program of yours leaves its handlers as they were
        for number, handler in previous.items():
            signal.signal(number, handler)


def inspect(args: argparse.Namespace) -> int:
    run_stamp = time.strftime("%Y%m%d-%H%M%S")  # in the reject pictures' names: one run never replaces another's
    if args.rejects is not None:
        check_writable(args.rejects / f"{run_stamp}_frame000000.png", what="the rejects folder")  # before any frame
    judged = rejected = 0
    lost = None  # a camera lost beyond its reconnects: the report of what was judged still comes first
    # map_size="model": the loop needs maps only for the reject pictures, and overlay() resizes as it
    # draws; resizing every map to a 12 MP camera frame took 20-165 ms a frame on a 2-core CPU.
    with Detector.load(args.model, backend=args.backend, threshold=args.threshold, map_size="model") as detector, \
            detector.stream(args.source) as results:
        print(f"{detector}\njudging {args.source}; Ctrl-C to stop", flush=True)
        try:
            for result in results:
                judged += 1
                if result.is_anomaly:
                    rejected += 1
                    reject(result, results.pipeline.source.name)
                    if args.rejects is not None:
                        save_png(args.rejects / f"{run_stamp}_frame{result.frame_index:06d}.png", result.overlay())
                if judged == args.max_frames:
                    break
        except KeyboardInterrupt:
            print("stopped (Ctrl-C or a stop signal)")
        except EdgeCMGError as exc:  # the camera lost for good (or a reject picture not written)
            lost = exc
        stats, live = results.stats, results.pipeline.source.is_live

    print(f"{judged} frames judged, {rejected} rejected, {stats.frames_dropped} dropped as stale, "
          f"{stats.reconnects} reconnects, {stats.corrupt_skipped} unreadable skipped")
    latency, inference = stats.latency_ms.summary(), stats.inference_ms.summary()
    if latency["count"]:
        print(f"latency capture -> verdict: p50 {latency['p50_ms']:.1f} ms, p99 {latency['p99_ms']:.1f} ms "
              f"(of it the model: p50 {inference['p50_ms']:.1f} ms); {stats.fps:.1f} frames/s")
        if not live:  # a file or folder is read as fast as it decodes: its frames wait in the queue
            print("  a recording or folder is read ahead of the model, so its frames wait in the queue: the "
                  "model's share is what a camera's frames would see")
    if lost is not None:
        print(f"inspect_line: error: {lost}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
