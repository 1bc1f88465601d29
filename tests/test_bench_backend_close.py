"""bench's timing of one backend closes its Detector whatever ends it: a row that failed (a frame the
backend refused, out of memory on one backend) left its session and memory held while bench went on
to the next model file."""
from __future__ import annotations

import numpy as np
import pytest

from edgecmg.commands.bench import bench_backend
from edgecmg.detector import Detector
from edgecmg.errors import ConfigError, DataError


def test_a_failed_timing_closes_its_detector(small_artifact, monkeypatch):
    closed = []
    real_close = Detector.close

    def close(self):
        closed.append(self.backend)
        return real_close(self)

    monkeypatch.setattr(Detector, "close", close)
    no_pixels = np.zeros((0, 0, 3), np.uint8)  # refused by predict_batch
    with pytest.raises(DataError):
        bench_backend(str(small_artifact), "torch", [no_pixels], n_frames=2, warmup=0, batch=1)
    assert closed == ["torch"]


def test_fewer_frames_than_a_batch_are_refused_before_loading(small_artifact):
    with pytest.raises(ConfigError, match="n_frames=2: time at least one batch of 4 frames"):
        bench_backend(str(small_artifact), "torch", None, n_frames=2, warmup=1, batch=4)
