"""``edgecmg stream``: a detector on a live source, with overlay video, JSON lines and a status line."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2

from edgecmg.config import StreamConfig
from edgecmg.errors import StreamError


def run_stream(args: argparse.Namespace) -> int:
    from edgecmg.detector import Detector
    from edgecmg.stream.report import LiveStatusLine, markdown_table, write_report

    source = int(args.source) if args.source.isdigit() else args.source
    for output in (args.save, args.jsonl):
        if output:
            Path(output).parent.mkdir(parents=True, exist_ok=True)
    detector = Detector.load(args.model, backend=args.backend)
    writer = None
    jsonl = open(args.jsonl, "w", encoding="utf-8") if args.jsonl else None
    status = LiveStatusLine()
    config = StreamConfig(policy=args.policy, batch=args.batch)
    anomalies = 0
    run = detector.stream(source, config=config)
    try:
        with run:
            for count, result in enumerate(run, start=1):
                anomalies += result.is_anomaly
                if jsonl:
                    jsonl.write(json.dumps(result.to_dict()) + "\n")
                if args.save or args.show:
                    overlay = result.overlay()
                    if args.save:
                        if writer is None:
                            h, w = overlay.shape[:2]
                            # The source's own rate, so the saved video plays at real speed.
                            fps = run.pipeline.source.frame_rate or 25.0
                            writer = cv2.VideoWriter(args.save, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                            if not writer.isOpened():  # OpenCV fails silently otherwise: no file, no error
                                raise StreamError(f"cannot write the overlay video {args.save}: OpenCV could "
                                                  "not open it for MPEG-4 output; use an .mp4 or .avi name "
                                                  "in a writable folder")
                        writer.write(cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
                    if args.show:
                        cv2.imshow("edgecmg", cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
                        if cv2.waitKey(1) & 0xFF == ord("q"):
                            break
                status.update_from(run.stats)
                if args.max_frames and count >= args.max_frames:
                    break
    finally:
        status.update_from(run.stats, force=True)  # the final figures, not the last throttled ones
        status.close()
        if writer is not None:
            writer.release()
        if jsonl:
            jsonl.close()
        detector.close()
    stats = run.stats.to_dict()
    stats["anomalies"] = anomalies
    report_dir = summary_folder(args)
    if report_dir is None:
        print(markdown_table([stats]))
    else:
        print(write_report([stats], report_dir, "stream_summary"))
        print(f"summary: {report_dir / 'stream_summary.json'} (.csv, .md)")
    return 0


def summary_folder(args: argparse.Namespace) -> Path | None:
    """Where stream_summary.{json,csv,md} go: --report, else beside --jsonl or --save, else nowhere
    (a plain camera run prints its summary and leaves no files behind)."""
    if args.report:
        return Path(args.report)
    for path in (args.jsonl, args.save):
        if path:
            return Path(path).resolve().parent
    return None
