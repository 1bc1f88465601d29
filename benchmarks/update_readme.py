"""Copy the benchmark tables from benchmarks/results/ into README.md between their markers.

    python benchmarks/update_readme.py

Each block `<!-- NAME:start -->...<!-- NAME:end -->` receives benchmarks/results/NAME.md, so the
README's figures always come from a script's output, never from typing.
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fill_block(text: str, name: str, content: str) -> tuple[str, bool]:
    """Replace what lies between ``<!-- name:start -->`` and ``<!-- name:end -->`` (possibly nothing)."""
    pattern = re.compile(rf"(<!-- {name}:start -->\n)(?:.*?\n)?(<!-- {name}:end -->)", re.S)
    new_text, count = pattern.subn(lambda m: m.group(1) + content.strip() + "\n" + m.group(2), text, count=1)
    return new_text, count == 1


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    for match in re.finditer(r"<!-- (\w[\w-]*):start -->", text):
        name = match.group(1)
        result = ROOT / "benchmarks" / "results" / f"{name}.md"
        if not result.is_file():
            print(f"no {result.relative_to(ROOT)} yet; leaving the {name} block as it is")
            continue
        text, replaced = fill_block(text, name, result.read_text())
        print(f"README: {name} <- {result.relative_to(ROOT)}" if replaced else f"README: no {name} block end marker")
    readme.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
