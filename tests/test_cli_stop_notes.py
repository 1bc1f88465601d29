"""What a command stopped part-way (Ctrl-C, SIGTERM) says it kept and how to go on. An interrupted
predict said only "interrupted", and the rerun's refusal offered --overwrite, which deletes the kept
records and overlays, and not --resume; bench stopped after timing one backend wrote nothing."""
import json
import os
from pathlib import Path

import pytest

from edgecmg.cli import main


def _images(kolektor_root: Path, count: int, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted((kolektor_root / "test" / "good").iterdir())[:count]:
        os.symlink(path, folder / path.name)
    return sorted(folder.iterdir())


def test_an_interrupted_predict_says_what_it_kept_and_that_resume_continues_it(small_artifact, kolektor_root,
                                                                                tmp_path, monkeypatch, capsys):
    from edgecmg import fileio

    images = tmp_path / "in"
    _images(kolektor_root, 4, images)
    real_write = fileio.JsonLinesFile.write

    def stop_before_the_third_record(self, record):
        if self.path.name == "results.jsonl" and self.records == 2:
            raise KeyboardInterrupt
        real_write(self, record)

    out = tmp_path / "out"
    command = ["-q", "predict", str(small_artifact), str(images), "--out", str(out), "--backend", "torch"]
    monkeypatch.setattr(fileio.JsonLinesFile, "write", stop_before_the_third_record)
    assert main(command) == 130
    monkeypatch.setattr(fileio.JsonLinesFile, "write", real_write)
    said = capsys.readouterr().err
    assert (f"edgecmg predict: interrupted; 2 of the 4 images are done, their records kept in {out}; add --resume "
            "to the same command to judge the rest") in said

    # The same command again: the refusal names --resume before --overwrite (which deletes those records).
    assert main(command) == 2
    said = capsys.readouterr().err
    assert (f"--out {out} holds an earlier run's results.jsonl; continue that run with --resume, give another "
            "folder, or add --overwrite to replace them") in said
    assert main([*command, "--resume"]) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 4

    # Stopped again, under --overwrite: adding --resume to that command would be refused ("give one of them")
    monkeypatch.setattr(fileio.JsonLinesFile, "write", stop_before_the_third_record)
    assert main([*command, "--overwrite"]) == 130
    assert "run it again with --resume in place of --overwrite to judge the rest" in capsys.readouterr().err

    def stop_at_the_first_record(self, record):
        if self.path.name == "results.jsonl":
            raise KeyboardInterrupt
        real_write(self, record)

    monkeypatch.setattr(fileio.JsonLinesFile, "write", stop_at_the_first_record)
    assert main([*command, "--resume"]) == 130  # stopped while resuming: the same command again continues
    assert ("2 of the 4 images are done, their records kept in "
            f"{out}; run the same command again to judge the rest") in capsys.readouterr().err


def test_a_predict_stopped_before_its_first_record_says_nothing_was_kept(small_artifact, kolektor_root, tmp_path,
                                                                        monkeypatch, capsys):
    from edgecmg.detector import Detector

    images = tmp_path / "in"
    _images(kolektor_root, 2, images)

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Detector, "predict", stop)
    out = tmp_path / "out"
    assert main(["-q", "predict", str(small_artifact), str(images), "--out", str(out), "--backend", "torch"]) == 130
    assert capsys.readouterr().err.strip().endswith("edgecmg predict: interrupted")


def test_a_bench_stopped_after_one_backend_writes_that_backends_row(small_artifact, tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    from edgecmg.commands import Terminated, bench

    real_bench_backend = bench.bench_backend
    timed = []

    def terminated_at_the_second_backend(model, backend, *args, **kwargs):
        if timed:
            raise Terminated(15)
        timed.append(backend)
        return real_bench_backend(model, backend, *args, **kwargs)

    monkeypatch.setattr(bench, "bench_backend", terminated_at_the_second_backend)
    out = tmp_path / "bench"
    status = main(["-q", "bench", str(small_artifact), "--backends", "torch", "onnxruntime", "--frames", "2",
                   "--warmup", "1", "-o", str(out)])
    assert status == 143
    report = json.loads((out / "bench.json").read_text())
    assert [row["backend"] for row in report["rows"]] == ["torch"]
    assert report["environment"]["stopped"].startswith("stopped by the user after 1 backend row(s)")
    assert (out / "bench_latency.png").stat().st_size > 0
    said = capsys.readouterr().err
    assert f"terminated (SIGTERM); the 1 row(s) timed before the stop are written to {out}/bench.json" in said
