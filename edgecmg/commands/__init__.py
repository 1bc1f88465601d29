"""The longer ``edgecmg`` subcommands (stream, bench), and what every subcommand shares."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from edgecmg.errors import ConfigError, OutputError
from edgecmg.fileio import check_writable


class Terminated(KeyboardInterrupt):
    """SIGTERM (``systemctl stop``, ``docker stop``), raised where the program is (the CLI installs
    the handler), so that it stops as Ctrl-C stops it: temporary files removed, a stream's records
    flushed and its summary written."""


@contextmanager
def output_folder(path: str | Path, flag: str = "--out") -> Iterator[Path]:
    """Create the output folder ``path`` now, before any long work, so that a file in its place or
    an unwritable parent is a clear error naming it instead of a traceback after the run. A folder
    created here is removed again if the command fails before writing into it (a model that would
    not load leaves nothing behind); anything written is kept."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path}: a file of that name is in the way of the output folder; "
                          "give a folder name (new or existing)")
    # Folders this call creates, innermost first: ``--out a/b`` may create ``a`` too.
    created = [folder for folder in (path, *path.parents) if not folder.exists()]
    try:
        check_writable(path / "results")  # creates the folder, and a file in it is tried at once
    except OutputError as exc:
        raise ConfigError(f"{flag} {path}: cannot write into the output folder ({exc.__cause__}); choose a "
                          "writable place") from exc
    try:
        yield path
    except BaseException:
        for folder in created:
            if not folder.is_dir() or any(folder.iterdir()):
                break
            folder.rmdir()
        raise
