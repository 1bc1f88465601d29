"""The longer ``edgecmg`` subcommands (stream, bench), and what every subcommand shares."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from edgecmg.errors import ConfigError


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
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot create the output folder ({exc}); choose a writable place") from exc
    try:
        yield path
    except BaseException:
        for folder in created:
            if not folder.is_dir() or any(folder.iterdir()):
                break
            folder.rmdir()
        raise
