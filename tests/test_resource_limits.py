"""Commands under a locked-down box's limits: a thread that cannot start (ulimit -u, a container's pids
limit), an address-space limit (ulimit -v), a file-size limit (ulimit -f, FAT32's 4 GB) and too few file
descriptors (ulimit -n) each ended in a traceback, or a message blaming the install, the disk, the
model file or every image in turn."""
import errno
import subprocess
import sys
from pathlib import Path

import pytest

from edgecmg.cli import main
from edgecmg.errors import BackendUnavailableError, no_thread, out_of_memory

EDGECMG = str(Path(sys.executable).parent / "edgecmg")


@pytest.mark.parametrize("exc", [MemoryError(), RuntimeError("[enforce fail at alloc_cpu.cpp:117] unable to mmap "
                                                              "90868376 bytes: Cannot allocate memory (12)"),
                                 ImportError("libtorch_cpu.so: failed to map segment from shared object")])
def test_what_an_address_space_limit_raises_reads_as_out_of_memory(exc):
    assert out_of_memory(exc) and not no_thread(exc)


def test_a_thread_that_cannot_start_is_named_with_what_to_do(small_artifact, kolektor_root, tmp_path, monkeypatch,
                                                             capsys):
    from edgecmg.detector import Detector

    assert no_thread(RuntimeError("can't start new thread")) and not no_thread(RuntimeError("shape mismatch"))

    def no_threads_left(*args, **kwargs):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(Detector, "load", no_threads_left)
    image = sorted((kolektor_root / "test" / "good").iterdir())[0]
    assert main(["-q", "predict", str(small_artifact), str(image), "--out", str(tmp_path / "out")]) == 2
    said = capsys.readouterr().err
    assert "edgecmg predict: error: a thread could not be started: the process limit (ulimit -u)" in said
    assert "OMP_NUM_THREADS=1" in said and "Traceback" not in said


def test_onnx_runtime_without_a_thread_is_not_called_a_broken_install(full_onnx, monkeypatch):
    import onnxruntime

    from edgecmg.runtime.onnx_runner import OnnxRunner

    def no_threads_left(*args, **kwargs):
        raise RuntimeError("env.cc:327 ThreadMain pthread_create failed, error code: 11")

    monkeypatch.setattr(onnxruntime, "InferenceSession", no_threads_left)
    runner = OnnxRunner(full_onnx)
    with pytest.raises(BackendUnavailableError, match=r"a thread could not be started.*backend='torch'") as refused:
        runner.activate()
    assert refused.value.install_hint == "" and "pip install" not in str(refused.value)


def test_a_sound_onnx_file_read_out_of_memory_is_not_called_damaged(full_onnx, monkeypatch):
    import onnx

    from edgecmg.export import read_onnx_header

    def out_of_room(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(onnx, "load", out_of_room)
    with pytest.raises(MemoryError):
        read_onnx_header(full_onnx)
    monkeypatch.undo()
    assert read_onnx_header(full_onnx)  # and it reads whole where there is room


def test_running_out_of_descriptors_stops_predict_instead_of_skipping_every_image(small_artifact, kolektor_root,
                                                                                  tmp_path, monkeypatch, capsys):
    from edgecmg import imageio

    def no_descriptor_left(*args, **kwargs):
        raise OSError(errno.EMFILE, "Too many open files", str(args[0]))

    monkeypatch.setattr(imageio.np, "fromfile", no_descriptor_left)
    images = sorted((kolektor_root / "test" / "good").iterdir())[:3]
    out = tmp_path / "out"
    assert main(["-q", "predict", str(small_artifact), *map(str, images), "--out", str(out),
                 "--backend", "torch"]) == 2
    said = capsys.readouterr().err
    assert f"edgecmg predict: error: too many open files ({images[0]}): this process may hold" in said
    assert "raise the limit, e.g. ulimit -n 1024" in said
    assert not (out / "skipped.jsonl").exists()  # not three images "unreadable"


@pytest.mark.skipif(sys.platform != "linux", reason="needs bash's ulimit -f")
def test_a_file_past_the_file_size_limit_is_named_as_such(small_artifact, kolektor_root, tmp_path):
    """Under ulimit -f the overlay PNGs are larger than the limit: 'File too large; choose a writable place'."""
    image = sorted((kolektor_root / "test" / "good").iterdir())[0]
    done = subprocess.run(["bash", "-c", 'ulimit -f 20; exec "$0" "$@"', EDGECMG, "-q", "predict",
                           str(small_artifact), str(image), "--out", str(tmp_path / "out"), "--backend", "torch"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "would pass this system's largest file size (the file-size limit, ulimit -f, or 4 GB on a FAT32" in \
        done.stderr, done.stderr
    assert "Traceback" not in done.stderr
