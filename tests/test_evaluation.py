import numpy as np

from edgecmg.evaluation import resize_mask


def test_resize_mask_keeps_a_one_pixel_crack_when_downscaling():
    mask = np.zeros((645, 256), bool)
    mask[300, 40:200] = True  # a one-pixel crack, as in KolektorSDD
    out = resize_mask(mask, (192, 512))
    assert out.shape == (512, 192) and out.dtype == bool
    rows = np.flatnonzero(out.any(axis=1))
    assert 1 <= len(rows) <= 2 and abs(rows[0] - 300 * 512 / 645) <= 1.5
    assert abs(int(out[rows[0]].sum()) - 160 * 192 / 256) <= 3


def test_resize_mask_keeps_a_region_and_an_empty_mask():
    mask = np.zeros((100, 100), bool)
    mask[20:60, 30:70] = True
    assert resize_mask(mask, (50, 50)).sum() == 400
    assert not resize_mask(np.zeros((64, 64), bool), (32, 48)).any()
