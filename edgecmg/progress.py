"""When to draw progress bars. A bar redraws its line with carriage returns: a terminal or a
notebook shows one moving line, a log file (a service's journal, a redirected stderr) keeps every
redraw as garbled text."""
from __future__ import annotations

import importlib.util
import os
import sys
from typing import Optional

from tqdm.std import tqdm as _text_bar


def _bar_class() -> type[_text_bar]:
    """tqdm.auto's bar (a widget in a Jupyter kernel) where ipywidgets is there to draw it, else tqdm's
    text bar. Importing tqdm.auto in a kernel without ipywidgets warns "IProgress not found" at once,
    on every import of fit, evaluation or calibration, bar or no bar (progress=False); the text bar is
    what it would fall back to anyway. find_spec looks ipywidgets up without importing it."""
    try:
        widgets = importlib.util.find_spec("ipywidgets") is not None
    except (ImportError, ValueError):  # a broken or stubbed-out ipywidgets in sys.modules
        widgets = False
    if not widgets:
        return _text_bar
    from tqdm.auto import tqdm as auto_bar

    return auto_bar


#: The progress bar class the library draws with (``tqdm(iterable, disable=not show_progress(...))``).
tqdm = _bar_class()


def show_progress(progress: Optional[bool] = None) -> bool:
    """``progress`` where it is given; else whether a bar can be seen: stderr is a terminal, or this
    runs in a Jupyter kernel (its stderr is no terminal, but tqdm.auto draws a widget there)."""
    if progress is not None:
        return bool(progress)
    isatty = getattr(sys.stderr, "isatty", None)  # None under pythonw; replaced streams may lack it
    # A dumb terminal (TERM=dumb: an editor's shell, some CI consoles) prints each redraw as a new line.
    on_terminal = bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"
    return on_terminal or "ipykernel" in sys.modules
