"""The anomaly map lights up where the anomalous content is, not a cell and a half below-right of it."""
import numpy as np
import pytest
import torch

from edgecmg.model import bank
from edgecmg.model.layouts import FEATURE_LAYOUTS


def test_shift_up_left_moves_content_and_repeats_the_edge():
    maps = torch.arange(36, dtype=torch.float32).view(1, 1, 6, 6)
    shifted = bank.shift_up_left(maps, 2)
    assert shifted.shape == maps.shape
    assert torch.equal(shifted[..., :4, :4], maps[..., 2:, 2:])
    assert torch.equal(shifted[..., 4:, :4], maps[..., 5:, 2:].expand(1, 1, 2, 4))   # last row repeated
    assert torch.equal(shifted[..., :4, 4:], maps[..., 2:, 5:].expand(1, 1, 4, 2))   # last column repeated


def test_shift_up_left_is_clamped_to_the_map_and_zero_is_identity():
    maps = torch.rand(2, 1, 4, 5)
    assert torch.equal(bank.shift_up_left(maps, 0), maps)
    far = bank.shift_up_left(maps, 99)                     # never empties the map: at most 3 here
    assert torch.equal(far, bank.shift_up_left(maps, 3))
    assert torch.equal(far[..., 0, :2], maps[..., 3, 3:]) and (far[..., :, 1:] == far[..., :, 1:2]).all()


@pytest.mark.parametrize("layout", sorted(FEATURE_LAYOUTS))
def test_a_painted_dot_lights_the_map_where_it_was_painted(layout, kolektor_train):
    """Paint small inverted squares on real training images of a real fitted model: the centroid
    of the map's rise must sit on the square (it sat 21-27 px below-right with "s16" before the
    map was moved by ``response_offset``)."""
    from edgecmg.config import ModelConfig
    from edgecmg.detector import Detector
    from edgecmg.fit import fit
    from edgecmg.imageio import read_image, resize_to_input

    config = ModelConfig(prompt="a photo of a metal commutator", input_size=(320, 192), cmer=False,
                         cmle=False, features=layout, max_bank_size=4000)
    model, metadata = fit(kolektor_train[:20], config, progress=False)
    detector = Detector.from_model(model, metadata)
    height, width = detector.input_size
    rows, cols = np.mgrid[:height, :width]
    rng = np.random.default_rng(0)
    offsets = []
    for path in kolektor_train[20:26]:
        frame = resize_to_input(read_image(path), (height, width))
        clean = detector.predict(frame).anomaly_map
        for _ in range(2):
            y, x = int(rng.integers(64, height - 64)), int(rng.integers(64, width - 64))
            painted = frame.copy()
            painted[y - 3:y + 3, x - 3:x + 3] = 255 - painted[y - 3:y + 3, x - 3:x + 3]
            rise = np.clip(detector.predict(painted).anomaly_map - clean, 0, None)
            offsets.append(((rise * rows).sum() / rise.sum() - y, (rise * cols).sum() / rise.sum() - x))
    mean_dy, mean_dx = np.mean(offsets, axis=0)
    assert abs(mean_dy) < 6 and abs(mean_dx) < 6, (layout, mean_dy, mean_dx)


def _featurizer(input_size):
    from edgecmg.model.backbone import EfficientNetLite0
    from edgecmg.model.detector import Featurizer, Geometry
    from edgecmg.model.matcher import ZeroShotMatcher

    backbone = EfficientNetLite0()
    return Featurizer(backbone, Geometry(input_size, 2, "s16"), 8,
                      ZeroShotMatcher(backbone._fc, torch.zeros(backbone._fc.out_features)))


def test_patch_aggregation_keeps_a_uniform_map_uniform_up_to_the_border():
    """The 3x3 neighbourhood average counts only the patches that exist: a border patch of a uniform
    map keeps the map's value instead of being pulled toward the zero padding."""
    featurizer = _featurizer((64, 96))                    # 4 x 6 patches at stride 16
    fine = torch.full((1, 112, 4, 6), 2.0)                # block 10, stride 16
    coarse = torch.full((1, 192, 2, 3), 3.0)              # block 14, stride 32
    patches = featurizer.patch_features([fine, coarse])
    assert patches.shape == (1, 24, 304)
    torch.testing.assert_close(patches[..., :112], torch.full((1, 24, 112), 2.0))
    torch.testing.assert_close(patches[..., 112:], torch.full((1, 24, 192), 3.0))


def test_a_coarser_block_is_upsampled_bilinearly_so_a_ramp_stays_a_ramp():
    """Block 14 (stride 32) is resampled to the stride-16 grid bilinearly: a brightness ramp across it
    stays linear away from the border, without the 2-patch steps of a nearest-neighbour copy."""
    featurizer = _featurizer((64, 512))                   # 4 x 32 patches; block 14 is 2 x 16
    fine = torch.zeros(1, 112, 4, 32)
    coarse = torch.arange(16, dtype=torch.float32).expand(1, 192, 2, 16).contiguous()
    row = featurizer.patch_features([fine, coarse])[0, :32, 112]   # first patch row, one coarse channel
    steps = row.diff()[3:-3]                              # away from the border
    torch.testing.assert_close(steps, torch.full_like(steps, 0.5))


def test_an_anomaly_map_of_a_patch_ramp_rises_linearly():
    """Patch scores are upsampled to the map bilinearly: a ramp of scores is a linear map (the
    smoothing and the alignment shift keep it so away from the border), not 16-pixel steps."""
    from edgecmg.model.detector import BankScorer, Geometry

    scorer = BankScorer(Geometry((64, 256), 2, "s16"), feature_dim=2, bank_size=1, use_cmer=False, knn_k=1,
                        smoothing_sigma=0.5)
    scores = torch.arange(16, dtype=torch.float32).repeat(4)[None]   # [1, 4 x 16 patches], rising left to right
    with torch.no_grad():
        row = scorer.raw_maps(scores)[0, 32]
    steps = row.diff()[16:192]
    torch.testing.assert_close(steps, torch.full_like(steps, 1 / 16))


def _two_d_steps(scorer, patch_scores):
    """raw_maps as it was written before the map operators: resize, shift, smooth on the full map."""
    import torch.nn.functional as F

    ph, pw = scorer.geometry.patch_size
    maps = F.interpolate(patch_scores.reshape(-1, 1, ph, pw), size=scorer.geometry.input_size, mode="bilinear",
                         align_corners=False)
    maps = bank.shift_up_left(maps, scorer.geometry.layout.response_offset)
    return bank.smooth(maps, scorer.smoothing_taps)[:, 0]


@pytest.mark.parametrize("layout", sorted(FEATURE_LAYOUTS))
@pytest.mark.parametrize("input_size,sigma", [((800, 320), 4.0), ((64, 256), 0.5), ((32, 32), 4.0), ((416, 160), 2.0)])
def test_the_map_operators_do_what_the_resize_shift_and_smoothing_do(layout, input_size, sigma):
    # (32, 32): the smallest map a model takes; the smoothing reaches past both ends.
    from edgecmg.model.detector import BankScorer, Geometry

    scorer = BankScorer(Geometry(input_size, 1 if input_size == (32, 32) else 2, layout), feature_dim=2, bank_size=1, use_cmer=False, knn_k=1,
                        smoothing_sigma=sigma)
    ph, pw = scorer.geometry.patch_size
    scores = torch.rand(3, ph * pw, generator=torch.Generator().manual_seed(0)) * 20
    with torch.no_grad():
        got, want = scorer.raw_maps(scores), _two_d_steps(scorer, scores)
    assert got.shape == want.shape == (3, *input_size)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-6)


def test_the_map_operators_follow_the_taps_a_state_dict_brings():
    # A file's taps arrive through load_state_dict; operators built from the constructor's taps
    # would draw every map with the wrong blur.
    from edgecmg.model.detector import BankScorer, Geometry

    def scorer():
        return BankScorer(Geometry((128, 96), 2, "s16"), feature_dim=2, bank_size=1, use_cmer=False, knn_k=1,
                          smoothing_sigma=2.0)

    source, target = scorer(), scorer()
    taps = torch.rand(source.smoothing_taps.numel(), generator=torch.Generator().manual_seed(1))
    source.smoothing_taps = taps / taps.sum()
    assert "map_rows" not in source.state_dict()  # derived, never written to a file
    target.load_state_dict(source.state_dict())
    scores = torch.rand(1, 8 * 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(target.raw_maps(scores), _two_d_steps(source, scores), atol=2e-5, rtol=1e-6)


def test_a_scorer_with_map_operators_pickles_and_keeps_its_dtype_through_a_load():
    # torch.save(model) and spawn-based pools pickle the module: a lambda hook made that fail; and a
    # scorer made .half() rebuilt float32 operators on load, which a half map cannot multiply.
    import pickle

    from edgecmg.model.detector import BankScorer, Geometry

    scorer = BankScorer(Geometry((128, 96), 2, "s16"), feature_dim=2, bank_size=1, use_cmer=False, knn_k=1,
                        smoothing_sigma=2.0)
    scores = torch.rand(2, 8 * 6, generator=torch.Generator().manual_seed(3))
    copy = pickle.loads(pickle.dumps(scorer))
    copy.load_state_dict(scorer.state_dict())  # the hook came along
    with torch.no_grad():
        assert torch.equal(copy.raw_maps(scores), scorer.raw_maps(scores))
    half = scorer.half()
    half.load_state_dict(half.state_dict())
    with torch.no_grad():
        got = half.raw_maps(scores.half())
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.float(), copy.raw_maps(scores), atol=0.05, rtol=0.01)
