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


def update(readme: Path, results: Path) -> list[str]:
    """Fill every block of ``readme`` from ``results``; returns the problems found (none: all filled).

    A block without its results file or end marker, and a results file with neither a block nor a
    link from the README, are problems:
    a table that silently stays stale or never reaches the README is what this script exists to stop.
    """
    text = readme.read_text()
    problems, names = [], []
    for match in re.finditer(r"<!-- (\w[\w-]*):start -->", text):
        name = match.group(1)
        names.append(name)
        result = results / f"{name}.md"
        if not result.is_file():
            problems.append(f"{readme.name} has a {name} block but there is no {result.name} in {results}")
            continue
        text, replaced = fill_block(text, name, result.read_text())
        if replaced:
            print(f"{readme.name}: {name} <- {result.name}")
        else:
            problems.append(f"{readme.name}: the {name} block has no <!-- {name}:end --> marker")
    for result in sorted(results.glob("*.md")):
        linked = f"{results.name}/{result.name}" in text  # a long table is linked rather than copied
        if result.stem not in names and not linked:
            problems.append(f"{result.name} has neither a <!-- {result.stem}:start --> block in {readme.name} "
                            "nor a link from it")
    readme.write_text(text)
    return problems


def main() -> int:
    problems = update(ROOT / "README.md", ROOT / "benchmarks" / "results")
    for problem in problems:
        print(f"error: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
