"""Exception hierarchy: every error edgecmg raises on purpose derives from EdgeCMGError.

Messages say what was wrong (naming the file or value) and what to do about it.
"""
from __future__ import annotations

import errno
import json
from typing import Sequence


class EdgeCMGError(Exception):
    """Base class of all edgecmg errors."""


class ConfigError(EdgeCMGError, ValueError):
    """A configuration value or argument is invalid."""


class DataError(EdgeCMGError, ValueError):
    """Input data (an image, a folder, a tensor) is missing or unusable."""


class MissingFileError(DataError, FileNotFoundError):
    """An input file or folder does not exist (also a FileNotFoundError, as ``open`` raises)."""


class ArtifactError(EdgeCMGError):
    """A model file is truncated, corrupted, tampered with or from a newer format."""


class OutputError(EdgeCMGError):
    """A result cannot be written (disk full, read-only, no permission); the message names the file."""


class BackendUnavailableError(EdgeCMGError, ImportError):
    """An optional backend cannot be used here; the message ends with what to do (``install_hint``:
    mostly a pip command, sometimes other advice, such as judging with the .onnx on a machine with no GPU)."""

    def __init__(self, backend: str, reason: str, install_hint: str = "") -> None:
        self.backend = backend
        self.reason = reason
        self.install_hint = install_hint
        message = f"backend {backend!r} is unavailable: {reason}"
        if install_hint:
            message += f"; {install_hint}"  # no "install hint:" label: some hints are not installs
        super().__init__(message)

    def __reduce__(self):  # rebuilt from its three parts: a process pool's worker raising it hung the pool
        return type(self), (self.backend, self.reason, self.install_hint)


class EngineBuildError(EdgeCMGError):
    """TensorRT could not build an engine from the given model."""


class EngineIncompatibleError(EdgeCMGError):
    """A serialized engine was built for another GPU or TensorRT version."""


class StreamError(EdgeCMGError):
    """A frame source cannot be opened or failed beyond recovery."""


class MissingSourceError(StreamError, FileNotFoundError):
    """A stream source names a file, folder or device that does not exist (also a FileNotFoundError)."""


def one_line(text: str) -> str:
    """``text`` with every character that is not printable written as an escape (a newline as \\n, a
    terminal control sequence's ESC, U+2028): a file name holding a newline, or a header string of a
    crafted file, printed in a log line, an error or ``edgecmg info``, made lines that looked like
    edgecmg's own ("bad\\n2026-12-07 06:00:00 INFO edgecmg: all fine.jpg") or cleared the terminal."""
    return "".join(c if c.isprintable() else json.dumps(c)[1:-1] for c in text)


def name_some(names: Sequence[str], count: int) -> str:
    """The first ``count`` of ``names`` for a message, and how many more there are: "a, b, c and 4
    more". Long lists (thousands of skipped images) are counted, not printed, so one line stays one line."""
    shown = ", ".join(str(name) for name in names[:count])
    return shown + (f" and {len(names) - count} more" if len(names) > count else "")


# How each library says it ran out: torch's CPU allocator ("can't allocate memory"), torch.cuda
# ("out of memory"), ONNX Runtime's arena ("failed to allocate memory"), OpenCV ("Insufficient memory"),
# an mmap under an address-space limit ("Cannot allocate memory"), and the dynamic loader, which maps a
# library only as it is first imported ("failed to map segment from shared object": ulimit -v).
_OUT_OF_MEMORY_TEXTS = ("can't allocate memory", "out of memory", "failed to allocate memory",
                        "insufficient memory", "cannot allocate memory", "failed to map segment")

# How a thread that could not start says so: Python's threading, and the pthread_create errors ONNX
# Runtime and OpenMP print (EAGAIN, error code 11) under a process limit (ulimit -u, a container's pids).
_NO_THREAD_TEXTS = ("can't start new thread", "pthread_create failed")


def no_thread(exc: BaseException) -> bool:
    """Whether ``exc`` says that a thread could not be started: the process limit (RLIMIT_NPROC, which
    counts threads) or a container's pids limit is reached."""
    return isinstance(exc, RuntimeError | OSError) and any(text in str(exc).lower() for text in _NO_THREAD_TEXTS)


#: What to do when a thread cannot start, for every message that says so.
NO_THREAD_HINT = ("a thread could not be started: the process limit (ulimit -u) or the container's pids limit "
                  "is reached; set OMP_NUM_THREADS=1 (fewer threads) or raise that limit")


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says that an allocation failed: a MemoryError (numpy, Python), an OSError with
    ENOMEM, or a torch, ONNX Runtime or OpenCV error whose text says so (they raise RuntimeError,
    cv2.error and their own exception types)."""
    if isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno == errno.ENOMEM):
        return True
    return any(text in str(exc).lower() for text in _OUT_OF_MEMORY_TEXTS)
