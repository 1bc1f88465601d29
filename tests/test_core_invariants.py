"""Invariants of the core numerics that other tests pass without checking: each was found by changing
the code (a mutation) and seeing no test fail. The coreset is greedy k-center from its first pick, the
map smoothing keeps a flat map flat up to its borders, AUPRO's regions are 8-connected, CMLE's
reconstruction weights stay finite on repeated captions, fit's threshold keeps two far scores of
twenty, and the stream's drift warning waits for its window and re-arms only under a quarter."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from edgecmg.commands.stream import RECENT_FRAMES, RunTally
from edgecmg.thresholds import threshold_from_scores
from edgecmg.metrics import aupro
from edgecmg.model import bank
from edgecmg.model.cmle import lle_weights


@pytest.mark.parametrize("seed", range(5))
def test_each_coreset_pick_is_the_point_farthest_from_the_picks_before_it(seed):
    points = torch.randn(300, 4, generator=torch.Generator().manual_seed(seed))
    chosen = bank.greedy_coreset(points, 20, projection_dim=64, seed=seed)  # 4 dims: no projection, exact
    assert len(set(chosen.tolist())) == 20
    for i in range(1, 20):
        gap = torch.cdist(points, points[chosen[:i]]).min(dim=1).values
        assert gap[chosen[i]] == pytest.approx(float(gap.max()), rel=1e-4)


def test_a_coreset_larger_than_its_candidate_pool_still_picks_distinct_points():
    chosen = bank.greedy_coreset(torch.randn(300, 4, generator=torch.Generator().manual_seed(0)), 150, max_pool=100)
    assert len(set(chosen.tolist())) == 150


def test_smoothing_keeps_a_flat_map_flat_up_to_its_borders():
    """Zero padding would darken every map within 4 sigma (16 px) of its edges, hiding edge defects."""
    smoothed = bank.smooth(torch.full((1, 1, 40, 30), 2.0), bank.gaussian_kernel1d(4.0))
    torch.testing.assert_close(smoothed, torch.full_like(smoothed, 2.0))


def test_the_gaussian_reaches_four_sigma_each_side():
    taps = bank.gaussian_kernel1d(4.0)
    x = torch.arange(-16, 17, dtype=torch.float32)
    expected = torch.exp(-0.5 * (x / 4.0) ** 2)
    torch.testing.assert_close(taps, expected / expected.sum())


def test_aupro_counts_diagonal_neighbours_as_one_region():
    masks = np.zeros((1, 10, 10), bool)
    masks[0, 3, 3] = masks[0, 4, 4] = True  # one region of two pixels touching at a corner
    masks[0, 8, 8] = True  # a second region
    maps = np.zeros(masks.shape, np.float32)
    maps[0, 3, 3] = maps[0, 8, 8] = 1.0  # half of the first region found, all of the second
    # PRO 0.75 at FPR 0 (4-connected regions would give 2/3), 1 at FPR 1: 0.825 at 0.3, area / 0.3
    assert aupro(masks, maps) == pytest.approx((0.75 + 0.825) / 2)


def test_reconstruction_weights_of_identical_texts_are_finite_and_even():
    """Repeated captions make the local Gram matrix zero: without its regulariser the weights are not finite."""
    weights = lle_weights(torch.ones(6, 8), neighbors=3)
    assert torch.isfinite(weights).all()
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(6))
    assert ((weights == 0) | torch.isclose(weights, torch.tensor(1 / 3))).all()


def test_reconstruction_weights_with_more_neighbours_than_dimensions_stay_bounded():
    weights = lle_weights(torch.randn(12, 2, generator=torch.Generator().manual_seed(0)), neighbors=5)
    assert torch.isfinite(weights).all() and (weights.abs() < 1e3).all()
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(12))


def test_two_far_scores_of_twenty_are_kept_in_the_threshold():
    """5% of twenty is one stray at most: two far scores are a second kind of part, kept (and warned of)."""
    scores = [1.0 + 0.01 * i for i in range(18)] + [50.0, 60.0]
    threshold, left_out = threshold_from_scores(scores, 1.0, [f"part{i}" for i in range(20)])
    assert left_out == [] and threshold == 60.0


def _tally() -> RunTally:
    detector = SimpleNamespace(runner=SimpleNamespace(model_path="/tmp/part.edgecmg"), backend="torch", device="cpu",
                               threshold=1.0)
    return RunTally(detector, None)


def test_the_drift_warning_waits_for_a_full_window(caplog):
    tally = _tally()
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        for _ in range(RECENT_FRAMES - 1):
            tally.count(True)
        assert "frames were flagged" not in caplog.text  # not "1 of the last 1 frames" at the start
        tally.count(True)
    assert f"{RECENT_FRAMES} of the last {RECENT_FRAMES} frames" in caplog.text


def test_the_drift_warning_is_not_said_again_while_the_share_hovers_near_half(caplog):
    tally = _tally()
    with caplog.at_level(logging.WARNING, logger="edgecmg"):
        for flagged, frames in ((True, RECENT_FRAMES), (False, 120), (True, 101)):  # 200 -> 80 -> 101 of 200
            for _ in range(frames):
                tally.count(flagged)
    assert caplog.text.count("frames were flagged") == 1  # re-armed only under a quarter
