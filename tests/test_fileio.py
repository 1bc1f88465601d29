"""Atomic writes: whole files only, whoever else writes the same name, and nothing left behind."""
from __future__ import annotations

import errno
import os
import threading

import pytest

from edgecmg.errors import OutputError
from edgecmg.fileio import atomic_path, atomic_write_bytes, check_writable


def test_concurrent_writers_of_one_file_leave_a_whole_file_and_no_temporaries(tmp_path):
    """Two processes exporting one cache entry once collided on a shared '.tmp' name ('No such file'
    and half-read files); every writer now has a name of its own."""
    target = tmp_path / "entry.onnx"
    contents = [bytes([value]) * 200_000 for value in (1, 2, 3, 4)]
    errors, reads = [], []

    def writer(data):
        try:
            for _ in range(25):
                atomic_write_bytes(target, data, sync=False)
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    def reader():
        for _ in range(200):
            if target.exists():
                reads.append(target.read_bytes())

    threads = [threading.Thread(target=writer, args=(data,)) for data in contents] + [threading.Thread(target=reader)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert all(data in contents for data in reads) and target.read_bytes() in contents
    assert [p.name for p in tmp_path.iterdir()] == ["entry.onnx"]


def test_an_interrupted_or_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "part.edgecmg"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    with pytest.raises(OutputError, match=rf"cannot write the model file {target}: the disk is full"):
        with atomic_path(target, what="the model file") as tmp:
            tmp.write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["part.edgecmg"]


def test_check_writable_names_the_place_and_leaves_nothing(tmp_path):
    check_writable(tmp_path / "new" / "part.edgecmg")
    assert list((tmp_path / "new").iterdir()) == []
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(OutputError, match=f"cannot write the engine {blocker / 'm.engine'}: {blocker} is a file, "
                       "not a folder"):
        check_writable(blocker / "m.engine", what="the engine")


def test_sync_writes_the_data_to_the_disk_before_the_rename(tmp_path, monkeypatch):
    """A power cut after the rename must not leave an empty model file: the data is fsynced first
    (sync=False, for files that are cheap to rebuild, skips it)."""
    import os

    real_fsync, synced = os.fsync, []

    def fsync(fd):
        synced.append(os.fstat(fd).st_size)  # the temporary file, whole, before it is renamed
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    atomic_write_bytes(tmp_path / "part.edgecmg", b"x" * 10)
    assert synced == [10]
    atomic_write_bytes(tmp_path / "cache.json", b"y", sync=False)
    assert synced == [10]


def test_same_file_knows_a_file_by_any_name_and_an_output_by_its_path(tmp_path, monkeypatch):
    from edgecmg.fileio import same_file

    real = tmp_path / "a.json"
    real.write_text("{}")
    (tmp_path / "link.json").symlink_to(real)
    os.link(real, tmp_path / "hard.json")
    monkeypatch.chdir(tmp_path)
    assert same_file(real, "link.json") and same_file("hard.json", real) and same_file("./a.json", real)
    assert same_file("new.json", tmp_path / "sub" / ".." / "new.json")  # neither written yet: by path
    assert not same_file("new.json", real) and not same_file("0", "rtsp://host/live")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert not same_file("loop/x", real) and not same_file("a\0b", real)


def test_model_file_suffixes_hold_every_suffix_edgecmg_loads():
    """stream's output-name check and imageio's message know model files by MODEL_FILE_SUFFIXES alone."""
    from edgecmg.fileio import MODEL_FILE_SUFFIXES
    from edgecmg.runtime.registry import KNOWN_SUFFIXES

    assert set(KNOWN_SUFFIXES) <= set(MODEL_FILE_SUFFIXES)
