"""The ``.engine`` file: a serialized TensorRT engine with the model header and the host scorer,
written and read here with no TensorRT needed (``edgecmg.engine`` builds the engine and checks that
it can run on this machine).

Engine file (little endian)::

    magic       8 bytes  b"EDGECMGE"
    version     uint32   engine file format version
    header_len  uint64   length of the JSON header
    header      JSON     TensorRT version, GPU name and compute capability, precision, input shapes,
                         artifact SHA-256, edgecmg version, the model header (threshold, ...), and
                         the length and SHA-256 of the two payloads that follow
    scorer      bytes    safetensors of the BankScorer (featurizer engines; empty for full graphs)
    engine      bytes    TensorRT's serialized engine

so ``Detector.load("M.engine")`` needs nothing else: host scoring comes from the scorer payload
(``load_scorer_from_engine``). cpp/edgecmg_engine.hpp reads the same layout: a change here is a
change there.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

from edgecmg import magic
from edgecmg.errors import ArtifactError, MissingFileError
from edgecmg.fileio import atomic_path

ENGINE_MAGIC = magic.ENGINE

# 2 (2026-11-24): the scorer state carries a fitted normal level; version 1 files load with level 0.
# 3 (2026-11-24): the image score may pool the hottest pixels (model spec "score_top_fraction"); files
# without it load with the maximum, and an older edgecmg, which would score by the maximum against a
# threshold set on the pool, refuses version 3.
ENGINE_FORMAT_VERSION = 3
# The header's own checksum, an entry of the header (older readers ignore it). It came with format 3 (the
# same day, before any release): a format-3 header without it had it removed, and is refused. Files of
# formats 1 and 2, which may predate it (and whose header nothing would cover), are refused too: this is
# the oldest format read (cpp/edgecmg_engine.hpp: kHeaderChecksumSinceFormat). The checksum tells damage,
# not a deliberate edit that computes it again: the header's fields are checked too (_check_fields).
HEADER_SHA_KEY = "header_sha256"
HEADER_SHA_SINCE_FORMAT = 3
MAX_HEADER_BYTES = magic.MAX_HEADER_BYTES
# What to do about a damaged engine file, after what is wrong with it.
_CORRUPTED = "the file is corrupted; copy the engine again or rebuild it with `edgecmg build`"
_PREFIX = struct.Struct("<8sIQ")
ENGINE_SUFFIXES = (".engine", ".plan")


def write_engine_file(path: str | Path, header: dict[str, Any], engine: bytes, scorer: bytes = b"") -> Path:
    """Write header + scorer payload + serialized engine atomically; fills the payload entries."""
    path = Path(path)
    header = dict(header)
    header["format"] = "edgecmg-engine"
    header["format_version"] = ENGINE_FORMAT_VERSION
    header["scorer"] = {"bytes": len(scorer), "sha256": hashlib.sha256(scorer).hexdigest()}
    header["engine"] = {"bytes": len(engine), "sha256": hashlib.sha256(engine).hexdigest()}
    header[HEADER_SHA_KEY] = _header_sha256(header)  # computed without its own entry
    header_bytes = json.dumps(header, sort_keys=True).encode("utf-8")
    if len(header_bytes) > MAX_HEADER_BYTES:  # readers would refuse it as damaged
        raise ArtifactError(f"{path}: the engine header would be {len(header_bytes)} bytes, more than the "
                            f"{MAX_HEADER_BYTES} an engine header can be (readers refuse a longer one as damaged): "
                            "its model header is too large; fit or export the model again with less metadata")
    with atomic_path(path, what="the engine file") as tmp:
        with open(tmp, "wb") as handle:
            handle.write(_PREFIX.pack(ENGINE_MAGIC, ENGINE_FORMAT_VERSION, len(header_bytes)))
            handle.write(header_bytes)
            handle.write(scorer)
            handle.write(engine)
            handle.flush()
            os.fsync(handle.fileno())
    return path


def _header_sha256(header: dict[str, Any]) -> str:
    """SHA-256 of the header's canonical JSON, its own checksum entry left out."""
    rest = {k: v for k, v in header.items() if k != HEADER_SHA_KEY}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode("utf-8")).hexdigest()


def _read_prefix(handle, path: Path) -> dict[str, Any]:
    """The header, checked: its checksum, every field (``_check_fields``), and its payload sizes against
    the file's size, so nothing is read or allocated by a size the file does not hold."""
    prefix = handle.read(_PREFIX.size)
    if len(prefix) < _PREFIX.size:
        raise ArtifactError(f"{path}: truncated ({len(prefix)} bytes): not an edgecmg engine file")
    tag, version, header_len = _PREFIX.unpack(prefix)
    if tag == magic.ARTIFACT:  # as the C++ reader says it (cpp/edgecmg_engine.hpp)
        raise ArtifactError(f"{path}: an edgecmg model file (.edgecmg), not an engine file: export it (`edgecmg "
                            "export M.edgecmg --with-scoring -o M.onnx`) and build the engine on the device "
                            "(`edgecmg build M.onnx -o M.engine`)")
    if tag != ENGINE_MAGIC:
        raise ArtifactError(f"{path}: not an edgecmg engine file (bad magic {tag!r}): neither an .onnx export nor a "
                            "bare TensorRT plan holds the model header; build the engine with `edgecmg build M.onnx "
                            "-o M.engine`")
    if version > ENGINE_FORMAT_VERSION:
        raise ArtifactError(f"{path}: engine file format {version} is newer than this edgecmg understands "
                            f"({ENGINE_FORMAT_VERSION}); upgrade edgecmg")
    # Checked against the file's size before reading: a damaged length field must not ask for terabytes.
    left = os.fstat(handle.fileno()).st_size - _PREFIX.size
    if header_len > left:
        raise ArtifactError(f"{path}: truncated inside the header (it claims {header_len} bytes); "
                            "copy the engine again")
    if header_len > MAX_HEADER_BYTES:
        raise ArtifactError(f"{path}: the prefix gives a {header_len}-byte header, more than the {MAX_HEADER_BYTES} "
                            "an engine header can be: the file is damaged; copy the engine again")
    header_bytes = handle.read(header_len)
    try:
        header = magic.loads_header(header_bytes)
    except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested thousands deep
        raise ArtifactError(f"{path}: engine header is not valid JSON ({type(exc).__name__}: {str(exc)[:100]}): "
                            f"{_CORRUPTED}") from exc
    if not isinstance(header, dict):
        raise ArtifactError(f"{path}: engine header is not a JSON object: {_CORRUPTED}")
    # The header holds the threshold, input size and model spec: a change there is refused like one in
    # the engine.
    if HEADER_SHA_KEY in header and header[HEADER_SHA_KEY] != _header_sha256(header):
        raise ArtifactError(f"{path}: header checksum mismatch: the header (threshold, input size, model) "
                            "was damaged or edited after the build; copy the engine again or rebuild it")
    sealed = header.pop(HEADER_SHA_KEY, None) is not None
    left -= header_len
    for key in ("scorer", "engine"):
        entry = header.get(key) if isinstance(header.get(key), dict) else {}
        size = entry.get("bytes")
        if type(size) is not int or size < 0 or not isinstance(entry.get("sha256"), str):  # noqa: E721 - not bool
            raise ArtifactError(f"{path}: the header's {key} entry has no byte count and checksum ({size!r}): "
                                f"{_CORRUPTED}")
        if size > left:
            raise ArtifactError(f"{path}: truncated {key} payload ({left} of {size} bytes); copy the engine again")
        left -= size
    if left:
        raise ArtifactError(f"{path}: trailing bytes after the engine: {_CORRUPTED}")
    if not sealed and version >= HEADER_SHA_SINCE_FORMAT:
        raise ArtifactError(f"{path}: the header has no '{HEADER_SHA_KEY}', which every format-{version} engine "
                            "carries: it was removed after the build; rebuild the engine with `edgecmg build`")
    _check_fields(path, header, version)
    return header


def _check_fields(path: Path, header: dict[str, Any], version: int) -> None:
    """Refuse an engine header whose fields are missing, of the wrong JSON type, or disagree with its model
    header (itself checked as an export's) or with each other: the runner and check_engine_compatible
    read them as checked here."""
    from edgecmg.header_checks import bad_field, header_field, int_field, is_int
    from edgecmg.onnx_header import check_model_header

    # The prefix's version is outside every checksum; the header's copy is covered by the header's.
    if header_field(path, header, "format_version", "an integer") != version:
        raise bad_field(path, "format_version", f"is {header['format_version']} but the file's prefix says {version}")
    # After that check, which tells a format-3 file whose prefix was damaged to say 2 (as the C++ reader).
    if version < HEADER_SHA_SINCE_FORMAT:
        raise ArtifactError(f"{path}: engine file format {version} is older than the oldest this edgecmg reads "
                            f"({HEADER_SHA_SINCE_FORMAT}, the first whose header carries a checksum); rebuild the "
                            "engine with this edgecmg (`edgecmg build M.onnx -o M.engine`)")
    header_field(path, header, "tensorrt", "a string")
    header_field(path, header, "gpu", "an object")
    for key in ("name", "compute_capability"):
        header_field(path, header, f"gpu.{key}", "a string")
    if header_field(path, header, "precision", "a string") not in ("fp32", "fp16", "int8"):
        raise bad_field(path, "precision", f"is {header['precision']!r}, not 'fp32', 'fp16' or 'int8'")
    if header.get("dla_core") is not None:
        int_field(path, header, "dla_core", 0)
    header_field(path, header, "source_onnx", "a string", None)  # named in the rebuild command (M.onnx without)
    check_model_header(f"{path}: its 'model' section", header_field(path, header, "model", "an object"))
    export = header["model"]["export"]
    for key in ("graph", "outputs"):  # as the ONNX file it was built from gave them
        if header.get(key) != export[key]:
            raise bad_field(path, key, f"is {json.dumps(header.get(key))[:80]}, but its model's export.{key} "
                                        f"is {json.dumps(export[key])}")
    inputs = header_field(path, header, "inputs", "an object")
    if list(inputs) != [export["input"]]:
        raise bad_field(path, "inputs", f"names {list(inputs)[:4]}, not the one input '{export['input']}'")
    height, width = header["model"]["input_size"]
    field = f"inputs.{export['input']}"
    header_field(path, header, field, "an object")
    shapes = [header_field(path, header, f"{field}.{end}", "a list") for end in ("min", "opt", "max")]
    batches = [shape[0] if shape else None for shape in shapes]
    if not all(shape[1:] == [height, width, 3] for shape in shapes) or \
            not all(is_int(b) for b in batches) or not 1 <= batches[0] <= batches[1] <= batches[2]:
        raise bad_field(path, field, f"is {json.dumps(inputs[export['input']])[:120]}, not batch ranges "
                                      f"1 <= min <= opt <= max of [batch, {height}, {width}, 3] (the model's "
                                      "input size)")


def read_engine_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of an engine file (reads only the header, not the engine)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such engine file")
    with open(path, "rb") as handle:
        return _read_prefix(handle, path)


def read_engine_file(path: str | Path) -> tuple[dict[str, Any], bytes, bytes]:
    """(header, scorer payload, serialized engine), checksums verified."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such engine file")
    with open(path, "rb") as handle:
        header = _read_prefix(handle, path)
        parts = []
        for key in ("scorer", "engine"):  # sizes checked against the file's by _read_prefix
            size = header[key]["bytes"]
            data = handle.read(size)
            if len(data) != size:  # the file was cut while being read
                raise ArtifactError(f"{path}: truncated {key} payload ({len(data)} of {size} bytes); "
                                    "copy the engine again")
            if hashlib.sha256(data).hexdigest() != header[key]["sha256"]:
                raise ArtifactError(f"{path}: {key} payload checksum mismatch: {_CORRUPTED}")
            parts.append(data)
    return header, parts[0], parts[1]


def load_scorer_from_engine(path: str | Path):
    """(BankScorer, model header) of a featurizer engine, for host-side scoring."""
    header, scorer, _ = read_engine_file(path)
    return scorer_of_engine(path, header, scorer), header["model"]


def scorer_of_engine(path: str | Path, header: dict[str, Any], scorer: bytes):
    """The BankScorer of an engine whose ``header`` and ``scorer`` payload :func:`read_engine_file`
    read from ``path`` (named in errors): decoded, and checked against its export's checksum."""
    from edgecmg.export import scorer_from_bytes

    if not scorer:
        raise ArtifactError(f"{path}: engine of a {header['graph']} graph carries no scorer "
                            "(full graphs score inside the engine)")
    bank = scorer_from_bytes(header["model"], scorer, str(path))
    # The payload's own checksum (header["scorer"]) is the build's, of what it copied: an ONNX file
    # damaged before the build sealed its damage in. The export's, in the model header, tells (compared
    # only where the header has one). After the payload decodes, whose refusal is the more specific;
    # read_engine_file takes the payload as opaque bytes, checked against its own checksum only.
    recorded = header["model"]["export"].get("scorer_sha256")
    if isinstance(recorded, str) and header["scorer"]["sha256"] != recorded:
        source = header.get("source_onnx") or "its ONNX file"
        raise ArtifactError(f"{path}: the scorer payload is not the one its ONNX export recorded (checksum "
                            f"{header['scorer']['sha256'][:12]}..., the export's {recorded[:12]}...): {source} "
                            "was damaged before this engine was built from it; export the model again and build "
                            "the engine from the new file")
    return bank
