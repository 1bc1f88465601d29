"""The C++ engine-file reader (cpp/edgecmg_engine.hpp), built with CMake as a C++ deployment would,
against files written by edgecmg.engine_file.write_engine_file."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from edgecmg.engine_file import ENGINE_FORMAT_VERSION, read_engine_file, write_engine_file
from edgecmg.errors import ArtifactError

REPO = Path(__file__).resolve().parents[1]
HEADER = {"tensorrt": "10.3.0.26", "precision": "int8", "threshold": 1.25,
          # nested keys named like the payload entries must not confuse the reader's top-level lookup
          "model": {"engine": "not this one", "notes": ["}", {"scorer": "{"}], "quote": "a \"quoted\" } brace"}}
TIMEOUT = 20  # seconds: a reader that blocks (a named pipe) or crawls (many keys) fails instead of hanging


def _compiler() -> str | None:
    return shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")


@pytest.fixture(scope="module")
def cpp_build(tmp_path_factory) -> Path:
    """The README's command: no build type given (CMakeLists.txt makes it Release)."""
    cmake = shutil.which("cmake")
    if cmake is None or _compiler() is None:
        pytest.skip("cmake and a C++ compiler are needed to build the C++ reader")
    build = tmp_path_factory.mktemp("build-cpp")
    for command in ([cmake, "-S", str(REPO), "-B", str(build)], [cmake, "--build", str(build), "-j2"]):
        done = subprocess.run(command, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr  # -Wall -Wextra -Werror: warnings fail too
    return build


@pytest.fixture(scope="module")
def engine_info(cpp_build) -> Path:
    return cpp_build / "edgecmg_engine_info"


def _info(binary: Path, path: Path, **kwargs) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([str(binary), str(path)], capture_output=True, text=True, errors="backslashreplace",
                              timeout=TIMEOUT, **kwargs)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{binary} {path} ran for more than {TIMEOUT} s")


def _refused(binary: Path, path: Path, message: str, **kwargs) -> str:
    """stderr of a refusal: exit status 1, `message` and the file's path in it."""
    done = _info(binary, path, **kwargs)
    assert done.returncode == 1 and message in done.stderr and str(path) in done.stderr, (path.name, done.stderr)
    return done.stderr


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


def _consumer_project(folder: Path, target: str, main_source: str) -> Path:
    """A CMake project in ``folder`` that add_subdirectory()s the repository and links ``app`` (built
    from ``main_source``) to ``target``, as another project would."""
    folder.mkdir()
    (folder / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.16)\nproject(consumer LANGUAGES CXX)\n"
        f'add_subdirectory("{REPO.as_posix()}" edgecmg)\n'
        f"add_executable(app main.cpp)\ntarget_link_libraries(app PRIVATE {target})\n")
    (folder / "main.cpp").write_text(main_source)
    return folder


def test_cmake_defaults_to_release_and_keeps_werror_to_itself(cpp_build, tmp_path):
    # built on its own with no build type (the README's command): optimised
    assert "CMAKE_BUILD_TYPE:STRING=Release" in (cpp_build / "CMakeCache.txt").read_text()
    # under another project's add_subdirectory: neither its build type nor -Werror is imposed
    consumer = _consumer_project(tmp_path / "consumer", "edgecmg_engine", "#include <edgecmg_engine.hpp>\n"
                                 "int main(int, char** argv) { return edgecmg::read_engine_file(argv[1]).plan.empty(); }\n")
    done = subprocess.run([shutil.which("cmake"), "-S", str(consumer), "-B", str(tmp_path / "b")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "CMAKE_BUILD_TYPE:STRING=\n" in (tmp_path / "b" / "CMakeCache.txt").read_text()
    flags = (tmp_path / "b" / "edgecmg" / "CMakeFiles" / "edgecmg_engine_info.dir" / "flags.make").read_text()
    assert "-Wall" in flags and "-Werror" not in flags, flags


def _craft(path: Path, header_text: str, scorer: bytes = b"s", plan: bytes = b"plan",
           version: int = ENGINE_FORMAT_VERSION) -> Path:
    """An engine file with a hand-written header (no header checksum unless the text has one; the
    prefix's format_version added where the text is an object that lacks one)."""
    if header_text.startswith('{"') and '"format_version"' not in header_text:
        header_text = '{"format_version": %d, %s' % (version, header_text[1:])
    data = header_text.encode("utf-8", "surrogateescape")
    path.write_bytes(struct.pack("<8sIQ", b"EDGECMGE", version, len(data)) + data + scorer + plan)
    return path


def _entry(payload: bytes, size=None) -> str:
    return json.dumps({"bytes": len(payload) if size is None else size, "sha256": hashlib.sha256(payload).hexdigest()})


def _damaged(tmp_path: Path) -> dict[Path, str]:
    """Damaged engine files and what the refusal of each says."""
    data = write_engine_file(tmp_path / "m.engine", HEADER, b"\x01plan" * 1000, b"scorer").read_bytes()
    header_len = struct.unpack_from("<Q", data, 12)[0]
    files = {
        "flipped.engine": (data[:-1] + bytes([data[-1] ^ 1]), "engine payload checksum mismatch"),
        "scorer.engine": (data[:20 + header_len] + bytes([data[20 + header_len] ^ 1]) + data[21 + header_len:],
                          "scorer payload checksum mismatch"),
        "cut.engine": (data[:-10], "truncated engine payload (4990 of 5000 bytes)"),
        "trailing.engine": (data + b"x", "trailing bytes after the engine"),
        "plan.engine": (b"\x01plan" * 1000, "not an edgecmg engine file (bad magic): neither an .onnx export "
                                            "nor a bare TensorRT plan holds the model header"),
        "model.engine": (b"EDGECMG\0" + data[8:], "an edgecmg model file (.edgecmg), not an engine file: export it"),
        "newer.engine": (data[:8] + struct.pack("<I", ENGINE_FORMAT_VERSION + 1) + data[12:],
                         f"engine file format {ENGINE_FORMAT_VERSION + 1} is newer"),
        "short-header.engine": (data[:8 + 4 + 8 + 20], f"truncated inside the header (it claims {header_len} bytes"),
        "empty.engine": (b"", "is empty (0 bytes)"),
        "prefix-cut.engine": (data[:15], "truncated (15 bytes)"),
        "edited.engine": (data.replace(b'"threshold": 1.25', b'"threshold": 9.25'), "header checksum mismatch"),
        "version2.engine": (data[:8] + struct.pack("<I", 2) + data[12:],
                            "the header's 'format_version' is 3 but the file's prefix says 2"),
    }
    out = {}
    for name, (content, message) in files.items():
        (tmp_path / name).write_bytes(content)
        out[tmp_path / name] = message
    s, p = _entry(b"s"), _entry(b"plan")
    crafted = {
        "no-entry.engine": ('{"engine": %s}' % p, "header has no 'scorer' entry", b"s"),
        "not-object.engine": ("[1, 2]", "is not a JSON object", b"s"),
        "cut-json.engine": ('{"engine": %s, "scorer": {"bytes": 1' % p, "is not a JSON object", b"s"),
        "twice.engine": ('{"engine": %s, "scorer": %s, "engine": %s}' % (p, s, p), "key 'engine' appears twice", b"s"),
        # the same key spelt with a JSON escape: Python's json reads both as "engine"
        "twice-escaped.engine": ('{"engine": %s, "scorer": %s, "\\u0065ngine": %s}' % (p, s, p),
                                 "key 'engine' appears twice", b"s"),
        "no-bytes.engine": ('{"engine": %s, "scorer": {"sha256": "x"}}' % p, "'scorer' entry has no 'bytes'", b"s"),
        "no-sha.engine": ('{"engine": %s, "scorer": {"bytes": 1}}' % p, "'scorer' entry has no 'sha256'", b"s"),
        "sha-number.engine": ('{"engine": %s, "scorer": {"bytes": 1, "sha256": 12}}' % p,
                              "'sha256' is '12', not a string", b"s"),
    }
    for size in ("-1", "0.9", "1e0", "abc", "true", '"1"', "18446744073709551616", "99999999999999999999999"):
        crafted[f"bytes{size}.engine"] = ('{"engine": %s, "scorer": {"bytes": %s, "sha256": "x"}}' % (p, size),
                                          "is not a byte count", b"s")
    # a size of 19 or 20 digits that fits in 64 bits is a size (the file is too short for it)
    for size in ("9999999999999999999", "18446744073709551615"):
        crafted[f"bytes{size}.engine"] = ('{"engine": %s, "scorer": {"bytes": %s, "sha256": "x"}}' % (p, size),
                                          f"truncated scorer payload (5 of {size} bytes)", b"s")
    # format 2, without a header checksum: refused as older than the checksum, but after these checks
    for name, (text, message, scorer) in crafted.items():
        out[_craft(tmp_path / name, text, scorer=scorer, version=2)] = message
    return out


def test_refuses_damaged_files(engine_info, tmp_path):
    for path, message in _damaged(tmp_path).items():
        _refused(engine_info, path, message)
    _refused(engine_info, tmp_path / "missing.engine", "no such engine file")


def test_unsealed_header_by_format(engine_info, tmp_path):
    """A header without a checksum: a file from before it (format 2) is refused as too old (rebuild it),
    a current one as damaged (as the Python reader refuses them)."""
    s, p = _entry(b"s"), _entry(b"plan")
    _refused(engine_info, _craft(tmp_path / "old.engine", '{"engine": %s, "scorer": %s}' % (p, s), version=2),
             "engine file format 2 is older than the oldest this reader accepts")
    _refused(engine_info, _craft(tmp_path / "unsealed.engine", '{"engine": %s, "scorer": %s}' % (p, s)),
             "the header has no 'header_sha256', which every format-3 engine carries")


def _with_prefix_version(data: bytes, version: int) -> bytes:
    return data[:8] + struct.pack("<I", version) + data[12:]


def _without_header_sha(data: bytes, **edits) -> bytes:
    """`data` with the header's own checksum taken out and `edits` made to the header."""
    header_len = struct.unpack_from("<Q", data, 12)[0]
    header = json.loads(data[20:20 + header_len])
    del header["header_sha256"]
    header.update(edits)
    text = json.dumps(header, sort_keys=True).encode()
    return data[:12] + struct.pack("<Q", len(text)) + text + data[20 + header_len:]


def test_prefix_version_must_match_the_header(engine_info, tmp_path):
    """The prefix's version is outside every checksum: set to 2 with "header_sha256" deleted, a format-3
    file would pass as one from before the checksum, with any threshold. The header's format_version,
    which Python compares with it, gives it away."""
    data = write_engine_file(tmp_path / "m.engine", HEADER, b"plan", b"s").read_bytes()
    cases = {
        "sealed.engine": (_with_prefix_version(data, 2), 2),
        "forged.engine": (_with_prefix_version(_without_header_sha(data, threshold=1e9), 2), 2),
        "zero.engine": (_with_prefix_version(data, 0), 0),
        "one.engine": (_with_prefix_version(_without_header_sha(data), 1), 1),
    }
    for name, (content, version) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        _refused(engine_info, path, f"the header's 'format_version' is 3 but the file's prefix says {version}")
        with pytest.raises(ArtifactError, match=f"prefix says {version}"):  # as the reference reader
            read_engine_file(path)
    s, p = _entry(b"s"), _entry(b"plan")
    _refused(engine_info, _craft(tmp_path / "none.engine", '{"format_version": null, "engine": %s, "scorer": %s}'
                                 % (p, s), version=2), "the header's 'format_version' is 'null', not an integer")
    path = _craft(tmp_path / "absent.engine", '{ "engine": %s, "scorer": %s}' % (p, s), version=2)  # none added
    _refused(engine_info, path, "the header has no 'format_version' (the prefix says 2)")
    # a format-2 file whose header says 2: from before the header checksum, refused as too old
    _refused(engine_info, _craft(tmp_path / "two.engine", '{"engine": %s, "scorer": %s}' % (p, s), version=2),
             "engine file format 2 is older than the oldest this reader accepts")


def test_refuses_what_is_not_a_regular_file(engine_info, tmp_path):
    (tmp_path / "adir.engine").mkdir()
    _refused(engine_info, tmp_path / "adir.engine", "is a directory")
    (tmp_path / "loop.engine").symlink_to("loop.engine")
    _refused(engine_info, tmp_path / "loop.engine", os.strerror(errno.ELOOP))
    if hasattr(os, "mkfifo"):  # opening a named pipe blocks until a writer comes: the reader must not open it
        os.mkfifo(tmp_path / "fifo.engine")
        started = time.monotonic()
        _refused(engine_info, tmp_path / "fifo.engine", "is not a regular file")
        assert time.monotonic() - started < 5


def test_unreadable_file_says_why(engine_info, tmp_path):
    path = write_engine_file(tmp_path / "m.engine", HEADER, b"plan", b"s")
    if os.geteuid() != 0:
        path.chmod(0)
        _refused(engine_info, path, os.strerror(errno.EACCES))
        return
    # root reads any file: run the reader as nobody, from a folder nobody can enter
    folder = Path(tempfile.mkdtemp(prefix="edgecmg-cpp-"))
    try:
        folder.chmod(0o755)
        binary = Path(shutil.copy(engine_info, folder / "edgecmg_engine_info"))
        unreadable = Path(shutil.copy(path, folder / "m.engine"))
        unreadable.chmod(0)
        try:
            done = subprocess.run([str(binary), str(unreadable)], capture_output=True, text=True, timeout=TIMEOUT,
                                  user=65534, group=65534, extra_groups=[])
        except (OSError, subprocess.SubprocessError) as exc:
            pytest.skip(f"cannot run the reader as an unprivileged user here: {exc}")
        assert done.returncode == 1 and os.strerror(errno.EACCES) in done.stderr and str(unreadable) in done.stderr, done.stderr
    finally:
        shutil.rmtree(folder)


def test_many_keys_are_fast(engine_info, tmp_path):
    """40,000 top-level keys (a 600 KB header): linear-ish, not the seconds a pairwise repeated-key check
    takes."""
    header = dict(HEADER, **{f"k{i}": i for i in range(40_000)})
    path = write_engine_file(tmp_path / "keys.engine", header, b"plan", b"s")
    started = time.monotonic()
    done = _info(engine_info, path)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert elapsed < 1.0, elapsed


def test_huge_header_length_is_refused_before_allocating(engine_info, tmp_path):
    """A damaged header length within a (sparse) 1 TiB file: refused by the header cap, not by an
    allocation of the whole file."""
    data = write_engine_file(tmp_path / "m.engine", HEADER, b"plan", b"s").read_bytes()
    path = tmp_path / "sparse.engine"
    path.write_bytes(data[:12] + struct.pack("<Q", 1 << 40) + data[20:])
    try:
        os.truncate(path, (1 << 40) + 20)
    except OSError as exc:
        pytest.skip(f"no sparse 1 TiB file here: {exc}")
    _refused(engine_info, path, f"the prefix gives a {1 << 40}-byte header, more than the {16 << 20}")


def test_out_of_memory_names_the_file(engine_info, tmp_path):
    """A plan larger than the memory the process may take: std::bad_alloc, reported with the path."""
    if sys.platform != "linux":
        pytest.skip("RLIMIT_AS as Linux applies it")
    path = write_engine_file(tmp_path / "big.engine", HEADER, bytes(128 << 20), b"s")

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (64 << 20, 64 << 20))

    _refused(engine_info, path, "out of memory", preexec_fn=limit_memory)


def test_file_content_in_messages_is_escaped_and_cut(engine_info, tmp_path):
    """Bytes of the file quoted in a message come out escaped (no terminal escape sequences, no
    non-ASCII) and cut to about 80 characters (no 1 MB message)."""
    s, p = _entry(b"s"), _entry(b"plan")
    key = "\x1bc\x07\udc9b2J\udcff" + "A" * 1_000_000  # ESC c: terminal reset; 0x9b: CSI
    cases = {
        _craft(tmp_path / "key.engine", '{"engine": %s, "scorer": %s, "%s": 1, "%s": 2}' % (p, s, key, key)):
            "appears twice",
        _craft(tmp_path / "size.engine", '{"engine": %s, "scorer": {"bytes": 1%s, "sha256": "x"}}' % (p, key)):
            "is not a byte count",
    }
    for path, message in cases.items():
        done = subprocess.run([str(engine_info), str(path)], capture_output=True, timeout=TIMEOUT)
        err = done.stderr.decode("ascii", "backslashreplace")
        assert done.returncode == 1 and message in err and str(path) in err, err[:300]
        assert len(done.stderr) < 400 + len(str(path)), len(done.stderr)
        assert all(0x20 <= b < 0x7f for b in done.stderr.rstrip(b"\n")), done.stderr[:300]
        assert "\\x1bc\\x07\\x9b2J\\xffAAA" in err and "bytes in all" in err, err


def _preload_shim(tmp_path: Path) -> Path | None:
    """A read() that fails with EIO, or ends the file, after SHIM_READ_LIMIT bytes (SHIM_READ_MODE eio or
    eof), to be loaded with LD_PRELOAD."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if sys.platform != "linux" or cc is None:
        return None
    source = tmp_path / "shim.c"
    source.write_text(r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static long long done;
ssize_t read(int fd, void* buf, size_t n) {
    static ssize_t (*next)(int, void*, size_t);
    if (!next) next = (ssize_t (*)(int, void*, size_t))dlsym(RTLD_NEXT, "read");
    const char* limit = getenv("SHIM_READ_LIMIT");
    const char* mode = getenv("SHIM_READ_MODE");
    if (fd <= 2 || !limit || !mode) return next(fd, buf, n);
    if (done >= atoll(limit)) {
        if (strcmp(mode, "eio") == 0) { errno = EIO; return -1; }
        return 0;
    }
    if ((long long)n > atoll(limit) - done) n = (size_t)(atoll(limit) - done);
    ssize_t got = next(fd, buf, n);
    if (got > 0) done += got;
    return got;
}
""")
    shim = tmp_path / "shim.so"
    done = subprocess.run([cc, "-shared", "-fPIC", "-o", str(shim), str(source), "-ldl"], capture_output=True)
    return shim if done.returncode == 0 else None


def test_read_errors_are_not_reported_as_damage(engine_info, tmp_path):
    shim = _preload_shim(tmp_path)
    if shim is None:
        pytest.skip("needs Linux and a C compiler for an LD_PRELOAD read() shim")
    path = write_engine_file(tmp_path / "m.engine", HEADER, b"\x01plan" * 20000, b"scorer")
    header_len = struct.unpack_from("<Q", path.read_bytes(), 12)[0]
    for limit, part in ((20 + header_len // 2, "the header"), (20 + header_len + 6 + 50000, "the engine payload")):
        env = dict(os.environ, LD_PRELOAD=str(shim), SHIM_READ_LIMIT=str(limit))
        _refused(engine_info, path, f"read error in {part}: {os.strerror(errno.EIO)}", env=dict(env, SHIM_READ_MODE="eio"))
        # the file shrank after its size was taken
        _refused(engine_info, path, "the file was cut while being read", env=dict(env, SHIM_READ_MODE="eof"))


def _compiles(compiler: str, flags: list[str], tmp_path: Path, source: Path, out: Path | None = None) -> bool:
    command = [compiler, *flags, "-I", str(REPO / "cpp"), str(source)]
    command += ["-o", str(out)] if out else ["-fsyntax-only"]
    return subprocess.run(command, capture_output=True, cwd=tmp_path).returncode == 0


def test_header_compiles_as_cxx14_to_23(tmp_path):
    compiler = _compiler()
    if compiler is None:
        pytest.skip("no C++ compiler")
    empty = tmp_path / "empty.cpp"
    empty.write_text("int main() { return 0; }\n")
    tried = []
    for std in ("c++14", "c++17", "c++20", "c++23"):
        if not _compiles(compiler, [f"-std={std}"], tmp_path, empty):
            continue  # a compiler too old for this standard
        tried.append(std)
        flags = [f"-std={std}", "-Wall", "-Wextra", "-Wpedantic", "-Werror"]
        done = subprocess.run([compiler, *flags, "-fsyntax-only", "-I", str(REPO / "cpp"),
                               str(REPO / "cpp" / "engine_info.cpp")], capture_output=True, text=True)
        assert done.returncode == 0, (std, done.stderr)
    assert "c++14" in tried


def test_damaged_files_under_sanitizers(tmp_path):
    """The damaged files through a build with AddressSanitizer and UndefinedBehaviorSanitizer."""
    compiler = _compiler()
    if compiler is None:
        pytest.skip("no C++ compiler")
    binary = tmp_path / "engine_info_asan"
    flags = ["-std=c++14", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
    if not _compiles(compiler, flags, tmp_path, REPO / "cpp" / "engine_info.cpp", binary):
        pytest.skip("the compiler cannot build with -fsanitize=address,undefined")
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1", UBSAN_OPTIONS="print_stacktrace=1")
    files = tmp_path / "files"
    files.mkdir()
    for path, message in _damaged(files).items():
        stderr = _refused(binary, path, message, env=env)
        assert "Sanitizer" not in stderr and "runtime error" not in stderr, stderr
    done = _info(binary, write_engine_file(files / "ok.engine", HEADER, b"plan" * 100, b"s"), env=env)
    assert done.returncode == 0 and "Sanitizer" not in done.stderr, done.stderr
