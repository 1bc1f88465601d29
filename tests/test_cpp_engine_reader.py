"""The C++ engine-file reader (cpp/edgecmg_engine.hpp), built with CMake as a C++ deployment would,
against files written by edgecmg.engine_file.write_engine_file."""
from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from edgecmg.engine_file import ENGINE_FORMAT_VERSION, write_engine_file

REPO = Path(__file__).resolve().parents[1]
HEADER = {"tensorrt": "10.3.0.26", "precision": "int8", "threshold": 1.25,
          # nested keys named like the payload entries must not confuse the reader's top-level lookup
          "model": {"engine": "not this one", "notes": ["}", {"scorer": "{"}], "quote": "a \"quoted\" } brace"}}


@pytest.fixture(scope="module")
def engine_info(tmp_path_factory) -> Path:
    cmake, compiler = shutil.which("cmake"), shutil.which("c++") or shutil.which("g++")
    if cmake is None or compiler is None:
        pytest.skip("cmake and a C++ compiler are needed to build the C++ reader")
    build = tmp_path_factory.mktemp("build-cpp")
    for command in ([cmake, "-S", str(REPO), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"],
                    [cmake, "--build", str(build)]):
        done = subprocess.run(command, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr  # -Wall -Wextra -Werror: warnings fail too
    return build / "edgecmg_engine_info"


def _info(binary: Path, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), str(path)], capture_output=True, text=True)


@pytest.mark.parametrize("scorer", [b"", b"safetensors bytes" * 100])
def test_reads_what_python_writes(engine_info, tmp_path, scorer):
    plan = bytes(range(256)) * 300  # every byte value, 76,800 bytes: several SHA-256 blocks
    path = write_engine_file(tmp_path / "m.engine", HEADER, plan, scorer)
    done = _info(engine_info, path)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert lines["format_version"] == str(ENGINE_FORMAT_VERSION)
    assert lines["plan_bytes"] == str(len(plan)) and lines["scorer_bytes"] == str(len(scorer))
    assert lines["precision"] == "int8" and lines["tensorrt"] == "10.3.0.26"
    header = json.loads(lines["header"])
    assert header["model"] == HEADER["model"] and header["threshold"] == 1.25


def test_refuses_damaged_files(engine_info, tmp_path):
    path = write_engine_file(tmp_path / "m.engine", HEADER, b"\x01plan" * 1000, b"scorer")
    data = path.read_bytes()
    cases = {
        "flipped.engine": (data[:-1] + bytes([data[-1] ^ 1]), "engine payload checksum mismatch"),
        "cut.engine": (data[:-10], "truncated engine payload (4990 of 5000 bytes)"),
        "trailing.engine": (data + b"x", "trailing bytes after the engine"),
        "plan.engine": (b"\x01plan" * 1000, "not an edgecmg engine file (bad magic)"),
        "newer.engine": (data[:8] + struct.pack("<I", ENGINE_FORMAT_VERSION + 1) + data[12:],
                         f"engine file format {ENGINE_FORMAT_VERSION + 1} is newer"),
        "short-header.engine": (data[:8 + 4 + 8 + 20], "truncated inside the header"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        done = _info(engine_info, tmp_path / name)
        assert done.returncode == 1 and message in done.stderr, (name, done.stderr)
    done = _info(engine_info, tmp_path / "missing.engine")
    assert done.returncode == 1 and "no such engine file" in done.stderr


def _craft(path: Path, header_text: str, scorer: bytes = b"s", plan: bytes = b"plan",
           version: int = ENGINE_FORMAT_VERSION) -> Path:
    """An engine file with a hand-written header (no header checksum unless the text has one)."""
    data = header_text.encode()
    path.write_bytes(struct.pack("<8sIQ", b"EDGECMGE", version, len(data)) + data + scorer + plan)
    return path


def _entry(payload: bytes, size=None) -> str:
    return json.dumps({"bytes": len(payload) if size is None else size, "sha256": hashlib.sha256(payload).hexdigest()})


def test_refuses_bad_headers_by_name(engine_info, tmp_path):
    good = write_engine_file(tmp_path / "m.engine", HEADER, b"\x01plan" * 1000, b"scorer").read_bytes()
    edited = good.replace(b'"threshold": 1.25', b'"threshold": 9.25')
    assert edited != good
    (tmp_path / "edited.engine").write_bytes(edited)
    s, p = _entry(b"s"), _entry(b"plan")
    cases = {
        "edited.engine": "header checksum mismatch",
        _craft(tmp_path / "scorer.engine", '{"engine": %s, "scorer": %s}' % (p, s), scorer=b"S").name:
            "scorer payload checksum mismatch",
        _craft(tmp_path / "no-entry.engine", '{"engine": %s}' % p).name: "header has no 'scorer' entry",
        _craft(tmp_path / "not-object.engine", '[1, 2]').name: "is not a JSON object",
        _craft(tmp_path / "cut-json.engine", '{"engine": %s, "scorer": {"bytes": 1' % p).name: "is not a JSON object",
        _craft(tmp_path / "twice.engine", '{"engine": %s, "scorer": %s, "engine": %s}' % (p, s, p)).name:
            "key 'engine' appears twice",
    }
    for size in ("-1", "0.9", "1e0", "abc", "99999999999999999999999"):
        name = f"bytes{size}.engine"
        _craft(tmp_path / name, '{"engine": %s, "scorer": {"bytes": %s, "sha256": "x"}}' % (p, size))
        cases[name] = "bytes is not a byte count"
    for name, message in cases.items():
        done = _info(engine_info, tmp_path / name)
        assert done.returncode == 1 and message in done.stderr and str(tmp_path) in done.stderr, (name, done.stderr)
    # a header without a checksum: a file from before it (format 2) still reads, a current one is refused
    # (as the Python reader refuses it)
    done = _info(engine_info, _craft(tmp_path / "old.engine", '{"engine": %s, "scorer": %s}' % (p, s), version=2))
    assert done.returncode == 0, done.stderr
    done = _info(engine_info, _craft(tmp_path / "unsealed.engine", '{"engine": %s, "scorer": %s}' % (p, s)))
    assert done.returncode == 1 and "the header has no 'header_sha256', which every format-3 engine carries" \
        in done.stderr, done.stderr
