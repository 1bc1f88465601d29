"""``edgecmg info``: every model file kind described from its verified header; damaged files named."""
from __future__ import annotations

import json


from edgecmg.artifact import read_header
from edgecmg.cli import main
from edgecmg.commands.info import describe, format_description
from edgecmg.config import EngineConfig
from edgecmg.engine import build_engine


def test_info_describes_an_artifact_and_its_exports(small_artifact, featurizer_onnx, full_onnx, capsys):
    header, _ = read_header(small_artifact)
    assert main(["info", str(small_artifact), str(featurizer_onnx), str(full_onnx)]) == 0
    out = capsys.readouterr().out
    h, w = header["input_size"]
    assert f"{small_artifact}: edgecmg model, format {header['format_version']}" in out
    assert f"input        {h}x{w} (height x width)" in out
    assert json.dumps(header["prompt"]) in out and f"threshold    {header['threshold']:.6g}" in out
    assert f"memory bank  {header['model']['bank_size']} x {header['model']['feature_dim']}" in out
    assert f"{featurizer_onnx}: ONNX, featurizer graph, fp32" in out and f"{full_onnx}: ONNX, full graph, fp32" in out
    assert "outputs score, anomaly_map, kept_mask" in out
    assert out.count("runs here on") == 3 and "torch (cpu)" in out
    assert main(["info", str(small_artifact), "--json"]) == 0
    (described,) = json.loads(capsys.readouterr().out)
    assert described["header"] == header and "torch (cpu)" in described["runs_here"]


def test_info_shows_who_set_a_threshold(small_artifact, tmp_path):
    from edgecmg.artifact import save_with_threshold

    header, _ = read_header(small_artifact)
    moved = save_with_threshold(small_artifact, tmp_path / "line3.edgecmg", 7.25,
                                {"quantile": 0.99, "images": 40, "previous": header["threshold"],
                                 "sources": ["good/"], "by": "edgecmg threshold"})
    text = format_description(describe(moved))
    assert "threshold    7.25\n" in text
    assert (f"set by edgecmg threshold at the 0.99 quantile of 40 good images (before: {header['threshold']:.6g})"
            in text)


def test_info_does_not_claim_a_checksum_an_old_export_lacks(featurizer_onnx, tmp_path):
    import onnx

    from edgecmg.export import GRAPH_SHA_KEY, HEADER_KEY, SCORER_KEY, metadata_props

    # An export of a format-2 model, from before the checksums (a format-3 one without them is refused).
    proto = onnx.load(str(featurizer_onnx))
    props = metadata_props(proto)
    header = json.loads(props[HEADER_KEY])
    header["format_version"] = 2
    del proto.metadata_props[:]
    proto.metadata_props.add(key=HEADER_KEY, value=json.dumps(header))
    proto.metadata_props.add(key=SCORER_KEY, value=props[SCORER_KEY])  # its memory bank, which host scoring reads
    old = tmp_path / "old.onnx"
    onnx.save(proto, str(old))
    assert describe(featurizer_onnx)["checksums"] == "checksums ok"
    assert "no graph or header checksum to check" in format_description(describe(old)).splitlines()[0]
    # the graph's checksum kept, the header's not: not "checksums ok" either
    proto.metadata_props.add(key=GRAPH_SHA_KEY, value=props[GRAPH_SHA_KEY])
    onnx.save(proto, str(old))
    assert describe(old)["checksums"] == ("no header checksum to check (exported by an older edgecmg; export it again "
                                          "(edgecmg export) to add them)")


def test_info_names_a_damaged_file_and_still_describes_the_rest(small_artifact, tmp_path, capsys):
    damaged = tmp_path / "damaged.edgecmg"
    data = bytearray(small_artifact.read_bytes())
    data[-100] ^= 0xFF  # one flipped byte among the tensors
    damaged.write_bytes(bytes(data))
    assert main(["info", str(damaged), str(small_artifact)]) == 1
    captured = capsys.readouterr()
    assert f"edgecmg info: error: {damaged}: payload checksum mismatch" in captured.err
    assert f"{small_artifact}: edgecmg model" in captured.out and str(damaged) not in captured.out
    assert main(["info", str(damaged), str(small_artifact), "--json"]) == 1  # the failure has its entry
    entries = json.loads(capsys.readouterr().out)
    assert entries[0]["file"] == str(damaged) and "payload checksum mismatch" in entries[0]["error"]
    assert entries[1]["file"] == str(small_artifact) and "error" not in entries[1]
    assert main(["info", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "is a folder, not a model file" in captured.err
    assert captured.out == ""  # nothing described: stdout stays empty for a script reading it


def test_info_on_an_engine_says_what_built_it_and_whether_it_runs_here(fake_tensorrt, featurizer_onnx, tmp_path,
                                                                       monkeypatch):
    fake_tensorrt()  # TensorRT 10.3.0.26
    engine = build_engine(featurizer_onnx, EngineConfig(precision="fp32", max_batch=2), tmp_path / "m.engine")
    info = describe(engine)
    assert info["kind"] == "TensorRT engine, featurizer graph, fp32"
    assert info["engine_check"] == "ok"  # runs_here stays empty: the tensorrt runner needs CUDA too
    assert info["model"]["input_size"] == info["header"]["model"]["input_size"]
    text = format_description(info)
    assert "with TensorRT 10.3.0.26 for" in text and "engine here  ok" in text
    fake_tensorrt(version="11.0.0.1", fp16_flag=False, int8_flag=False, explicit_batch=False)
    assert "TensorRT 10.3.0.26 built it, this machine has TensorRT 11.0.0.1" in describe(engine)["engine_check"]
    monkeypatch.setattr("edgecmg.engine.tensorrt_available", lambda: False)
    info = describe(engine)
    assert info["engine_check"] == "not checked: TensorRT is not installed here"
    assert "engine here  not checked" in format_description(info)


def test_a_reader_that_stops_early_is_not_a_traceback(small_artifact, tmp_path):
    """`edgecmg info M --json | head -1`: the pipe closes while edgecmg still writes."""
    import subprocess
    import sys
    from pathlib import Path

    command = [str(Path(sys.executable).parent / "edgecmg"), "info", "--json", *[str(small_artifact)] * 100]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    assert process.stdout.readline().strip() == b"["
    process.stdout.close()  # far more than a pipe's buffer is still to come
    _, err = process.communicate(timeout=120)
    assert process.returncode == 141 and b"Traceback" not in err, err.decode()


def test_info_says_which_parts_are_off_and_a_fixed_batch(small_artifact, featurizer_onnx):
    import copy

    info = copy.deepcopy(describe(small_artifact))
    assert "  CMER         on (grid 2)" in format_description(info)
    info["model"]["model"]["use_cmle"] = False
    text = format_description(info)
    assert "  CMER         on (grid 2)" in text and "  CMLE         off (" in text
    info["model"]["model"]["use_cmer"] = False
    assert "  CMER         off (grid 2)" in format_description(info)
    assert "left out of the threshold" not in format_description(info)
    info["model"]["training"]["threshold_left_out"] = ["kos23_Part1.jpg"]
    assert "held out but left out of the threshold (far above the rest): kos23_Part1.jpg" in format_description(info)
    onnx_info = copy.deepcopy(describe(featurizer_onnx))
    onnx_info["model"]["export"].update(dynamic_batch=False, batch=2, max_batch=2)
    assert "exported     opset 17, batch 2, outputs" in format_description(onnx_info)


def test_info_names_dla_core_0_and_its_json_leaves_out_the_model_copy(fake_tensorrt, featurizer_onnx, small_artifact,
                                                                        tmp_path, capsys):
    fake_tensorrt(dla_cores=2)
    engine = build_engine(featurizer_onnx, EngineConfig(precision="fp16", dla_core=0), tmp_path / "m.engine")
    assert "  " + " " * 12 + " DLA core 0" in format_description(describe(engine))
    assert main(["info", str(engine), str(small_artifact), "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [sorted(entry) for entry in entries] == [
        ["bytes", "checksums", "engine_check", "file", "header", "kind", "not_here", "runs_here"]] * 2


def test_info_checks_a_dla_engine_against_this_devices_dla_cores(fake_tensorrt, featurizer_onnx, tmp_path):
    """check_engine_compatible without a platform (edgecmg info) counts the DLA cores for a DLA engine."""
    from edgecmg.commands.info import describe
    from edgecmg.config import EngineConfig
    from edgecmg.engine import build_engine

    fake_tensorrt(dla_cores=2)
    engine = build_engine(featurizer_onnx, EngineConfig(precision="fp16", dla_core=1), tmp_path / "m.engine")
    assert describe(engine)["engine_check"] == "ok"
    fake_tensorrt(dla_cores=0)  # an Orin Nano
    assert "it runs on DLA core 1, and this device has 0 DLA core(s)" in describe(engine)["engine_check"]
