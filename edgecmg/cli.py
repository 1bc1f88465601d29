"""The edgecmg command line: fit, predict, eval, threshold, export, calibrate, build, stream, capture, bench,
info, env."""
from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import math
import os
import sys
import warnings
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional, Sequence

from tqdm.contrib.logging import logging_redirect_tqdm

from edgecmg import __version__
from edgecmg.commands import (
    STOP_SIGNALS,
    Terminated,
    check_model_first,
    install_handlers,
    missing_folders,
    opencv_warnings_held,
    output_folder,
    partly_used,
    raise_terminated,
    remove_empty_folders,
    restore_handlers,
)
from edgecmg.config import ModelConfig, StreamConfig
from edgecmg.errors import (NO_THREAD_HINT, ConfigError, EdgeCMGError, OutputError, name_some, no_thread, one_line,
                            out_of_memory)
from edgecmg.fileio import json_text, point_at_devnull, write_problem
from edgecmg.model.layouts import DEFAULT_LAYOUT, FEATURE_LAYOUTS
from edgecmg.progress import show_progress

log = logging.getLogger("edgecmg")

# registry.BACKENDS and "auto", spelled out so that building the parser imports no runtime (a test keeps them equal)
BACKEND_CHOICES = ("auto", "torch", "onnxruntime", "tensorrt")


def cmd_fit(args: argparse.Namespace) -> int:
    from edgecmg import artifact
    from edgecmg.fit import fit

    # Every check of the arguments comes before the fit, so a bad value never costs a feature pass.
    output = Path(args.output)
    if not output.is_dir():  # a folder: prepare_output says so
        artifact.check_suffix(output)
    config = ModelConfig(
        prompt=_argument_text(args.prompt), input_size=tuple(args.input_size) if args.input_size else None,
        max_side=args.max_side, features=args.features, cmer=not args.no_cmer, grid=args.grid, cmle=not args.no_cmle,
        cmle_dim=args.cmle_dim, max_bank_size=args.bank_size, seed=args.seed,
        score_top_fraction=args.score_top_fraction,
        matcher="clip" if args.clip_weights else "zeroshot", clip_weights=args.clip_weights, clip_arch=args.clip_arch)
    created = missing_folders(output.parent)
    artifact.prepare_output(output)  # before the fit, not after it
    _say_replaced(output, "fit")
    try:
        model, metadata = fit(Path(args.data), config, progress=args.progress_bars)  # its captions.csv too
        try:
            path = artifact.save(model, metadata, args.output)
        except OutputError as exc:
            raise _model_rescued(model, metadata, output, exc) from exc
    except BaseException:  # a fit stopped or failed leaves no empty folder of its -o behind
        remove_empty_folders(created)
        raise
    print(f"wrote {path} (input {metadata['input_size']}, bank {metadata['training']['bank_size']} x "
          f"{metadata['training']['feature_dim']}, threshold {metadata['threshold']:.4f}, "
          f"{metadata['training']['seconds']:.1f} s)")
    return partly_used(metadata["training"]["unreadable_skipped"])


def _model_rescued(model, metadata: dict, output: Path, failed: OutputError) -> OutputError:
    """The error to raise where ``output`` could not be written (a disk that filled during the fit):
    the fitted model saved into a new folder in the temporary directory, often another file system,
    so that minutes of fitting are not lost; or ``failed`` as it was where that fails too."""
    import shlex
    import tempfile

    from edgecmg import artifact

    try:
        folder = Path(tempfile.mkdtemp(prefix="edgecmg-fit-"))
    except OSError as also:
        log.debug("no folder for the fitted model in the temporary directory: %s", also)
        return failed
    try:
        rescued = artifact.save(model, metadata, folder / output.name)
    except (OutputError, OSError) as also:
        log.debug("the fitted model could not be saved in the temporary directory either: %s", also)
        remove_empty_folders([folder])
        return failed
    return OutputError(f"{failed}; the fitted model was saved as {rescued} instead: move it to where it belongs "
                       f"once that is mended (mv {shlex.quote(str(rescued))} {shlex.quote(str(output))})")


def _argument_text(value: str) -> str:
    """A command-line text as typed: with Python's UTF-8 mode off (PYTHONUTF8=0) under an ASCII locale
    (LC_ALL=C), Python hands over the bytes of "pièce" undecoded, and they are UTF-8 nearly always. Left
    as given where they are not (ModelConfig names the prompt then)."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        try:
            return os.fsencode(value).decode("utf-8")
        except UnicodeError:
            return value


def cmd_predict(args: argparse.Namespace) -> int:
    from edgecmg.commands.predict import run_predict

    return run_predict(args)


def cmd_threshold(args: argparse.Namespace) -> int:
    from edgecmg.detector import Detector
    from edgecmg.evaluation import threshold_from_good
    from edgecmg.imageio import list_images_naming_subfolders, unique_files

    check_model_first(args.good, "an image", "threshold MODEL GOOD_IMAGES...")
    if args.output is not None:  # checked before any frame is judged
        # Only here: artifact imports torch, which judging good frames with an .onnx or an engine does without.
        from edgecmg import artifact

        if Path(args.model).suffix.lower() != artifact.SUFFIX:
            raise EdgeCMGError(f"-o writes .edgecmg files: give the .edgecmg that {args.model} was made from, then "
                               "export, calibrate or build again from the copy; or pass --threshold when you run it")
        artifact.check_suffix(args.output)
        if Path(args.output).resolve() == Path(args.model).resolve():
            raise EdgeCMGError(f"-o {args.output} is the model itself: writing over it would lose the threshold fit "
                               "set (and change the file its exports and calibration caches were made from); "
                               "give the copy a name of its own, e.g. -o line3.edgecmg")
        artifact.prepare_output(args.output)
        _say_replaced(args.output, "threshold")
    # Each file once: a folder given twice (or a file inside a folder also given) weighed its images
    # twice in the quantile and hid the few-images warning.
    listed = [path for item in args.good for path in list_images_naming_subfolders(item, "judged")]
    paths = unique_files(listed)
    if len(paths) < len(listed):
        log.info("%d image(s) named more than once are judged once", len(listed) - len(paths))
    detector = Detector.load(args.model, backend=args.backend)
    found = threshold_from_good(detector, paths, args.quantile, progress=args.progress_bars)
    if args.output is not None:
        provenance = {"quantile": found["quantile"], "images": found["images"], "previous": found["stored_threshold"],
                      "sources": [str(Path(item).resolve()) if Path(item).exists() else str(item) for item in args.good],
                      # resolved as "sources" are: the file's bytes must not depend on the folder it ran in
                      "left_out": [str(Path(name).resolve()) for name in found["left_out"]],
                      "backend": found["backend"], "by": "edgecmg threshold",
                      "time": datetime.now().astimezone().isoformat(timespec="seconds")}
        artifact.save_with_threshold(args.model, args.output, found["threshold"], provenance)
        found["written"] = str(args.output)
    ratio = found["threshold"] / found["stored_threshold"] if found["stored_threshold"] > 0 else 1.0
    found["ratio_to_stored"] = ratio
    # Good images alone cannot say what a raised threshold costs: defects that scored between the two
    # thresholds now pass (a test/good folder holding 5 defect-like parts raised it 5.5 times and eval
    # then missed 44 of 52 defects instead of 9). Where the line itself changed the defects' scores rose
    # with the good parts', and only a new fit tells them apart again (benchmarks/results/robustness.md:
    # KolektorSDD 30% brighter, the threshold 2.1 times, misses 4 -> 35 of 52; at 1.36 times, 14 -> 21).
    found["check"] = (f"this is {ratio:.1f} times the stored threshold: parts scoring between the two now pass; check "
                      f"what it misses on defects first: edgecmg eval {args.model} DATA --threshold "
                      f"{found['threshold']:.4f}; if the line changed since fit (exposure, position, focus, camera), "
                      "fit again on good frames taken the new way" if ratio > THRESHOLD_MOVE_TO_CHECK else None)
    if args.json:
        print(json_text(found, indent=2))
        return partly_used(len(found["skipped"]))
    images = found["images"]
    print(f"{images} good image{'' if images == 1 else 's'} judged ({len(found['skipped'])} unreadable skipped), "
          f"backend {found['backend']}: scores median {found['score_p50']:.4f}, max {found['score_max']:.4f}")
    print(f"stored threshold {found['stored_threshold']:.4f} flags {found['stored_flags']} of them")
    kept = f", {len(found['left_out'])} far above the rest left out" if found["left_out"] else ""
    print(f"threshold at their {found['quantile']:g} quantile{kept}: {found['threshold']:.4f} (flags {found['flags']}); "
          f"use it with --threshold {found['threshold']:.4f} (predict, eval, stream) or "
          f"Detector.load(..., threshold={found['threshold']:.4f})")
    if found["check"]:
        print(found["check"])
    if args.output is not None:
        print(f"wrote {args.output}: {args.model} with this threshold stored")
    return partly_used(len(found["skipped"]))


THRESHOLD_MOVE_TO_CHECK = 1.5  # threshold's new value this many times the stored one: said, with how to check it


def cmd_eval(args: argparse.Namespace) -> int:
    from edgecmg.datasets import MVTecDataset
    from edgecmg.detector import Detector
    from edgecmg.evaluation import EVAL_BYTES_PER_PIXEL, eval_memory_per_image, evaluate_detector, write_report
    from edgecmg.fileio import file_sha256

    check_model_first([args.data], "an MVTec data folder", "eval MODEL DATA")
    # The report is written after the whole evaluation: its folder is checked first (and removed
    # again if the evaluation fails before writing into it).
    # Not under DATA/test: every folder there is read, and a new one is taken for a kind of defect.
    reads = [os.path.join(args.data, "test", "**", "*")]
    with (output_folder(args.out, results=("metrics.json", "scores.csv"), overwrite=args.overwrite, inputs=reads)
          if args.out is not None else nullcontext()):
        detector = Detector.load(args.model, backend=args.backend, threshold=args.threshold)
        samples = MVTecDataset(args.data).test_samples()
        height, width = detector.input_size
        per_image = eval_memory_per_image(detector.input_size)
        args.out_of_memory_hint = (  # main's out-of-memory message, with this model's and this test set's sizes
            f"eval holds each test image's anomaly map and mask at the model's input size for the pixel metrics, "
            f"{EVAL_BYTES_PER_PIXEL:g} bytes per pixel (measured): {per_image / 1e6:.2f} MB per image at {height}x"
            f"{width}, about {per_image * len(samples) / 1e6:.0f} MB for these {len(samples)} test images; evaluate "
            "fewer test images per run, use a model fitted with a smaller --input-size, or close other programs")
        # Until the report is written, each judged image's row is on disk in scores.partial.csv.
        with PartialScores(Path(args.out), len(samples)) if args.out is not None else nullcontext() as partial:
            metrics = evaluate_detector(detector, samples, progress=args.progress_bars, per_image=args.out is not None,
                                        on_record=partial.write if partial is not None else None)
            # Which model judged which data, when, at which threshold: metrics.json is read long after.
            # model_sha256: which model, where a path is reused for a refit (predict_run.json records it too).
            metrics.update({"model": str(Path(args.model).resolve()), "model_sha256": file_sha256(args.model),
                            "data": str(Path(args.data).resolve()),
                            "threshold_from": "--threshold" if args.threshold is not None else "the model file",
                            "evaluated": datetime.now().astimezone().isoformat(timespec="seconds")})
            if args.out is not None:
                records = metrics.pop("per_image")  # in scores.csv, not in the printed metrics
                write_report(Path(args.out), metrics, records, detector.threshold, Path(args.data).resolve().name,
                             detector=detector, samples=samples, written=partial.report)
    if args.json:
        print(json_text(metrics, indent=2))
    else:
        skipped = f", {len(metrics['skipped'])} unreadable skipped" if metrics["skipped"] else ""
        print(f"{metrics['images']} test images{skipped}; backend {metrics['backend']}, precision "
              f"{metrics['precision']}")
        missing = ("n/a (out of memory: see pixel_metrics_error)" if metrics.get("pixel_metrics_error")
                   # masks there but each damaged or not its image's size: named in the warnings above
                   else "n/a (no usable masks: see masks_skipped)" if metrics["masks_skipped"] else "n/a (no masks)")
        for key in ("image_auroc", "pixel_auroc", "aupro", "f1_max"):
            value = metrics.get(key)
            print(f"{key:>16}: {missing if value is None else f'{value:.4f}'}"
                  + (_at_threshold(metrics.get("f1_threshold")) if key == "f1_max" else ""))
        covered = metrics.get("pixel_metrics_over")
        if covered and covered["images"]:
            without, unusable = covered["defect_images_without_mask"], covered["defect_images_mask_unusable"]
            left_out = (f", {without} defects without a mask left out" if without else "") + (
                f", {unusable} defects whose mask is damaged left out" if unusable else "")
            print(f"{'':>16}  (pixel metrics over {covered['images']} images, {covered['defect_images']} of them "
                  f"defects{left_out}; at {detector.input_size[0]}x{detector.input_size[1]}, the model's input)")
        print(f"{'latency_ms':>16}: p50 {metrics['latency_ms_p50']:.1f}, p99 {metrics['latency_ms_p99']:.1f}, "
              f"mean {metrics['latency_ms_mean']:.1f} (batch 1, end to end)")
        kinds = metrics["defect_types"]
        defects = sum(kind["images"] for kind in kinds.values())
        print(f"at threshold {metrics['threshold']:.4g}: {metrics['good_flagged']} of "
              f"{metrics['images'] - defects} good parts flagged, {metrics['defects_missed']} of {defects} "
              "defects missed")
        if len(kinds) > 1:  # with one kind its row would repeat the figures above
            width = max(len(one_line(name)) for name in kinds)
            print("by defect type (image AUROC against the good parts; missed at the threshold):")
            for name, kind in kinds.items():
                value = "n/a" if kind["image_auroc"] is None else f"{kind['image_auroc']:.4f}"
                # one_line: a folder of someone else's dataset named with a terminal escape sequence
                # ("\e[2J ... ALL GOOD") cleared the screen and printed over the figures
                print(f"  {one_line(name):<{width}}  {kind['images']:>4} images  AUROC {value}  "
                      f"missed {kind['missed']}")
    return partly_used(len(metrics["skipped"]))


def _at_threshold(threshold: Optional[float]) -> str:
    """Where eval's best F1 is reached, as the option that sets it: the number alone left people
    without the threshold to use (it was in --json only)."""
    if threshold is None or not math.isfinite(threshold):  # best with every part flagged: no threshold to give
        return ""
    return f" (at --threshold {float(threshold)!r})"  # exact: rounded up, it passed the defect that sets it


class PartialScores:
    """eval --out's scores.partial.csv: each judged image's row on disk as it comes, so a run stopped
    part-way (Ctrl-C, SIGTERM, out of memory) keeps the scores it judged and says where they are. Removed
    when the run ends in its report, and where it stopped before judging any image (its folder is
    then left as empty as the run found it)."""

    NAME = "scores.partial.csv"

    def __init__(self, out: Path, images: int) -> None:
        self.path, self.images, self.judged = out / self.NAME, images, 0
        self.report: list[str] = []  # the report's files written whole (write_report's ``written``)

    def __enter__(self) -> "PartialScores":
        import csv

        from edgecmg.evaluation import SCORE_FIELDS

        # Line by line; a file name that is not UTF-8 escaped as in scores.csv (write_report).
        self._handle = open(self.path, "w", newline="", encoding="utf-8", errors="backslashreplace", buffering=1)
        self._rows = csv.DictWriter(self._handle, fieldnames=SCORE_FIELDS)
        self._rows.writeheader()
        return self

    def write(self, record: dict) -> None:
        self._rows.writerow(record)
        self.judged += 1

    def __exit__(self, kind, error, traceback) -> None:
        self._handle.close()
        if kind is None or not self.judged:
            self.path.unlink(missing_ok=True)
        elif self.report:  # stopped while writing the report (a full disk): said as it is on disk
            log.warning("eval judged %d of the %d test images and wrote %s into %s before it stopped; every score is "
                        "in %s; run eval again with --overwrite for the whole report", self.judged, self.images,
                        " and ".join(self.report), self.path.parent, self.path)
        else:
            log.warning("eval stopped after judging %d of the %d test images: their scores are in %s (no metrics); "
                        "run eval again for the metrics", self.judged, self.images, self.path)


def cmd_export(args: argparse.Namespace) -> int:
    from edgecmg.config import ExportConfig
    from edgecmg.export import export_onnx

    _say_replaced(args.output, args.command)
    path = export_onnx(args.model, args.output, ExportConfig(opset=args.opset, with_scoring=args.with_scoring))
    print(f"wrote {path}")
    return 0


def _say_replaced(output: str | Path, command: str) -> None:
    """Said before the work, while Ctrl-C still keeps it: an -o that names an existing file is replaced
    (by a rename when the work ends), and a link there is replaced, not the file it leads to. Model
    files are remade from their source, so they are replaced, not refused as predict's and eval's
    earlier results are without --overwrite."""
    path = Path(output)
    if path.is_symlink():
        log.warning("%s is a link to %s; this %s replaces the link with the new file when it ends, and %s is kept "
                    "as it is", path, os.readlink(path), command, os.readlink(path))
    elif path.is_file():
        log.warning("%s exists; this %s replaces it when it ends (another -o keeps both)", path, command)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from edgecmg.calibration import DEFAULT_SAMPLES, calibrate

    samples = DEFAULT_SAMPLES if args.samples is None else args.samples
    _say_replaced(args.output, args.command)
    path = calibrate(args.model, args.data, args.output, method=args.method, samples=samples,
                     profile=args.profile, with_scoring=args.with_scoring, progress=args.progress_bars)
    print(f"wrote {path}")
    # A script deploys what calibrate wrote when it exits 0: an INT8 file that fails good parts the
    # FP32 model passes must stop it (the file is kept, for `edgecmg threshold` or a look).
    if args.check and _check_quantization(args.model, path, args.data, samples, args.progress_bars):
        return 1
    return 0


CHECK_IMAGES = 16  # good images calibrate judges with both models: a few seconds on a 2-core CPU


def _list_images_or_none(folder: Path) -> list[Path]:
    """``folder``'s images, or none where it holds none (list_images refuses an empty folder)."""
    from edgecmg.errors import DataError
    from edgecmg.imageio import list_images

    try:
        return list_images(folder)
    except DataError:
        return []


def _check_quantization(model: str, int8_path: Path, data, samples: int, progress: Optional[bool]) -> bool:
    """Judges a few of the calibration folder's good images with the FP32 model and the INT8 file and
    says how far the scores moved; warns where INT8 flags more of them (ranges that clip what good
    parts show flag them all, and nothing else would say so before the line does), and then returns True."""
    from edgecmg.calibration.data import select_with_spares
    from edgecmg.detector import Detector
    from edgecmg.evaluation import compare_detectors

    # An MVTec root calibrates on train/good, the images fit was fitted on: they score low under both
    # models (their patches are in the memory bank), so a check on them could not fail; its test/good
    # holds good parts neither has seen.
    unseen = Path(data) / "test" / "good" if isinstance(data, (str, Path)) else None
    images = _list_images_or_none(unseen)[:CHECK_IMAGES] if unseen is not None and unseen.is_dir() else []
    if images:
        print(f"checking on good images of {unseen} (unseen by fit and by calibration)")
    else:
        chosen, spares = select_with_spares(data, samples, 0, report=False)  # calibrate's draw, logged there
        images = (spares + chosen)[:CHECK_IMAGES]  # images the ranges never saw first, where there are any
    # Both on ONNX Runtime (which calibrate needs anyway): the scores then differ by quantisation alone.
    with Detector.load(model, backend="onnxruntime") as fp32, Detector.load(int8_path, backend="onnxruntime") as int8:
        found = compare_detectors(fp32, int8, images, progress=progress)
    print(f"check on {found['images']} good images (FP32 on {found['reference_backend']}, INT8 on "
          f"{found['candidate_backend']}): scores moved by up to {found['max_change']:.4g} (median "
          f"{found['median_change']:.4g}; threshold {found['candidate_threshold']:.4g}); flagged: FP32 "
          f"{found['reference_flags']}, INT8 {found['candidate_flags']}")
    if not found["newly_flagged"]:  # not the counts: INT8 may pass some FP32 flags and flag others
        return False
    named = name_some([Path(p).name for p in found["newly_flagged"]], 5)
    flags = (f"{int8_path} flags {len(found['newly_flagged'])} of these {found['images']} good images that the "
             f"FP32 model passes ({named})")
    threshold = f"or set a threshold for it on good parts with `edgecmg threshold {int8_path} GOOD_IMAGES`"
    cache = _reused_cache(int8_path)
    if cache is None:
        log.warning("%s: its activation ranges cut off what these parts show. Calibrate again with --method "
                    "minmax or on more images (--samples), %s", flags, threshold)
    else:
        # A run with the same model, images and settings reuses that file again (there is no flag
        # that skips it): the advice to calibrate again has to say to delete it.
        log.warning("%s: its activation ranges, reused from %s (an earlier calibrate's, maybe edited or damaged "
                    "since), cut off what these parts show, and a calibrate with the same settings reuses them "
                    "again. Delete %s and calibrate again, or calibrate with --method minmax or on more images "
                    "(--samples), %s", flags, cache, cache, threshold)
    return True


def _reused_cache(int8_path: Path) -> Optional[Path]:
    """The range cache calibrate took ``int8_path``'s ranges from (beside it: the CLI has no other
    cache name), or None where they were measured in this run."""
    from edgecmg.calibration import default_cache_path
    from edgecmg.export import read_onnx_header

    try:
        reused = read_onnx_header(int8_path).get("quantization", {}).get("cache_reused")
    except (EdgeCMGError, OSError):  # the file changed since the check read it: the warning stands without this
        return None
    return default_cache_path(int8_path) if reused is True else None


def cmd_build(args: argparse.Namespace) -> int:
    from edgecmg.config import EngineConfig
    from edgecmg.engine import build_engine

    if args.max_batch is not None and args.max_batch < 1:
        raise ConfigError(f"--max-batch {args.max_batch}: the largest batch must be 1 or more (default 8; with "
                          "--dla, 1)")
    _say_replaced(args.output, args.command)
    # DLA runs one fixed batch: --max-batch, else 1.
    min_batch = args.max_batch if args.dla is not None and args.max_batch else 1
    config = EngineConfig(precision=args.precision, timing_cache=args.timing_cache, dla_core=args.dla,
                          min_batch=min_batch, max_batch=args.max_batch)
    path = build_engine(args.model, config, args.output)
    print(f"wrote {path}")
    return 0


def cmd_stream(args: argparse.Namespace) -> int:
    from edgecmg.commands.stream import run_stream

    with opencv_warnings_held(args.verbose):
        return run_stream(args)


def cmd_capture(args: argparse.Namespace) -> int:
    from edgecmg.commands.capture import run_capture

    with opencv_warnings_held(args.verbose):
        return run_capture(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from edgecmg.commands.bench import run_bench

    return run_bench(args)


def cmd_info(args: argparse.Namespace) -> int:
    from edgecmg.commands.info import run_info

    return run_info(args)


def cmd_env(args: argparse.Namespace) -> int:
    from edgecmg.commands.env import run_env

    return run_env(args)


class _HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help when it has a real default (not None/False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        # nargs 0: a flag (store_true / store_false), whose default says what happens without it, not
        # what to type: --no-check's "(default: True)" read as "no check by default".
        if (action.option_strings and action.nargs != 0 and "%(default)" not in text and "default" not in text
                and not any(default is unset for unset in (None, False, argparse.SUPPRESS))):
            text += " (default: %(default)s)"
        return text


def _add_backend(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="auto", type=str.lower, choices=BACKEND_CHOICES,
                   help="auto (default): the fastest one available for the model file; each runs on the GPU "
                        "where it can (there is no device flag)")


def _add_fit(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = command("fit", "fit a detector on good images")
    p.add_argument("data", help="MVTec root (uses train/good), a folder of good images (its own: sub-folders "
                                "are named, not read) or a quoted glob such as 'good/**/*.png'")
    p.add_argument("--prompt", required=True, help="text describing the normal part")
    p.add_argument("-o", "--output", required=True, help="output model file (*.edgecmg)")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                   help="model input size; by default picked from the images' aspect ratio")
    p.add_argument("--max-side", type=int, default=ModelConfig.max_side,
                   help="with automatic input size: sqrt of the pixel budget")
    p.add_argument("--features", choices=sorted(FEATURE_LAYOUTS), default=DEFAULT_LAYOUT,
                   help="patch features: s16 = blocks 10+14 on a 16-px grid (faster, better on the "
                        "benchmarks), s8 = blocks 4+7+10 on an 8-px grid (defects under 16 px)")
    p.add_argument("--grid", type=int, default=ModelConfig.grid, help="CMER grid (g x g cells, 2..8)")
    p.add_argument("--no-cmer", action="store_true", help="ablation: no language-guided masking")
    p.add_argument("--no-cmle", action="store_true", help="ablation: no language-guided latent space")
    p.add_argument("--cmle-dim", type=int, default=ModelConfig.cmle_dim, help="CMLE output dimensions")
    p.add_argument("--clip-weights", metavar="FILE.safetensors",
                   help="use an open_clip CLIP model as the matcher instead of the offline zero-shot one "
                        "(needs edgecmg's clip extra, open_clip_torch, with a torchvision built for your torch: see the "
                        "README); the model file records this path and its SHA-256")
    p.add_argument("--clip-arch", default=ModelConfig.clip_arch, help="open_clip model name of --clip-weights")
    p.add_argument("--bank-size", type=int, default=ModelConfig.max_bank_size,
                   help=f"memory bank size cap (default {ModelConfig.max_bank_size:,}); the coreset's fit time grows "
                        "with it (23,400 on 1,000 images: 335 s against about 20 s at the default, 2-core CPU)")
    p.add_argument("--score-top-fraction", type=float, default=ModelConfig.score_top_fraction,
                   help="image score = mean of this share of the map's hottest pixels (0: the hottest one)")
    p.add_argument("--seed", type=int, default=ModelConfig.seed,
                   help="seeds the hold-out split and the coreset draw, 0..2**64-1: the same images and seed on the "
                        "same machine, with the same thread count, give the same model, bar its creation time and "
                        "fit seconds (another thread count moves the threshold and bank a little). The split is "
                        "drawn over the images in order of their paths: renamed or reordered, the same images draw "
                        "another split, as another seed does")
    p.set_defaults(func=cmd_fit)


def _add_predict(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = command("predict", "judge images; writes overlays (PNG), results.jsonl, predict_run.json (what --resume "
                "checks) and skipped.jsonl (unreadable files)")
    p.add_argument("model", help="model file: .edgecmg, .onnx or .engine")
    p.add_argument("images", nargs="+", help="image files, folders or globs")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder")
    _add_backend(p)
    p.add_argument("--threshold", type=float, help="override the fitted threshold")
    p.add_argument("--overlays", choices=["all", "flagged", "none"], default="all",
                   help="which images get a heat-map overlay PNG, at the image's own size (a KolektorSDD part: "
                        "about 200 KB): all (default), flagged (anomalies only) or none; results.jsonl "
                        "has every verdict either way, with overlay null where none was written")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run's results.jsonl in --out, and remove the overlays it lists "
                        "(refused without it)")
    p.add_argument("--resume", action="store_true",
                   help="continue an earlier run in --out that was stopped: the images its results.jsonl and "
                        "skipped.jsonl hold are not judged again, the new records are added to them and its overlays "
                        "kept (refused where it used another model or threshold)")
    p.set_defaults(func=cmd_predict)


def _add_eval(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = command("eval", "image/pixel AUROC, AUPRO, F1-max on an MVTec-layout folder")
    p.add_argument("model", help="model file: .edgecmg, .onnx or .engine")
    p.add_argument("data", help="MVTec root: test/<good|defect type>, ground_truth/ masks optional")
    _add_backend(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("-o", "--out", metavar="DIR", help="also write metrics.json, scores.csv (per image), scores.png "
                   "(histogram of good and defective scores with the threshold) and hardest.png (heat maps of "
                   "the lowest-scored defects and highest-scored good parts) to DIR")
    p.add_argument("--threshold", type=float, help="override the fitted threshold (the verdicts and the report)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier report in --out (refused without it)")
    p.set_defaults(func=cmd_eval)


def _add_threshold(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = command("threshold", "set a threshold on good images the model has not seen (e.g. frames of the line's "
                "own camera, or for an INT8 file); prints it for --threshold")
    p.add_argument("model", help="model file: .edgecmg, .onnx or .engine")
    p.add_argument("good", nargs="+", help="image files, folders or globs of good parts not used in fit")
    p.add_argument("--quantile", type=float, default=ModelConfig.threshold_quantile,
                   help="the quantile of their scores that becomes the threshold, fit's rule (0.99: about 1 such "
                        "part in 100 flagged; 1: their highest score, which is then flagged itself); a few images "
                        "scoring far above the rest are left out of it and named")
    _add_backend(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("-o", "--output", help="also write a copy of the .edgecmg model with this threshold stored "
                   "(export, calibrate and build from the copy carry it on)")
    p.set_defaults(func=cmd_threshold)


def _add_export(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = command("export", "export to ONNX")
    p.add_argument("model", help="model file (*.edgecmg)")
    p.add_argument("--format", default="onnx", choices=["onnx"],
                   help="output format (engines are built from the ONNX file with `edgecmg build`)")
    p.add_argument("-o", "--output", required=True, help="output file (*.onnx)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 to 20 (what TensorRT 10 and 11 parse)")
    p.add_argument("--with-scoring", action="store_true", help="the whole detector in one graph")
    p.set_defaults(func=cmd_export)


def _add_calibrate(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = command("calibrate", "INT8 Q/DQ ONNX from calibration images")
    p.add_argument("model", help="model file (*.edgecmg)")
    p.add_argument("--data", required=True,
                   help="calibration images of normal parts: a folder (its images; where it holds none, those of "
                        "its sub-folders), or an MVTec root, whose train/good is used")
    p.add_argument("--method", choices=["entropy", "percentile", "minmax"],
                   help="activation ranges (default: minmax for --profile tensorrt, percentile for cpu)")
    p.add_argument("--samples", type=int,
                   help="calibration images used (default: edgecmg.calibration.DEFAULT_SAMPLES = 256, "
                        "or all when the folder has fewer)")
    p.add_argument("--profile", default="tensorrt", choices=["tensorrt", "cpu"],
                   help="tensorrt: symmetric Q/DQ that TensorRT builds (default); cpu: fastest on ONNX Runtime CPU")
    p.add_argument("--with-scoring", action="store_true",
                   help="the whole detector in one graph (memory bank and scoring head in float)")
    p.add_argument("-o", "--output", required=True,
                   help="output file (*.onnx); the activation ranges are cached beside it as *.calib.json and "
                        "reused while the model, images and settings match (delete it to calibrate afresh)")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help=f"leave out the check (run by default) that judges {CHECK_IMAGES} of the good images with the "
                        "FP32 model and the INT8 file and warns, exiting 1, where INT8 flags more of them")
    p.set_defaults(func=cmd_calibrate)


def _add_build(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = command("build", "build a TensorRT engine from ONNX")
    p.add_argument("model", help="ONNX file (.onnx) from export or calibrate (calibrate's .calib.json beside it "
                                 "holds its ranges, not a model)")
    p.add_argument("--precision", default="fp16", choices=["fp32", "fp16", "int8"],
                   help="int8 needs a Q/DQ model from calibrate; its float layers run in fp16")
    p.add_argument("--timing-cache", metavar="FILE",
                   help="TensorRT's timing cache, read and updated (e.g. trt.cache: not a model, an image or "
                        "calibrate's .calib.json, which writing it would replace)")
    p.add_argument("--dla", type=int, choices=(0, 1),  # no Jetson has more than two DLA cores (some have one)
                   help="run on this DLA core of a Jetson AGX or NX Orin (an Orin Nano has none), with GPU fallback "
                        "(default: the GPU only); fp16 from an export, or int8 with TensorRT 11.4.1 or later")
    p.add_argument("--max-batch", type=int,
                   help="largest batch the engine accepts (default 8; with --dla the one fixed batch, default 1)")
    p.add_argument("-o", "--output", required=True, help="output engine file (*.engine)")
    p.set_defaults(func=cmd_build)


def _add_stream(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = command("stream", "run a detector on a camera, video, folder or URL")
    p.add_argument("source", nargs="+",
                   help="camera index, video file, folder or quoted glob, rtsp:// (or http://, udp://, srt://) URL, "
                        "csi://N (Jetson CSI sensor; options ?width=&height=&fps=&flip=), GStreamer pipeline ending "
                        "in appsink; or several image files (what an unquoted glob expands to), in the order given")
    p.add_argument("-m", "--model", help="model file: .edgecmg, .onnx or .engine (required)")
    _add_backend(p)
    p.add_argument("--no-spin", dest="spin", action="store_false", default=None,
                   help="ONNX Runtime's threads sleep between frames instead of spin-waiting: about a third of "
                        "the CPU per frame on a paced camera, and faster where other work shares the cores; a "
                        "little slower on cores nothing else uses (for the torch backend set OMP_WAIT_POLICY=PASSIVE)")
    p.add_argument("--policy", default="auto", choices=["auto", "latest", "all"],
                   help="latest: drop stale frames to stay real time; all: judge every frame; "
                        "auto (default): latest for cameras and network streams (and recordings paced with "
                        "--realtime), all for files and folders")
    p.add_argument("--batch", type=int, default=1,
                   help="frames per inference call; each frame of a batch is held at its capture size, so large "
                        "frames cost memory per frame (8000x8000: about 0.9 GB each)")
    p.add_argument("--max-queue", type=int, default=4,
                   help="frames buffered between capture and inference (default 4); 'latest' judges the newest "
                        "and drops the older ones")
    p.add_argument("--reconnect-attempts", type=int, default=StreamConfig.reconnect_attempts, metavar="N",
                   help="reopen a camera or network stream that fails up to N times, with back-off doubling from "
                        "0.5 s to 30 s (default %(default)s: about a minute); 0: stop at the first failure")
    p.add_argument("--stall-warn", type=float, default=StreamConfig.stall_warn_s, metavar="S",
                   help="warn when a live source delivers no frame for S seconds, again every S seconds "
                        "(default %(default)s); 0: never, for a triggered camera that is silent between parts")
    p.add_argument("--threshold", type=float, help="override the fitted threshold (see `edgecmg threshold`)")
    p.add_argument("--realtime", action="store_true",
                   help="play a video file at its frame rate, or images at --capture-fps (default 30), as a camera "
                        "would deliver them (by default they are read as fast as they decode, so latency then "
                        "includes the time frames wait in the queue)")
    p.add_argument("--capture-size", type=int, nargs=2, metavar=("W", "H"),
                   help="resolution asked of a camera (width height, e.g. 1920 1080); default: the driver's")
    p.add_argument("--capture-fps", type=float, metavar="FPS",
                   help="frame rate asked of a camera; with --realtime, the pace of images from a folder")
    p.add_argument("--max-frames", type=int, help="stop after N frames")
    p.add_argument("--save", help="write the overlay video here (.mp4, .avi, .mov or .mkv; an .mkv stays readable "
                   "when the run is killed, an .mp4 does not); an existing file is refused unless --overwrite")
    p.add_argument("--jsonl", help="one JSON line per frame, appended to this file (a restarted stream adds to it); "
                   "- writes them to standard output, and the summary to stderr")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --save video")
    p.add_argument("--report", metavar="DIR", help="write stream_summary.json/.csv/.md here "
                   "(default: beside --jsonl, else beside --save; without either, the summary is only printed)")
    p.add_argument("--show", action="store_true", help="show the overlay in a window (needs a display)")
    p.set_defaults(func=cmd_stream)


def _add_capture(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = command("capture", "save frames of a camera (or video, URL, pipeline) as PNG files: good parts for fit or "
                "threshold, taken the way stream will see them")
    p.add_argument("source", nargs="+",
                   help="camera index or /dev/videoN, csi://N, rtsp:// URL, GStreamer pipeline, video file, image "
                        "folder or quoted glob, as stream takes it; or several image files (what an unquoted glob "
                        "expands to)")
    p.add_argument("-o", "--out", required=True, metavar="DIR",
                   help="folder for frame_000000.png, frame_000001.png, ...; frames already there are kept and "
                        "the numbering goes on after them")
    p.add_argument("--frames", type=int, default=100, help="frames to save")
    p.add_argument("--step", type=int, default=1, metavar="N",
                   help="save every N-th frame (a 30 fps camera with --step 30: about one a second, so that "
                        "consecutive frames show different parts; frames of one part standing still are near-copies, "
                        "which set fit's threshold too low)")
    p.add_argument("--capture-size", type=int, nargs=2, metavar=("W", "H"),
                   help="resolution asked of a camera (width height); use the one stream will run with")
    p.add_argument("--capture-fps", type=float, metavar="FPS", help="frame rate asked of a camera")
    p.add_argument("--reconnect-attempts", type=int, default=StreamConfig.reconnect_attempts, metavar="N",
                   help="reopen a camera or network stream that fails up to N times (default %(default)s)")
    p.set_defaults(func=cmd_capture)


def _add_bench(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = command("bench", "per-frame latency of every available backend, side by side")
    p.add_argument("model", nargs="+", help="one or more model files (e.g. part.edgecmg part.int8.onnx)")
    # Checked and lower-cased as --backend is, every name before anything is timed ("auto" is what
    # leaving --backends out does).
    names = [b for b in BACKEND_CHOICES if b != "auto"]
    p.add_argument("--backends", nargs="+", type=str.lower, choices=names, metavar="NAME",
                   help=f"{', '.join(names)}; default: every backend available here. One that cannot run a model "
                        "file here is skipped and named, and the others are timed")
    p.add_argument("--frames", type=int, default=200, help="timed frames per backend")
    p.add_argument("--warmup", type=int, default=20, help="untimed frames first")
    p.add_argument("--batch", type=int, default=1, help="frames per inference call")
    p.add_argument("--images", help="time on these images (folder or glob; default: seeded random frames at the "
                                    "model size, since latency does not depend on content)")
    p.add_argument("-o", "--out", default="bench", metavar="DIR",
                   help="folder for JSON, CSV, markdown and the PNG plot (default: bench); an earlier bench's "
                        "files there are replaced, as a rerun is the usual way to compare")
    p.set_defaults(func=cmd_bench)


def _add_info(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = command("info", "what a model file holds (input, prompt, threshold, build) and whether it runs here")
    p.add_argument("model", nargs="+", help="model files: .edgecmg, .onnx or TensorRT engines (checksums are checked, "
                                            "nothing is run)")
    p.add_argument("--json", action="store_true", help="print the whole verified headers as JSON")
    p.set_defaults(func=cmd_info)


def _add_env(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = command("env", "what this machine can run (backends, kernels, versions) and install problems, with what "
                       "to do; exit status 1 when there is a problem")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    p.set_defaults(func=cmd_env)


# Each adds its subcommand, in the order `edgecmg --help` lists them.
_SUBCOMMANDS = (_add_fit, _add_predict, _add_eval, _add_threshold, _add_export, _add_calibrate, _add_build, _add_stream,
                _add_capture, _add_bench, _add_info, _add_env)


QUIET_HELP = "warnings and errors only: no progress bars (shown only on a terminal), stream status lines or info lines"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgecmg", description=__doc__)
    parser.add_argument("--version", action="version", version=f"edgecmg {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help=QUIET_HELP)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    # -q / -v also after the subcommand (`edgecmg fit ... -q`). Their default here is SUPPRESS: a
    # subcommand's defaults overwrite the main parser's values, so a default of False would undo a
    # -q given before the subcommand. The main parser's default (False) stands when neither gives it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help=QUIET_HELP)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=summary, description=summary, formatter_class=_HelpFormatter,
                           parents=[common])
        p.set_defaults(subparser=p)  # main reports a mistyped option with this command's usage
        return p

    for add in _SUBCOMMANDS:
        add(command)
    return parser


# What uses memory in proportion to the input, per command, for the out-of-memory message.
_OUT_OF_MEMORY_HINTS = {
    "fit": "fit's peak memory grows by about 0.5 to 0.7 MB per training image at the default input size "
           "(measured): fit on fewer images (a few hundred good parts set a reliable threshold), lower "
           "--max-side, or close other programs",
    "eval": "eval holds every test image's anomaly map and mask at the model's input size for the pixel metrics: "
            "evaluate fewer test images per run, use a model fitted with a smaller --input-size, or close other "
            "programs",
    "stream": "a smaller --batch or --max-queue, smaller frames, or closing other programs may help",
    "bench": "a smaller --batch, or closing other programs, may help",
    "": "smaller images, or closing other programs, may help",
}


#: The commands that read image files (stream and capture hold OpenCV's warnings themselves).
_READS_IMAGE_FILES = frozenset({"fit", "predict", "eval", "threshold", "calibrate", "bench"})


def main(argv: Optional[Sequence[str]] = None) -> int:
    closed = _stand_in_for_closed_std_streams()
    _print_any_name()
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse says so with the top-level usage, which lists no option of the command
        (getattr(args, "subparser", None) or parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        os.getcwd()
    except FileNotFoundError:
        # torch's import dies here with "Intel oneMKL FATAL ERROR: Cannot load libtorch_cpu.so", which
        # reads as a broken install.
        print(f"edgecmg {args.command}: error: the current folder no longer exists (it was deleted or moved "
              "away); cd to an existing folder and run the command again", file=sys.stderr)
        return 2
    # Our own INFO lines (fit summary, skipped files) show; other libraries' only from WARNING up,
    # unless -v asks for everything. Where stderr is not a terminal (a service's log, a file), each
    # line says when: docker's and plain files' logs add no time of their own.
    on_terminal = sys.stderr.isatty()
    # Progress bars redraw with carriage returns, which turn a log file into one garbled line.
    args.progress_bars = show_progress() and not args.quiet  # a terminal, not a dumb one
    from edgecmg.stream.status_line import LOG_TIME

    to_stderr = logging.StreamHandler()
    to_stderr.setFormatter(_OneLineFormatter(("" if on_terminal else "%(asctime)s ") + "%(levelname)s %(name)s: "
                                             "%(message)s", LOG_TIME))  # as the stream's status lines
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, handlers=[to_stderr])
    # -q: warnings and errors only (a cron job's or CI log's "quiet"); what a command prints on stdout stays.
    log.setLevel(logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO)
    if "stdout" in closed:
        log.warning("standard output is closed: what this command prints goes nowhere (give it a file: > out.txt)")
    previous = install_handlers(STOP_SIGNALS, raise_terminated)
    try:
        # Log lines go above the progress bars instead of into the middle of one (fit's skipped files).
        # Commands reading image files name each they skip and why: OpenCV's own lines for it are held,
        # and Pillow's warnings (its fallback decode of a damaged TIFF: "Corrupt EXIF data ...").
        with logging_redirect_tqdm(), contextlib.ExitStack() as held:
            if args.command in _READS_IMAGE_FILES:
                held.enter_context(opencv_warnings_held(args.verbose, errors_too=True))
                held.enter_context(warnings.catch_warnings())  # the filter below ends with the command
                if not args.verbose:
                    warnings.filterwarnings("ignore", module=r"PIL\.")
            return args.func(args)
    except EdgeCMGError as exc:
        print(f"edgecmg {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except Terminated as stop:
        _say_on_stderr(f"edgecmg {args.command}: terminated ({stop.signal_name}){_stop_note(args)}")
        return stop.exit_status
    except KeyboardInterrupt:
        _say_on_stderr(f"edgecmg {args.command}: interrupted{_stop_note(args)}")
        return 130
    except BrokenPipeError:
        # The reader went away (`edgecmg info M | head`): not an error of ours, and Python's own
        # flush at exit must not raise it again, so what is left of stdout goes nowhere.
        point_at_devnull(sys.stdout.fileno())
        return 141
    except Exception as exc:
        if out_of_memory(exc):
            # Minutes of work can end here (fit holds every image's features): say what to change.
            log.debug("out of memory", exc_info=True)
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            # A command that knows its model's sizes by now (eval) sets a hint of its own.
            hint = getattr(args, "out_of_memory_hint", None) or _OUT_OF_MEMORY_HINTS.get(args.command,
                                                                                        _OUT_OF_MEMORY_HINTS[""])
            print(f"edgecmg {args.command}: error: out of memory ({reason}); {hint}", file=sys.stderr)
            return 2
        if no_thread(exc):  # a process or pids limit: a traceback said only "can't start new thread"
            log.debug("no thread", exc_info=True)
            print(f"edgecmg {args.command}: error: {NO_THREAD_HINT}", file=sys.stderr)
            return 2
        if isinstance(exc, OSError):  # a results file on a full or read-only disk: the OS's reason, not a traceback
            print(f"edgecmg {args.command}: error: {_os_problem(exc)}", file=sys.stderr)
            return 2
        raise
    finally:
        restore_handlers(previous)


def _stand_in_for_closed_std_streams() -> list[str]:
    """os.devnull in place of a standard output or error the command was started without (`2>&-`, a
    daemon): Python leaves None there, on which the first log line failed, and the next file opened
    would take the free descriptor, where a library's own prints to fd 1 or 2 would then land.
    Returns the names of those replaced."""
    replaced = []
    for fd, name in ((1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            point_at_devnull(fd)
            setattr(sys, name, open(fd, "w", encoding="utf-8", buffering=1, closefd=False))
            replaced.append(name)
    return replaced


class _OneLineFormatter(logging.Formatter):
    """Each log record's message on one line (:func:`edgecmg.errors.one_line`); a traceback (-v) keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = one_line(record.message)
        return super().formatMessage(record)


def _print_any_name() -> None:
    """Standard output and error write what they cannot encode as escapes: a file name in UTF-8, or one
    that is not (a Latin-1 name from a Windows share), printed where the output is ASCII
    (PYTHONIOENCODING=ascii, a service's log) raised UnicodeEncodeError after the work was done."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)  # a TextIOWrapper; a test's StringIO has none
        # Only over "strict": where Python writes surrogates back as their bytes (surrogateescape: the C
        # locale, UTF-8 mode), a name that is not UTF-8 prints as ls shows it.
        if reconfigure is not None and getattr(stream, "errors", None) == "strict":
            reconfigure(errors="backslashreplace")


def _os_problem(exc: OSError) -> str:
    """An OSError that reached main, in words, with what to do where the limit is the process's own:
    out of file descriptors (ulimit -n), or past the file-size limit (ulimit -f, FAT32's 4 GB)."""
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        try:
            import resource

            held = f"this process may hold {resource.getrlimit(resource.RLIMIT_NOFILE)[0]} at once (ulimit -n)"
        except ImportError:  # no resource module (Windows)
            held = "the open-file limit is reached"
        return f"too many open files ({exc.filename or exc.strerror}): {held}; raise the limit, e.g. ulimit -n 1024"
    if exc.errno == errno.EFBIG:
        return write_problem(Path(exc.filename or "a file"), exc)
    return one_line(str(exc))


def _stop_note(args: argparse.Namespace) -> str:
    """What a stopped command kept and how to go on ("; ..."), where the command set ``args.stop_note``
    (a callable, asked only now: it counts what was done up to the stop), else ""."""
    note_of = getattr(args, "stop_note", None)
    try:
        note = note_of() if note_of is not None else None
    except Exception:  # the stop is said whatever the note does
        log.debug("the stop note failed", exc_info=True)
        return ""
    return f"; {one_line(note)}" if note else ""


def _say_on_stderr(text: str) -> None:
    """How a stop is said: after SIGHUP the terminal may be gone (EIO), which must not turn the stop's
    exit status into a traceback's."""
    try:
        print(text, file=sys.stderr)
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
