"""One command at a time writes into an output folder: two predicts started into one new --out both
found it empty and both exited 0 over a results.jsonl holding half of each and a broken record."""
from __future__ import annotations

import subprocess

import pytest

from edgecmg.commands import output_folder
from edgecmg.errors import ConfigError
from test_cli_refusals_stream import EDGECMG

pytest.importorskip("fcntl", reason="the folder lock uses flock, which this system lacks (Windows)")


def test_a_second_run_into_a_folder_in_use_is_refused_and_leaves_it(tmp_path):
    out = tmp_path / "new" / "out"
    with output_folder(out, results=("results.jsonl",)) as first:
        with pytest.raises(ConfigError, match=r"--out .*out: another edgecmg command is writing into this folder now"):
            with output_folder(out, results=("results.jsonl",)):
                pass
        assert first.is_dir()  # the refused run did not remove the (still empty) folder of the first
        (first / "results.jsonl").write_text("{}\n")
    # Once the first has ended, its results are what a later run meets.
    with pytest.raises(ConfigError, match="holds an earlier run's results.jsonl"):
        with output_folder(out, results=("results.jsonl",)):
            pass
    with output_folder(out, results=("results.jsonl",), overwrite=True):
        pass


def test_the_folder_is_free_again_after_a_failed_run(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with output_folder(out):
            raise RuntimeError("the run failed")
    assert not out.exists()  # created by the failed run and empty: removed, as before
    with output_folder(out) as again:
        assert again.is_dir()


def test_predict_into_a_folder_another_command_writes_is_refused_before_loading(small_artifact, kolektor_train,
                                                                                 tmp_path):
    out = tmp_path / "out"
    with output_folder(out, results=("results.jsonl",)):
        run = subprocess.run([EDGECMG, "predict", str(small_artifact), str(kolektor_train[0]), "--out", str(out)],
                             capture_output=True, text=True, timeout=300)
        assert not (out / "results.jsonl").exists()
    assert run.returncode == 2, run.stderr
    assert "another edgecmg command is writing into this folder now" in run.stderr
