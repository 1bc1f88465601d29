"""Pixel metrics given per-image lists of different sizes: numpy's ValueError ("all input arrays must
have the same shape") came out where the docstrings promise a DataError, which callers catch."""
from __future__ import annotations

import numpy as np
import pytest

from edgecmg.errors import DataError
from edgecmg.metrics import aupro, pixel_auroc, pixel_metrics


def _uneven():
    masks = [np.zeros((8, 8), bool), np.zeros((8, 6), bool)]
    masks[0][2:4, 2:4] = True
    maps = [np.random.default_rng(0).random((8, 8)), np.random.default_rng(1).random((8, 6))]
    return masks, maps


@pytest.mark.parametrize("metric", [pixel_auroc, aupro, pixel_metrics])
def test_masks_or_maps_of_different_sizes_are_a_data_error_naming_them(metric):
    masks, maps = _uneven()
    with pytest.raises(DataError, match=r"masks differ in size: #0 is \(8, 8\), #1 is \(8, 6\)"):
        metric(masks, maps)
    even_masks = [np.zeros((8, 8), bool), np.zeros((8, 8), bool)]
    even_masks[0][2:4, 2:4] = True
    with pytest.raises(DataError, match=r"anomaly maps differ in size"):
        metric(even_masks, maps)


def test_pixel_metrics_of_no_images_still_says_there_is_nothing_to_measure():
    assert pixel_metrics([], []) == {"pixel_auroc": None, "aupro": None}
    assert pixel_metrics(np.zeros((0, 0, 0), bool), np.zeros((0, 0, 0), np.float32)) == \
        {"pixel_auroc": None, "aupro": None}
