"""When to draw progress bars. A bar redraws its line with carriage returns: a terminal or a
notebook shows one moving line, a log file (a service's journal, a redirected stderr) keeps every
redraw as garbled text."""
from __future__ import annotations

import sys
from typing import Optional


def show_progress(progress: Optional[bool] = None) -> bool:
    """``progress`` where it is given; else whether a bar can be seen: stderr is a terminal, or this
    runs in a Jupyter kernel (its stderr is no terminal, but tqdm.auto draws a widget there)."""
    if progress is not None:
        return bool(progress)
    isatty = getattr(sys.stderr, "isatty", None)  # None under pythonw; replaced streams may lack it
    return bool(isatty and isatty()) or "ipykernel" in sys.modules
