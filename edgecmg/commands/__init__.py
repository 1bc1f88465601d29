"""The longer ``edgecmg`` subcommands (stream, bench), and what every subcommand shares."""
from __future__ import annotations

from pathlib import Path

from edgecmg.errors import ConfigError


def output_folder(path: str | Path, flag: str = "--out") -> Path:
    """Create the output folder ``path`` now, before any long work, so that a file in its place or
    an unwritable parent is a clear error naming it instead of a traceback after the run."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path}: a file of that name is in the way of the output folder; "
                          "give a folder name (new or existing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot create the output folder ({exc}); choose a writable place") from exc
    return path
