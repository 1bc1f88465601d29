import numpy as np
import pytest
import torch

from edgecmg.errors import ConfigError
from edgecmg.model import cmer


@pytest.mark.parametrize("h,w,g", [(8, 8, 2), (8, 3, 2), (10, 4, 4), (5, 7, 3), (8, 8, 8)])
def test_drop_one_masks_cover_every_position_once(h, w, g):
    masks = cmer.drop_one_masks(h, w, g)
    assert masks.shape == (g * g, h * w)
    dropped = 1 - masks
    # each position is dropped by exactly one variant, and every cell is non-empty
    assert torch.equal(dropped.sum(0), torch.ones(h * w))
    assert (dropped.sum(1) > 0).all()


def test_grid_finer_than_map_is_refused():
    with pytest.raises(ConfigError, match="finer than the 8x3"):
        cmer.cell_index(8, 3, 4)


def test_cells_are_kept_unless_removal_raises_match_beyond_margin():
    gain = torch.tensor([[0.20, -0.1, 0.01, 0.00],   # cell 0 irrelevant
                         [0.01, 0.02, 0.00, -0.01],  # full texture: every cell matters
                         [0.50, 0.40, 0.60, 0.45]])  # all above margin: keep the most relevant one
    kept = cmer.kept_cells(gain, margin=0.05)
    assert kept.tolist() == [[False, True, True, True], [True, True, True, True], [False, True, False, False]]


def test_per_cell_margins_broadcast():
    gain = torch.tensor([[0.20, 0.20], [0.05, 0.40]])
    kept = cmer.kept_cells(gain, torch.tensor([0.30, 0.10]))
    assert kept.tolist() == [[True, False], [True, False]]


def test_margin_is_a_per_cell_quantile_of_training_gains_never_negative():
    # cell 0 spreads over -1..1, cell 1 always lowers the match, cell 2 always raises it by 0.3
    gains = torch.stack([torch.linspace(-1, 1, 101), torch.full((101,), -0.3), torch.full((101,), 0.3)], dim=1)
    margins = cmer.fit_margin(gains, 0.99, slack=0.0)
    assert margins.tolist() == pytest.approx([0.98, 0.0, 0.3], abs=1e-6)
    assert cmer.fit_margin(gains, 1.0, slack=0.0)[0] == pytest.approx(1.0)
    # the default slack lifts each margin by its distance above the median: cell 0 (median 0) to
    # 2 x 0.98; constant cells have no spread and keep their value
    assert cmer.fit_margin(gains, 0.99).tolist() == pytest.approx([1.96, 0.0, 0.3], abs=1e-6)
    # a cell that raises the match on every normal image is not dropped for doing so on a test image
    assert cmer.kept_cells(torch.tensor([[0.0, 0.0, 0.3]]), margins).all()
    with pytest.raises(ConfigError, match="quantile"):
        cmer.fit_margin(gains, 0.0)
    with pytest.raises(ConfigError, match="gains"):
        cmer.fit_margin(torch.zeros(0, 4), 0.99)
    with pytest.raises(ConfigError, match="cmer_slack"):
        cmer.fit_margin(gains, 0.99, slack=-1.0)


def test_cmer_on_real_model_keeps_at_least_one_cell(small_fit, kolektor_root):
    from edgecmg.imageio import read_image
    from edgecmg.detector import Detector

    model, metadata = small_fit
    det = Detector.from_model(model, metadata)
    frame = read_image(sorted((kolektor_root / "test" / "defect").iterdir())[0])
    result = det.predict(frame)
    assert result.kept_mask.shape == (2, 2) and result.kept_mask.any()
    # the map is never gated: it has the frame's size and a finite value everywhere
    assert result.anomaly_map.shape == frame.shape[:2] and np.isfinite(result.anomaly_map).all()


def test_gating_lowers_scores_but_never_hides_an_alarm():
    """A dropped cell leaves the image score only while the frame is below the threshold."""
    from edgecmg.model.detector import BankScorer, Geometry

    geometry = Geometry((64, 64), 2, "s16")               # 4 x 4 patches, 2 x 2 head map, 2 x 2 grid
    scorer = BankScorer(geometry, feature_dim=2, bank_size=1, use_cmer=True, knn_k=1, smoothing_sigma=0.5)
    scorer.set_bank(torch.zeros(1, 2))
    patches = torch.zeros(1, 16, 2)
    # distance 5 at patch (1, 1), 0 elsewhere: in the top-left cell even after the map's alignment shift
    patches[0, 5] = torch.tensor([3.0, 4.0])
    scorer.cmer_margin.fill_(0.1)
    matches = torch.tensor([[0.5, 0.9, 0.5, 0.5, 0.5]])  # dropping cell 0 raises the match by 0.4: dropped
    ungated = scorer.anomaly_maps(patches).amax()
    with torch.no_grad():
        scorer.threshold.fill_(float(ungated) * 2)          # below threshold: the gate applies
        out = scorer(patches, matches)
        assert out.kept_mask[0].tolist() == [[False, True], [True, True]]
        assert float(out.score[0]) < float(ungated)
        scorer.threshold.fill_(float(ungated) / 2)          # an alarm: the ungated score stands
        assert float(scorer(patches, matches).score[0]) == pytest.approx(float(ungated))
        scorer.threshold.fill_(float(ungated))              # exactly at the threshold is an alarm too
        assert float(scorer(patches, matches).score[0]) == float(ungated)


def test_gated_score_below_the_normal_level_is_the_max_over_kept_pixels():
    """Maps measured from the normal level are negative where a part is more normal than usual; a
    dropped cell must then not count as 0 (that would be the maximum) but not at all."""
    from edgecmg.model.detector import BankScorer, Geometry

    geometry = Geometry((64, 64), 2, "s16")
    scorer = BankScorer(geometry, feature_dim=2, bank_size=1, use_cmer=True, knn_k=1, smoothing_sigma=0.5)
    scorer.set_bank(torch.zeros(1, 2))
    patches = torch.zeros(1, 16, 2)
    patches[0, 5] = torch.tensor([3.0, 4.0])
    scorer.cmer_margin.fill_(0.1)
    matches = torch.tensor([[0.5, 0.9, 0.5, 0.5, 0.5]])  # cell 0 dropped
    raw = scorer.anomaly_maps(patches)
    with torch.no_grad():
        scorer.normal_map.fill_(10.0)                     # every pixel below the normal level
        maps = scorer.anomaly_maps(patches)
        torch.testing.assert_close(maps, raw - 10.0)
        out = scorer(patches, matches)
    cells = scorer.pixel_cells.view(64, 64)
    kept_max = maps[0][cells != 0].max()
    assert float(out.score[0]) == pytest.approx(float(kept_max))
    assert float(out.score[0]) < 0 and float(out.score[0]) < float(maps.amax())


def test_image_score_is_the_mean_of_the_hottest_pixels_of_the_kept_cells():
    """score_top_fraction pools the hottest share of the map; with CMER the pool is taken inside the
    kept cells only (dropped pixels never count, even when they are the hottest)."""
    from edgecmg.model.detector import BankScorer, Geometry

    geometry = Geometry((64, 64), 2, "s16")
    scorer = BankScorer(geometry, feature_dim=2, bank_size=1, use_cmer=True, knn_k=1, smoothing_sigma=0.5,
                        score_top_fraction=0.02)
    assert scorer.score_pixels == round(0.02 * 64 * 64) == 82
    g = torch.Generator().manual_seed(3)
    maps = torch.rand(2, 64, 64, generator=g)
    kept = torch.tensor([[True, True, True, True], [False, True, True, True]])
    with torch.no_grad():
        scorer.threshold.fill_(float("inf"))  # no alarm: the gate applies
        score = scorer.image_score(maps, kept)
    flat = maps.flatten(1)
    assert float(score[0]) == pytest.approx(float(flat[0].sort(descending=True).values[:82].mean()))
    in_kept = flat[1][scorer.pixel_cells != 0]
    assert float(score[1]) == pytest.approx(float(in_kept.sort(descending=True).values[:82].mean()))


def test_pool_larger_than_a_cmer_cell_is_refused_by_name():
    from edgecmg.errors import ConfigError
    from edgecmg.model.detector import BankScorer, Geometry

    # 256x256, grid 8: a cell is 32x32 = 1,024 pixels; 2% of the map is 1,311
    with pytest.raises(ConfigError, match="score_top_fraction=0.02 pools 1311 pixels.*smallest CMER cell"):
        BankScorer(Geometry((256, 256), 8, "s16"), feature_dim=2, bank_size=1, use_cmer=True, knn_k=1,
                   smoothing_sigma=0.5, score_top_fraction=0.02)


def test_score_pool_sizes_and_files_without_a_recorded_pool():
    from edgecmg.config import ModelConfig
    from edgecmg.errors import ConfigError
    from edgecmg.model.detector import score_pixel_count, score_top_fraction

    assert score_pixel_count((256, 256), 0.0) == 1  # the maximum
    assert score_pixel_count((256, 256), 0.01) == 655
    assert score_pixel_count((800, 320), 0.01) == 2560
    assert score_pixel_count((1024, 1024), 0.01) == 3840  # TensorRT's TopK limit
    assert score_top_fraction({"knn_k": 1}) == 0.0  # older files were scored by the maximum
    assert score_top_fraction({"score_top_fraction": 0.01}) == 0.01
    with pytest.raises(ConfigError, match="score_top_fraction=0.5"):
        ModelConfig(score_top_fraction=0.5)


def test_cmer_drops_no_cell_of_unseen_texture_crops_and_still_drops_a_foreign_object():
    """On a full-frame texture every cell matters: fitted on 55 crops of a real texture photo, CMER
    keeps every cell of the 26 crops it never saw, at grid 2 and 8 (with the bare largest training
    gain as the margin, 8 of 26 frames lost a cell at grid 8). A rocket pasted over one cell of
    grass makes that cell irrelevant to "a photo of grass", and it still goes."""
    import cv2
    import numpy as np
    from skimage import data as skdata

    from edgecmg.config import ModelConfig
    from edgecmg.detector import Detector
    from edgecmg.fit import fit

    texture = np.asarray(skdata.grass())
    crops = [texture[y:y + 256, x:x + 256] for y in range(0, texture.shape[0] - 255, 32)
             for x in range(0, texture.shape[1] - 255, 32)]
    order = np.random.default_rng(1).permutation(len(crops))
    train, unseen = [crops[i] for i in order[:55]], [crops[i] for i in order[55:]]
    rocket = cv2.resize(np.asarray(skdata.rocket()), (128, 128), interpolation=cv2.INTER_AREA)
    for grid in (2, 8):
        model, metadata = fit(train, ModelConfig(prompt="a photo of grass", input_size=(256, 256), grid=grid,
                                                 cmle_dim=16, max_bank_size=500), progress=False)
        detector = Detector.from_model(model, metadata)
        kept = np.stack([detector.predict(crop).kept_mask for crop in unseen])
        assert kept.shape == (len(unseen), grid, grid) and kept.all(), f"grid {grid}: {int((~kept).sum())} cells dropped"
        if grid == 2:
            dropped = 0
            for crop in unseen[:8]:
                frame = np.dstack([crop] * 3) if crop.ndim == 2 else crop.copy()
                frame[:128, :128] = rocket
                kept_cells = detector.predict(frame).kept_mask
                dropped += int(not kept_cells[0, 0])
                assert kept_cells.any()  # never every cell
            assert dropped >= 6, f"the rocket's cell was dropped in {dropped} of 8 frames"


def test_cells_are_numbered_row_major():
    """Cell k of a g x g grid is row k // g, column k % g: the order of kept_mask[B, g, g] and of the
    drop-one variants (variant 1 drops the top-right cell, not the bottom-left one)."""
    assert cmer.cell_index(2, 4, 2).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    masks = cmer.drop_one_masks(4, 4, 2).view(4, 4, 4)
    assert not masks[1, :2, 2:].any() and masks[1, 2:, :].all() and masks[1, :, :2].all()
    assert not masks[2, 2:, :2].any() and masks[2, :2, :].all()


def test_margin_slack_is_measured_from_the_cells_median_gain():
    # one outlier among five: the median is 0, the mean 0.2; the margin is 1 + 1 x (1 - median)
    gains = torch.tensor([[0.0], [0.0], [0.0], [0.0], [1.0]])
    assert cmer.fit_margin(gains, 1.0).tolist() == pytest.approx([2.0])
    # a quantile below the median is not lowered by the slack (its distance above the median is 0)
    spread = torch.linspace(0.0, 2.0, 101)[:, None]
    assert cmer.fit_margin(spread, 0.25).tolist() == pytest.approx([0.5], abs=1e-6)


@pytest.mark.parametrize("shape", [(5,), (5, 2, 2)])
def test_margin_needs_gains_of_images_by_cells(shape):
    with pytest.raises(ConfigError, match=r"gains \[images, cells\]"):
        cmer.fit_margin(torch.zeros(shape), 0.99)


def test_a_pool_as_large_as_the_smallest_cell_is_allowed():
    """A kept cell must hold the whole pool: exactly a cell's pixels is enough (64x64, grid 2: 1,024)."""
    from edgecmg.model.detector import BankScorer, Geometry

    scorer = BankScorer(Geometry((64, 64), 2, "s16"), feature_dim=2, bank_size=1, use_cmer=True, knn_k=1,
                        smoothing_sigma=0.5, score_top_fraction=0.25)
    assert scorer.score_pixels == 1024
    maps = torch.arange(64 * 64, dtype=torch.float32).view(1, 64, 64)
    kept = torch.tensor([[True, False, False, False]])  # only the top-left cell
    with torch.no_grad():
        score = scorer.image_score(maps, kept)
    assert float(score[0]) == pytest.approx(float(maps[0, :32, :32].mean()))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.trace: the tracer ONNX export uses
def test_every_kept_cell_pattern_scores_as_a_mask_through_the_pixel_to_cell_map():
    """image_score expands the kept cells to pixels by a broadcast of the head cells, and skips the gated
    pool where no frame of the batch uses it (eager runs only; a traced graph pools twice). Against the
    pixel-to-cell map, on a frame that is not square with a grid of 3 (cells of unequal sizes), every
    one of the 512 kept-cell patterns, below the threshold, as alarms, and mixed in one batch."""
    from edgecmg.model.detector import BankScorer, Geometry

    geometry = Geometry((160, 96), 3, "s16")  # head map 5 x 3
    scorer = BankScorer(geometry, feature_dim=2, bank_size=1, use_cmer=True, knn_k=1, smoothing_sigma=0.5,
                        score_top_fraction=0.01)
    patterns = torch.tensor([[bool(p >> c & 1) for c in range(9)] for p in range(1, 512)])  # never all dropped
    maps = torch.rand(len(patterns), 160, 96, generator=torch.Generator().manual_seed(5)) - 0.5
    flat = maps.flatten(1)

    def reference(kept, threshold):
        pixel_keep = kept[:, scorer.pixel_cells]
        gated = flat.masked_fill(~pixel_keep, float("-inf")).topk(scorer.score_pixels, dim=1).values.mean(dim=1)
        ungated = flat.topk(scorer.score_pixels, dim=1).values.mean(dim=1)
        return torch.where(ungated >= threshold, ungated, gated)

    # traced on frames that keep every cell: the graph must still hold the gated pool for other frames
    traced = torch.jit.trace(lambda m, k: scorer.image_score(m, k), (maps, torch.ones_like(patterns)))
    with torch.no_grad():
        for threshold in (float("inf"), float("-inf"), 0.45):  # gated; all alarms; mixed
            scorer.threshold.fill_(threshold)
            expected = reference(patterns, threshold)
            torch.testing.assert_close(scorer.image_score(maps, patterns), expected, rtol=0, atol=0)
            torch.testing.assert_close(traced(maps, patterns), expected, rtol=0, atol=0)
        scorer.threshold.fill_(float("inf"))
        every_cell = torch.ones_like(patterns)
        torch.testing.assert_close(scorer.image_score(maps, every_cell), reference(every_cell, float("inf")),
                                   rtol=0, atol=0)
    assert 0 < int((reference(patterns, float("inf")) < reference(patterns, float("-inf"))).sum()) < len(patterns)
