"""The command line where its surroundings misbehave: a deleted working folder, an output that cannot
encode a name, a prompt that arrives as undecoded bytes."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from edgecmg.cli import _argument_text
from edgecmg.config import ModelConfig
from edgecmg.errors import ConfigError
from test_cli_refusals_stream import EDGECMG


def test_a_deleted_working_folder_is_named_not_blamed_on_the_install(small_artifact, tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    # The shell stands in the folder while it is removed, then becomes edgecmg there.
    run = subprocess.run(["sh", "-c", 'cd "$1" && rmdir "$1" && exec "$2" info "$3"', "sh", str(gone), EDGECMG,
                          str(small_artifact)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "current folder no longer exists" in run.stderr and "cd to an existing folder" in run.stderr
    assert "oneMKL" not in run.stderr and "Traceback" not in run.stderr


def test_an_ascii_standard_output_prints_names_it_cannot_encode_as_escapes(small_artifact, kolektor_train, tmp_path):
    image = tmp_path / "pièce.jpg"
    shutil.copy(kolektor_train[0], image)
    out = tmp_path / "sortie-é"
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    run = subprocess.run([EDGECMG, "predict", str(small_artifact), str(image), "--out", str(out), "--overlays", "none"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "sortie-\\xe9" in run.stdout  # the run's last line, once a UnicodeEncodeError traceback after the work
    records = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [Path(r["file"]).name for r in records] == ["pièce.jpg"]


def test_a_prompt_passed_as_undecoded_utf8_bytes_is_decoded():
    # What Python makes of "pièce" typed under LC_ALL=C without its UTF-8 mode: the two bytes of "è"
    # kept as lone surrogates. Once they reached the tokenizer after the whole feature pass.
    assert _argument_text("pi\udcc3\udca8ce") == "pièce"
    assert _argument_text("a plain prompt") == "a plain prompt"


def test_a_prompt_that_is_not_text_is_refused_before_any_work():
    with pytest.raises(ConfigError, match="not text .*UTF-8"):
        ModelConfig(prompt="caf\udce9 part")  # a Latin-1 byte, undecodable as UTF-8


def test_a_model_that_cannot_be_written_where_asked_is_kept_in_the_temporary_directory(kolektor_train, tmp_path,
                                                                                      monkeypatch, capsys):
    """The fit done and -o unwritable at the end (a disk that filled meanwhile): the fit was lost."""
    import edgecmg.fit as fit_module
    from edgecmg import artifact
    from edgecmg.cli import main

    data = tmp_path / "good"
    data.mkdir()
    for path in kolektor_train[:10]:
        (data / path.name).symlink_to(path)
    output = tmp_path / "models" / "part.edgecmg"
    real_fit = fit_module.fit

    def fit_then_block_the_output(*args, **kwargs):
        fitted = real_fit(*args, **kwargs)
        output.parent.rmdir()
        output.parent.write_bytes(b"")  # -o's folder is a file now: nothing can be written into it
        return fitted

    monkeypatch.setattr(fit_module, "fit", fit_then_block_the_output)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", None)  # TMPDIR read again
    assert main(["-q", "fit", str(data), "--prompt", "a photo of a metal commutator", "--input-size", "256", "96",
                 "--cmle-dim", "8", "-o", str(output)]) == 2
    error = capsys.readouterr().err
    rescued = list((tmp_path / "tmp").glob("edgecmg-fit-*/part.edgecmg"))
    assert len(rescued) == 1, error
    assert f"the fitted model was saved as {rescued[0]} instead" in error and f"mv {rescued[0]} {output}" in error
    model, metadata = artifact.load(rescued[0])
    assert metadata["training"]["images"] == 10


def test_a_file_name_holding_a_newline_cannot_forge_a_log_line(small_artifact, kolektor_train, tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    shutil.copy(kolektor_train[0], folder / "good.jpg")
    forged = "bad\n2026-12-07 06:00:00 INFO edgecmg: all fine.jpg"
    (folder / forged).write_bytes(b"")  # empty: skipped, and named in a warning
    run = subprocess.run([EDGECMG, "predict", str(small_artifact), str(folder), "--out", str(tmp_path / "out"),
                          "--overlays", "none"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr  # good.jpg judged, the empty file skipped
    lines = run.stderr.splitlines()
    assert not any(line.startswith("2026-12-07 06:00:00 INFO") for line in lines), run.stderr
    assert any("bad\\n2026-12-07 06:00:00 INFO edgecmg: all fine.jpg" in line for line in lines), run.stderr


def test_fit_onto_a_link_says_the_link_is_replaced_and_its_file_kept(small_artifact, kolektor_train, tmp_path,
                                                                      caplog):
    from edgecmg.cli import main

    data = tmp_path / "good"
    data.mkdir()
    for path in kolektor_train[:10]:
        (data / path.name).symlink_to(path)
    version1 = tmp_path / "v1.edgecmg"
    shutil.copy(small_artifact, version1)
    current = tmp_path / "current.edgecmg"
    current.symlink_to("v1.edgecmg")
    with caplog.at_level("WARNING", logger="edgecmg"):
        assert main(["-q", "fit", str(data), "--prompt", "a photo of a metal commutator", "--input-size", "256", "96",
                     "--cmle-dim", "8", "-o", str(current)]) == 0
    # Once: "current.edgecmg exists; this fit replaces it", where the file it named stayed as it was.
    assert f"{current} is a link to v1.edgecmg; this fit replaces the link with the new file" in caplog.text
    assert not current.is_symlink() and version1.read_bytes() == small_artifact.read_bytes()


def test_an_error_naming_a_file_whose_name_holds_a_newline_stays_one_line(small_artifact, tmp_path):
    forged = "bad.jpg\n2026-12-07 06:00:00 INFO edgecmg: all fine"
    run = subprocess.run([EDGECMG, "predict", str(small_artifact), str(tmp_path / forged), "--out",
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    assert not any(line.startswith("2026-12-07 06:00:00 INFO") for line in run.stderr.splitlines()), run.stderr
    assert "bad.jpg\\n2026-12-07 06:00:00 INFO edgecmg: all fine" in run.stderr


def test_fit_decodes_a_prompt_passed_as_undecoded_utf8_bytes(kolektor_train, tmp_path):
    from edgecmg import artifact
    from edgecmg.cli import main

    data = tmp_path / "good"
    data.mkdir()
    for path in kolektor_train[:10]:
        (data / path.name).symlink_to(path)
    output = tmp_path / "part.edgecmg"
    assert main(["-q", "fit", str(data), "--prompt", "une pi\udcc3\udca8ce", "--input-size", "256", "96",
                 "--cmle-dim", "8", "-o", str(output)]) == 0
    header, _ = artifact.read_header(output)
    assert header["prompt"] == "une pièce"
