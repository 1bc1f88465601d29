"""The benchmark report files (``edgecmg bench`` / ``edgecmg stream``): :func:`write_report` writes
``<stem>.json`` (the rows with the machine they were measured on, as strict JSON), ``.csv`` and
``.md``, whose table :func:`markdown_table` makes.
"""
from __future__ import annotations

import csv
import datetime as _dt
import html
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from edgecmg.errors import ConfigError, DataError, one_line
from edgecmg.fileio import atomic_write_bytes, json_ready, spreadsheet_cell
from edgecmg.stream.environment import environment_info

__all__ = ["write_report", "markdown_table", "field_lines"]


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (Path, os.PathLike)):
        return os.fspath(obj)
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    return str(obj)


def _as_utf8(text: str) -> str:
    """``text`` with every character UTF-8 cannot hold written as the JSON report writes it: a file
    name's byte that is not UTF-8 (``caf\\xe9.jpg`` from Latin-1, legal on Linux) comes to Python
    as a lone surrogate, ``caf\\udce9.jpg``, which reads the same in the .json, .csv and .md and in a
    terminal. Raw bytes would make the whole .csv unreadable to a UTF-8 reader (pandas, spreadsheets).
    """
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _is_latency_summary(v: Any) -> bool:
    return isinstance(v, Mapping) and "p50_ms" in v and "p99_ms" in v


def _fmt_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if not math.isfinite(f):
            return "-"
        a = abs(f)
        if a == 0:
            return "0"
        if a >= 100:
            return f"{f:.1f}"
        if a >= 1:
            return f"{f:.2f}"
        return f"{f:.3g}"
    if _is_latency_summary(v):
        # A latency summary reads as its median and tail; the JSON and CSV keep every quantile.
        return f"{_fmt_cell(v['p50_ms'])} / {_fmt_cell(v['p99_ms'])}"
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(json_ready(v), default=_json_default)
    return str(v)


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    cols: dict[str, None] = {}
    for row in rows:
        for key in row:
            cols.setdefault(str(key), None)
    return list(cols)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[str]] = None) -> str:
    """Rows as a GitHub markdown table (columns in first-seen order; missing cells blank; a latency
    summary, a dict with ``p50_ms`` and ``p99_ms``, shows as "p50 / p99")."""
    if not rows:
        return "_(no rows)_\n"
    cols = list(columns) if columns is not None else _columns(rows)

    def esc(text: str) -> str:
        # HTML escaped (a name "<img src=x onerror=...>" is markup to a Markdown viewer), control
        # characters written as escapes (an ESC sequence rewrites a terminal that cats the file).
        return one_line(html.escape(text, quote=False).replace("\n", " ")).replace("|", "\\|")

    lines = ["| " + " | ".join(esc(_column_title(rows, c)) for c in cols) + " |"]
    lines.append("|" + "|".join("---:" if _numeric_column(rows, c) else "---" for c in cols) + "|")
    for row in rows:
        lines.append("| " + " | ".join(esc(_fmt_cell(row.get(c))) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def field_lines(row: Mapping[str, Any]) -> str:
    """One row as aligned "name  value" lines, cells as in :func:`markdown_table`: for a terminal,
    where a wide row (a stream's summary has over 20 fields) wraps into an unreadable block."""
    titles = {col: _column_title([row], col) for col in row}
    width = max(map(len, titles.values()), default=0)
    return "".join(f"{titles[col]:<{width}}  {_fmt_cell(value)}".rstrip() + "\n" for col, value in row.items())


def _column_title(rows: Sequence[Mapping[str, Any]], col: str) -> str:
    """The column's name; "NAME p50 / p99" where every value is a latency summary."""
    summaries = [r.get(col) for r in rows if r.get(col) is not None]
    return f"{col} p50 / p99" if summaries and all(_is_latency_summary(v) for v in summaries) else col


def _numeric_column(rows: Sequence[Mapping[str, Any]], col: str) -> bool:
    values = [r.get(col) for r in rows if r.get(col) is not None]
    return bool(values) and all(
        isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) for v in values
    )


#: ``schema`` of a report whose rows are the caller's own; stream's summary and bench name theirs.
REPORT_SCHEMA = "edgecmg.report.v1"


def write_report(
    rows: Sequence[Mapping[str, Any]],
    out_dir: Union[str, os.PathLike],
    stem: str,
    *,
    environment: Optional[Mapping[str, Any]] = None,
    echo: bool = False,
    schema: str = REPORT_SCHEMA,
) -> str:
    """Write ``<out_dir>/<stem>.json``, ``.csv`` and ``.md``; return the markdown table.

    The JSON holds ``{"schema", "created", "environment", "rows"}`` so a result is never separated from
    the machine it was measured on; the CSV holds the rows only (one column per key, first-seen
    order; nested values JSON-encoded), for spreadsheets.

    Args:
        rows: one dict per measured configuration (e.g. backend x batch size).
        environment: what to record as the environment; default :func:`environment_info`.
            Pass ``{}`` to record none (the JSON then holds an empty ``environment``).
        echo: also print the table to stdout.
        schema: the JSON's ``schema`` (what a script checks before it reads the rows; docs/outputs.md).

    Raises:
        DataError: a row is not a mapping.
        ConfigError: ``stem`` is empty or contains a path separator.
    """
    if isinstance(rows, Mapping) or not isinstance(rows, Sequence):
        raise DataError(f"rows must be a list of dicts (one per configuration), got {type(rows).__name__}")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise DataError(f"rows[{i}] is a {type(row).__name__}; every row must be a dict of column -> value")
    if not stem or not str(stem).strip() or any(sep in stem for sep in ("/", "\\", os.sep)):
        raise ConfigError(f"stem={stem!r} must be a plain file name without folders, e.g. 'bench_orin'")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the report folder {out}: {exc}; choose a writable out_dir") from exc

    clean_rows = [json_ready(dict(r)) for r in rows]
    env = environment_info() if environment is None else dict(environment)
    payload = {
        "schema": schema,
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "environment": json_ready(env),
        "rows": clean_rows,
    }
    text = json.dumps(payload, indent=2, default=_json_default, allow_nan=False) + "\n"
    atomic_write_bytes(out / f"{stem}.json", text.encode("utf-8"), what="the report", sync=False)

    cols = _columns(clean_rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in clean_rows:
        writer.writerow({
            c: spreadsheet_cell(json.dumps(row[c], default=_json_default) if isinstance(row.get(c), (dict, list))
                                else row.get(c))
            for c in cols
        })
    atomic_write_bytes(out / f"{stem}.csv", _as_utf8(buf.getvalue()).encode("utf-8"), what="the report", sync=False)

    table = _as_utf8(markdown_table(clean_rows, cols))
    device = env.get("device") if env else None
    header = _as_utf8(f"# {stem}\n\n" + (f"Device: {device}\n\n" if device else ""))
    atomic_write_bytes(out / f"{stem}.md", (header + table).encode("utf-8"), what="the report", sync=False)
    if echo:
        print(table, end="")
    return table
