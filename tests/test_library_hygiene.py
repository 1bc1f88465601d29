"""edgecmg inside a host application: what it changed behind the host's back. A hardened host's "error"
filter for Pillow's decompression-bomb warning was overridden by edgecmg's own; calibrate swapped
sys.stdout for the whole process (a host thread's prints were lost) and left a handler on the root
logger (the host's basicConfig then did nothing); fit set HF_HUB_OFFLINE for the process's later
children; BackendUnavailableError could not be pickled back from a pool's worker (the pool hung)."""
import logging
import os
import pickle
import sys
import threading
import time
import warnings

import numpy as np
import pytest
from PIL import Image

from edgecmg.errors import BackendUnavailableError
from edgecmg.imageio import read_image


def test_a_hosts_error_filter_for_pillows_bomb_warning_still_applies_after_edgecmg_reads(tmp_path, monkeypatch):
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(small)
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(large)  # 1,600 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the host's limit: 1,000 to 2,000 pixels warn
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # the host's hardening
        read_image(small)  # edgecmg puts its own filter in place
        with pytest.raises(Image.DecompressionBombWarning):
            Image.open(large).load()


def test_calibrate_keeps_the_processs_stdout_and_root_logger_as_they_were(small_artifact, kolektor_root, tmp_path,
                                                                        capsys):
    from edgecmg.calibration import calibrate

    root = logging.getLogger()
    hosts_handlers = root.handlers[:]
    root.handlers = []  # a host that configures logging after calibrating (pytest's own put back below)
    beats, stop = [], threading.Event()

    def heartbeat():
        while not stop.is_set():
            beats.append(len(beats))
            print(f"beat {beats[-1]}", flush=True)
            time.sleep(0.02)

    thread = threading.Thread(target=heartbeat)
    stdout = sys.stdout
    try:
        thread.start()
        calibrate(small_artifact, kolektor_root / "train" / "good", tmp_path / "m.cpu.int8.onnx", method="percentile",
                  samples=4, profile="cpu", progress=False)
        stop.set()
        thread.join()
        left_on_root = root.handlers[:]
    finally:
        stop.set()
        root.handlers = hosts_handlers
    assert sys.stdout is stdout and left_on_root == []
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("beat ")] == [f"beat {i}" for i in beats]
    assert "Collecting tensor data" not in out and "Number of tensors" not in out  # ONNX Runtime's chatter


def test_the_text_encoders_offline_settings_last_only_while_it_loads(monkeypatch):
    from edgecmg.model.text import _offline

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")  # the host's own setting is kept
    with _offline():
        assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "0"
    assert "HF_HUB_OFFLINE" not in os.environ and os.environ["TRANSFORMERS_OFFLINE"] == "0"


def test_backend_unavailable_pickles_back_whole():
    error = BackendUnavailableError("tensorrt", "cannot import tensorrt", "install JetPack")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is BackendUnavailableError and str(again) == str(error)
    assert (again.backend, again.reason, again.install_hint) == ("tensorrt", "cannot import tensorrt", "install JetPack")


def test_closing_a_detector_closes_its_open_streams(small_artifact, kolektor_root):
    """A stream() run left open after det.close() kept its capture thread, and a camera, held."""
    from edgecmg.detector import Detector

    det = Detector.load(small_artifact, backend="torch")
    run = det.stream(kolektor_root / "test" / "good")
    next(run)  # capturing
    assert any(t.name.startswith("edgecmg-capture") for t in threading.enumerate())
    det.close()
    deadline = time.monotonic() + 10
    while any(t.name.startswith("edgecmg-capture") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name.startswith("edgecmg-capture") for t in threading.enumerate())
    assert list(run) == []  # ended, not an error
