"""The cache of ONNX exports behind ``Detector.load("M.edgecmg", backend="onnxruntime")``.

An ``.edgecmg`` file opened on ONNX Runtime is exported once (``edgecmg.export``) into
``cache_dir()/onnx`` and the export reused while the file's bytes, the export settings and the
edgecmg version stay the same. Entries no run has used for 30 days are pruned when another is
written, with what a killed export left half-written.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Iterator, Optional

from edgecmg import __version__, export
from edgecmg.config import ExportConfig
from edgecmg.errors import ArtifactError, BackendUnavailableError, MissingFileError, OutputError
from edgecmg.export import (
    EXPORT_REVISION,
    GRAPH_FEATURIZER,
    GRAPH_FULL,
    GRAPH_SHA_KEY,
    HEADER_SHA_KEY,
    _load_proto,
    export_model,
    read_onnx_header,
)
from edgecmg.fileio import NAME_MAX, check_writable, cut_to_bytes, not_ours

log = logging.getLogger("edgecmg")

_CACHE_HINT = ("set EDGECMG_CACHE_DIR to a writable folder with space, or export once (edgecmg export M.edgecmg "
               "--format onnx --with-scoring -o M.onnx) and load the .onnx, or use backend='torch' (--backend torch)")


def cache_dir() -> Path:
    """``$EDGECMG_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgecmg``, else ``~/.cache/edgecmg``. A leading
    ``~`` is expanded (systemd's ``Environment=`` passes it as it is: a folder named "~" was made), and a
    relative XDG_CACHE_HOME is ignored, as the XDG specification says."""
    if os.environ.get("EDGECMG_CACHE_DIR"):
        return Path(os.environ["EDGECMG_CACHE_DIR"]).expanduser()
    xdg = Path(os.environ.get("XDG_CACHE_HOME") or "").expanduser()
    base = xdg if xdg.is_absolute() else Path.home() / ".cache"
    return base / "edgecmg"


def cached_onnx(artifact_path: str | Path, config: ExportConfig = ExportConfig(),
                directory: Optional[str | Path] = None) -> tuple[Path, dict[str, Any]]:
    """(path, header) of the ONNX export of ``artifact_path``, exported once and kept in the cache
    directory. The header is returned already checked, so a runner need not read the file again.

    Keyed by the artifact's SHA-256, the export settings, the edgecmg version and the exported graph's
    revision (``edgecmg.export.EXPORT_REVISION``), so an edited or refitted artifact, or an edgecmg that
    exports another graph, exports afresh.
    """
    from edgecmg import artifact

    # The bytes are read once: the cache key and the exported model come from the same file contents
    # even if the file is replaced meanwhile (else an entry could hold another model under this key).
    data, sha = artifact.read_file(artifact_path)
    key = hashlib.sha256(json.dumps([sha, config.opset, config.with_scoring, config.dynamic_batch, config.batch,
                                     config.max_batch, config.max_chunk_elements, __version__, EXPORT_REVISION]
                                    ).encode()).hexdigest()
    folder = Path(directory) if directory is not None else cache_dir() / "onnx"
    graph = GRAPH_FULL if config.with_scoring else GRAPH_FEATURIZER
    # The name starts with the file's stem for whoever looks in the cache; the rest is the key. A long
    # stem is cut (the key alone tells entries apart): a 233-byte model name made a name past NAME_MAX.
    key_part = f"-{sha[:12]}-{graph}-{key[:12]}.onnx"
    stem = cut_to_bytes(Path(artifact_path).stem, _ENTRY_MAX_BYTES - len(key_part))
    path = folder / f"{stem}{key_part}"
    with export._EXPORT_LOCK:  # threads of one process opening one model export it once
        path, onnx_header = _look_up(path, folder, key_part, sha, artifact_path, say=True)
        if onnx_header is not None:
            return path, onnx_header
        # Made only for an export (and its lock), private where edgecmg makes it: an export holds the
        # model's memory bank, and an entry written by another user is not used (_look_up).
        with contextlib.suppress(OSError):  # a folder that cannot be made: check_writable says why
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Processes sharing the cache export one at a time (a model already cached never waits): one
        # that waited finds what the other exported.
        with _one_export_at_a_time(folder):
            path, onnx_header = _look_up(path, folder, key_part, sha, artifact_path, say=False)
            if onnx_header is not None:
                return path, onnx_header
            return _export_into_cache(artifact_path, data, sha, config, path, folder)


def _look_up(path: Path, folder: Path, key_part: str, sha: str, artifact_path: str | Path, *,
             say: bool) -> tuple[Path, Optional[dict[str, Any]]]:
    """(the entry, its checked header) where the cache holds a usable export of the model; else (the
    path to export to, None), with why in the log where ``say`` (a second look says nothing again)."""
    warn = log.warning if say else log.debug
    try:
        if not path.is_file():  # the same model opened under another name (a copy per line) was exported
            path = next((p for p in sorted(folder.glob(f"*{key_part}"))
                         if _CACHE_ENTRY.fullmatch(p.name) and p.is_file() and not_ours(p) is None), path)
        cached = path.is_file()
    except OSError as exc:  # a cache folder this process may not look into: as one it may not write
        raise BackendUnavailableError("onnxruntime", f"{artifact_path} runs on ONNX Runtime through an export "
                                      f"cached in {folder}, which cannot be read ({exc})", _CACHE_HINT) from exc
    foreign = not_ours(path) if cached else None
    if foreign is not None:  # exported again, and the new file replaces it (by rename)
        warn("cached export %s %s: not used; exporting again", path, foreign)
    elif cached:
        try:
            proto = _load_proto(path)
            # A cache entry from before the checksums counts as stale: exported again, it gets them
            # (with the graph's alone, each run warned that the header could not be checked).
            sealed = {GRAPH_SHA_KEY, HEADER_SHA_KEY} <= {p.key for p in proto.metadata_props}
            onnx_header = read_onnx_header(proto) if sealed else {}
            if onnx_header.get("export", {}).get("artifact_sha256") == sha:
                _mark_used(path)
                return path, onnx_header
            (log.info if say else log.debug)("cached export %s is stale; exporting again", path)
        except (ArtifactError, MissingFileError) as exc:  # damaged, or removed meanwhile (another prune)
            warn("cached export %s is unreadable (%s); exporting again", path, exc)
    return path, None


def _export_into_cache(artifact_path: str | Path, data: bytes, sha: str, config: ExportConfig, path: Path,
                       folder: Path) -> tuple[Path, dict[str, Any]]:
    """Export the model (``data``, the bytes hashed to ``sha``) to ``path`` in the cache; (path, header)."""
    from edgecmg import artifact

    # Pruned before the export, not after: what filled the disk (a month of refits, the leftovers of
    # killed exports) must not be what makes the export fail and stay for good.
    _prune_cache(folder, keep=path)
    # A read-only root file system is common on embedded targets, and a full disk as unusable:
    # either is a backend that cannot run here (auto goes on to torch), said before the export's
    # seconds of work where it can be.
    try:
        check_writable(path, what="the export cache")
        model, header = artifact.load(artifact_path, data=data)
        export_model(model, header, path, config, source_sha256=sha)
    except OutputError as exc:
        raise BackendUnavailableError("onnxruntime", f"{artifact_path} runs on ONNX Runtime through an export "
                                      f"cached in {folder}: {exc}", _CACHE_HINT) from exc
    return path, read_onnx_header(path)


#: How long a process waits for another's export in the same cache before it exports by itself: an
#: export takes under a minute, so a lock held longer is a stuck or hostile process, not an export.
EXPORT_WAIT_S = 180.0


@contextlib.contextmanager
def _one_export_at_a_time(folder: Path) -> Iterator[None]:
    """Hold an exclusive flock on the cache folder: workers started or forked together with an empty
    cache (a prefork server, a multiprocessing pool) then export a model once, the others finding it
    when they get the lock, instead of each spending seconds of every core on the same export.
    Where no lock can be had (no folder yet, no flock on this system or mount) it goes ahead without."""
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (ImportError, OSError):
        yield
        return
    _HELD_LOCKS.add(fd)
    try:
        deadline = time.monotonic() + EXPORT_WAIT_S
        waiting = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    log.warning("another process has held the export cache %s for %.0f s; exporting without "
                                "waiting for it", folder, EXPORT_WAIT_S)
                    break
                if not waiting:
                    log.info("waiting for another process's export in %s", folder)
                    waiting = True
                time.sleep(0.1)
            except OSError:  # a mount without flock
                break
        yield
    finally:
        _HELD_LOCKS.discard(fd)
        os.close(fd)  # lets the lock go


# The lock descriptors open now. A child forked meanwhile (by another thread) closes its copies: the
# lock, shared with it, would otherwise last as long as the child does, and other processes would wait.
# Closing a copy leaves the parent's lock in place.
_HELD_LOCKS: set[int] = set()


def _close_inherited_locks() -> None:
    for fd in _HELD_LOCKS:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD_LOCKS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited_locks)


#: Cached exports no process has used for this long are removed when another is exported: each is
#: 10 to 25 MB, and a model refitted every week under one name would otherwise fill a Jetson's eMMC.
CACHE_MAX_AGE_DAYS = 30


def _mark_used(path: Path) -> None:
    """Touch a cached export on use: its modification time is what the pruning goes by."""
    try:
        os.utime(path)
    except OSError:  # a read-only cache: nothing is written to it, nothing is pruned
        pass


#: The longest name cached_onnx gives an export, in bytes: room left under NAME_MAX for the whole of
#: atomic_path's and check_writable's ".NAME.PID-TID-HEX.tmp" around it, which _CACHE_LEFTOVER matches.
_ENTRY_MAX_BYTES = NAME_MAX - 64

#: The names cached_onnx gives its exports: STEM-SHA12-GRAPH-KEY12.onnx. Only these are pruned, so a
#: cache directory that is also a folder of the user's own models keeps them.
_CACHE_ENTRY = re.compile(rf".+-[0-9a-f]{{12}}-({GRAPH_FEATURIZER}|{GRAPH_FULL})-[0-9a-f]{{12}}\.onnx")

#: The half-written file of an export killed before its rename (fileio.atomic_path's .NAME.PID-TID-HEX.tmp),
#: and check_writable's probe (.NAME.PID-HEX.probe), for the cache's own names only.
_CACHE_LEFTOVER = re.compile(rf"\.({_CACHE_ENTRY.pattern})\.[0-9]+(-[0-9]+)?-[0-9a-f]{{8}}\.(tmp|probe)")

#: A leftover untouched for this long belongs to no export still running (one takes under a minute).
LEFTOVER_MAX_AGE_S = 3600


def _prune_cache(folder: Path, keep: Path) -> None:
    """Remove the cached exports in ``folder`` unused for CACHE_MAX_AGE_DAYS (all but ``keep``, about
    to be written), and what exports killed mid-write left behind (a full-size file each)."""
    now = time.time()
    removed, leftovers = [], []
    try:
        entries = list(folder.iterdir())
    except OSError:  # no cache folder yet, or one this process may not list
        return
    for entry in entries:
        try:
            if entry != keep and _CACHE_ENTRY.fullmatch(entry.name):
                if entry.stat().st_mtime < now - CACHE_MAX_AGE_DAYS * 86400:
                    entry.unlink()
                    removed.append(entry.name)
            elif _CACHE_LEFTOVER.fullmatch(entry.name) and entry.stat().st_mtime < now - LEFTOVER_MAX_AGE_S:
                entry.unlink()
                leftovers.append(entry.name)
        except OSError:  # another process removed it first, or the folder is not ours to clean
            continue
    if removed:
        log.info("removed %d cached export(s) unused for %d days from %s", len(removed), CACHE_MAX_AGE_DAYS, folder)
    if leftovers:
        log.info("removed %d unfinished export(s) left by a stopped process from %s", len(leftovers), folder)
