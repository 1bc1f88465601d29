"""``edgecmg capture``: frames of a camera (or any stream source) saved as lossless PNG files.

Fit's training images and ``edgecmg threshold``'s good parts are best taken from the camera the
line will run, the way ``stream`` will see them: the same source, size and driver, and no
compression (JPEG artefacts move anomaly scores).
"""
from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

from edgecmg.commands import (check_out_outside_inputs, output_folder, refuse_model_among, source_from_args,
                              warn_unused_capture_flags)
from edgecmg.config import StreamConfig
from edgecmg.errors import ConfigError, one_line

log = logging.getLogger("edgecmg")

FRAME_NAME = re.compile(r"frame_(\d+)\.png")


def next_frame_number(folder: Path) -> int:
    """The number after the highest ``frame_N.png`` in ``folder`` (0 when there is none), so that a
    second capture into a folder adds frames instead of replacing the first one's."""
    numbers = [int(m.group(1)) for p in folder.iterdir() if (m := FRAME_NAME.fullmatch(p.name))]
    return max(numbers, default=-1) + 1


def run_capture(args: argparse.Namespace) -> int:
    from edgecmg.progress import tqdm

    from edgecmg.stream.sources import open_source
    from edgecmg.visualize import save_png

    if args.frames < 1:
        raise ConfigError(f"--frames {args.frames}: give how many frames to save (1 or more)")
    if args.step < 1:
        raise ConfigError(f"--step {args.step}: give 1 to save every frame, or N to save every N-th")
    # A model given as the source (stream's -m habit, or fit's model-first one) is named as one, rather
    # than opened as a video OpenCV cannot decode.
    refuse_model_among(args.source, "a source", lambda model, others: "capture saves a camera's or a video's frames "
                       f"and takes no model (edgecmg capture {' '.join(others) or 'SOURCE'} -o {args.out})")
    sources = source_from_args(args.source, "capture")
    # Checked before the source opens: frames saved into the folder being read would be read back.
    check_out_outside_inputs(args.out, "-o/--out", args.source)
    config = StreamConfig(reconnect_attempts=args.reconnect_attempts,
                          capture_size=tuple(args.capture_size) if args.capture_size else None,
                          capture_fps=args.capture_fps)
    # The source opens first: a mistyped camera or path fails before the folder is made.
    with open_source(sources, config) as source:
        warn_unused_capture_flags(args, source)
        with output_folder(args.out, "-o/--out") as out:
            first = next_frame_number(out)
            saved: list[Path] = []
            try:
                with tqdm(total=args.frames, desc="capture", unit="frame", disable=not args.progress_bars) as bar:
                    for frame in source:
                        if frame.index % args.step:
                            continue
                        # Each file is complete or absent (written by rename): an interrupted capture keeps
                        # every frame it saved.
                        saved.append(save_png(out / f"frame_{first + len(saved):06d}.png", frame.image,
                                              in_place=True))
                        bar.update()
                        if len(saved) == args.frames:
                            break
            finally:
                _say_saved(saved, out, source.name)
    if len(saved) < args.frames:
        log.warning("%s ended after %d of the %d frames asked for", source.name, len(saved), args.frames)
    return 0


def _say_saved(saved: list[Path], out: Path, source: str) -> None:
    """What was saved, on stdout as other commands' results are (fit's "wrote ..."): under -q too."""
    if saved:
        names = saved[0].name if len(saved) == 1 else f"{saved[0].name} to {saved[-1].name}"
        print(one_line(f"saved {len(saved)} frame{'' if len(saved) == 1 else 's'} of {source} to {out} ({names})"),
              flush=True)
    else:
        print(one_line(f"no frame of {source} saved"), flush=True)
