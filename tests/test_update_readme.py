"""benchmarks/update_readme.py fills README blocks from result files, empty blocks included."""
import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "update_readme.py"
spec = importlib.util.spec_from_file_location("update_readme", SCRIPT)
update_readme = importlib.util.module_from_spec(spec)
spec.loader.exec_module(update_readme)


def test_fills_empty_and_full_blocks_and_keeps_the_rest():
    text = "intro\n<!-- a:start -->\n<!-- a:end -->\nmiddle\n<!-- b:start -->\nold\nlines\n<!-- b:end -->\nend\n"
    text, ok_a = update_readme.fill_block(text, "a", "| t |\n")
    text, ok_b = update_readme.fill_block(text, "b", "new\n")
    assert ok_a and ok_b
    assert text == "intro\n<!-- a:start -->\n| t |\n<!-- a:end -->\nmiddle\n<!-- b:start -->\nnew\n<!-- b:end -->\nend\n"
    # a second run is a no-op (idempotent)
    assert update_readme.fill_block(text, "a", "| t |\n")[0] == text


def test_missing_end_marker_is_reported():
    text = "<!-- a:start -->\nstuff\n"
    assert update_readme.fill_block(text, "a", "x") == (text, False)


def test_stale_or_orphaned_tables_are_errors(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "a.md").write_text("| a |\n")
    (results / "orphan.md").write_text("| o |\n")
    (results / "linked.md").write_text("| l |\n")
    (results / "open.md").write_text("| x |\n")
    readme = tmp_path / "README.md"
    readme.write_text("<!-- a:start -->\n<!-- a:end -->\n<!-- gone:start -->\nold\n<!-- gone:end -->\n"
                      "see results/linked.md\n<!-- open:start -->\n")
    problems = update_readme.update(readme, results)
    assert readme.read_text().startswith("<!-- a:start -->\n| a |\n<!-- a:end -->\n")
    assert len(problems) == 3
    assert "no gone.md" in problems[0] and "no <!-- open:end --> marker" in problems[1] and "orphan.md" in problems[2]
