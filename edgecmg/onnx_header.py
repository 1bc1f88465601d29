"""The edgecmg header of an exported ONNX model: its metadata keys, reading it, and every check a file
gets before a session runs it (checksums, header fields, the graph's inputs, outputs and operators).

No torch: a process that runs an exported .onnx on ONNX Runtime reads and checks it without loading
torch (about 1.5 s and 200 MB at every start, measured on 2 cores), and a sealed export without
the onnx package either (about a second more; :func:`_sealed_header`). ``edgecmg.export`` writes
these files and re-exports the names here.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Optional

from edgecmg import magic
from edgecmg.distributions import extra_install_hint
from edgecmg.errors import ArtifactError, BackendUnavailableError, ConfigError, MissingFileError, name_some, out_of_memory
from edgecmg.header_checks import FORMAT_VERSION, bad_field, check_header, header_field
from edgecmg.result import INPUT_NAME, OUTPUT_NAMES

log = logging.getLogger("edgecmg")

FEATURIZER_OUTPUTS = ("embeddings", "match_scores")  # same names as edgecmg.runtime.base
HEADER_KEY = "edgecmg.header"
SCORER_KEY = "edgecmg.scorer"
# SHA-256 of the serialised graph (nodes, weights, memory bank), written on save and checked on
# load, so a file damaged in transfer or on a flash card is refused before a session runs it.
GRAPH_SHA_KEY = "edgecmg.graph_sha256"
# SHA-256 of the header entry (threshold, input size, model spec), written and checked the same way.
HEADER_SHA_KEY = "edgecmg.header_sha256"
GRAPH_FEATURIZER = "featurizer"
GRAPH_FULL = "full"
# Both checksums came before format-3 models (the same day, before any release): every export of a
# format-3 model has them, and one without had them removed, which is refused. Exports of older
# formats may come from an edgecmg older than the checksums, and load with a warning.
CHECKSUMS_SINCE_FORMAT = 3
# The op domains edgecmg's exports use: the default ONNX domain only (TensorRT parses no other). A node
# of another domain, or not a standard operator, is refused by name when the file is read: ONNX
# Runtime's own error for it, at session start, read as a missing install.
ONNX_DOMAINS = ("", "ai.onnx")
ONNX_INSTALL_HINT = extra_install_hint("onnx", "onnx")  # onnx alone: ONNX Runtime may be a GPU build


def _onnx():
    try:
        import onnx
    except ImportError as exc:
        raise BackendUnavailableError("onnx", f"cannot import onnx ({exc})", ONNX_INSTALL_HINT) from exc
    return onnx


def _load_proto(model_or_path):
    onnx = _onnx()
    if isinstance(model_or_path, (str, Path)):
        path = Path(model_or_path)
        if not path.exists():  # a missing input, not a damaged file (as artifact.load says for a .edgecmg)
            raise MissingFileError(f"{path}: no such ONNX file; check the path, or export the model first "
                                   "(`edgecmg export M.edgecmg --format onnx -o M.onnx`)")
        if not path.is_file():
            raise ConfigError(f"{path} is {'a folder' if path.is_dir() else 'not a regular file'}, not an ONNX "
                              "file; give the .onnx file")
        try:
            with open(path, "rb") as handle:
                head = handle.read(8)
        except OSError as exc:
            raise ArtifactError(f"{path}: cannot read it ({exc.strerror or exc}); check its permissions") from exc
        if not head:
            raise ArtifactError(f"{path}: empty file (0 bytes), not an ONNX model; export or copy it again")
        if head == magic.ARTIFACT:  # the most likely mix-up: the fitted model instead of its export
            raise ArtifactError(f"{path} is an edgecmg model, not ONNX: export it first (`edgecmg export {path} "
                                "--format onnx -o M.onnx`, or `edgecmg calibrate` for INT8) and use that file")
        if head == magic.ENGINE:
            raise ArtifactError(f"{path} is a TensorRT engine built by edgecmg, not ONNX: it is already built; "
                                "run it (Detector.load / edgecmg stream), or build again from its ONNX file")
        try:
            return onnx.load(str(path))
        except Exception as exc:  # DecodeError and friends
            if out_of_memory(exc):  # a sound file read under a memory limit is not a damaged one
                raise
            raise ArtifactError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc}); the file is "
                                "damaged or incomplete: export or copy it again") from exc
    return model_or_path


def metadata_props(model_or_path) -> dict[str, str]:
    """All metadata_props of an ONNX model (path or ModelProto) as a dict."""
    proto = _load_proto(model_or_path)
    return {p.key: p.value for p in proto.metadata_props}


def set_metadata_props(model, props: dict[str, str]) -> None:
    """Set (add or replace) metadata_props entries of a ModelProto in place."""
    current = {p.key: p.value for p in model.metadata_props}
    current.update(props)
    del model.metadata_props[:]
    for key, value in current.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def graph_sha256(model) -> str:
    """SHA-256 of a ModelProto's graph, serialised deterministically (metadata is not part of it)."""
    return hashlib.sha256(model.graph.SerializeToString(deterministic=True)).hexdigest()


def header_sha256(header_text: str) -> str:
    """SHA-256 of the ``edgecmg.header`` metadata as stored (the JSON text)."""
    return hashlib.sha256(header_text.encode("utf-8")).hexdigest()


def check_model_header(origin: str | Path, header: Any) -> None:
    """Refuse the model header of an ONNX export (also an engine file's ``model`` section) whose fields
    are missing, of the wrong JSON type or out of range: the checks an .edgecmg header gets, then its
    ``export`` section. Checksums only tell damage: an edited header sealed again must fail here, before
    anything is sized or run by it."""
    path = Path(origin)
    version = FORMAT_VERSION
    if isinstance(header, dict):
        # format_version and payload describe the .edgecmg file the export was made from; an export of a
        # model fit() returned in memory has neither, and is of the current format.
        header = {"format_version": FORMAT_VERSION, "payload": {"bytes": 0, "sha256": ""}, **header}
        version = header["format_version"]  # an artifact's prefix holds a second copy; an export has none
    check_header(path, header, version)
    if header["format_version"] > FORMAT_VERSION:
        raise ArtifactError(f"{path}: exported from a format-{header['format_version']} model, newer than this "
                            f"edgecmg understands ({FORMAT_VERSION}); upgrade edgecmg")
    header_field(path, header, "export", "an object")
    graph = header_field(path, header, "export.graph", "a string")
    if graph not in (GRAPH_FEATURIZER, GRAPH_FULL):
        raise bad_field(path, "export.graph", f"is {graph!r}, not '{GRAPH_FEATURIZER}' or '{GRAPH_FULL}'")
    contract = list(FEATURIZER_OUTPUTS if graph == GRAPH_FEATURIZER else OUTPUT_NAMES)
    if header_field(path, header, "export.outputs", "a list") != contract:
        raise bad_field(path, "export.outputs", f"is {json.dumps(header['export']['outputs'])[:80]}, not "
                                                 f"{contract} (a {graph} graph's)")
    if header_field(path, header, "export.input", "a string") != INPUT_NAME:
        raise bad_field(path, "export.input", f"is {header['export']['input']!r}, not '{INPUT_NAME}'")
    if header_field(path, header, "export.precision", "a string") not in ("fp32", "int8"):
        raise bad_field(path, "export.precision", f"is {header['export']['precision']!r}, not 'fp32' or 'int8'")
    if graph == GRAPH_FEATURIZER:  # written since the first export: the scorer payload is checked against it
        header_field(path, header, "export.scorer_sha256", "a string")


def _nodes(graph):
    """Every node of ``graph``, those of its subgraphs (If, Loop, Scan) included."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from _nodes(sub)


def _graph_io_problem(inputs: list[tuple[str, Optional[int], list]], outputs: list[str],
                      header: dict[str, Any]) -> Optional[str]:
    """Where a graph's inputs and outputs disagree with its (checked) header: "outputs" (not the
    contract's), "input" (not one uint8 [batch, H, W, 3] input at the header's size), or None. The one
    rule of both readers, with onnx (_check_graph) and without (_sealed_header). ``inputs``: (name,
    element type, dims) of the inputs that are not initializers, a dim None where it has no value."""
    if sorted(outputs) != sorted(header["export"]["outputs"]):  # the contract's, by check_model_header
        return "outputs"
    height, width = header["input_size"]
    if len(inputs) != 1 or inputs[0][:2] != (INPUT_NAME, _UINT8) or inputs[0][2][1:] != [height, width, 3]:
        return "input"
    return None


def _check_graph(origin: str, proto, header: dict[str, Any]) -> None:
    """The graph must be the one its header describes: the contract's outputs (a missing one was a
    KeyError at the first frame), one uint8 input at the header's input size (another size was blamed on
    every frame), and standard ONNX operators only (all that edgecmg exports use)."""
    onnx = _onnx()
    outputs = [o.name for o in proto.graph.output]
    initializers = {i.name for i in proto.graph.initializer}
    inputs = [v for v in proto.graph.input if v.name not in initializers]
    described = [(v.name, v.type.tensor_type.elem_type,
                  [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim])
                 for v in inputs]
    problem = _graph_io_problem(described, outputs, header)
    if problem == "outputs":
        raise ArtifactError(f"{origin}: the graph's outputs {outputs} are not the {header['export']['outputs']} its "
                            "header gives: the graph was edited or written wrongly; export it again")
    if problem == "input":
        height, width = header["input_size"]
        given = [f"'{v.name}' {onnx.helper.printable_type(v.type)}" for v in inputs]
        raise ArtifactError(f"{origin}: the graph's input {', '.join(given) or 'list is empty'} is not the uint8 "
                            f"[batch, {height}, {width}, 3] '{INPUT_NAME}' its header gives: the graph was edited "
                            "or written wrongly; export it again")
    foreign = sorted({f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in _nodes(proto.graph)
                      if n.domain not in ONNX_DOMAINS or not onnx.defs.has(n.op_type)})
    if foreign:
        raise ArtifactError(f"{origin}: the graph uses operators edgecmg never exports ({name_some(foreign, 5)}; "
                            "its exports use standard ONNX operators only, which ONNX Runtime and TensorRT run "
                            "without a custom-op library): it was edited after export or is not an edgecmg "
                            "export; export it again")


_SAID_UNSEALED: set[tuple[str, int]] = set()  # (origin, header's hash) of exports whose missing checksums were said


def remake_hint(header: dict[str, Any]) -> str:
    """How to write an export of ``header`` again: an INT8 file comes from calibrate, not export."""
    if header.get("export", {}).get("precision") == "int8":
        return "calibrate it again (edgecmg calibrate)"
    return "export it again (edgecmg export)"


def read_onnx_header(model_or_path, origin: Optional[str] = None, *, operators: bool = True) -> dict[str, Any]:
    """The edgecmg header of an exported ONNX model, checked: its checksums, its fields
    (``check_model_header``) and the graph's inputs and outputs against it, and (``operators``) that
    the graph holds standard ONNX operators only.

    Raises ArtifactError when the file has no header, or its graph or header does not match the
    checksum written at export (damaged or edited since), or says what the graph is not. Files
    exported before checksums existed load with a warning. ``origin``: the file a ModelProto was
    read from, named in the errors.

    ``operators=False`` (ONNX Runtime's runner, which refuses an operator it lacks by itself when its
    session starts): a sealed file whose bytes pass every other check is read without the onnx
    package, whose import costs a second of every start (:func:`_sealed_header`); any other file
    goes the whole way, and gets its errors from there.
    """
    if not operators and isinstance(model_or_path, (str, Path)):
        header = _sealed_header(Path(model_or_path), origin or str(model_or_path))
        if header is not None:
            return header
    proto = _load_proto(model_or_path)
    props = {p.key: p.value for p in proto.metadata_props}
    if origin is None:
        origin = str(model_or_path) if isinstance(model_or_path, (str, Path)) else "ONNX model"
    if HEADER_KEY not in props:
        raise ArtifactError(f"{origin}: no '{HEADER_KEY}' metadata: not exported by edgecmg "
                            "(export it with `edgecmg export M.edgecmg --format onnx`)")
    if HEADER_SHA_KEY in props and header_sha256(props[HEADER_KEY]) != props[HEADER_SHA_KEY]:
        raise ArtifactError(f"{origin}: header checksum mismatch: the '{HEADER_KEY}' metadata (threshold, input "
                            "size, model) was damaged or edited after export; copy the file again or export it "
                            "again")
    try:
        header = magic.loads_header(props[HEADER_KEY])
    except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested thousands deep
        raise ArtifactError(f"{origin}: '{HEADER_KEY}' metadata is not valid JSON ({type(exc).__name__}: "
                            f"{str(exc)[:100]})") from exc
    check_model_header(origin, header)
    unsealed = [key for key in (GRAPH_SHA_KEY, HEADER_SHA_KEY) if key not in props]
    if unsealed and header.get("format_version", FORMAT_VERSION) >= CHECKSUMS_SINCE_FORMAT:
        raise ArtifactError(f"{origin}: no {' or '.join(unsealed)} metadata, which every export of a format-"
                            f"{CHECKSUMS_SINCE_FORMAT} model carries: removed after export; export it again")
    # Once a file: loading a featurizer export reads its header twice. Keyed on the header too: models
    # passed in memory share one origin.
    if unsealed and (origin, hash(props[HEADER_KEY])) not in _SAID_UNSEALED:
        _SAID_UNSEALED.add((origin, hash(props[HEADER_KEY])))
        log.warning("%s: no %s (exported by an edgecmg older than the checksums): it cannot be checked for "
                    "damage; %s to add them", origin, " or ".join(unsealed), remake_hint(header))
    if GRAPH_SHA_KEY in props and graph_sha256(proto) != props[GRAPH_SHA_KEY]:
        raise ArtifactError(f"{origin}: graph checksum mismatch: the file was damaged or edited after export; "
                            "copy it again or export it again (`edgecmg export` / `edgecmg calibrate`)")
    _check_graph(origin, proto, header)
    return header


def scorer_payload(props: dict[str, str], header: dict[str, Any], origin: str) -> bytes:
    """The scorer payload in an export's metadata ``props``, decoded and checked against the checksum
    its header (checked by ``read_onnx_header``) recorded at export. For host scoring and for
    ``edgecmg build``, which copies it into the engine under a checksum of its own: unchecked there, a
    damaged bank was sealed in and scored wrongly without a word. Raises ArtifactError naming ``origin``."""
    if SCORER_KEY not in props:
        graph = header["export"]["graph"]
        if graph != GRAPH_FEATURIZER:
            raise ArtifactError(f"{origin}: no '{SCORER_KEY}' metadata (graph kind {graph}): a full graph scores "
                                "inside the graph; featurizer-only exports carry the scorer")
        raise ArtifactError(f"{origin}: no '{SCORER_KEY}' metadata, which every {GRAPH_FEATURIZER} export "
                            "carries (the memory bank its host scoring searches): removed after export; export "
                            "the model again")
    try:
        payload = base64.b64decode(props[SCORER_KEY], validate=True)
    except ValueError as exc:  # binascii.Error, or text that is not ASCII
        raise ArtifactError(f"{origin}: '{SCORER_KEY}' metadata is not base64 ({exc}): the file was damaged "
                            "after export; copy it again or export the model again") from exc
    if hashlib.sha256(payload).hexdigest() != header["export"].get("scorer_sha256"):
        raise ArtifactError(f"{origin}: scorer payload checksum mismatch: the '{SCORER_KEY}' metadata (the "
                            "memory bank) was damaged or edited after export; copy the file again or export "
                            "the model again")
    return payload


# --------------------------------------------------------------------------------------------------
# Reading a sealed export without the onnx package
# --------------------------------------------------------------------------------------------------
# Field numbers of onnx.proto (stable since ONNX 1.0; protobuf never renumbers a field).
_MODEL_GRAPH, _MODEL_METADATA = 7, 14                 # ModelProto
_ENTRY_KEY, _ENTRY_VALUE = 1, 2                       # StringStringEntryProto
_GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_OUTPUT = 5, 11, 12  # GraphProto
_TENSOR_NAME = 8                                      # TensorProto
_VALUE_NAME, _VALUE_TYPE = 1, 2                       # ValueInfoProto
_TYPE_TENSOR = 1                                      # TypeProto
_TENSOR_ELEM_TYPE, _TENSOR_SHAPE = 1, 2               # TypeProto.Tensor
_SHAPE_DIM = 1                                        # TensorShapeProto
_DIM_VALUE = 1                                        # TensorShapeProto.Dimension
_UINT8 = 2                                            # TensorProto.DataType.UINT8


class _NotPlain(ValueError):
    """The bytes are not what a plain read can vouch for: the whole check (with onnx) decides."""


def _varint(data: memoryview, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise _NotPlain("a varint runs past its message")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _fields(data: memoryview):
    """(field number, value) of each field of one serialised protobuf message: an int for a varint,
    the bytes (a view, not a copy) for a length-delimited field, None for a fixed-width one."""
    if not isinstance(data, memoryview):  # a field read as a message that is a number in these bytes
        raise _NotPlain("a message field that is not length-delimited")
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at)
        elif wire == 2:
            length, at = _varint(data, at)
            if at + length > len(data):
                raise _NotPlain("a field runs past its message")
            value, at = data[at:at + length], at + length
        elif wire in (1, 5):
            value, at = None, at + (8 if wire == 1 else 4)
        else:  # groups (3, 4) and unknown wire types: no ONNX field is one
            raise _NotPlain(f"wire type {wire}")
        yield number, value
    if at != len(data):
        raise _NotPlain("the last field runs past the message")


def _text(value: Any) -> str:
    if not isinstance(value, memoryview):
        raise _NotPlain("a string field that is not length-delimited")
    return bytes(value).decode("utf-8")


def _string(data: memoryview, number: int) -> str:
    """String field ``number`` of a message, "" where it is absent (protobuf's default)."""
    value = _one(data, number)
    return "" if value is None else _text(value)


def _one(data: memoryview, number: int) -> Any:
    """The value of the singular field ``number``, or None where it is absent. A second occurrence is
    not plain: protobuf merges repeated message fields (and takes the last scalar), so the message that
    runs could differ from the one this read vouches for; onnx never writes a singular field twice."""
    found, seen = None, False
    for field, value in _fields(data):
        if field == number:
            if seen:
                raise _NotPlain(f"field {number} written twice")
            found, seen = value, True
    return found


def _graph_inputs_outputs(graph: memoryview) -> tuple[list[tuple[str, Optional[int], list]], list[str]]:
    """(inputs that are not initializers as (name, element type, dims), output names) of a GraphProto;
    a dim is its value, or None where it has none (a named or unknown size)."""
    initializers, inputs, outputs = set(), [], []
    for number, value in _fields(graph):
        if number == _GRAPH_INITIALIZER:
            initializers.add(_string(value, _TENSOR_NAME))
        elif number in (_GRAPH_INPUT, _GRAPH_OUTPUT):
            name = _string(value, _VALUE_NAME)
            if number == _GRAPH_OUTPUT:
                outputs.append(name)
                continue
            value_type = _one(value, _VALUE_TYPE)
            tensor = None if value_type is None else _one(value_type, _TYPE_TENSOR)
            elem_type, dims = None, []
            if isinstance(tensor, memoryview):
                elem_type = _one(tensor, _TENSOR_ELEM_TYPE)
                shape = _one(tensor, _TENSOR_SHAPE)
                if isinstance(shape, memoryview):
                    dims = [_one(dim, _DIM_VALUE) for number_, dim in _fields(shape) if number_ == _SHAPE_DIM]
            inputs.append((name, elem_type, dims))
    return [entry for entry in inputs if entry[0] not in initializers], outputs


def _sealed_header(path: Path, origin: str) -> Optional[dict[str, Any]]:
    """The header of the export ``path`` where its bytes pass every check :func:`read_onnx_header`
    makes but the operators', read without the onnx package; None for anything else (no such file,
    damaged, unsealed, of another shape), which the whole check then reads and names.

    The graph's checksum is taken over its bytes as the file holds them. The export wrote them as
    onnx serialises the graph (fields in number order, no maps), so a sound file's bytes are those the
    checksum was made of; a file another tool wrote again may hold the same graph in other bytes, and
    the whole check, which serialises it afresh, decides."""
    try:
        data = memoryview(path.read_bytes())
        graph, props = None, {}
        for number, value in _fields(data):
            if number == _MODEL_GRAPH:
                if graph is not None:  # protobuf would merge the two: the graph that runs holds both
                    return None
                graph = value
            elif number == _MODEL_METADATA:
                props[_string(value, _ENTRY_KEY)] = _string(value, _ENTRY_VALUE)
        if not isinstance(graph, memoryview) or not {HEADER_KEY, HEADER_SHA_KEY, GRAPH_SHA_KEY} <= set(props):
            return None
        if header_sha256(props[HEADER_KEY]) != props[HEADER_SHA_KEY]:
            return None
        if hashlib.sha256(graph).hexdigest() != props[GRAPH_SHA_KEY]:
            return None
        header = magic.loads_header(props[HEADER_KEY])
        check_model_header(origin, header)
        inputs, outputs = _graph_inputs_outputs(graph)
    except (OSError, ValueError, RecursionError, ArtifactError):  # _NotPlain and UnicodeDecodeError are ValueErrors
        return None
    return header if _graph_io_problem(inputs, outputs, header) is None else None

