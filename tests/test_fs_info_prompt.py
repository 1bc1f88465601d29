"""``edgecmg info`` shows a model's prompt as it was typed, not as JSON's ASCII escapes
("\\ud83d\\udd29 \\u00e9" for "🔩 é"), while a newline or an invisible character stays escaped."""
from __future__ import annotations

from edgecmg import artifact
from edgecmg.cli import main


def test_info_shows_a_prompt_in_any_script_readably(small_fit, tmp_path, capsys):
    model, metadata = small_fit
    prompt = '🔩 é "Kommutator"\nzweite\u200bZeile 缺陷'
    path = artifact.save(model, {**metadata, "prompt": prompt}, tmp_path / "prompt.edgecmg")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    # Printable characters as they are; the quote, the newline and the zero-width space escaped as
    # JSON escapes them: still one line, in quotes, and nothing of the prompt hidden.
    assert '  prompt       "🔩 é \\"Kommutator\\"\\nzweite\\u200bZeile 缺陷"\n' in out, out


def test_info_still_shows_an_ascii_prompt_as_before(small_artifact, capsys):
    assert main(["info", str(small_artifact)]) == 0
    assert '  prompt       "a photo of a metal commutator"\n' in capsys.readouterr().out
