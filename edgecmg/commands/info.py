"""``edgecmg info``: what a model file is and whether it runs here, from its verified header alone.

The file's checksums are checked as loading would check them (a damaged file is reported, not
described), and an .edgecmg file gets every check its loader runs on the header and the tensors
(a file load refuses is reported with load's error, never described as fine), but nothing is run:
no backbone, session or engine is created, so a TensorRT engine can be inspected on a machine
without TensorRT or a GPU.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

from edgecmg.errors import EdgeCMGError, one_line
from edgecmg.fileio import json_text


def describe(path: str | Path) -> dict[str, Any]:
    """{"file", "kind", "bytes", "checksums", "header", "model", "runs_here", "engine_check", "not_here"} for
    one model file.

    ``header``: the whole verified header; ``model``: the model's own header inside it (for an
    engine, the one of the ONNX file it was built from); ``runs_here``: the "backend (device)" pairs
    this machine can run it on; ``engine_check``: for an engine, "ok" or why it cannot run here;
    ``not_here``: for a CLIP model whose weights file or open_clip this machine lacks, what loading
    it says (None otherwise).
    """
    from edgecmg.runtime.registry import ARTIFACT_SUFFIX, ONNX_SUFFIX, check_model_file, runner_choices

    path = Path(path).expanduser()
    suffix = check_model_file(path)
    engine_check = None
    not_here = None  # why a model file that is sound cannot run on this machine (a CLIP model's weights)
    checksums = "checksums ok"
    if suffix == ARTIFACT_SUFFIX:
        from edgecmg import artifact

        # load's checks, not only the checksums: a file re-hashed after an edit (a NaN bank, a header
        # size no tensor has, other backbone weights) passes those, and predict then refuses it. A CLIP
        # model names a weights file (and needs open_clip) that this machine may lack, as an engine may
        # lack TensorRT: described all the same, with why it does not run here.
        header, _ = artifact.read_header(path)
        not_here = _clip_weights_problem(header)
        if not_here is None:
            header = artifact.check(path)
        model, kind = header, f"edgecmg model, format {header.get('format_version', '?')}"
    elif suffix == ONNX_SUFFIX:
        # onnx_header, not export (torch): a whole-detector file is described without torch, as it runs
        from edgecmg.onnx_header import (GRAPH_FEATURIZER, GRAPH_SHA_KEY, HEADER_SHA_KEY, _load_proto, metadata_props,
                                         read_onnx_header, remake_hint)

        proto = _load_proto(path)  # parsed once: exports run to tens of MB
        header = read_onnx_header(proto, str(path))
        if header.get("export", {}).get("graph") == GRAPH_FEATURIZER:
            from edgecmg.export import load_scorer_from_onnx

            load_scorer_from_onnx(proto, origin=str(path))  # its memory bank, outside the graph's checksum: as bench would refuse it
        props = metadata_props(proto)
        unsealed = [name for key, name in ((GRAPH_SHA_KEY, "graph"), (HEADER_SHA_KEY, "header")) if key not in props]
        if unsealed:  # "checksums ok" under the warning that the file cannot be checked read as a contradiction
            checksums = (f"no {' or '.join(unsealed)} checksum to check (exported by an older edgecmg; "
                         f"{remake_hint(header)} to add them)")
        export = header.get("export", {})
        model = header
        kind = f"ONNX, {export.get('graph', '?')} graph, {export.get('precision', '?')}"
    else:
        from edgecmg.engine_file import read_engine_file, scorer_of_engine

        header, scorer, _ = read_engine_file(path)  # both payloads' checksums, the plan's included
        if scorer:  # a featurizer engine's bank, against its export's checksum too, as running it would check
            scorer_of_engine(path, header, scorer)
        model = header.get("model") or {}
        kind = f"TensorRT engine, {model.get('export', {}).get('graph', '?')} graph, {header.get('precision', '?')}"
        engine_check = _engine_check(header, path)
    runs_here = [] if not_here else [f"{backend} ({device})" for backend, device in runner_choices(path)]
    return {"file": str(path), "kind": kind, "bytes": path.stat().st_size, "checksums": checksums, "header": header,
            "model": model, "runs_here": runs_here, "engine_check": engine_check, "not_here": not_here}


def _clip_weights_problem(header: dict[str, Any]) -> Optional[str]:
    """Why the CLIP matcher a model's header names cannot be loaded here (its weights file missing or
    another, open_clip not installed), or None: a zero-shot matcher's model, or one whose CLIP
    weights pass the checks loading runs."""
    spec = header.get("matcher") or {}
    if spec.get("kind") != "clip":
        return None
    from edgecmg.model.matcher import ClipMatcher

    try:
        ClipMatcher.check_weights(spec["arch"], spec["weights"], expected_sha256=spec["sha256"])
    except EdgeCMGError as exc:
        return f"loading it here fails: {exc}"
    return None


def _engine_check(header: dict[str, Any], path: Path) -> str:
    from edgecmg.engine import check_engine_compatible, tensorrt_available

    if not tensorrt_available():
        return "not checked: TensorRT is not installed here"
    try:
        check_engine_compatible(header, path=path)
    except EdgeCMGError as exc:
        return str(exc)
    return "ok"


def _on_off(flag: Any) -> str:
    return "on" if flag else "off"


def format_description(info: dict[str, Any]) -> str:
    """The human-readable summary ``edgecmg info`` prints."""
    header, model = info["header"], info["model"]
    spec = model.get("model", {})
    training = model.get("training", {})
    created = model.get("created", {})
    # Every line through one_line: a crafted file's header strings (created.host, a GPU name, held-out
    # names) carrying terminal escapes or newlines cleared the screen or printed lines of their own.
    lines = [one_line(f"{info['file']}: {info['kind']}, {info['bytes'] / 1e6:.1f} MB, {info['checksums']}")]

    def row(name: str, value: Any) -> None:
        lines.append(one_line(f"  {name:<12} {value}"))

    height, width = model.get("input_size", ["?", "?"])
    row("input", f"{height}x{width} (height x width), {model.get('normalization', {}).get('layout', '?')}")
    # As typed (not "\ud83d\udd29" for an emoji); row()'s one_line escapes what cannot be seen.
    row("prompt", json.dumps(model.get("prompt", "?"), ensure_ascii=False))
    threshold = model.get("threshold")
    set_by = model.get("threshold_set")
    row("threshold", f"{threshold:.6g}" if isinstance(threshold, (int, float)) else repr(threshold))
    if set_by:
        previous = set_by.get("previous")
        previous = f"{previous:.6g}" if isinstance(previous, (int, float)) else "?"
        row("", f"set by {set_by.get('by', '?')} at the {set_by.get('quantile', '?')} quantile of "
                f"{set_by.get('images', '?')} good images (before: {previous})")
    row("CMER", f"{_on_off(spec.get('use_cmer'))} (grid {model.get('grid', '?')})")
    row("CMLE", f"{_on_off(spec.get('use_cmle'))} ({spec.get('feature_dim', '?')} dims)")
    row("memory bank", f"{spec.get('bank_size', '?')} x {spec.get('feature_dim', '?')}, features "
                       f"{model.get('features', '?')}, k = {spec.get('knn_k', '?')}")
    backbone = model.get("backbone", {})
    row("backbone", f"{backbone.get('id', '?')} (sha256 {str(backbone.get('sha256', '?'))[:12]})")
    row("matcher", model.get("matcher", {}).get("kind", "?"))
    if training:
        copies = f", {training['copies_left_out']} copies of others left out" if training.get("copies_left_out") else ""
        row("fitted on", f"{training.get('images', '?')} images ({training.get('bank_images', '?')} in the bank, "
                         f"{training.get('holdout_images', '?')} held out for the threshold{copies}) in "
                         f"{training.get('seconds', '?')} s; height/width {training.get('aspect_hw', '?')}")
        if training.get("threshold_left_out"):
            row("", f"held out but left out of the threshold (far above the rest): "
                    f"{', '.join(training['threshold_left_out'])}")
    row("created", f"{created.get('time', '?')} by edgecmg {created.get('edgecmg', '?')}, torch "
                   f"{created.get('torch', '?')}, on {created.get('host', '?')}")
    export = model.get("export")
    if export:
        batch = f"batch up to {export.get('max_batch')}" if export.get("dynamic_batch") else f"batch {export.get('batch')}"
        row("exported", f"opset {export.get('opset', '?')}, {batch}, outputs {', '.join(export.get('outputs') or [])}")
    quant = model.get("quantization")
    if quant:
        row("INT8", f"profile {quant.get('profile', '?')}, {quant.get('method', '?')} calibration on "
                    f"{quant.get('samples', '?')} images, {quant.get('quantized_nodes', '?')} nodes quantised")
    if info["engine_check"] is not None:
        gpu = header.get("gpu", {})
        row("built", f"{header.get('created', '?')} with TensorRT {header.get('tensorrt', '?')} for "
                     f"{gpu.get('name', '?')} (compute capability {gpu.get('compute_capability', '?')}), "
                     f"{header.get('precision', '?')}, from {header.get('source_onnx', '?')}")
        if header.get("dla_core") is not None:
            row("", f"DLA core {header['dla_core']}")
        row("engine here", info["engine_check"])
    row("runs here on", ", ".join(info["runs_here"]) or f"none: {info.get('not_here') or 'no backend that runs this file is available on this machine'}")
    return "\n".join(lines)


def run_info(args: argparse.Namespace) -> int:
    """Describe every model file given; a damaged one is an error naming it, after the others (with
    --json also an entry ``{"file", "error"}`` in its place, so a script sees which file failed).
    Exit status as bench's: 1 where some files were described and others not, 2 where none was."""
    described, entries, failed = [], [], 0
    for path in args.model:
        try:
            info = describe(path)
        except EdgeCMGError as exc:
            print(f"edgecmg info: error: {one_line(str(exc))}", file=sys.stderr)
            entries.append({"file": str(path), "error": str(exc)})
            failed += 1
            continue
        described.append(info)
        entries.append({k: v for k, v in info.items() if k != "model"})
    if args.json:
        print(json_text(entries, indent=2))
    elif described:
        print("\n\n".join(format_description(info) for info in described))
    return 0 if not failed else 1 if described else 2
