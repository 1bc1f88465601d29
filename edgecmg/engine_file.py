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
# The header's own checksum, an entry of the header (older files lack it; older readers ignore it).
HEADER_SHA_KEY = "header_sha256"
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
    prefix = handle.read(_PREFIX.size)
    if len(prefix) < _PREFIX.size:
        raise ArtifactError(f"{path}: truncated ({len(prefix)} bytes): not an edgecmg engine file")
    magic, version, header_len = _PREFIX.unpack(prefix)
    if magic != ENGINE_MAGIC:
        raise ArtifactError(f"{path}: not an edgecmg engine file (bad magic {magic!r}); a bare TensorRT plan "
                            "lacks the model header: build it with `edgecmg build M.onnx -o M.engine`")
    if version > ENGINE_FORMAT_VERSION:
        raise ArtifactError(f"{path}: engine file format {version} is newer than this edgecmg understands "
                            f"({ENGINE_FORMAT_VERSION}); upgrade edgecmg")
    # Checked against the file's size before reading: a damaged length field must not ask for terabytes.
    if header_len > os.fstat(handle.fileno()).st_size - _PREFIX.size:
        raise ArtifactError(f"{path}: truncated inside the header (it claims {header_len} bytes); "
                            "copy the engine again")
    header_bytes = handle.read(header_len)
    try:
        header = json.loads(header_bytes)
    except ValueError as exc:
        raise ArtifactError(f"{path}: engine header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise ArtifactError(f"{path}: engine header is not a JSON object: the file is corrupted")
    # The header holds the threshold, input size and model spec: a change there is refused like one in
    # the engine. Files written before the header had a checksum have none to check.
    if HEADER_SHA_KEY in header and header[HEADER_SHA_KEY] != _header_sha256(header):
        raise ArtifactError(f"{path}: header checksum mismatch: the header (threshold, input size, model) "
                            "was damaged or edited after the build; copy the engine again or rebuild it")
    header.pop(HEADER_SHA_KEY, None)
    return header


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
        for key in ("scorer", "engine"):
            entry = header.get(key) if isinstance(header.get(key), dict) else {}
            size = entry.get("bytes")
            if type(size) is not int or size < 0:  # noqa: E721 - bool is an int, and no byte count
                raise ArtifactError(f"{path}: the header's {key} entry has no byte count ({size!r}): the file is "
                                    "corrupted")
            data = handle.read(size)
            if len(data) != size:
                raise ArtifactError(f"{path}: truncated {key} payload ({len(data)} of {size} bytes); "
                                    "copy the engine again")
            if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
                raise ArtifactError(f"{path}: {key} payload checksum mismatch: the file is corrupted")
            parts.append(data)
        if handle.read(1):
            raise ArtifactError(f"{path}: trailing bytes after the engine: the file is corrupted")
    return header, parts[0], parts[1]


def load_scorer_from_engine(path: str | Path):
    """(BankScorer, model header) of a featurizer engine, for host-side scoring."""
    from edgecmg.export import scorer_from_bytes

    header, scorer, _ = read_engine_file(path)
    if not scorer:
        raise ArtifactError(f"{path}: engine of a {header.get('graph', '?')} graph carries no scorer "
                            "(full graphs score inside the engine)")
    model_header = header.get("model") or {}
    return scorer_from_bytes(model_header, scorer, str(path)), model_header
