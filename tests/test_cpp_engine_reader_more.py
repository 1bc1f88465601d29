"""More of the C++ engine-file reader (cpp/edgecmg_engine.hpp) and its agreement with the Python one
(edgecmg/engine_file.py): sizes past a 32-bit size_t, formats from before the header checksum, the
model's threshold, the header-size cap on both sides, what the damage messages tell to do, the
header in several translation units, and the CMake target for add_subdirectory users. The build
fixtures and helpers are tests/test_cpp_engine_reader.py's."""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import struct
import subprocess
from pathlib import Path

import edgecmg_testmodels as models
import pytest
import test_cpp_engine_reader as base
from test_cpp_engine_reader import REPO, TIMEOUT, _compiler, _compiles, _consumer_project, _info, _refused

from edgecmg import engine_file
from edgecmg.engine_file import (
    ENGINE_FORMAT_VERSION,
    HEADER_SHA_SINCE_FORMAT,
    read_engine_file,
    read_engine_header,
    write_engine_file,
)
from edgecmg.errors import ArtifactError

cpp_build = base.cpp_build  # the reader built with CMake as the README says, once for this module
engine_info = base.engine_info
NEXT_STEP = "copy the engine again or rebuild it with `edgecmg build`"
BUILD_TIMEOUT = 600  # seconds for a compile, link or CMake step: a hung tool fails the test, not the run


def _genuine(tmp_path: Path, name: str = "m.engine", header: dict | None = None, plan: bytes = b"\x01plan" * 100,
             scorer: bytes = b"scorer") -> Path:
    """An engine file as `edgecmg build` writes it, with a header every check of Python's passes."""
    return write_engine_file(tmp_path / name, models.ENGINE_HEADER if header is None else header, plan, scorer)


def _split(data: bytes) -> tuple[str, bytes]:
    """(header text, the payloads after it) of an engine file's bytes."""
    length = struct.unpack_from("<Q", data, 12)[0]
    return data[20:20 + length].decode("utf-8"), data[20 + length:]


def _seal(text: str) -> str:
    """`text` (a JSON object) with a "header_sha256" entry of its own text, as the C++ reader computes it
    (which is Python's where `text` is json.dumps(..., sort_keys=True)): a deliberate edit, sealed again."""
    return text[:-1] + ', "header_sha256": "%s"}' % hashlib.sha256(text.encode("utf-8")).hexdigest()


def _engine_bytes(version: int, header_text: str, rest: bytes) -> bytes:
    data = header_text.encode("utf-8")
    return struct.pack("<8sIQ", b"EDGECMGE", version, len(data)) + data + rest


def _both_refuse(binary: Path, path: Path, cpp_message: str, python_message: str | None = None) -> str:
    """The C++ reader's refusal (its stderr), and Python's, each with its message."""
    stderr = _refused(binary, path, cpp_message)
    with pytest.raises(ArtifactError, match=python_message or cpp_message) as caught:
        read_engine_file(path)
    assert str(path) in str(caught.value)
    return stderr


def _payload_header(entries: dict) -> str:
    header = json.loads(json.dumps(models.ENGINE_HEADER))
    header.update(format="edgecmg-engine", format_version=ENGINE_FORMAT_VERSION, **entries)
    return json.dumps(header, sort_keys=True)


# --- 1. sizes a 32-bit program cannot hold ---------------------------------------------------------
def _m32_compiler(tmp_path: Path) -> str:
    compiler = _compiler()
    if compiler is None:
        pytest.skip("no C++ compiler")
    probe = tmp_path / "probe.cpp"
    probe.write_text("#include <vector>\nint main() { return static_cast<int>(std::vector<char>(1).size()) - 1; }\n")
    if not _compiles(compiler, ["-m32"], tmp_path, probe, tmp_path / "probe"):
        pytest.skip("the compiler cannot link a 32-bit program here (-m32: install g++-multilib)")
    return compiler


def test_payload_past_a_32_bit_size_t_is_refused_not_overrun(tmp_path):
    """A sealed format-3 header whose engine payload is 2^32 + 16 bytes (a sparse file): a 32-bit build
    cast that to a 16-byte buffer and read 4 GiB into it (heap overflow); now refused before allocating."""
    compiler = _m32_compiler(tmp_path)
    binary = tmp_path / "engine_info32"
    flags = ["-m32", "-std=c++14", "-O1", "-D_FILE_OFFSET_BITS=64"]  # LFS: stat() of a file over 2 GiB
    assert _compiles(compiler, flags, tmp_path, REPO / "cpp" / "engine_info.cpp", binary)
    done = _info(binary, _genuine(tmp_path))  # what Python writes reads here too
    assert done.returncode == 0, done.stderr
    size = (1 << 32) + 16
    text = _seal(_payload_header({"scorer": {"bytes": 1, "sha256": hashlib.sha256(b"s").hexdigest()},
                                  "engine": {"bytes": size, "sha256": "0" * 64}}))
    path = tmp_path / "wrap32.engine"
    path.write_bytes(_engine_bytes(ENGINE_FORMAT_VERSION, text, b"s"))
    try:
        os.truncate(path, path.stat().st_size + size)
    except OSError as exc:
        pytest.skip(f"no sparse 4 GiB file here: {exc}")
    try:
        stderr = _refused(binary, path, f"the engine payload is {size} bytes, more than a 32-bit program can hold")
    finally:
        path.unlink()  # 4 GiB to anything that copies pytest's kept temporary folders
    assert "damaged, or too large for this platform" in stderr, stderr


def test_size_check_refuses_what_no_buffer_can_hold(tmp_path):
    """The check behind the test above, on a 64-bit build: 2^64 - 1 bytes is past std::vector<char>'s
    max_size() everywhere."""
    compiler = _compiler()
    if compiler is None:
        pytest.skip("no C++ compiler")
    source = tmp_path / "size.cpp"
    source.write_text(r"""
#include <cstdint>
#include <iostream>
#include <limits>
#include <vector>
#include "edgecmg_engine.hpp"
int main() {
    const std::size_t max = std::vector<char>().max_size();
    if (edgecmg::detail::buffer_size(12345, max, "x.engine", "the engine payload") != 12345) return 2;
    try {
        edgecmg::detail::buffer_size(std::numeric_limits<std::uint64_t>::max(), max, "x.engine", "the engine payload");
    } catch (const std::runtime_error& exc) {
        std::cout << exc.what() << "\n";
        return 0;
    }
    return 1;
}
""")
    binary = tmp_path / "size"
    assert _compiles(compiler, ["-std=c++14"], tmp_path, source, binary), "does not compile"
    done = subprocess.run([str(binary)], capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"x.engine: the engine payload is {2 ** 64 - 1} bytes, more than a"), done.stdout
    assert "the file is damaged, or too large for this platform" in done.stdout


# --- 2. formats from before the header checksum; the model's threshold --------------------------------
def _old_format(data: bytes, version: int, threshold: str | None = None) -> bytes:
    """A genuine file turned into one of format `version` (prefix and header), its header checksum taken
    out (formats 1 and 2 had none), its threshold set to the JSON text `threshold`."""
    text, rest = _split(data)
    header = json.loads(text)
    del header["header_sha256"]
    header["format_version"] = version
    text = json.dumps(header, sort_keys=True)
    if threshold is not None:
        text = text.replace('"threshold": 1.25', '"threshold": %s' % threshold)
    return _engine_bytes(version, text, rest)


def test_formats_before_the_header_checksum_are_refused_by_both_readers(engine_info, tmp_path):
    assert 2 < HEADER_SHA_SINCE_FORMAT <= ENGINE_FORMAT_VERSION  # formats 1 and 2 had no header checksum
    data = _genuine(tmp_path).read_bytes()
    assert _info(engine_info, tmp_path / "m.engine").returncode == 0
    read_engine_file(tmp_path / "m.engine")
    # a format-2 file with a NaN threshold: every part passed, nothing covered the header
    for name, version, threshold in (("v2.engine", 2, None), ("v1.engine", 1, None), ("nan.engine", 2, "NaN")):
        path = tmp_path / name
        path.write_bytes(_old_format(data, version, threshold))
        stderr = _both_refuse(engine_info, path, f"engine file format {version} is older than the oldest")
        assert "rebuild the engine with this edgecmg (`edgecmg build" in stderr, stderr


def _with_threshold(tmp_path: Path, name: str, threshold: str) -> Path:
    """A genuine file whose model threshold is the JSON text `threshold`, its header sealed again (as a
    build from a model with that threshold, or a deliberate edit, would leave it)."""
    text, rest = _split(_genuine(tmp_path).read_bytes())
    header = json.loads(text)
    del header["header_sha256"]
    edited = json.dumps(header, sort_keys=True).replace('"threshold": 1.25', '"threshold": %s' % threshold)
    assert edited.count('"threshold": %s' % threshold) == 1
    path = tmp_path / name
    path.write_bytes(_engine_bytes(ENGINE_FORMAT_VERSION, _seal(edited), rest))
    return path


def test_threshold_not_finite_is_refused_by_both_readers(engine_info, tmp_path):
    """A NaN threshold flags no part (every comparison with it is false): the C++ reader refuses what
    Python refuses, a threshold that is no finite number within float32's range."""
    refused = ["NaN", "Infinity", "-Infinity", "1e999", "-1E+400", "3.4028235677973366e+38", '"1.25"', "null",
               "[1.25]", "true"]
    for n, threshold in enumerate(refused):
        path = _with_threshold(tmp_path, f"bad{n}.engine", threshold)
        stderr = _refused(engine_info, path, "the header's 'model.threshold' is ")
        assert "not a finite number within float32's range" in stderr and "edgecmg build" in stderr, stderr
        with pytest.raises(ArtifactError):
            read_engine_file(path)
    # finite numbers within float32's range read: its extremes, integers, tiny numbers, any spelling
    accepted = ["0", "-0", "2", "-2.5", "0.001", "1.5e-3", "5e-324", "1E2", "1e-400", "3.4028234663852886e+38",
                "-3.4028234663852886e+38", "0.0000000000000000000000000000000000000000000000000000000000001e60"]
    for n, threshold in enumerate(accepted):
        path = _with_threshold(tmp_path, f"good{n}.engine", threshold)
        done = _info(engine_info, path)
        assert done.returncode == 0, (threshold, done.stderr)
        if json.dumps(json.loads(threshold)) == threshold:  # else Python's checksum, of its own spelling, differs
            header, _, _ = read_engine_file(path)
            assert math.isfinite(header["model"]["threshold"])


def test_threshold_given_twice_is_refused_by_both_readers(engine_info, tmp_path):
    """The model's threshold given twice, the header sealed again (tools showing the first value would
    disagree with a reader taking the last): refused by both."""
    text, rest = _split(_genuine(tmp_path).read_bytes())
    header = json.loads(text)
    del header["header_sha256"]
    edited = json.dumps(header, sort_keys=True).replace('"threshold": 1.25', '"threshold": 1.25, "threshold": 1e9')
    path = tmp_path / "twice.engine"
    path.write_bytes(_engine_bytes(ENGINE_FORMAT_VERSION, _seal(edited), rest))
    stderr = _both_refuse(engine_info, path, "the key 'threshold' appears twice",
                          python_message="'threshold' appears twice")
    assert "the header's 'model' entry has a duplicate key" in stderr and "edgecmg build" in stderr, stderr


# --- 3. the header-size cap, on both sides ------------------------------------------------------------
def test_python_caps_the_header_length_as_the_cpp_reader(engine_info, tmp_path):
    """A damaged header length within a (sparse) file: refused by Python before reading, as by C++ (it
    read whatever the prefix said: 8 GiB, or a MemoryError)."""
    cap = engine_file.MAX_HEADER_BYTES
    data = _genuine(tmp_path).read_bytes()
    for length in (cap + 1, 8 << 30):
        path = tmp_path / f"long{length}.engine"
        path.write_bytes(data[:12] + struct.pack("<Q", length) + data[20:])
        try:
            os.truncate(path, 20 + length + 100)
        except OSError as exc:
            pytest.skip(f"no sparse file here: {exc}")
        message = f"the prefix gives a {length}-byte header, more than the {cap}"
        try:
            _refused(engine_info, path, message)  # the same cap on both sides
            with pytest.raises(ArtifactError, match=f"{path}: {message} an engine header can be: the file is damaged"):
                read_engine_header(path)
        finally:
            path.unlink()  # sparse here, gigabytes to anything that copies it


def test_no_engine_header_is_written_that_the_readers_would_refuse(tmp_path):
    cap = engine_file.MAX_HEADER_BYTES
    header = json.loads(json.dumps(models.ENGINE_HEADER))
    header["model"]["notes"] = "x" * cap
    with pytest.raises(ArtifactError, match=f"big.engine: the engine header would be \\d+ bytes, more than the {cap}"):
        write_engine_file(tmp_path / "big.engine", header, b"plan")
    assert not (tmp_path / "big.engine").exists() and list(tmp_path.iterdir()) == []


# --- 5. what the damage messages tell to do -----------------------------------------------------------
def test_damage_messages_say_what_to_do(engine_info, tmp_path):
    data = _genuine(tmp_path).read_bytes()
    text, _ = _split(data)
    flipped = tmp_path / "flipped.engine"
    flipped.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    stderr = _both_refuse(engine_info, flipped, "engine payload checksum mismatch: the file is corrupted")
    assert NEXT_STEP in stderr, stderr
    with pytest.raises(ArtifactError, match=f"mismatch: the file is corrupted; {NEXT_STEP}"):
        read_engine_file(flipped)
    scorer = {"bytes": 6, "sha256": hashlib.sha256(b"scorer").hexdigest()}
    engine = {"bytes": 500, "sha256": hashlib.sha256(b"\x01plan" * 100).hexdigest()}
    rest = b"scorer" + b"\x01plan" * 100
    cases = {
        "bytes.engine": ({"scorer": dict(scorer, bytes="6"), "engine": engine}, "'bytes' is not a byte count"),
        "sha.engine": ({"scorer": {"bytes": 6}, "engine": engine}, "'scorer' entry has no 'sha256'"),
    }
    for name, (entries, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(_engine_bytes(ENGINE_FORMAT_VERSION, _seal(_payload_header(entries)), rest))
        stderr = _refused(engine_info, path, message)
        assert NEXT_STEP in stderr, stderr
        with pytest.raises(ArtifactError):
            read_engine_file(path)
    # a repeated top-level key: an object with a duplicate key, not "not a JSON object"
    twice = _payload_header({"scorer": scorer, "engine": engine})
    twice = twice[:-1] + ', "engine": %s}' % json.dumps(engine)
    path = tmp_path / "twice.engine"
    path.write_bytes(_engine_bytes(ENGINE_FORMAT_VERSION, _seal(twice), rest))
    stderr = _both_refuse(engine_info, path, "the engine header has a duplicate key: the key 'engine' appears twice",
                          python_message="'engine' appears twice")
    assert "not a JSON object" not in stderr and "edgecmg build" in stderr, stderr


# --- 4. the header in several translation units -------------------------------------------------------
TU_MAIN = r"""
#include <cstdio>
#include <cstring>
#include "edgecmg_engine.hpp"
std::size_t plan_size_b(const char* path);
int main(int argc, char** argv) {
    if (argc != 2) return 2;
    const std::size_t a = edgecmg::read_engine_file(argv[1]).plan.size();
    const std::size_t b = plan_size_b(argv[1]);
    std::printf("%zu %zu %d\n", a, b, std::memcmp(edgecmg::kEngineMagic, "EDGECMGE", 8) == 0);
    return a == b ? 0 : 1;
}
"""
TU_OTHER = r"""
#include "edgecmg_engine.hpp"
std::size_t plan_size_b(const char* path) { return edgecmg::read_engine_file(path).plan.size(); }
"""


def test_header_in_two_translation_units(tmp_path):
    """Two .cpp files including the header, linked into one program (each standard, and mixed), and no
    inline function of the header refers to an object of internal linkage (a namespace-scope constexpr:
    a copy per translation unit, which makes the inline function's definitions differ, an ODR
    violation): seen in the assembly, where the reference names it."""
    compiler = _compiler()
    if compiler is None:
        pytest.skip("no C++ compiler")
    main, other = tmp_path / "tu1.cpp", tmp_path / "tu2.cpp"
    main.write_text(TU_MAIN)
    other.write_text(TU_OTHER)
    engine = _genuine(tmp_path)
    standards = [std for std in ("c++14", "c++17", "c++20") if _compiles(compiler, [f"-std={std}"], tmp_path, main)]
    assert "c++14" in standards
    for first, second in [(std, std) for std in standards] + [(standards[0], standards[-1])]:
        objects = []
        for source, std in ((main, first), (other, second)):
            obj = tmp_path / f"{source.stem}-{std}.o"
            done = subprocess.run([compiler, f"-std={std}", "-O0", "-Wall", "-Wextra", "-Werror",
                                   "-I", str(REPO / "cpp"), "-c", str(source), "-o", str(obj)],
                                  capture_output=True, text=True, timeout=BUILD_TIMEOUT)
            assert done.returncode == 0, done.stderr
            objects.append(str(obj))
        binary = tmp_path / f"two-{first}-{second}"
        done = subprocess.run([compiler, *objects, "-o", str(binary)], capture_output=True, text=True,
                              timeout=BUILD_TIMEOUT)
        assert done.returncode == 0, done.stderr  # no duplicate symbols
        done = subprocess.run([str(binary), str(engine)], capture_output=True, text=True, timeout=TIMEOUT)
        assert done.returncode == 0 and done.stdout == "500 500 1\n", (first, second, done.stdout, done.stderr)
    # the assembly of a translation unit that calls the reader: a TU-local object (its mangled name has
    # an "L" after the namespace) may be defined there, but no function of the header may use it
    asm = subprocess.run([compiler, "-std=c++14", "-O0", "-S", "-o", "-", "-I", str(REPO / "cpp"), str(other)],
                         capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert asm.returncode == 0, asm.stderr
    uses = [line.strip() for line in asm.stdout.splitlines()
            if "_ZN7edgecmgL" in line and not line.strip().startswith((".", "_ZN7edgecmgL"))]
    assert uses == [], uses[:5]


# --- 6. CMake: a target for add_subdirectory users ---------------------------------------------------
def test_cmake_alias_target_and_tools_option(cpp_build, tmp_path):
    # on its own: standard C++ (no GNU extensions), and the checker built
    flags = (cpp_build / "CMakeFiles" / "edgecmg_engine_info.dir" / "flags.make").read_text()
    assert "-std=c++17" in flags and "gnu++" not in flags, flags
    assert (cpp_build / "edgecmg_engine_info").is_file()
    cmake = shutil.which("cmake")
    consumer = _consumer_project(tmp_path / "consumer", "edgecmg::engine",
                                 "#include <edgecmg_engine.hpp>\n#include <cstdio>\nint main(int, char** argv) {\n"
                                 "  std::printf(\"%zu\\n\", edgecmg::read_engine_file(argv[1]).plan.size());\n}\n")
    engine = _genuine(tmp_path)
    for tools, built in ((None, False), ("ON", True)):
        build = tmp_path / f"build-{tools}"
        configure = [cmake, "-S", str(consumer), "-B", str(build)]
        configure += [f"-DEDGECMG_BUILD_TOOLS={tools}"] if tools else []
        for command in (configure, [cmake, "--build", str(build), "-j2"]):
            done = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
            assert done.returncode == 0, done.stdout + done.stderr
        done = subprocess.run([str(build / "app"), str(engine)], capture_output=True, text=True, timeout=TIMEOUT)
        assert done.returncode == 0 and done.stdout == "500\n", done.stdout + done.stderr
        # the checker: built only when asked for under another project
        assert (build / "edgecmg" / "edgecmg_engine_info").is_file() == built


def test_the_reader_hands_the_threshold_over_as_python_reads_it(engine_info, tmp_path):
    """A C++ application needs the verdict's threshold: EngineFile::threshold holds model.threshold
    (it had to parse header_json itself, with a JSON library of its own), to the last bit."""
    header = json.loads(json.dumps(models.ENGINE_HEADER))
    for value in (3.0787654321012345, 1e-7, 12345.678901234567):
        header["model"]["threshold"] = value
        path = _genuine(tmp_path, f"t{value}.engine", header=header)
        done = _info(engine_info, path)
        assert done.returncode == 0, done.stderr
        lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
        assert float(lines["threshold"]) == read_engine_header(path)["model"]["threshold"] == value


def test_the_header_compiles_after_iomanip(tmp_path):
    """<iomanip> declares std::quoted, which argument-dependent lookup found for the header's own
    unqualified quoted(std::string): a program including <iomanip> first did not compile."""
    compiler = _compiler()
    if compiler is None:
        pytest.skip("no C++ compiler")
    source = tmp_path / "iomanip_first.cpp"
    source.write_text('#include <iomanip>\n#include <iostream>\n#include "edgecmg_engine.hpp"\n'
                      "int main(int, char** argv) {\n"
                      "  std::cout << std::setprecision(17) << edgecmg::read_engine_file(argv[1]).threshold << '\\n';\n"
                      "}\n")
    for std in ("c++14", "c++17"):
        assert _compiles(compiler, [f"-std={std}", "-Wall", "-Wextra", "-Werror"], tmp_path, source), std
