"""docs/outputs.md names every key of every machine-readable output: the outputs are made here with the
small test model, their keys collected, and each looked up in the page's section for that output.
A key added, renamed or moved without the page following fails here, naming it; so does a JSON
document's ``schema`` value that the page does not list."""
from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path

import pytest

from edgecmg.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "outputs.md"
# Where a latency summary sits in a stream_summary row: its keys (mean_ms, p50_ms, ...) are one table.
LATENCY_GROUPS = ("latency_ms", "inference_ms", "capture_wait_ms", "preprocess_ms", "age_ms")


def page_sections() -> dict[str, set[str]]:
    """The page's `## ` sections by heading, each as the set of names it writes in backticks."""
    sections: dict[str, list[str]] = {}
    heading = ""
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            heading = line[3:].strip()
        sections.setdefault(heading, []).append(line)
    return {title: set(re.findall(r"`([^`\n]+)`", "\n".join(lines))) for title, lines in sections.items()}


def names_in(sections: dict[str, set[str]], *titles: str) -> set[str]:
    """The backticked names of the sections whose heading holds any of ``titles``."""
    found = [names for heading, names in sections.items() if any(t in heading for t in titles)]
    assert found, f"docs/outputs.md has no section whose heading names {titles}"
    return set().union(*found)


def key_paths(value, prefix: str = "", *, dynamic: tuple[str, ...] = (), opaque: tuple[str, ...] = ()):
    """(dotted path, leaf name) of every key in ``value``: a list's elements as ``name[]`` (a list of
    records, JSON lines or info's entries, as the records themselves), the keys of
    an object at a path in ``dynamic`` (names, not keys: defect types) as ``<type>``; no deeper than a
    path in ``opaque``."""
    if isinstance(value, list):
        for item in value:
            yield from key_paths(item, f"{prefix}[]" if prefix else "", dynamic=dynamic, opaque=opaque)
    elif isinstance(value, dict) and prefix not in opaque:
        for key, item in value.items():
            name = "<type>" if prefix in dynamic else key
            path = f"{prefix}.{name}" if prefix else name
            yield path, name
            yield from key_paths(item, path, dynamic=dynamic, opaque=opaque)


def missing(pairs, documented: set[str], *, strip: tuple[str, ...] = (), leaf_under: tuple[str, ...] = (),
            environment: set[str] = frozenset()) -> set[str]:
    """The paths of ``pairs`` that ``documented`` lacks. A path starting with a ``strip`` prefix is
    looked up without it (a row's keys are its own table); under a ``leaf_under`` parent the leaf
    name is enough (a latency group's mean_ms, p50_ms, ...); an ``environment.`` key may be in
    ``environment`` instead (the shared object's table, under env --json)."""
    absent = set()
    for path, leaf in pairs:
        for prefix in strip:
            if path.startswith(prefix):
                path = path[len(prefix):]
        if path in documented or (path.startswith("environment.") and path in environment):
            continue
        if "." in path and path.rsplit(".", 1)[0] in leaf_under and leaf in documented:
            continue
        absent.add(path)
    return absent


def _link_images(source: Path, target: Path, count: int) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    linked = []
    for path in sorted(source.iterdir())[:count]:
        os.symlink(path, target / path.name)
        linked.append(target / path.name)
    return linked


def test_outputs_doc_names_every_key(small_artifact, kolektor_root, tmp_path, capsys, monkeypatch):
    assert DOC.is_file(), f"{DOC} is missing"
    sections = page_sections()
    page_text = DOC.read_text(encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # relative paths, as users give them
    model = str(small_artifact)

    # Inputs: 3 good and 3 defect test images with masks (MVTec layout), and a folder with a broken file.
    data = Path("data")
    _link_images(kolektor_root / "test" / "good", data / "test" / "good", 3)
    for path in _link_images(kolektor_root / "test" / "defect", data / "test" / "defect", 3):
        mask = kolektor_root / "ground_truth" / "defect" / f"{path.stem}_mask.png"
        (data / "ground_truth" / "defect").mkdir(parents=True, exist_ok=True)
        os.symlink(mask, data / "ground_truth" / "defect" / mask.name)
    images = Path("images")
    _link_images(kolektor_root / "test" / "good", images, 2)
    (images / "broken.png").write_bytes(b"not a png")

    outputs: dict[str, tuple[object, set[str], dict]] = {}  # name -> (parsed output, documented names, rules)
    documents: dict[str, dict] = {}  # JSON documents, for their schema

    # predict: results.jsonl, skipped.jsonl, predict_run.json (exit 1: one input unreadable)
    assert main(["-q", "predict", model, str(images), "--out", "pred", "--backend", "torch"]) == 1
    lines = lambda path: [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]
    outputs["results.jsonl"] = (lines("pred/results.jsonl"), names_in(sections, "results.jsonl"), {})
    outputs["skipped.jsonl"] = (lines("pred/skipped.jsonl"), names_in(sections, "skipped.jsonl"), {})
    documents["predict_run.json"] = json.loads(Path("pred/predict_run.json").read_text(encoding="utf-8"))
    outputs["predict_run.json"] = (documents["predict_run.json"], names_in(sections, "predict_run.json"), {})

    # eval --json and -o: metrics.json (the same keys), scores.csv
    capsys.readouterr()
    assert main(["-q", "eval", model, str(data), "--json", "-o", "evalout", "--backend", "torch"]) == 0
    documents["eval --json"] = json.loads(capsys.readouterr().out)
    documents["metrics.json"] = json.loads(Path("evalout/metrics.json").read_text(encoding="utf-8"))
    eval_names = names_in(sections, "metrics.json")
    for name in ("eval --json", "metrics.json"):
        outputs[name] = (documents[name], eval_names, {"dynamic": ("defect_types",)})
    columns = next(csv.reader(io.StringIO(Path("evalout/scores.csv").read_text(encoding="utf-8"))))
    outputs["scores.csv"] = ({column: None for column in columns}, names_in(sections, "scores.csv"), {})

    # threshold --json, with -o (adds "written"; the new file's header gets threshold_set)
    assert main(["-q", "threshold", model, str(images), "--json", "-o", "rethresholded.edgecmg",
                 "--backend", "torch"]) == 1
    documents["threshold --json"] = json.loads(capsys.readouterr().out)
    outputs["threshold --json"] = (documents["threshold --json"], names_in(sections, "threshold --json"), {})

    # stream --jsonl records and the summary (.json, .csv)
    assert main(["-q", "stream", str(data / "test" / "good"), "-m", model, "--backend", "torch",
                 "--jsonl", "frames.jsonl", "--report", "report"]) == 0
    capsys.readouterr()
    outputs["stream --jsonl"] = (lines("frames.jsonl"), names_in(sections, "stream --jsonl"), {})
    env_names = names_in(sections, "env --json")
    summary_names = names_in(sections, "stream_summary")
    documents["stream_summary.json"] = json.loads(Path("report/stream_summary.json").read_text(encoding="utf-8"))
    rows = {"strip": ("rows[].",), "leaf_under": LATENCY_GROUPS, "environment": env_names}
    outputs["stream_summary.json"] = (documents["stream_summary.json"], summary_names, rows)
    columns = next(csv.reader(io.StringIO(Path("report/stream_summary.csv").read_text(encoding="utf-8"))))
    outputs["stream_summary.csv"] = ({column: None for column in columns}, summary_names, {})

    # bench.json / bench.csv
    assert main(["-q", "bench", model, "--backends", "torch", "--frames", "2", "--warmup", "1",
                 "--out", "bench"]) == 0
    capsys.readouterr()
    bench_names = names_in(sections, "bench")
    documents["bench.json"] = json.loads(Path("bench/bench.json").read_text(encoding="utf-8"))
    outputs["bench.json"] = (documents["bench.json"], bench_names, {"strip": ("rows[].",), "environment": env_names})
    columns = next(csv.reader(io.StringIO(Path("bench/bench.csv").read_text(encoding="utf-8"))))
    outputs["bench.csv"] = ({column: None for column in columns}, bench_names, {})

    # env --json (exit 1 only where it finds an install problem)
    assert main(["env", "--json"]) in (0, 1)
    documents["env --json"] = json.loads(capsys.readouterr().out)
    outputs["env --json"] = (documents["env --json"], env_names, {"strip": ("backends[].", "problems[].")})

    # info --json: the wrapper (an error entry too), and the model header's top level plus the parts
    # a deployment reads (normalization, created) and threshold_set
    assert main(["info", "--json", model, "rethresholded.edgecmg", "missing.edgecmg"]) == 1
    entries = json.loads(capsys.readouterr().out)
    outputs["info --json"] = (entries, names_in(sections, "info --json"), {"opaque": ("header",)})
    headers = [entry["header"] for entry in entries if "header" in entry]
    assert any("threshold_set" in header for header in headers)
    shown = [{key: (value if key in ("normalization", "created", "threshold_set") else None)
              for key, value in header.items()} for header in headers]
    outputs["model header"] = (shown, names_in(sections, "model file header"), {})

    # stream.report.write_report's own schema (its rows are the caller's)
    from edgecmg.stream.report import write_report

    write_report([{"a": 1}], tmp_path / "own", "own", environment={})
    documents["write_report"] = json.loads((tmp_path / "own" / "own.json").read_text(encoding="utf-8"))

    problems = []
    for name, (value, documented, rules) in outputs.items():
        pairs = list(key_paths(value, dynamic=rules.get("dynamic", ()), opaque=rules.get("opaque", ())))
        assert pairs, f"{name}: no keys collected"
        absent = missing(pairs, documented, strip=rules.get("strip", ()), leaf_under=rules.get("leaf_under", ()),
                         environment=rules.get("environment", frozenset()))
        if absent:
            problems.append(f"{name}: {', '.join(sorted(absent))}")
    for name, document in documents.items():
        schema = document.get("schema")
        if not schema:
            problems.append(f"{name}: no schema key")
        elif f"`{schema}`" not in page_text:
            problems.append(f"{name}: its schema {schema} is not in the page")
    assert not problems, "keys missing from docs/outputs.md (each in its output's section):\n" + "\n".join(problems)
