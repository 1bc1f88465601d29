"""The longer ``edgecmg`` subcommands (stream, capture, bench, info, env), and what every subcommand shares."""
from __future__ import annotations

import fnmatch
import logging
import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from edgecmg.errors import ConfigError, OutputError
from edgecmg.fileio import broken_link, check_writable, held_alone, refuse_link

log = logging.getLogger("edgecmg")


def check_model_first(items: Sequence[str], what: str, usage: str) -> None:
    """A model file given where ``what`` (images, data) goes is the two positionals swapped: say so,
    rather than refusing it as an image without an image extension."""
    refuse_model_among(items, what, lambda model, others: f"the model comes first (edgecmg {usage})")


def refuse_model_among(items: Sequence[str], what: str, says: Callable[[str, list[str]], str]) -> None:
    """The first model file among a command's ``items`` (its images, data or sources) as one error line:
    "M is a model file, not ``what``: ``says(M, the other items)``" (what to write instead), rather than
    a refusal of it as an image without an image extension or a video OpenCV cannot decode."""
    from edgecmg.runtime.registry import KNOWN_SUFFIXES

    models = [item for item in items if Path(item).suffix.lower() in KNOWN_SUFFIXES]
    if models:
        others = [item for item in items if item not in models]
        raise ConfigError(f"{models[0]} is a model file, not {what}: {says(models[0], others)}")


def warn_unused_capture_flags(args: Any, source: Any, *, realtime: Optional[bool] = None) -> None:
    """--capture-size and --capture-fps are requests to a camera (and, in stream, --capture-fps the
    pace of --realtime images): say so where the source ignores them, rather than let them look
    applied. ``realtime``: stream's --realtime; None for a command without it."""
    camera = getattr(source, "kind", None) in ("camera", "csi")
    if args.capture_size and not camera:
        log.warning("--capture-size is asked of cameras and csi:// sensors; %s is not one, so it has no effect",
                    source.name)
    if args.capture_fps and not camera and not realtime:
        if realtime is None:
            log.warning("--capture-fps is asked of cameras and csi:// sensors; %s is not one, so it has no effect",
                        source.name)
        else:
            log.warning("--capture-fps is asked of cameras and csi:// sensors, and paces recordings with "
                        "--realtime; it has no effect on %s without --realtime", source.name)


def source_from_args(sources: list[str], command: str) -> str | list[str]:
    """The frame source a command line names: one source as given, or the image files an unquoted
    glob (``parts/*.png``) expanded to, in their order."""
    from edgecmg.imageio import is_image_file

    if len(sources) == 1:
        return sources[0]
    missing = [s for s in sources if not Path(s).is_symlink() and not Path(s).exists()]
    if missing:
        raise ConfigError(f"{missing[0]}: no such image file ({len(sources)} sources given, read as a list of image "
                          "files); check the name")
    not_images = [s for s in sources if not is_image_file(Path(s))]
    if not_images:
        raise ConfigError(f"{len(sources)} sources given, and {not_images[0]} is not an image file: {command} reads "
                          "one source (a camera, video, folder, glob, URL or pipeline), or several image files; quote "
                          "a glob ('parts/*.png') or pass its folder")
    return list(sources)


class Terminated(KeyboardInterrupt):
    """SIGTERM (``systemctl stop``, ``docker stop``) or SIGHUP (the terminal or SSH session closed),
    raised where the program is (the CLI installs the handler), so that it stops as Ctrl-C stops it:
    temporary files removed, a stream's records flushed and its summary written."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        self.signum = int(signum)
        self.signal_name = signal.Signals(signum).name
        self.exit_status = 128 + self.signum  # what a shell reports for a process the signal killed
        super().__init__(self.signal_name)

    def __reduce__(self):  # pickle and copy rebuild it from the number (its args hold the name)
        return type(self), (self.signum,)


#: The signals that stop a command as Ctrl-C does (SIGHUP exists on POSIX only).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def raise_terminated(signum: int, frame: object) -> None:
    """The handler of :data:`STOP_SIGNALS`."""
    raise Terminated(signum)


def install_handlers(numbers: tuple[int, ...], handler: Any) -> dict[int, Any]:
    """Set ``handler`` for the signals ``numbers``, except those ignored (``nohup`` ignores SIGHUP and
    a shell's background job SIGINT: they stay ignored) and those whose handler was set outside
    Python (it could not be put back), and in the main thread only, where Python runs handlers.
    Returns the handlers replaced, for :func:`restore_handlers`."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {number: signal.signal(number, handler) for number in numbers
            if signal.getsignal(number) not in (signal.SIG_IGN, None)}


def restore_handlers(previous: dict[int, Any]) -> None:
    """Put back what :func:`install_handlers` replaced."""
    for number, handler in previous.items():
        signal.signal(number, handler)


@contextmanager
def output_folder(path: str | Path, flag: str = "--out", *, results: tuple[str, ...] = (),
                  overwrite: bool = False, inputs: Sequence[str | Path] = (),
                  continued_by: Optional[str] = None) -> Iterator[Path]:
    """Create the output folder ``path`` now, before any long work, so that a file in its place or
    an unwritable parent is a clear error naming it instead of a traceback after the run. A folder
    created here is removed again if the command fails before writing into it (a model that would
    not load leaves nothing behind); anything written is kept.

    results: the files a run writes there; a folder that already holds one of them holds an earlier
    run's results, which are refused rather than replaced unless ``overwrite`` (``--overwrite``);
    ``continued_by``: the flag that continues such a run instead (predict's ``--resume``), named first.
    inputs: what the command reads (folders, globs, files): the folder may not be inside one of them
    (:func:`check_out_outside_inputs`)."""
    check_out_outside_inputs(path, flag, inputs)
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path}: a file of that name is in the way of the output folder; "
                          "give a folder name (new or existing)")
    created = missing_folders(path)  # ``--out a/b`` may create ``a`` too
    try:
        check_writable(path / "results")  # creates the folder, and a file in it is tried at once
    except OutputError as exc:
        cause = exc.__cause__  # the OS's reason in words ("Permission denied"), not OSError's repr of it
        reason = (getattr(cause, "strerror", None) or cause) if cause is not None else exc
        raise ConfigError(f"{flag} {path}: cannot write into the output folder ({reason}); choose a "
                          "writable place") from exc
    with _only_run_in(path, flag):  # refused: the folder is another run's, and is left as it is
        try:
            # Looked for once the folder is this run's: a run that ended a moment ago has left its results.
            # A link counts (one left dangling too): predict writes its records in place, not through it.
            earlier = [name for name in results if (path / name).exists() or (path / name).is_symlink()]
            if earlier and not overwrite:
                # An interrupted run's folder: the flag that continues it comes first, since --overwrite
                # deletes what that run did.
                go_on = f"continue that run with {continued_by}, " if continued_by else ""
                raise ConfigError(f"{flag} {path} holds an earlier run's {' and '.join(earlier)}; {go_on}give "
                                  "another folder, or add --overwrite to replace them")
            yield path
        except BaseException:
            remove_empty_folders(created)
            raise


@contextmanager
def _only_run_in(folder: Path, flag: str) -> Iterator[None]:
    """The output folder held for this run alone: two predicts started into one new --out both found
    it empty, both wrote results.jsonl from its start, and both exited 0 over a file holding half of
    each and a broken record. An advisory lock on the folder itself (no lock file is left; the OS lets
    go of it whatever ends the process); where the system has no flock (Windows), nothing is held."""
    with _opened_folder(folder) as handle:
        if handle is not None and not held_alone(handle, folder):
            raise ConfigError(f"{flag} {folder}: another edgecmg command is writing into this folder now; wait for "
                              "it to end, or give another folder")
        yield


def partly_used(unreadable: int) -> int:
    """The exit status of a command that did its work with ``unreadable`` of its inputs skipped (each
    named in the log as it was skipped): 1 where any was, so that `set -e` and CI jobs do not take a
    folder of half-corrupt images for a clean run; 0 otherwise."""
    return 1 if unreadable else 0


@contextmanager
def held_while_updating(folder: Path, wait_s: float = 30.0) -> Iterator[None]:
    """``folder`` held while a file in it is read and written again (stream's summary rows): other runs
    updating it wait their turn, up to ``wait_s`` seconds, after which the update goes ahead with a
    warning (a run stuck holding it must not cost this one its summary). Where there is no flock
    (Windows, some network mounts), nothing is held."""
    with _opened_folder(folder) as handle:
        deadline = time.monotonic() + wait_s
        while handle is not None and not held_alone(handle, folder):
            if time.monotonic() > deadline:
                log.warning("%s: another run held this folder for over %g s; its summary is updated without "
                            "waiting longer", folder, wait_s)
                break
            time.sleep(0.05)
        yield


@contextmanager
def _opened_folder(folder: Path) -> Iterator[Optional[int]]:
    """A descriptor of ``folder`` to lock (:func:`edgecmg.fileio.held_alone`), closed after; None where the
    folder cannot be opened for reading (mode 0300), which leaves it unlocked."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError as exc:
        log.debug("%s is written without the lock that keeps other runs out: %s", folder, exc)
        yield None
        return
    try:
        yield handle
    finally:
        os.close(handle)


@contextmanager
def opencv_warnings_held(verbose: bool, *, errors_too: bool = False) -> Iterator[None]:
    """OpenCV's own log held at errors while a command runs (stream, capture), its level put back after:
    a camera that is not there made OpenCV print two "[ WARN:0@0.013] ... can't open camera by index"
    lines ahead of edgecmg's error, which says what to check (and again at each reconnect). With
    ``errors_too`` (the commands that read image files) its errors are held too: a damaged TIFF printed
    four "[ERROR:0@3.309] global grfmt_tiff.cpp:117 TIFF_Error ..." lines beside edgecmg's own line
    naming the file it skips and why. Process-wide, so only the command line does it (the process is the
    command's); left alone with -v (``verbose``), where OPENCV_LOG_LEVEL is set (the user asked OpenCV for
    its level) and where this OpenCV cannot say its level. (Decoder libraries that print on their own,
    as libpng and libjpeg do, are not OpenCV's log and still print.)"""
    import cv2

    logs = getattr(getattr(cv2, "utils", None), "logging", None)
    quiet = getattr(logs, "LOG_LEVEL_SILENT" if errors_too else "LOG_LEVEL_ERROR", None)
    previous = None  # the level to put back; None: left alone
    if quiet is not None and not verbose and not os.environ.get("OPENCV_LOG_LEVEL"):
        try:
            level = logs.getLogLevel()
            if level > quiet:  # not that quiet already
                logs.setLogLevel(quiet)
                previous = level
        except Exception:  # noqa: BLE001 - an OpenCV without them: its log is left as it is
            previous = None
    try:
        yield
    finally:
        if previous is not None:
            logs.setLogLevel(previous)


def check_out_outside_inputs(out: str | Path, flag: str, inputs: Sequence[str | Path]) -> None:
    """Refuse an output folder whose files the command would read on its next run (predict's overlays
    judged as parts, eval's hardest.png among the test images, changing the metrics): a folder given
    (listed without its sub-folders: the folder itself), the folders a glob's directory part matches,
    or anything under the fixed part of a glob with ``**``. A folder beside or below one read without
    its sub-folders is never read, and stays allowed."""
    from edgecmg.imageio import is_glob_pattern

    # The first check of every output folder (output_folder, and capture before its source opens): a
    # link loop made resolve() below raise a RuntimeError, and a link to a missing folder failed later
    # as "File exists".
    problem = broken_link(Path(out).expanduser())
    if problem:
        raise ConfigError(f"{flag} {out}: {problem}")
    target = Path(out).expanduser().resolve()
    written = os.path.abspath(os.path.expanduser(str(out)))
    for item in inputs:
        text = os.path.expanduser(str(item))
        if is_glob_pattern(text) and "**" in text:  # recursive: everything under its fixed part
            parts = Path(text).parts
            fixed = Path(*parts[:next(i for i, part in enumerate(parts) if is_glob_pattern(part))] or ["."])
            reads = target == fixed.resolve() or fixed.resolve() in target.parents
        elif is_glob_pattern(text):  # the folders its directory part matches, each without sub-folders
            folders = os.path.abspath(os.path.dirname(text) or ".")
            reads = fnmatch.fnmatchcase(written, folders) or fnmatch.fnmatchcase(str(target), folders)
        elif Path(text).is_dir():
            reads = target == Path(text).resolve()
        else:
            continue  # a file: the folder around it is not read
        if reads:
            raise ConfigError(f"{flag} {out}: this command reads {item}, so the next run would read what it writes "
                              "there as inputs; give an output folder of its own")


def missing_folders(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, innermost first: what creating it makes."""
    return [folder for folder in (path, *path.parents) if not folder.exists()]


def remove_empty_folders(folders: list[Path]) -> None:
    """Remove ``folders`` (innermost first, as :func:`missing_folders` lists them) while they are
    empty: what a command created and then did not use."""
    for folder in folders:
        if not folder.is_dir() or any(folder.iterdir()):
            break
        folder.rmdir()


def output_file(path: str | Path, flag: str, *, overwrite: bool | None = None) -> Path:
    """Check the output file ``path`` of option ``flag`` before a long run: its folder is created and
    written to at once (a clear error naming ``flag`` otherwise), and an existing file is refused
    unless ``overwrite`` (``--overwrite``; None: the caller appends to it, or replaces it by design)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {path}: that is a folder; give a file name")
    refuse_link(path, flag)
    if overwrite is False and path.exists():
        raise ConfigError(f"{flag} {path} exists (an earlier run's?); give another name, or add --overwrite to "
                          "replace it")
    if path.exists() and not os.access(path, os.W_OK):  # the probe below tries the folder, not the file
        raise ConfigError(f"{flag} {path}: the file is not writable; check its permissions or give another name")
    try:
        check_writable(path)
    except OutputError as exc:
        raise ConfigError(f"{flag}: {exc}") from exc
    return path
