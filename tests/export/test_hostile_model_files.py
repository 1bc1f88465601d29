"""Damaged or hostile .onnx exports and .engine files, sealed again where they were edited (the
checksums are not a signature): each is refused with an ArtifactError naming the file and the problem
when read, before anything is sized, allocated or run by what it says."""
from __future__ import annotations

import base64
import hashlib
import json
import re
import struct

import numpy as np
import onnx
import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

import edgecmg_testmodels as models
from edgecmg.detector import Detector
from edgecmg.engine_file import load_scorer_from_engine, read_engine_file, read_engine_header, write_engine_file
from edgecmg.errors import ArtifactError
from edgecmg.export import (HEADER_KEY, SCORER_KEY, _save_atomic, load_scorer_from_onnx, metadata_props,
                            read_onnx_header, set_metadata_props)
from edgecmg.onnx_header import _sealed_header
from edgecmg.result import OUTPUT_NAMES

pytest.importorskip("onnxruntime")


def sealed_copy(source, target, header=None, *, header_text=None, scorer=None, edit_graph=None):
    """``source`` with its header (or header text, or scorer payload, or graph) changed, sealed again as
    edgecmg seals its exports: both checksums match what it now holds."""
    proto = onnx.load(str(source))
    props = metadata_props(proto)
    if header is not None:
        header_text = json.dumps(header(json.loads(props[HEADER_KEY])), sort_keys=True)
    if scorer is not None:
        payload = scorer
        edited = json.loads(header_text or props[HEADER_KEY])
        edited["export"]["scorer_sha256"] = hashlib.sha256(payload).hexdigest()
        header_text = json.dumps(edited, sort_keys=True)
        set_metadata_props(proto, {SCORER_KEY: base64.b64encode(payload).decode("ascii")})
    if header_text is not None:
        set_metadata_props(proto, {HEADER_KEY: header_text})
    if edit_graph is not None:
        edit_graph(proto.graph)
    _save_atomic(proto, target)
    return target


def setting(**fields):
    return lambda header: {**header, **fields}


def without(key):
    return lambda header: {k: v for k, v in header.items() if k != key}


# --- A: the header's fields, checked as an .edgecmg header's are, and its export section ---------------
@pytest.mark.parametrize("edit,field", [
    (setting(export="x"), "'export' is \"x\", not an object"),
    (without("input_size"), "'input_size' is missing"),
    (setting(input_size=[0, 0]), "'input_size' is [0, 0]"),
    (setting(input_size=[-1, 96]), "'input_size' is [-1, 96]"),
    (setting(input_size=["a", "b"]), "'input_size' is [\"a\", \"b\"]"),
    (setting(input_size=[100000, 100000]), "'input_size' is [100000, 100000]"),  # 30 GB per resized frame
    (setting(threshold=float("nan")), "'threshold' is NaN, not a finite number"),
    (lambda h: {**h, "export": {**h["export"], "graph": "both"}}, "'export.graph' is 'both'"),
    (lambda h: {**h, "export": {**h["export"], "outputs": ["score"]}}, "'export.outputs' is [\"score\"]"),
])
def test_an_edited_onnx_header_is_refused_by_field(full_onnx, tmp_path, edit, field):
    path = sealed_copy(full_onnx, tmp_path / "edited.onnx", edit)
    with pytest.raises(ArtifactError, match=rf"^{path}: header field {re.escape(field)}"):
        Detector.load(path, backend="onnxruntime")


def test_an_onnx_header_that_is_not_an_object_is_refused(full_onnx, tmp_path):
    path = sealed_copy(full_onnx, tmp_path / "list.onnx", header_text="[1, 2]")
    with pytest.raises(ArtifactError, match=rf"^{path}: the header is a JSON list, not an object"):
        read_onnx_header(path)


def _engine(tmp_path, name="m.engine", edit=None, scorer=b"", plan=b"plan"):
    header = json.loads(json.dumps(models.ENGINE_HEADER))
    if edit is not None:
        edit(header)
    return write_engine_file(tmp_path / name, header, plan, scorer)  # sealed: its header_sha256 matches


def _set(*keys, value):
    def edit(header):
        table = header
        for key in keys[:-1]:
            table = table[key]
        table[keys[-1]] = value
    return edit


@pytest.mark.parametrize("edit,message", [
    (_set("gpu", value="Orin"), "header field 'gpu' is \"Orin\", not an object"),  # AttributeError in the check
    (_set("dla_core", value="0"), "header field 'dla_core' is \"0\", not an integer"),  # TypeError
    (_set("inputs", value=[1]), "header field 'inputs' is [1], not an object"),
    (_set("inputs", "image", "max", value=[2, "a", 96, 3]), "header field 'inputs.image' is"),
    (_set("inputs", "image", "max", value=[2, 100000, 100000, 3]), "header field 'inputs.image' is"),
    (_set("outputs", value=list(OUTPUT_NAMES)), "header field 'outputs' is [\"score\", \"anomaly_map\", "
                                                "\"kept_mask\"], but its model's export.outputs is"),
    (_set("model", value=[1, 2]), "header field 'model' is [1, 2], not an object"),
    (_set("model", "threshold", value=float("nan")), "its 'model' section: header field 'threshold' is NaN"),
    (_set("model", "input_size", value=[4096, 4096]), "header field 'inputs.image' is"),  # not the model's size
])
def test_an_edited_engine_header_is_refused_by_field_without_tensorrt(tmp_path, edit, message):
    path = _engine(tmp_path, edit=edit)
    for read in (read_engine_header, read_engine_file):  # make_runner, the runner, info, the host scorer
        with pytest.raises(ArtifactError, match=rf"^{path}: {re.escape(message)}"):
            read(path)


# --- B: the scorer payload of featurizer exports and engines -----------------------------------------------
def _scorer_tensors(featurizer_onnx) -> dict[str, torch.Tensor]:
    return load_safetensors(base64.b64decode(metadata_props(featurizer_onnx)[SCORER_KEY]))


def test_a_bank_larger_than_the_payload_is_refused_before_it_is_allocated(featurizer_onnx, tmp_path):
    # bank_size 2**40 passes the field checks alone: the scorer was built (and allocated) by it before
    # the payload was looked at.
    edit = lambda h: {**h, "model": {**h["model"], "bank_size": 1 << 40}}  # noqa: E731
    path = sealed_copy(featurizer_onnx, tmp_path / "big.onnx", edit)
    with pytest.raises(ArtifactError, match=rf"^{path}: header field 'model.bank_size/model.feature_dim' gives "
                                            r"scorer.memory_bank the shape \(1099511627776, "):
        load_scorer_from_onnx(path)


@pytest.mark.parametrize("name,text,message", [
    ("garbage", base64.b64encode(b"\x00" * 8 + b"not safetensors").decode(), "not a valid safetensors buffer"),
    ("b64", "!!!not base64!!!", "'edgecmg.scorer' metadata is not base64"),
    ("nonascii", "\u00e9\u00e9", "'edgecmg.scorer' metadata is not base64"),
])
def test_a_scorer_payload_that_does_not_decode_is_refused(featurizer_onnx, tmp_path, name, text, message):
    proto = onnx.load(str(featurizer_onnx))
    set_metadata_props(proto, {SCORER_KEY: text})
    header = json.loads(metadata_props(proto)[HEADER_KEY])
    header["export"]["scorer_sha256"] = hashlib.sha256(base64.b64decode(text) if name == "garbage" else b"").hexdigest()
    set_metadata_props(proto, {HEADER_KEY: json.dumps(header)})
    path = tmp_path / f"{name}.onnx"
    _save_atomic(proto, path)
    with pytest.raises(ArtifactError, match=rf"^{path}: .*{re.escape(message)}"):
        load_scorer_from_onnx(path)


@pytest.mark.parametrize("tensor,value", [("memory_bank", float("nan")), ("normal_map", float("inf")),
                                          ("cmer_margin", float("nan"))])
def test_non_finite_scorer_tensors_are_refused(featurizer_onnx, tmp_path, tensor, value):
    # A NaN bank scored every part NaN, which no threshold flags: each one passed.
    tensors = _scorer_tensors(featurizer_onnx)
    tensors[tensor] = torch.full_like(tensors[tensor], value)
    path = sealed_copy(featurizer_onnx, tmp_path / "nan.onnx", scorer=save_safetensors(tensors))
    with pytest.raises(ArtifactError, match=rf"^{path}: tensor scorer\.{tensor} holds .* NaN or infinite"):
        load_scorer_from_onnx(path)


def test_an_engine_scorer_that_does_not_decode_is_refused(tmp_path):
    path = _engine(tmp_path, scorer=b"garbage!" * 10)
    with pytest.raises(ArtifactError, match=rf"^{path}: the scorer payload is not a valid safetensors buffer"):
        load_scorer_from_engine(path)


# --- C: JSON nested too deep for the parser ------------------------------------------------------------------
def test_deeply_nested_headers_are_refused(full_onnx, tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    path = sealed_copy(full_onnx, tmp_path / "deep.onnx", header_text=deep)
    for operators in (True, False):  # False: ONNX Runtime's runner, whose plain read gives up to the whole check
        with pytest.raises(ArtifactError, match=rf"^{path}: 'edgecmg.header' metadata is not valid JSON "
                                                r"\(RecursionError"):
            read_onnx_header(path, operators=operators)
    data = deep.encode()
    engine = tmp_path / "deep.engine"
    engine.write_bytes(struct.pack("<8sIQ", b"EDGECMGE", 3, len(data)) + data)
    with pytest.raises(ArtifactError, match=rf"^{engine}: engine header is not valid JSON \(RecursionError"):
        read_engine_header(engine)


# --- D: declared payload sizes against the file's size ---------------------------------------------------------
def test_a_payload_size_the_file_does_not_hold_is_refused_before_reading(tmp_path):
    from edgecmg.engine_file import _header_sha256

    data = _engine(tmp_path, scorer=b"S" * 10).read_bytes()
    header_len = struct.unpack_from("<Q", data, 12)[0]
    header = json.loads(data[20:20 + header_len])
    header["scorer"]["bytes"] = 1 << 50
    header["header_sha256"] = _header_sha256(header)  # sealed again
    text = json.dumps(header, sort_keys=True).encode()
    path = tmp_path / "claims.engine"
    path.write_bytes(struct.pack("<8sIQ", b"EDGECMGE", 3, len(text)) + text + data[20 + header_len:])
    for read in (read_engine_header, read_engine_file):  # the header alone already: no 1 PB read is tried
        with pytest.raises(ArtifactError, match=rf"^{path}: truncated scorer payload \(14 of {1 << 50} bytes\)"):
            read(path)


# --- E: the graph's inputs and outputs against the header ------------------------------------------------------
def _rename_output(graph, old, new):
    for node in graph.node:
        node.output[:] = [new if name == old else name for name in node.output]
    for out in graph.output:
        if out.name == old:
            out.name = new


def _resize_input(graph, height, width):
    dims = graph.input[0].type.tensor_type.shape.dim
    dims[1].dim_value, dims[2].dim_value = height, width


@pytest.mark.parametrize("edit,message", [
    (lambda g: _rename_output(g, "anomaly_map", "foo"),
     "the graph's outputs ['score', 'foo', 'kept_mask'] are not the ['score', 'anomaly_map', 'kept_mask']"),
    (lambda g: [g.output.remove(o) for o in list(g.output) if o.name != "score"],
     "the graph's outputs ['score'] are not the ['score', 'anomaly_map', 'kept_mask']"),
    # reported at every frame as "frames are 256x96 but ... takes 320x128: resize them first"
    (lambda g: _resize_input(g, 320, 128), "the graph's input 'image' UINT8, batchx320x128x3 is not the uint8 "
                                           "[batch, 256, 96, 3] 'image' its header gives"),
    # a grey or RGBA input, a float input, a second input: each failed at the first frame instead
    (lambda g: setattr(g.input[0].type.tensor_type.shape.dim[3], "dim_value", 1), "the graph's input 'image' "
                                                                                 "UINT8, batchx256x96x1 is not"),
    (lambda g: setattr(g.input[0].type.tensor_type, "elem_type", onnx.TensorProto.FLOAT), "the graph's input "
                                                                                          "'image' FLOAT,"),
    (lambda g: g.input.append(onnx.helper.make_tensor_value_info("extra", onnx.TensorProto.FLOAT, [1])),
     "the graph's input 'image' UINT8, batchx256x96x3, 'extra' FLOAT, 1 is not"),
])
def test_a_graph_that_is_not_what_its_header_says_is_refused_at_load(full_onnx, tmp_path, edit, message):
    path = sealed_copy(full_onnx, tmp_path / "graph.onnx", edit_graph=edit)
    with pytest.raises(ArtifactError, match=rf"^{path}: {re.escape(message)}"):
        Detector.load(path, backend="onnxruntime")  # its plain read gives up: the whole check refuses it
    assert _sealed_header(path, str(path)) is None


def test_an_engine_whose_plan_is_not_what_its_header_says_is_refused_on_activate(fake_tensorrt, featurizer_onnx,
                                                                                  tmp_path):
    import fake_tensorrt as fake

    from edgecmg.config import EngineConfig
    from edgecmg.engine import build_engine
    from edgecmg.runtime.tensorrt_runner import TensorRTRunner

    fake_tensorrt()
    engine = build_engine(featurizer_onnx, EngineConfig(precision="fp32", max_batch=2), tmp_path / "m.engine")
    header, scorer, plan = read_engine_file(engine)
    # A header that says "full graph" throughout (consistent with itself) over a featurizer plan: the
    # first frame was a KeyError on 'score'.
    header["graph"] = header["model"]["export"]["graph"] = "full"
    header["outputs"] = header["model"]["export"]["outputs"] = list(OUTPUT_NAMES)
    lying = write_engine_file(tmp_path / "lying.engine", header, plan, scorer)
    runner = TensorRTRunner(lying, memory=fake.HostMemory)
    with pytest.raises(ArtifactError, match=rf"^{lying}: the plan's inputs \['image'\] and outputs \['embeddings', "
                                            r"'match_scores'\] are not the \['image'\] and \['score', 'anomaly_map', "
                                            r"'kept_mask'\] its header gives"):
        runner.activate()
    assert not runner.active


# --- F: operators ONNX Runtime cannot run without a custom-op library -----------------------------------------
def _reroute_score(graph):
    """The node writing the score writes score_pre instead, for a node appended after it to write score."""
    for node in graph.node:
        node.output[:] = ["score_pre" if name == "score" else name for name in node.output]


def _pwn_on_score(graph, domain="evil.ops"):  # on the score output, as the audit's file had it
    _reroute_score(graph)
    graph.node.append(onnx.helper.make_node("Pwn", ["score_pre"], ["score"], domain=domain, name="pwn"))


def test_a_custom_op_is_named_not_reported_as_a_missing_onnxruntime(full_onnx, tmp_path):
    path = sealed_copy(full_onnx, tmp_path / "custom.onnx", edit_graph=_pwn_on_score)
    with pytest.raises(ArtifactError, match=rf"^{path}: the graph uses operators edgecmg never exports "
                                            r"\(evil\.ops:Pwn;"):
        Detector.load(path, backend="onnxruntime")


def _custom_op_in_a_branch(graph):  # inside an If's branch, where a flat walk of the nodes does not look
    _reroute_score(graph)
    branch = onnx.helper.make_graph(
        [onnx.helper.make_node("Pwn", ["score_pre"], ["branch_score"], domain="evil.ops")], "branch", [],
        [onnx.helper.make_tensor_value_info("branch_score", onnx.TensorProto.FLOAT, None)])
    condition = onnx.helper.make_tensor("always", onnx.TensorProto.BOOL, [], [True])
    graph.node.append(onnx.helper.make_node("Constant", [], ["always"], value=condition))
    graph.node.append(onnx.helper.make_node("If", ["always"], ["score"], then_branch=branch, else_branch=branch))


@pytest.mark.parametrize("edit,named", [(lambda graph: _pwn_on_score(graph, domain=""), "ai.onnx:Pwn"),
                                        (_custom_op_in_a_branch, "evil.ops:Pwn")])
def test_operators_no_opset_defines_are_named_in_the_graph_and_its_branches(full_onnx, tmp_path, edit, named):
    path = sealed_copy(full_onnx, tmp_path / "ops.onnx", edit_graph=edit)
    with pytest.raises(ArtifactError, match=rf"^{path}: the graph uses operators edgecmg never exports "
                                            rf"\({re.escape(named)}"):
        read_onnx_header(path)


def test_without_the_onnx_package_a_refused_file_gets_onnx_runtimes_words(full_onnx, tmp_path, monkeypatch):
    """A sealed export runs without the onnx package (onnx_header reads it from its bytes); where ONNX
    Runtime then refuses it, the missing package must not be what the error says."""
    import edgecmg.onnx_header as onnx_header
    from edgecmg.errors import BackendUnavailableError

    path = sealed_copy(full_onnx, tmp_path / "custom.onnx", edit_graph=_pwn_on_score)

    def no_onnx():
        raise BackendUnavailableError("onnx", "cannot import onnx (No module named 'onnx')", "pip install onnx")

    monkeypatch.setattr(onnx_header, "_onnx", no_onnx)
    with pytest.raises(ArtifactError, match=rf"^{path}: the installed ONNX Runtime, .*, cannot load it"):
        Detector.load(path, backend="onnxruntime")


# --- G: checksums removed (the ONNX side is in test_export_onnx.test_damaged_or_unsealed_onnx_files) -------
def test_a_format_3_engine_without_its_header_checksum_is_refused_older_formats_too(tmp_path):
    def unsealed(version: int) -> bytes:
        header = json.loads(json.dumps(models.ENGINE_HEADER))
        header.update(format="edgecmg-engine", format_version=version,
                      scorer={"bytes": 0, "sha256": hashlib.sha256(b"").hexdigest()},
                      engine={"bytes": 4, "sha256": hashlib.sha256(b"plan").hexdigest()})
        text = json.dumps(header).encode()
        return struct.pack("<8sIQ", b"EDGECMGE", version, len(text)) + text + b"plan"

    (tmp_path / "v3.engine").write_bytes(unsealed(3))
    with pytest.raises(ArtifactError, match="v3.engine: the header has no 'header_sha256', which every format-3 "
                                            "engine carries"):
        read_engine_header(tmp_path / "v3.engine")
    (tmp_path / "v2.engine").write_bytes(unsealed(2))  # written before the header had a checksum
    with pytest.raises(ArtifactError, match="v2.engine: engine file format 2 is older than the oldest this edgecmg "
                                            "reads"):
        read_engine_file(tmp_path / "v2.engine")
    # The prefix's version is outside the checksum: the header's own copy must agree with it.
    data = bytearray(_engine(tmp_path).read_bytes())
    struct.pack_into("<I", data, 8, 2)
    (tmp_path / "relabelled.engine").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="relabelled.engine: header field 'format_version' is 3 but the file's "
                                            "prefix says 2"):
        read_engine_header(tmp_path / "relabelled.engine")


# --- what edgecmg writes still loads -------------------------------------------------------------------------
def test_an_export_of_a_model_fit_returned_in_memory_reads_back(model_and_header, tmp_path):
    """fit()'s metadata has no format_version or payload section (an .edgecmg file's): its export, made
    without the file, is of the current format."""
    from edgecmg.config import ExportConfig
    from edgecmg.export import export_model

    model, header = model_and_header
    metadata = {k: v for k, v in header.items() if k not in ("format_version", "payload", "model", "matcher")}
    path = export_model(model, metadata, tmp_path / "m.onnx", ExportConfig(with_scoring=False))
    assert "format_version" not in read_onnx_header(path)
    scorer, _ = load_scorer_from_onnx(path)
    assert np.isfinite(scorer.memory_bank.float().numpy()).all()


def _twice(text: str, key: str, second: str) -> str:
    """JSON ``text`` with a second ``key`` (value ``second``) right after the first, as a forger adds one."""
    at = text.index(f'"{key}": ')
    end = at + len(f'"{key}": ') + len(json.dumps(json.loads(text)[key]))
    return f'{text[:end]}, "{key}": {second}{text[end:]}'


def test_a_header_naming_a_key_twice_is_refused_by_every_reader(small_artifact, full_onnx, tmp_path):
    """json.loads keeps the last of two "threshold"s, where a tool showing the first (or the C++ engine
    reader, which refuses them) sees another: every reader refuses such a header."""
    from edgecmg import artifact

    data = small_artifact.read_bytes()
    head = struct.Struct("<8sIQ32s")
    tag, version, length, _ = head.unpack_from(data)
    text = _twice(data[head.size:head.size + length].decode(), "threshold", "-5.0").encode()
    forged = tmp_path / "twice.edgecmg"
    forged.write_bytes(head.pack(tag, version, len(text), hashlib.sha256(text).digest()) + text
                       + data[head.size + length:])
    with pytest.raises(ArtifactError, match=r"twice.edgecmg: header is not valid JSON \(ValueError: the key "
                                            r"'threshold' appears twice in one object\)"):
        artifact.read_header(forged)

    onnx_text = metadata_props(onnx.load(str(full_onnx)))[HEADER_KEY]
    path = sealed_copy(full_onnx, tmp_path / "twice.onnx", header_text=_twice(onnx_text, "threshold", "-5.0"))
    with pytest.raises(ArtifactError, match="metadata is not valid JSON .*'threshold' appears twice"):
        read_onnx_header(path)

    engine = _engine(tmp_path).read_bytes()
    prefix = struct.Struct("<8sIQ")
    tag, version, length = prefix.unpack_from(engine)
    text = _twice(engine[prefix.size:prefix.size + length].decode(), "precision", '"int8"').encode()
    forged = tmp_path / "twice.engine"
    forged.write_bytes(prefix.pack(tag, version, len(text)) + text + engine[prefix.size + length:])
    with pytest.raises(ArtifactError, match="engine header is not valid JSON .*'precision' appears twice"):
        read_engine_header(forged)
