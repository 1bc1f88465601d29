"""Writing a file so that nobody ever reads half of it, whoever else writes the same name.

Everything edgecmg writes that others read back (model files, ONNX exports and the export cache,
engines, calibration and timing caches, overlays) goes through :func:`atomic_path`: the data is
written to a temporary file beside the target, under a name no other writer uses, and moved over
the target in one step (``os.replace``). Two processes exporting the same cache entry at once then
each write a whole file and the last one wins; Ctrl-C, a full disk or a crash leave the target as it
was and no temporary file behind.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import stat
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from edgecmg.errors import ConfigError, OutputError

__all__ = ["JsonLinesFile", "atomic_path", "atomic_write_bytes", "check_cache_path", "check_writable", "held_alone",
           "point_at_devnull", "write_problem"]

_log = logging.getLogger("edgecmg")


def write_problem(path: Path, exc: OSError, what: str = "") -> str:
    """What went wrong writing ``path`` (``what``: e.g. "the model file") and what to do, by the OS
    error's kind."""
    target = f"{what} {path}" if what else str(path)
    if exc.errno == errno.ENOSPC:
        return f"cannot write {target}: the disk is full ({exc.strerror}); free space or choose another place"
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):  # mkdir or open under a path whose folder part is a file
        blocker = f"{exc.filename}" if exc.filename and Path(exc.filename).is_file() else "a part of its folder path"
        return f"cannot write {target}: {blocker} is a file, not a folder; choose another place"
    if exc.errno == errno.EFBIG:  # ulimit -f, or FAT32's 4 GB on a USB stick
        return (f"cannot write {target}: it would pass this system's largest file size (the file-size limit, "
                "ulimit -f, or 4 GB on a FAT32 drive); raise the limit or write to another file system")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write {target}: {exc.strerror or exc}; choose a writable place"
    return f"cannot write {target}: {exc.strerror or exc}; choose a writable place"  # not the probe's name


MODEL_FILE_SUFFIXES = (".edgecmg", ".onnx", ".engine", ".plan", ".trt", ".pt", ".pth", ".safetensors")
RANGE_CACHE_SUFFIX = ".calib.json"  # calibrate's activation ranges, written beside its .onnx


def is_range_cache(path: Union[str, Path]) -> bool:
    """Whether ``path`` names calibrate's activation-range cache (``part.int8.calib.json``)."""
    return Path(path).name.lower().endswith(RANGE_CACHE_SUFFIX)


def check_file_suffix(path: Union[str, Path], suffix: Union[str, tuple[str, ...]], *, name: str, files: str) -> Path:
    """``path`` if it names a file ending in ``suffix`` (any case; a tuple: any of them, the first
    suggested); a ConfigError otherwise, before any work: loaders tell model files apart by their
    suffix, so the file would be written and then refused. ``name`` says what one such file is ("a
    model file"), ``files`` what they are ("edgecmg model files")."""
    path = Path(path)
    accepted = (suffix,) if isinstance(suffix, str) else tuple(suffix)
    first = accepted[0]
    if not path.name or path.is_dir():  # -o "" or a folder: no name to put the suffix on
        given = f"{path} is a folder," if path.name else "an empty name is"
        raise ConfigError(f"{given} not {name} name; give one ending in {first}, e.g. {path / ('part' + first)}")
    if path.suffix.lower() not in accepted:
        # part.onnx given for a model: part.edgecmg, not part.onnx.edgecmg; part.v2 keeps its ".v2"
        other_model_file = path.suffix.lower() in MODEL_FILE_SUFFIXES
        fixed = path.with_suffix(first) if other_model_file else path.with_name(path.name + first)
        raise ConfigError(f"{path}: {files} must end in {' or '.join(accepted)}; use {fixed}")
    return path


@contextlib.contextmanager
def atomic_path(path: Union[str, Path], *, what: str = "") -> Iterator[Path]:
    """A temporary path beside ``path`` to write to inside the ``with`` block; when the block ends
    without an error it replaces ``path``. The temporary name is hidden (leading dot), unique to this
    process and thread, and removed on any exception, Ctrl-C included. ``what`` names the file in
    the OutputError an OSError becomes (e.g. "the model file")."""
    path = Path(path)
    tmp = _beside(path, f".{os.getpid()}-{threading.get_ident()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(_link_or_write_problem(path, exc, what)) from exc
    finally:
        with contextlib.suppress(OSError):  # gone already after the replace
            tmp.unlink()


def check_writable(path: Union[str, Path], *, what: str = "") -> None:
    """Create ``path``'s folder and a file beside ``path`` (removed at once), so that an unwritable
    place fails before long work instead of after it; an OutputError naming ``path`` otherwise."""
    path = Path(path)
    probe = _beside(path, f".{os.getpid()}-{uuid.uuid4().hex[:8]}.probe")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise OutputError(_link_or_write_problem(path, exc, what)) from exc


#: The longest file name, in bytes, that the usual file systems take (ext4, XFS, Btrfs, APFS; NTFS and
#: exFAT count 255 UTF-16 units, which a name of 255 UTF-8 bytes never exceeds). A CJK character
#: takes 3 bytes, so 85 of them are a whole name.
NAME_MAX = 255


def cut_to_bytes(text: str, budget: int) -> str:
    """The longest start of ``text`` whose file-system encoding (``os.fsencode``) takes at most
    ``budget`` bytes, cut between characters: a name cut to fit stays readable, never half a character."""
    text = text[:max(budget, 0)]  # each character takes a byte at least
    while len(os.fsencode(text)) > budget:
        text = text[:-1]
    return text


def _beside(path: Path, unique: str) -> Path:
    """A hidden name beside ``path``, ``.NAME`` followed by ``unique``: NAME cut (:func:`cut_to_bytes`)
    where the whole would pass NAME_MAX, so that every name that is legal itself can be written
    (a 238-byte -o name was refused: its temporary name was 40 bytes longer)."""
    return path.with_name("." + cut_to_bytes(path.name, NAME_MAX - 1 - len(os.fsencode(unique))) + unique)


def broken_link(path: Union[str, Path]) -> Optional[str]:
    """What is wrong, and what to do, where ``path`` or a folder above it is a symbolic link that leads
    nowhere: one that loops back on itself, or one to a place that does not exist. The OS says
    neither in words of the link (mkdir's "File exists", pathlib's RuntimeError "Symlink loop").
    None where no link on the way is broken."""
    path = Path(path)
    for part in (*reversed(path.parents), path):  # outermost first: the first broken link is the cause
        try:
            if not part.is_symlink():
                continue
            os.stat(part)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return (f"{part} is a symbolic link that leads round in a loop (to itself, or through links that "
                        f"lead back to it: ls -l {part}); remove it or point it at a folder, or choose another place")
            if exc.errno == errno.ENOENT:
                with contextlib.suppress(OSError):
                    target = os.path.join(os.path.dirname(part), os.readlink(part))
                    if os.path.islink(target):  # a chain: the target is there, as a link, and cannot be created
                        return (f"{part} is a symbolic link to {target}, itself a link that leads to nothing "
                                f"(ls -l {target}); point the links at a folder, or choose another place")
                    return (f"{part} is a symbolic link to {target}, which does not exist; create {target}, or "
                            "remove the link, or choose another place")
    return None


def _link_or_write_problem(path: Path, exc: OSError, what: str) -> str:
    """:func:`write_problem`, or where the folder of ``path`` is reached through a broken symbolic link,
    that link named (its errors read as "a part of its folder path is a file" or "File exists").
    Only the folder is looked at: ``path`` itself, a link to a file not there yet, is replaced whole."""
    if exc.errno in (errno.EEXIST, errno.ENOTDIR, errno.ENOENT, errno.ELOOP):
        problem = broken_link(path.parent)
        if problem:
            return f"cannot write {f'{what} {path}' if what else path}: {problem}"
    return write_problem(path, exc, what)


def atomic_write_bytes(path: Union[str, Path], data: Union[bytes, memoryview], *, what: str = "",
                       sync: bool = True) -> Path:
    """Write ``data`` to ``path`` through :func:`atomic_path`; ``sync`` flushes it to the disk before
    the rename, so a power cut leaves the old file or the new one, never an empty one."""
    path = Path(path)
    with atomic_path(path, what=what) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
    return path


#: What makes a spreadsheet read a cell as a formula (Excel, LibreOffice: "=cmd|' calc'!A0" runs a command).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_cell(value):
    """``value`` for a CSV cell: a text that a spreadsheet would take for a formula (a folder of a
    supplier's dataset named "=HYPERLINK(...)", a crafted file name) gets a leading apostrophe, which
    spreadsheets show as text; numbers and other texts are kept as they are."""
    if isinstance(value, str) and len(value) > 1 and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def not_ours(path: Union[str, Path]) -> Optional[str]:
    """Why a cached file at ``path`` (an ONNX export, calibration ranges) is not to be used, or None:
    it is a link, or another user wrote it. Its checksums tell damage, not intent: whoever can write a
    shared cache folder could put there an entry, checksums recomputed, that judges another user's parts
    with a threshold of their choosing."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    if stat.S_ISLNK(info.st_mode):
        return f"is a symbolic link (to {os.readlink(path)})"
    if _another_users(info):
        return f"belongs to another user (uid {info.st_uid})"
    return None


def _another_users(info: os.stat_result) -> bool:
    """Whether the file ``info`` (an lstat) belongs to a user other than this process's; POSIX only:
    Windows has no owners to compare."""
    own_uid = getattr(os, "geteuid", None)
    return own_uid is not None and info.st_uid != own_uid()


def refuse_link(path: Union[str, Path], flag: str = "") -> bool:
    """For the files edgecmg writes in place rather than by rename (JSON lines appended to, a video):
    a ConfigError where ``path`` is a symbolic link another user made (in a shared results folder, a link
    planted under an output's name had edgecmg create, empty or append to any file its user may write);
    True where it is a link of this user's own (a "current.jsonl" pointing at today's log), which is
    followed; False where it is no link. Files written by rename replace a link instead."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISLNK(info.st_mode):
        return False
    if not _another_users(info):
        return True
    raise ConfigError(f"{flag + ' ' if flag else ''}{path} is a symbolic link to {os.readlink(path)} that another "
                      f"user made (uid {info.st_uid}): edgecmg writes no records or video through it, since whoever "
                      "can write the folder could aim it at any file; remove the link, or give the file's own path")


def file_sha256(path: Union[str, Path]) -> str:
    """SHA-256 of a file, read in 1 MiB blocks (weights and model files are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def json_ready(value: Any) -> Any:
    """``value`` as strict JSON can hold it: NaN and infinities become null (json.dumps writes them as
    NaN and Infinity, which JavaScript, strict parsers and newer jq refuse: one inf score made a
    whole metrics.json unreadable), numpy scalars and arrays Python numbers and lists, tuples lists,
    keys strings. Every JSON output goes through it (see docs/outputs.md)."""
    if isinstance(value, Mapping):
        # keys as json.dumps writes them (True as "true", None as "null")
        return {key if isinstance(key, str) else json.dumps(key) if isinstance(key, (bool, type(None))) else str(key):
                json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):  # no numpy import here: duck-typed
        return json_ready(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_text(value: Any, *, indent: Optional[int] = None) -> str:
    """``value`` (through :func:`json_ready`) as strict JSON text; ``allow_nan=False`` makes a value
    json_ready missed an error here rather than an unreadable file."""
    return json.dumps(json_ready(value), indent=indent, allow_nan=False)


class JsonLinesFile:
    """A JSON-lines file (predict's results.jsonl and skipped.jsonl, written anew; stream's --jsonl,
    appended to), each record whole or not at all. A write that fails (a full disk) cuts the file
    back to the end of its last whole line, so that jq and other line readers never meet half a
    record, and raises an OutputError naming the file. Unbuffered: every record written is on disk
    whatever ends the run.

    append: keep the earlier records and add after them; a last line an earlier run left cut short
    (killed mid-write) is ended first, so the new records start on lines of their own.
    alone: refuse (ConfigError, naming ``flag``) a file another process holds so now: two streams given
    one --jsonl interleaved their records, and a failed write, cut back to this writer's last line,
    would drop the other's records after it (an advisory lock, let go whatever ends the process; where
    the system has none, Windows and some network mounts, nothing is held)."""

    def __init__(self, path: Path, what: str, *, append: bool = False, alone: bool = False,
                 flag: str = "") -> None:
        self.path, self.what = Path(path), what  # what: e.g. "the results", for the error message
        self.records = 0
        # O_BINARY (Windows): the byte count kept in _end must be the bytes in the file, "\n" included.
        mode = os.O_APPEND if append else os.O_TRUNC
        # Another user's link is refused, naming where it leads; one's own is followed. Where there was no
        # link, O_NOFOLLOW refuses one planted between the check and the open.
        no_follow = 0 if refuse_link(self.path, flag) else getattr(os, "O_NOFOLLOW", 0)
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | mode | getattr(os, "O_BINARY", 0) | no_follow, 0o666)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a link planted since the check above
                refuse_link(self.path, flag)
            raise self._error(exc) from exc
        if alone and not held_alone(self._fd, self.path):
            os.close(self._fd)
            raise ConfigError(f"{flag} {self.path}: another run is writing its records into this file now; give "
                              "each stream a --jsonl of its own")
        ends_cut = append and _ends_without_newline(self.path)  # looked at once the file is this run's
        try:
            self._end = os.lseek(self._fd, 0, os.SEEK_END)  # where the last whole line ends
            if ends_cut:
                self._end += os.write(self._fd, b"\n")
        except OSError as exc:  # a full disk: the descriptor is closed here, as no object holds it
            os.close(self._fd)
            raise self._error(exc) from exc

    def write(self, record: dict) -> None:
        data = memoryview((json_text(record) + "\n").encode("utf-8"))
        done = 0
        try:
            while done < len(data):
                # The OS may take part of it (the space that was left) and refuse the rest next time.
                written = os.write(self._fd, data[done:])
                if written <= 0:  # no progress (not seen from a file): without this the loop would never end
                    raise OSError("the file took no more bytes")
                done += written
        except OSError as exc:
            try:
                os.ftruncate(self._fd, self._end)
            except OSError as cut:  # the error below still names the file
                _log.warning("%s could not be cut back to its last whole line: %s", self.path, cut)
            raise self._error(exc) from exc
        self._end += len(data)
        self.records += 1

    def _error(self, exc: OSError) -> OutputError:
        kept = f"; the {self.records} record(s) written before are kept, each whole" if self.records else ""
        return OutputError(write_problem(self.path, exc, self.what) + kept)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> "JsonLinesFile":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def held_alone(fd: int, name: Union[str, Path]) -> bool:
    """An exclusive advisory lock (flock) on ``fd``, an open file or folder named ``name``: False where
    another process holds one now; True once held, and where nothing can be held (Windows has no flock;
    NFS and other mounts refuse it, which is logged at debug). Let go when ``fd`` is closed, whatever
    ends the process."""
    try:
        import fcntl
    except ImportError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        _log.debug("%s is written without the lock that keeps other runs out: %s", name, exc)
    return True


def _ends_without_newline(path: Path) -> bool:
    """Whether the file at ``path`` has bytes and its last is not a newline (a record cut short)."""
    try:
        with open(path, "rb") as handle:
            if handle.seek(0, os.SEEK_END) == 0:
                return False
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) != b"\n"
    except OSError:  # not there yet, or not readable: opening it for writing says what is wrong
        return False


def same_file(a: Union[str, Path], b: Union[str, Path]) -> bool:
    """Whether ``a`` and ``b`` name one file: the same inode where both exist (a hard link, a symbolic
    link, another spelling of the path), else the same absolute path (an output not written yet). A
    camera index or a URL is no file and matches only its own spelling."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):  # either does not exist (yet); ValueError: a NUL in a path
        try:
            return Path(a).resolve() == Path(b).resolve()
        except (OSError, ValueError, RuntimeError):  # RuntimeError: a symbolic-link loop (Python < 3.13)
            return False


def check_cache_path(path: Union[str, Path], flag: str, *others: Union[str, Path], example: str = "") -> Path:
    """A cache file's path (TensorRT's timing cache, calibration ranges), checked before any work:
    writing the cache replaces the file, so a path that names a model file, or ``others`` (the
    command's input and output), is refused; a folder too. ``--timing-cache victim.onnx`` replaced
    the model being built with the cache. ``example``: a name of this cache's own kind that the
    refusals suggest (``trt.cache`` for a timing cache; a timing cache named like calibrate's range
    cache would be refused in its turn)."""
    path = Path(path)
    own = f"give the cache a name of its own (e.g. {example})" if example else "give the cache a name of its own"
    if path.suffix.lower() in MODEL_FILE_SUFFIXES:
        raise ConfigError(f"{flag} {path}: that names a model file ({path.suffix}), which writing the cache would "
                          f"replace; {own}")
    for other in others:
        if same_file(path, other):
            raise ConfigError(f"{flag} {path} is also {other}, which writing the cache would replace; {own}")
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; give the cache file's name")
    return path


def point_at_devnull(fd: int) -> None:
    """Make descriptor ``fd`` write to os.devnull: a standard output whose reader went away (what is
    buffered is flushed at exit, which would fail again) or that the process was started without."""
    null = os.open(os.devnull, os.O_WRONLY)
    if null != fd:  # a closed fd is the lowest free one, and may be the one just opened
        os.dup2(null, fd)
        os.close(null)
