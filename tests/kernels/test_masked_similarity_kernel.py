"""masked_similarity: Triton kernel (interpreter on CPU) vs torch reference vs a float64 loop."""
from __future__ import annotations

import pytest
import torch

from edgecmg.kernels.masked_similarity import masked_similarity_reference, masked_similarity_triton
from kernel_checks import brute_masked_similarity

MODES = ["expectation", "cosine"]


def _data(b, K, p, c, C, w_dtype=torch.float32, seed=0, logit_scale=3.0, bool_masks=True):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, p, c, generator=g)
    if bool_masks:
        masks = torch.rand(K, p, generator=g) > 0.4
    else:
        masks = torch.rand(K, p, generator=g)
    masks[:, 0] = True if bool_masks else 1.0  # every variant keeps a patch
    weight = (torch.randn(c, C, generator=g) * logit_scale / c ** 0.5).to(w_dtype)
    bias = torch.randn(C, generator=g)
    text = torch.rand(C, generator=g)
    return feats, masks, weight, bias, text


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bool_masks", [True, False], ids=["bool", "soft"])
@pytest.mark.parametrize("b,K,p,c,C", [(1, 1, 1, 1, 1), (2, 5, 9, 20, 37), (3, 4, 64, 96, 1000)])
def test_reference_matches_definition(b, K, p, c, C, mode, bool_masks):
    args = _data(b, K, p, c, C, bool_masks=bool_masks)
    got = masked_similarity_reference(*args, mode=mode)
    assert got.shape == (b, K) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), brute_masked_similarity(*args, mode), atol=1e-5, rtol=1e-4)


def test_reference_grid_masks_like_cmer():
    # CMER's 2x2 grid: four variants, each dropping one quadrant of an 8x8 patch grid.
    p = 64
    rows, cols = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    quadrant = (rows // 4) * 2 + cols // 4
    masks = torch.stack([(quadrant != q).flatten() for q in range(4)])
    feats, _, weight, bias, text = _data(2, 4, p, 32, 50)
    got = masked_similarity_reference(feats, masks, weight, bias, text)
    torch.testing.assert_close(got.double(), brute_masked_similarity(feats, masks, weight, bias, text,
                                                                     "expectation"), atol=1e-6, rtol=1e-5)


KERNEL_SHAPES = [
    pytest.param(1, 1, 4, 7, 5, id="tiny"),
    pytest.param(2, 5, 9, 20, 37, id="odd"),
    pytest.param(3, 17, 16, 33, 70, id="rows>block"),
]


# fp16/bf16 heads: the kernel also rounds the features and the pooled mean to the head's dtype for the
# tensor-core products (bf16 keeps 8 bits of mantissa, fp16 11).
TOLERANCE = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float16: dict(atol=2e-3, rtol=2e-3),
             torch.bfloat16: dict(atol=5e-3, rtol=5e-3)}


@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("w_dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("b,K,p,c,C", KERNEL_SHAPES)
def test_kernel_matches_reference(b, K, p, c, C, mode, w_dtype, splits, kernel_device):
    # bf16: Triton 3.9's interpreter multiplies bf16 tl.dot operands as raw bits (scores of 0.84 for
    # 0.46-0.51); the launcher gives it fp32 operands holding the bf16 values (see
    # masked_similarity_triton), a compiled kernel the bf16 ones.
    args = [t.to(kernel_device) for t in _data(b, K, p, c, C, w_dtype=w_dtype, seed=b + K + C)]
    got = masked_similarity_triton(*args, mode=mode, splits=splits)
    ref = masked_similarity_reference(*args, mode=mode)
    assert got.shape == (b, K) and got.dtype == torch.float32
    torch.testing.assert_close(got.cpu(), ref.cpu(), **TOLERANCE[w_dtype])
    if w_dtype == torch.float32:
        cpu = [t.cpu() for t in args]
        torch.testing.assert_close(got.cpu().double(), brute_masked_similarity(*cpu, mode), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mode", MODES)
def test_kernel_online_softmax_is_stable_for_large_logits(mode, kernel_device):
    # logits in the hundreds: a naive exp overflows; the running max keeps everything finite
    args = [t.to(kernel_device) for t in _data(2, 3, 8, 16, 40, logit_scale=400.0, seed=9)]
    got = masked_similarity_triton(*args, mode=mode, splits=2)
    ref = masked_similarity_reference(*args, mode=mode)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.cpu(), ref.cpu(), atol=1e-4, rtol=1e-4)


def test_kernel_soft_masks_and_non_contiguous_weight(kernel_device):
    feats, masks, weight, bias, text = _data(2, 6, 12, 24, 30, bool_masks=False, seed=4)
    weight_t = weight.t().contiguous().t()  # column-major head
    args = [t.to(kernel_device) for t in (feats, masks, weight_t, bias, text)]
    got = masked_similarity_triton(*args)
    torch.testing.assert_close(got.cpu(), masked_similarity_reference(feats, masks, weight, bias, text),
                               atol=1e-5, rtol=1e-5)


def test_kernel_reads_transposed_views_in_place(kernel_device, monkeypatch):
    # what the zero-shot matcher passes: the head map flattened and transposed ([b, p, c] with a
    # strided last dim) and the classifier's weight transposed; no copy is needed for either
    from edgecmg.kernels import masked_similarity as ms

    feats, masks, weight, bias, text = _data(2, 5, 12, 24, 30, seed=6)
    feats_t = feats.transpose(1, 2).contiguous().transpose(1, 2)
    weight_t = weight.t().contiguous().t()
    masks_t = masks.t().contiguous().t()
    assert feats_t.stride(-1) != 1 and weight_t.stride(-1) != 1 and masks_t.stride(-1) != 1
    args = [t.to(kernel_device) for t in (feats_t, masks_t, weight_t, bias, text)]
    launched = []
    real_launch = ms._launch

    def spy(features, masks, weight, *rest):
        launched.append([(t.data_ptr(), t.stride()) for t in (features, masks, weight)])
        return real_launch(features, masks, weight, *rest)

    monkeypatch.setattr(ms, "_launch", spy)
    for mode in MODES:
        got = masked_similarity_triton(*args, mode=mode, splits=2)
        assert launched and all(seen == [(t.data_ptr(), t.stride()) for t in args[:3]] for seen in launched)
        launched.clear()
        torch.testing.assert_close(got.cpu(), masked_similarity_reference(feats, masks, weight, bias, text, mode=mode),
                                   atol=1e-5, rtol=1e-5)


def test_tuner_picks_once_per_bucket_and_every_candidate_is_exact(monkeypatch, kernel_device):
    """EDGECMG_AUTOTUNE=1 drives the tuner under the interpreter; whichever candidate wins, the scores
    match the reference, and a second batch size in the same bucket reuses the choice."""
    from edgecmg.kernels import masked_similarity as ms

    monkeypatch.setenv("EDGECMG_AUTOTUNE", "1")
    monkeypatch.setattr(ms, "_TUNER", ms.LaunchTuner(repeats=1))
    for b in (3, 4):  # b * K = 18 and 24 rows: one bucket (32)
        args = _data(b, 6, 12, 24, 40, seed=b)
        got = ms.masked_similarity_triton(*[t.to(kernel_device) for t in args])
        torch.testing.assert_close(got.cpu(), masked_similarity_reference(*args), atol=1e-5, rtol=1e-5)
    assert len(ms._TUNER.timings) == 1
    (key, seconds), = ms._TUNER.timings.items()
    assert len(seconds) == len(ms._candidates(4))
    for cfg in ms._candidates(4):  # the loser too
        got = ms.masked_similarity_triton(*[t.to(kernel_device) for t in args], config=cfg)
        torch.testing.assert_close(got.cpu(), masked_similarity_reference(*args), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_kernel_fp16_head_with_large_features_and_soft_masks(mode, kernel_device):
    # Features around 2,000 summed over 64 patches pass fp16's 65,504: the kernel takes the mean in fp32
    # before the cast to the head's dtype, so the logits stay finite (was NaN).
    b, K, p, c, C = 1, 3, 64, 16, 20
    g = torch.Generator().manual_seed(4)
    features = 2000.0 + torch.randn(b, p, c, generator=g)
    masks = torch.ones(K, p)
    masks[1] *= 1e-3  # soft keep-weights
    masks[2, : p // 2] = 0.0
    weight = (torch.randn(c, C, generator=g) * 1e-3).half()
    bias, text = torch.randn(C, generator=g), torch.randn(C, generator=g)
    args = [t.to(kernel_device) for t in (features, masks, weight, bias, text)]
    got = masked_similarity_triton(*args, mode=mode).cpu()
    ref = masked_similarity_reference(features, masks, weight.float(), bias, text, mode=mode)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, ref, atol=5e-3, rtol=5e-3)


@pytest.mark.parametrize("w_dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_kernel_soft_masks_of_any_scale(w_dtype, kernel_device):
    """The masked mean does not change when a mask is scaled, and neither may either implementation's
    score. An fp16/bf16 head rounds the mask weights to its dtype: scaled by 1e-8 they flushed to 0 in
    fp16 (while the divisor, summed from the unrounded weights, did not), by 1e5 they overflowed (NaN).
    The reference and the fp32 head floored the divisor at 1e-12, so a mask summing to less (1e-14,
    1e-30) pooled to a fraction of its mean."""
    feats, masks, weight, bias, text = _data(2, 5, 20, 24, 40, w_dtype=w_dtype, bool_masks=False, seed=12)
    scaled = masks * torch.tensor([1.0, 1e-8, 1e5, 1e-30, 1e-14])[:, None]
    args = [t.to(kernel_device) for t in (feats, scaled, weight, bias, text)]
    for mode in MODES:
        want = masked_similarity_reference(feats, masks, weight, bias, text, mode=mode)
        torch.testing.assert_close(masked_similarity_reference(feats, scaled, weight, bias, text, mode=mode), want,
                                   atol=1e-5, rtol=1e-5)
        for splits in (1, 2):
            got = masked_similarity_triton(*args, mode=mode, splits=splits).cpu()
            assert torch.isfinite(got).all(), got
            torch.testing.assert_close(got, want, **TOLERANCE[w_dtype])


def test_kernel_reads_a_strided_text_vector_by_value(kernel_device):
    """A text vector that is a strided view (every other entry of a longer tensor) is read as its
    values, not as the memory after its first entry."""
    feats, masks, weight, bias, text = _data(2, 5, 9, 20, 37, seed=11)
    wide = torch.stack([text, -text], dim=1).flatten()    # text at even offsets
    strided = wide[::2]
    assert strided.stride() == (2,) and torch.equal(strided, text)
    args = [t.to(kernel_device) for t in (feats, masks, weight, bias, strided)]
    for mode in MODES:
        for splits in (1, 2):
            got = masked_similarity_triton(*args, mode=mode, splits=splits)
            torch.testing.assert_close(got.cpu(), masked_similarity_reference(feats, masks, weight, bias, text,
                                                                              mode=mode), atol=1e-5, rtol=1e-5)


def test_cosine_of_a_zero_projection_is_zero_not_nan(kernel_device):
    """cos(W^T x, s) with W^T x = 0 is 0 (the denominator is floored at 1e-8), in both implementations."""
    feats, masks, weight, bias, text = _data(2, 3, 8, 16, 40, seed=2)
    zero = torch.zeros_like(weight)
    ref = masked_similarity_reference(feats, masks, zero, bias, text, mode="cosine")
    assert torch.equal(ref, torch.zeros(2, 3))
    for splits in (1, 2):
        got = masked_similarity_triton(*[t.to(kernel_device) for t in (feats, masks, zero, bias, text)],
                                       mode="cosine", splits=splits)
        assert torch.equal(got.cpu(), torch.zeros(2, 3))


def test_cosine_of_small_vectors_across_class_splits(kernel_device):
    """The cosine is scale-free: a head and text vector a thousand times smaller give the same score,
    also when the classes are split and merged (only a denominator below 1e-8 is floored)."""
    feats, masks, weight, bias, text = _data(2, 3, 8, 16, 40, seed=3)
    small = [feats, masks, weight * 1e-3, bias, text * 1e-3]
    want = masked_similarity_reference(feats, masks, weight, bias, text, mode="cosine")
    for splits in (1, 3):
        got = masked_similarity_triton(*[t.to(kernel_device) for t in small], mode="cosine", splits=splits)
        torch.testing.assert_close(got.cpu(), want, atol=1e-4, rtol=1e-4)


def test_tuner_tunes_each_mode_apart(monkeypatch, kernel_device):
    from edgecmg.kernels import masked_similarity as ms

    monkeypatch.setenv("EDGECMG_AUTOTUNE", "1")
    monkeypatch.setattr(ms, "_TUNER", ms.LaunchTuner(repeats=1))
    args = [t.to(kernel_device) for t in _data(2, 3, 8, 16, 40, seed=5)]
    for mode in MODES:
        ms.masked_similarity_triton(*args, mode=mode)
    assert sorted(key[3] for key in ms._TUNER.timings) == sorted(MODES)
