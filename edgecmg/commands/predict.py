"""``edgecmg predict``: judge image files, write an overlay per image and a JSON line per verdict.

results.jsonl and skipped.jsonl are written one whole record at a time, so a stopped run leaves
everything it did; ``--resume`` continues it (predict_run.json records the model and threshold it
judged with, which a resumed run must share).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Optional

from edgecmg import __version__
from edgecmg.commands import check_model_first, output_folder, partly_used
from edgecmg.errors import ConfigError, EdgeCMGError
from edgecmg.fileio import JsonLinesFile, atomic_write_bytes, json_text
from edgecmg.imageio import real_path

log = logging.getLogger("edgecmg")


def run_predict(args: argparse.Namespace) -> int:
    from edgecmg.progress import tqdm

    from edgecmg.detector import Detector
    from edgecmg.imageio import list_images_naming_subfolders, read_image
    from edgecmg.fileio import file_sha256
    from edgecmg.visualize import save_png

    check_model_first(args.images, "an image", "predict MODEL IMAGES... --out DIR")
    if args.resume and args.overwrite:
        raise ConfigError("--resume continues the earlier run in --out and --overwrite replaces it: give one of them")
    paths: list[Path] = []
    for item in args.images:
        paths.extend(list_images_naming_subfolders(item, "judged"))
    # An earlier run is its results.jsonl: one that read nothing keeps only its list of unreadable files
    # (below), which a new run may replace.
    with output_folder(args.out, results=("results.jsonl",), inputs=args.images,
                       overwrite=args.overwrite or args.resume, continued_by="--resume") as out:
        skipped_path = out / "skipped.jsonl"
        detector = Detector.load(args.model, backend=args.backend, threshold=args.threshold)
        model_sha256 = file_sha256(args.model)
        earlier_run = earlier_predict_run(out, args.model, model_sha256) if args.resume else None
        overlay_names = unique_overlay_names(paths)
        # Unreadable files go to skipped.jsonl, apart from results.jsonl, whose every line is a verdict:
        # a script tells "not judged" from "not given" without meeting records that hold no score.
        # Both are written line by line, so they hold everything done whatever ends the run, which
        # --resume then continues: (position, path) of the inputs left to judge.
        todo = list(enumerate(paths))
        if args.resume:
            todo = resume_predict(out, earlier_run, detector.threshold, todo, overlay_names)
        else:
            skipped_path.unlink(missing_ok=True)  # an earlier run's list (--overwrite)
            remove_earlier_overlays(out)  # --overwrite: what results.jsonl listed goes with it
        if earlier_run is None:  # what --resume checks a later run against
            atomic_write_bytes(out / PREDICT_RUN, json_text(
                {"schema": "edgecmg.predict_run.v1", "by": "edgecmg predict", "edgecmg": __version__,
                 "model": str(Path(args.model).resolve()),
                 "model_sha256": model_sha256, "threshold": float(detector.threshold), "backend": detector.backend,
                 "cwd": os.getcwd(), "started": datetime.now().astimezone().isoformat(timespec="seconds")},
                indent=2).encode("utf-8"), what="the run's record", sync=False)
        skipped, flagged, skipped_file = 0, 0, None
        written = [len(paths) - len(todo)]  # images with a record (kept from before, or this run's)
        # What a stop (Ctrl-C, SIGTERM) says: the records are kept, and --resume, not --overwrite (which
        # the next run's refusal also offers), is what continues them.
        go_on = ("run the same command again" if args.resume else "run it again with --resume in place of --overwrite"
                 if args.overwrite else "add --resume to the same command")
        args.stop_note = lambda: (f"{written[0]} of the {len(paths)} images are done, their records kept in {out}; "
                                  f"{go_on} to judge the rest") if written[0] else None
        with JsonLinesFile(out / "results.jsonl", "the results", append=args.resume) as jsonl, ExitStack() as closing:
            for index, path in tqdm(todo, desc="predict", unit="img", disable=not args.progress_bars,
                                    total=len(paths), initial=len(paths) - len(todo)):
                try:
                    frame = read_image(path)
                except EdgeCMGError as exc:
                    log.warning("skipped: %s", exc)
                    skipped += 1
                    skipped_file = skipped_file or closing.enter_context(
                        JsonLinesFile(skipped_path, "the list of unreadable files", append=args.resume))
                    skipped_file.write({"file": str(path), "frame_index": index, "error": str(exc)})
                    written[0] += 1
                    continue
                result = detector.predict(frame)
                flagged += result.is_anomaly
                overlay_path = None
                if args.overlays == "all" or (args.overlays == "flagged" and result.is_anomaly):
                    overlay_path = str(out / overlay_names[index])
                # frame_index: the file's position among the inputs (each predict call counts from 0).
                record = {"file": str(path), "overlay": overlay_path, **result.to_dict(), "frame_index": index,
                          "source": str(path)}
                if overlay_path is not None:
                    # Recorded as --out was given, as "file" is: read from where the command ran, it
                    # opens. remove_earlier_overlays finds it by its name in --out, from anywhere.
                    # result.overlay(frame) drawn into the frame, which is not needed after it, and the map let
                    # go before the PNG is encoded: a separate overlay and save_png's BGR copy of it were 6 bytes
                    # a pixel on top of the frame and the map (a 144-megapixel image peaked at 2.3 GB, now 1.6).
                    overlay = result.overlay(frame, dst=frame)
                    result = None
                    save_png(overlay_path, overlay, in_place=True)
                jsonl.write(record)
                written[0] += 1
                # Let go of this image before the next is read: held through its decode and predict, a
                # folder of large images peaked at two images' worth.
                frame = result = overlay = None
        judged, before = len(todo) - skipped, len(paths) - len(todo)
        read_nothing = not args.resume and todo and skipped == len(todo)
        if read_nothing:  # no results to keep: a rerun into --out, the files fixed, is then not refused
            for name in ("results.jsonl", PREDICT_RUN):  # while the folder is still this run's
                (out / name).unlink(missing_ok=True)
    print(f"{judged} image{'' if judged == 1 else 's'} judged, {skipped} skipped"
          + (f" ({before} done before, kept)" if args.resume else "")
          + ("" if read_nothing else f"; results in {out / 'results.jsonl'}")
          + (f"{';' if read_nothing else ','} unreadable files in {skipped_path}" if skipped else ""))
    if judged:
        print(f"{flagged} of them flagged (score >= threshold {detector.threshold:.4g})")
    if todo and skipped == len(todo):  # a script must not mistake "nothing could be read" for success
        log.error("no image could be read: nothing was judged; each file is named above with why (and in %s): "
                  "fix or replace them, or check that the paths are the images meant", skipped_path)
        return 1
    return partly_used(skipped)  # some judged, some not


PREDICT_RUN = "predict_run.json"  # the model and threshold predict --out judged with, which --resume checks


def earlier_predict_run(out: Path, model: str, model_sha256: str) -> Optional[dict]:
    """What ``out``'s predict_run.json says of the run that predict --resume continues; None where there
    is none to read (no earlier run, or one from an edgecmg before --resume). Refused where that run
    judged with another model than ``model`` (compared by SHA-256: a model moved or copied is the same)."""
    path = out / PREDICT_RUN
    if not path.is_file():
        return None
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
        recorded = run["model_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s cannot be read (%s): the model of the run it records is not checked", path, exc)
        return None
    if recorded != model_sha256:
        raise ConfigError(f"--resume: the earlier run in {out} judged with {run.get('model')} (SHA-256 "
                          f"{str(recorded)[:12]}), not {model} ({model_sha256[:12]}); resume with that model, or give "
                          "another --out (or --overwrite to start again)")
    return run


def resume_predict(out: Path, run: Optional[dict], threshold: float, inputs: list[tuple[int, Path]],
                   overlay_names: list[str]) -> list[tuple[int, Path]]:
    """predict --resume: the ``inputs`` (position, path) that ``out``'s results.jsonl and skipped.jsonl
    do not hold yet, by resolved path (a record's relative path from the folder its run started in).
    Refused where the earlier run judged at another threshold. A last line cut short (the run was killed
    while writing it) is cut off its file, so every line stays a whole record, and its image is judged
    again. ``overlay_names`` of the images left to judge are changed where the earlier run's records
    name an overlay of that name."""
    results, results_end = whole_records(out / "results.jsonl")
    unreadable, unreadable_end = whole_records(out / "skipped.jsonl")
    earlier = run.get("threshold") if run else None
    if not isinstance(earlier, (int, float)):  # no run file: the threshold the records were judged at
        earlier = next((r["threshold"] for r in results if isinstance(r.get("threshold"), (int, float))), None)
    if earlier is not None and not math.isclose(float(earlier), threshold, rel_tol=1e-9, abs_tol=1e-6):
        raise ConfigError(f"--resume: the earlier run in {out} judged at threshold {earlier}, and this one would "
                          f"judge at {threshold:.6g}; add --threshold {earlier} to continue it, or give another --out")
    if run is None and (results or unreadable):
        log.warning("%s: the earlier run left no readable %s (an edgecmg before --resume), so the model it judged "
                    "with is not checked: resume only with the same model", out, PREDICT_RUN)
    for path, end in ((out / "results.jsonl", results_end), (out / "skipped.jsonl", unreadable_end)):
        if end is not None:
            log.warning("%s: its last line was cut short (the run was stopped while writing it) and is removed; "
                        "that image is judged again", path)
            os.truncate(path, end)
    base = Path(run["cwd"]) if run and isinstance(run.get("cwd"), str) else Path.cwd()
    done = {real_path(base / record["file"]) for record in (*results, *unreadable)}
    todo = [(index, path) for index, path in inputs if real_path(path) not in done]
    if not (results or unreadable):
        log.info("--resume: %s holds no earlier records; judging all %d image(s)", out, len(inputs))
    else:
        log.info("--resume: %d of the %d image(s) given are done already in %s (%d judged in results.jsonl, %d "
                 "unreadable in skipped.jsonl); judging the other %d", len(inputs) - len(todo), len(inputs), out,
                 len(results), len(unreadable), len(todo))
    kept = {Path(r["overlay"]).name for r in results if isinstance(r.get("overlay"), str)}
    taken = kept | set(overlay_names)
    for index, _ in todo:  # an overlay of another image of the same name, kept: this one takes another name
        name = overlay_names[index]
        if name in kept:
            stem, number = name[:-len("_overlay.png")], 1
            while f"{stem}_{number}_overlay.png" in taken:
                number += 1
            overlay_names[index] = f"{stem}_{number}_overlay.png"
            taken.add(overlay_names[index])
    return todo


def whole_records(path: Path) -> tuple[list[dict], Optional[int]]:
    """The records (with a "file") of the JSON-lines file ``path``, none where it is missing, and where
    its last line is cut short, the length of the whole lines before it (None otherwise)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], None
    end = data.rfind(b"\n") + 1
    records = []
    for line in data[:end].decode("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("file"), str):
            records.append(record)
    return records, (end if end < len(data) else None)


def remove_earlier_overlays(out: Path) -> None:
    """Delete the overlays an earlier run's results.jsonl in ``out`` lists: a rerun with --overwrite
    would otherwise leave pictures that no record describes.

    Each is found by its file name in ``out``, not by the path recorded: that path is --out as the
    earlier run was given it (relative to where it started, which need not be here), and the folder
    may have been moved since. So only files in ``out`` itself are deleted, and only of the names
    predict gives overlays (``*_overlay.png``), whatever a record names."""
    results = out / "results.jsonl"
    if not results.is_file():
        return
    for line in results.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            recorded = json.loads(line)["overlay"]
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short, or not a record of ours
        if not isinstance(recorded, str):
            continue  # null: no overlay was written for that image
        name = Path(recorded).name
        if name.endswith("_overlay.png") and ((out / name).is_file() or (out / name).is_symlink()):
            (out / name).unlink(missing_ok=True)


def unique_overlay_names(paths: list[Path]) -> list[str]:
    """One overlay file name per input, ``<stem>_overlay.png``, never the same twice.

    MVTec folders reuse names across defect types (``test/crack/000.png``, ``test/good/000.png``),
    so a clashing stem takes its folder's name in front; a clash that remains gets a number
    appended (the input's position).

    A name longer than a file name may be (NAME_MAX bytes: 85 CJK characters) is cut, and a hash of
    the whole stem added (``<start of stem>~<8 hex>_overlay.png``), so that two long stems that start
    alike still differ; the same inputs give the same names on every run (--resume relies on it).
    """
    import hashlib

    from edgecmg.fileio import NAME_MAX, cut_to_bytes

    tail = "_overlay.png"
    # 8 bytes left over: resume_predict may add "_<number>" to a name that clashes with a kept overlay.
    budget = NAME_MAX - 8

    def fitting(stem: str) -> str:
        if len(os.fsencode(stem + tail)) <= budget:
            return stem + tail
        mark = "~" + hashlib.sha256(os.fsencode(stem)).hexdigest()[:8]
        return cut_to_bytes(stem, budget - len(mark + tail)) + mark + tail

    stem_counts: dict[str, int] = {}
    for path in paths:
        stem_counts[path.stem] = stem_counts.get(path.stem, 0) + 1
    names: list[str] = []
    taken: set[str] = set()
    for index, path in enumerate(paths):
        stem = path.stem if stem_counts[path.stem] == 1 else f"{path.parent.name}_{path.stem}"
        name, suffix = fitting(stem), index
        while name in taken:
            name = fitting(f"{stem}_{suffix}")
            suffix += len(paths)
        taken.add(name)
        names.append(name)
    return names
