"""When the library draws progress bars (edgecmg.progress): fit, eval, threshold and calibrate
called from Python drew them into a service's log, where each redraw stays as garbled text."""
from __future__ import annotations

import io
import sys

from edgecmg.progress import show_progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_show_on_a_terminal_or_in_a_notebook_and_where_asked(monkeypatch):
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file, a pipe
    assert show_progress() is False and show_progress(True) is True
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert show_progress() is True and show_progress(False) is False
    monkeypatch.setenv("TERM", "dumb")  # an editor's shell: each redraw would stay as a line of its own
    assert show_progress() is False and show_progress(True) is True
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setattr(sys, "stderr", None)  # pythonw
    assert show_progress() is False
    monkeypatch.setitem(sys.modules, "ipykernel", object())  # Jupyter: no terminal, but a widget
    assert show_progress() is True
