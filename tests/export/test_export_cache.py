"""The cache of ONNX exports behind an .edgecmg file opened on ONNX Runtime (edgecmg.export_cache):
reuse, keys, pruning, concurrency and a cache that cannot be written."""
from __future__ import annotations

import os
import time

import onnx
import pytest

import edgecmg_testmodels as models
from edgecmg.config import ExportConfig
from edgecmg.export import read_onnx_header
from edgecmg.export_cache import cached_onnx

pytest.importorskip("onnxruntime")


def test_cached_export_is_reused_and_keyed_by_artifact(tmp_path, artifact_path, monkeypatch):
    monkeypatch.setenv("EDGECMG_CACHE_DIR", str(tmp_path / "cache"))
    first, header = cached_onnx(artifact_path)
    assert header == read_onnx_header(first)  # returned checked, so the runner need not read it again
    inode = first.stat().st_ino  # an export again would write a new file (by rename)
    assert cached_onnx(artifact_path) == (first, header) and first.stat().st_ino == inode
    assert cached_onnx(artifact_path, ExportConfig(with_scoring=True))[0] != first
    assert len(list(first.parent.glob("*.onnx"))) == 2
    assert read_onnx_header(first)["export"]["artifact_sha256"][:12] in first.name
    models.damage_largest_weight(first, first)  # a damaged cache entry is exported again, not used
    assert read_onnx_header(cached_onnx(artifact_path)[0])["export"]["graph"] == "featurizer"
    # an entry from before graph checksums is exported again too, and comes back sealed
    from edgecmg.export import GRAPH_SHA_KEY, metadata_props

    proto = onnx.load(str(first))
    kept = [p for p in proto.metadata_props if p.key != GRAPH_SHA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    onnx.save(proto, str(first))
    assert GRAPH_SHA_KEY in metadata_props(cached_onnx(artifact_path)[0])


def test_an_entry_an_older_edgecmg_exported_is_exported_again(tmp_path, artifact_path, monkeypatch, caplog):
    """A new edgecmg that exports another graph does not run the export an older one cached (the
    version, 0.1.0 throughout, did not tell them apart: a fixed constant never reached a cached
    export); an entry with the graph's checksum but not the header's warned on every run that its
    header could not be checked, and stayed."""
    import logging

    import edgecmg.export_cache as export_cache
    from edgecmg.export import GRAPH_SHA_KEY, HEADER_SHA_KEY, metadata_props

    monkeypatch.setenv("EDGECMG_CACHE_DIR", str(tmp_path / "cache"))
    first = cached_onnx(artifact_path)[0]
    proto = onnx.load(str(first))
    kept = [p for p in proto.metadata_props if p.key != HEADER_SHA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    onnx.save(proto, str(first))
    with caplog.at_level(logging.INFO, logger="edgecmg"):
        again = cached_onnx(artifact_path)[0]
    assert again == first and {GRAPH_SHA_KEY, HEADER_SHA_KEY} <= set(metadata_props(again))
    assert "is stale; exporting again" in caplog.text and "cannot be checked" not in caplog.text
    monkeypatch.setattr(export_cache, "EXPORT_REVISION", export_cache.EXPORT_REVISION + 1)
    newer = cached_onnx(artifact_path)[0]
    assert newer != first and newer.is_file()


def test_cached_exports_unused_for_30_days_are_removed_when_another_is_written(tmp_path, artifact_path, caplog):
    """Each export is 10 to 25 MB and a model refitted every week exports again: without pruning the
    cache grew for ever. Use marks an entry (its modification time); a new export removes the stale ones."""
    import logging

    cache = tmp_path / "cache"
    used, _ = cached_onnx(artifact_path, directory=cache)
    stale = cache / "old-0123456789ab-featurizer-0123456789ab.onnx"
    stale.write_bytes(b"an export of a model refitted since")
    mine = cache / "part.onnx"  # not named as the cache names its exports: a file of the user's own
    mine.write_bytes(b"an export of the user's")
    month_ago = time.time() - 31 * 86400
    for path in (used, stale, mine):
        os.utime(path, (month_ago, month_ago))
    assert cached_onnx(artifact_path, directory=cache)[0] == used and used.stat().st_mtime > month_ago + 86400
    with caplog.at_level(logging.INFO, logger="edgecmg"):
        cached_onnx(artifact_path, ExportConfig(with_scoring=True), directory=cache)  # a new export prunes
    assert used.exists() and mine.exists() and not stale.exists()
    assert f"removed 1 cached export(s) unused for 30 days from {cache}" in caplog.text


def test_a_cached_export_killed_mid_write_leaves_nothing_behind_past_an_hour(tmp_path, artifact_path, caplog):
    """An export killed before its rename (a watchdog, a power cut) leaves a hidden full-size .tmp file
    beside the cache's entries; the next export removes such leftovers once nothing can still be
    writing them, and leaves a fresh one (an export running in another process) and other files alone."""
    import logging

    cache = tmp_path / "cache"
    used, _ = cached_onnx(artifact_path, directory=cache)
    old = time.time() - 2 * 3600
    killed = cache / f".{used.name}.4242-140234-0badc0de.tmp"
    probe = cache / f".{used.name}.4242-0badc0de.probe"
    running = cache / f".{used.name}.4343-140235-1badc0de.tmp"
    mine = cache / ".notes.onnx.4242-140234-0badc0de.tmp"  # not a cache entry's name
    for path in (killed, probe, running, mine):
        path.write_bytes(b"half an export")
    for path in (killed, probe, mine):
        os.utime(path, (old, old))
    with caplog.at_level(logging.INFO, logger="edgecmg"):
        cached_onnx(artifact_path, ExportConfig(with_scoring=True), directory=cache)
    assert not killed.exists() and not probe.exists()
    assert running.exists() and mine.exists() and used.exists()
    assert f"removed 2 unfinished export(s) left by a stopped process from {cache}" in caplog.text


def test_one_model_under_two_names_is_exported_once(tmp_path, artifact_path):
    """A model copied per line (line3.edgecmg, line4.edgecmg) is one set of bytes: the second name is
    served the first name's export instead of another 10 to 25 MB and its seconds of export."""
    import shutil

    copy = tmp_path / "line4.edgecmg"
    shutil.copy(artifact_path, copy)
    cache = tmp_path / "cache"
    first, _ = cached_onnx(artifact_path, directory=cache)
    second, header = cached_onnx(copy, directory=cache)
    assert second == first and len(list(cache.glob("*.onnx"))) == 1
    assert header["export"]["artifact_sha256"] == read_onnx_header(first)["export"]["artifact_sha256"]


def test_cached_exports_with_and_without_a_dynamic_batch_are_two_entries(tmp_path, artifact_path):
    """A fixed-batch export must not be served the dynamic one (or the other way round) from the cache."""
    dynamic, _ = cached_onnx(artifact_path, directory=tmp_path / "cache")
    # only dynamic_batch differs: the fixed batch is the default's 1
    fixed, _ = cached_onnx(artifact_path, ExportConfig(dynamic_batch=False), directory=tmp_path / "cache")
    assert fixed != dynamic and len(list((tmp_path / "cache").glob("*.onnx"))) == 2

    def batch_dim(path):
        return onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]

    assert batch_dim(dynamic).dim_param and batch_dim(fixed).dim_value == 1


def test_a_file_replaced_during_a_cached_export_never_puts_one_model_under_the_others_key(tmp_path, artifact_path,
                                                                                         monkeypatch):
    """The key's hash and the exported model come from one read: a rollback that replaced the file
    between the two once left model B's graph and threshold under model A's key, used ever after."""
    import shutil

    from edgecmg import artifact

    live, other = tmp_path / "live.edgecmg", tmp_path / "other.edgecmg"
    shutil.copy(artifact_path, live)
    model, header = artifact.load(artifact_path)
    artifact.save_with_threshold(artifact_path, other, header["threshold"] + 5.0, {"by": "test"})
    real_read_file = artifact.read_file

    def read_then_swap(path):
        result = real_read_file(path)
        os.replace(other, live)  # the file changes right after it was read
        return result

    monkeypatch.setattr(artifact, "read_file", read_then_swap)
    path, onnx_header = cached_onnx(live, directory=tmp_path / "cache")
    assert onnx_header["threshold"] == header["threshold"]  # the bytes that were hashed, not the new file
    assert onnx_header["export"]["artifact_sha256"] == real_read_file(artifact_path)[1]


def test_threads_opening_one_model_export_it_once(tmp_path, artifact_path, monkeypatch):
    """torch.onnx.export is not thread-safe: two threads once failed with 'GLOBALS.in_onnx_export must
    be True'."""
    from concurrent.futures import ThreadPoolExecutor

    import edgecmg.export_cache as export_cache

    exports = []
    real_export_model = export_cache.export_model
    monkeypatch.setattr(export_cache, "export_model", lambda *a, **k: exports.append(1) or real_export_model(*a, **k))
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: cached_onnx(artifact_path, directory=tmp_path / "cache"), range(3)))
    assert len({path for path, _ in results}) == 1 and len(exports) == 1


def test_a_full_disk_under_the_cache_falls_back_to_torch(tmp_path, artifact_path, monkeypatch, caplog):
    """As a read-only cache does: the auto backend goes on with torch, and says why."""
    import errno

    from edgecmg.detector import Detector
    from edgecmg.errors import BackendUnavailableError

    def disk_full(model, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setenv("EDGECMG_CACHE_DIR", str(tmp_path / "cache"))
    # what filled it: the leftover of an export killed two hours ago, and an entry unused for a month
    folder = tmp_path / "cache" / "onnx"
    folder.mkdir(parents=True)
    stale = folder / "old-0123456789ab-full-0123456789ab.onnx"
    leftover = folder / f".{stale.name}.4242-140234-0badc0de.tmp"
    for path, days in ((stale, 31), (leftover, 2 / 24)):
        path.write_bytes(b"20 MB, once")
        _age(path, days)
    monkeypatch.setattr(onnx, "save", disk_full)
    with pytest.raises(BackendUnavailableError, match="the disk is full.*EDGECMG_CACHE_DIR"):
        cached_onnx(artifact_path)
    with Detector.load(artifact_path) as detector:
        assert detector.backend == "torch"
    assert "the disk is full" in caplog.text
    # pruned before the export that failed, so the next one finds the room (they stayed for good before)
    assert not stale.exists() and not leftover.exists()


def _age(path, days: float) -> None:
    then = time.time() - days * 86400
    os.utime(path, (then, then))


def test_pruning_goes_by_30_days_takes_both_graphs_and_leaves_other_names_and_folders_alone(tmp_path, artifact_path):
    """Stale entries of both graphs go; an entry used 29 days ago stays, and so does the unfinished file
    of an export that started 30 minutes ago (still running, in another process); a user's own model whose name
    looks like an entry's but with short parts (resnet-2024-full-01.onnx), a backup copy of an entry
    (.onnx.bak) and a folder named like an entry stay, and that folder (which cannot be unlinked)
    neither fails the export nor stops the pruning of the entries after it."""
    cache = tmp_path / "cache"
    cache.mkdir()
    stale = [cache / f"old{i:02d}-0123456789ab-{'full' if i % 2 else 'featurizer'}-{i:012x}.onnx" for i in range(20)]
    recent = cache / "week-0123456789ab-featurizer-fedcba987654.onnx"
    users = cache / "resnet-2024-full-01.onnx"
    backup = cache / "old00-0123456789ab-full-000000000000.onnx.bak"
    for path in (*stale, recent, users, backup):
        path.write_bytes(b"an export")
    folders = [cache / f"dir{i}-0123456789ab-full-abcdefabcdef.onnx" for i in range(2)]
    for folder in folders:
        folder.mkdir()
    for path in (*stale, users, backup, *folders):
        _age(path, 31)
    _age(recent, 29)
    unfinished = cache / f".{recent.name}.4242-140234-0badc0de.tmp"  # an export in another process, 30 min in
    unfinished.write_bytes(b"half an export")
    _age(unfinished, 30 / (24 * 60))

    written, _ = cached_onnx(artifact_path, directory=cache)  # a new entry: the cache is pruned

    assert written.exists()
    assert [path.name for path in stale if path.exists()] == []
    assert recent.exists() and users.exists() and backup.exists() and unfinished.exists()
    assert all(folder.is_dir() for folder in folders)


_EXPORT_ONCE_CHILD = """
import sys
import edgecmg.export_cache as export_cache
real_export_model = export_cache.export_model
def counted(*args, **kwargs):
    print("EXPORTED", flush=True)
    return real_export_model(*args, **kwargs)
export_cache.export_model = counted
path, _ = export_cache.cached_onnx(sys.argv[1], directory=sys.argv[2])
print("PATH", path, flush=True)
"""


def test_processes_sharing_an_empty_cache_export_a_model_once(tmp_path, artifact_path):
    """Workers of a prefork server or a multiprocessing pool, started together on an empty cache, each
    exported the model (seconds of every core each, three times over): one exports, the others wait
    for its lock and find the entry."""
    import subprocess
    import sys

    script = tmp_path / "child.py"
    script.write_text(_EXPORT_ONCE_CHILD)
    cache = tmp_path / "cache"
    children = [subprocess.Popen([sys.executable, str(script), str(artifact_path), str(cache)], cwd=tmp_path,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [child.communicate(timeout=300) for child in children]
    assert [child.returncode for child in children] == [0, 0, 0], [err[-2000:] for _, err in outputs]
    printed = "".join(out for out, _ in outputs)
    assert printed.count("EXPORTED") == 1, printed
    assert len({line for line in printed.splitlines() if line.startswith("PATH ")}) == 1, printed


def test_a_cached_model_never_waits_for_another_processs_export(tmp_path, artifact_path, monkeypatch, caplog):
    """The lock is for exporting: a worker whose model is cached goes on while another process holds
    it for an export of its own, and one whose model is not waits at most EXPORT_WAIT_S, then exports."""
    import fcntl

    import edgecmg.export_cache as export_cache

    cache = tmp_path / "cache"
    cached_onnx(artifact_path, directory=cache)
    monkeypatch.setattr(export_cache, "EXPORT_WAIT_S", 1.0)
    holder = os.open(cache, os.O_RDONLY)  # another open file: conflicts as another process's would
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        started = time.monotonic()
        with caplog.at_level("INFO", logger="edgecmg"):
            path, _ = cached_onnx(artifact_path, directory=cache)
        assert time.monotonic() - started < 0.9 and "waiting" not in caplog.text
        caplog.clear()
        with caplog.at_level("INFO", logger="edgecmg"):
            other, _ = cached_onnx(artifact_path, ExportConfig(dynamic_batch=False, batch=1), directory=cache)
        assert other != path and other.is_file()
        assert "waiting for another process's export in" in caplog.text
        assert "has held the export cache" in caplog.text and "exporting without waiting" in caplog.text
    finally:
        os.close(holder)


def test_a_child_forked_during_an_export_does_not_keep_the_cache_locked(tmp_path):
    import fcntl

    import edgecmg.export_cache as export_cache

    cache = tmp_path / "cache"
    cache.mkdir()
    started, running = os.pipe()
    with export_cache._one_export_at_a_time(cache):
        child = os.fork()
        if child == 0:  # a forked worker living on after the parent's export ended
            os.write(running, b"1")  # fork's handlers have run by the time fork returns here
            time.sleep(3)
            os._exit(0)
    os.read(started, 1)
    try:
        probe = os.open(cache, os.O_RDONLY)
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError while the child held it
        finally:
            os.close(probe)
    finally:
        os.waitpid(child, 0)
        os.close(started)
        os.close(running)


def test_a_child_forked_while_another_thread_exports_can_export(tmp_path):
    """The in-process export lock held by a parent's thread (an export under way) is free in a child
    forked meanwhile: taken over, the child's first model load waited forever."""
    import threading

    import edgecmg.export as export

    taken, release = threading.Event(), threading.Event()

    def exporting():  # stands in for a thread inside cached_onnx's export
        with export._EXPORT_LOCK:
            taken.set()
            release.wait(30)

    thread = threading.Thread(target=exporting)
    thread.start()
    try:
        assert taken.wait(30)
        answer_read, answer_write = os.pipe()
        child = os.fork()
        if child == 0:
            got = export._EXPORT_LOCK.acquire(timeout=5)
            os.write(answer_write, b"1" if got else b"0")
            os._exit(0)
        os.close(answer_write)
        try:
            assert os.read(answer_read, 1) == b"1"
        finally:
            os.waitpid(child, 0)
            os.close(answer_read)
    finally:
        release.set()
        thread.join()


def test_a_fork_waits_for_a_torch_export_under_way(tmp_path, monkeypatch):
    """torch.onnx.export leaves process-wide state half-set while it runs (its "in an export" flag): a
    child forked then failed every export of its own. A fork now waits until the export is done."""
    import threading

    import torch

    import edgecmg.export as export

    started, finished = threading.Event(), []

    def slow_export(*args, **kwargs):  # stands in for torch's export: seconds inside, state half-set
        started.set()
        time.sleep(1.0)
        finished.append(True)

    monkeypatch.setattr(torch.onnx, "export", slow_export)
    thread = threading.Thread(target=export._torch_export,
                              args=(torch.nn.Identity(), (torch.zeros(1),), tmp_path / "x.onnx", ["a"], ["b"], None, 17))
    thread.start()
    try:
        assert started.wait(30)
        answer_read, answer_write = os.pipe()
        child = os.fork()  # from this thread, while the other one is inside the export
        if child == 0:
            # from a thread of the child's own (a worker pool that exports): the forking thread alone would
            # get the re-entrant lock the fork took even if the child kept it
            got = []
            taker = threading.Thread(target=lambda: got.append(export._TORCH_EXPORT_RUNNING.acquire(timeout=5)
                                                               and export._EXPORT_LOCK.acquire(timeout=5)))
            taker.start()
            taker.join()
            os.write(answer_write, b"1" if finished and got == [True] else b"0")
            os._exit(0)
        os.close(answer_write)
        try:
            assert os.read(answer_read, 1) == b"1"  # forked after the export ended, with free locks
        finally:
            os.waitpid(child, 0)
            os.close(answer_read)
    finally:
        thread.join()
