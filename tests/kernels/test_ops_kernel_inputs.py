"""edgecmg.ops' checks of what reaches the kernels: the head dtype's range, k's type, out's layout."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import edgecmg.ops as ops
from edgecmg.errors import ConfigError, DataError
from edgecmg.kernels import _common

BACKENDS = ["torch", "triton"]


def _backend(name: str) -> str:
    if name == "triton" and not (_common.triton_available() and _common.interpret_mode()):
        pytest.skip("needs triton in interpreter mode (tests/kernels/conftest.py sets TRITON_INTERPRET=1)")
    return name


def _ms_data(w_dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(1, 20, 24, generator=g)
    masks = torch.ones(3, 20)
    masks[1, 10:] = 0
    weight = (torch.randn(24, 40, generator=g) * 0.6).to(w_dtype)
    return features, masks, weight, torch.randn(40, generator=g), torch.rand(40, generator=g)


@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_similarity_refuses_features_beyond_a_half_heads_range(backend, monkeypatch):
    """An fp16 head rounds the features to fp16 before pooling: one feature of 7e4 was Inf there and
    every mask's score NaN (even a mask that drops the patch). Refused on both backends, as knn does
    for queries against an fp16 bank; a float32 head takes them."""
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    backend = _backend(backend)
    features, masks, weight, bias, text = _ms_data(torch.float16)
    features[0, 15, 3] = 7e4
    small_head = (weight.float() * 1e-4).half()
    for checked in (False, True):  # the features are read on every call
        with pytest.raises(DataError, match=r"features exceed float16's range \(largest magnitude 7e\+04 > 65504\)"
                                            r".*use a float32 head"):
            ops.masked_similarity(features, masks, small_head, bias, text, backend=backend, params_checked=checked)
    got = ops.masked_similarity(features, masks, small_head.float(), bias, text, backend=backend)
    assert torch.isfinite(got).all()
    # bf16 spans fp32's range but for its last few ulps: 3.4e38 is finite in fp32, Inf in bf16
    features[0, 15, 3] = 3.4e38
    with pytest.raises(DataError, match=r"features exceed bfloat16's range"):
        ops.masked_similarity(features, masks, weight.bfloat16(), bias, text, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_knn_takes_a_numpy_integer_k(backend, monkeypatch):
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    backend = _backend(backend)
    g = torch.Generator().manual_seed(0)
    q, bank = torch.randn(5, 8, generator=g), torch.randn(10, 8, generator=g)
    want_d, want_i = ops.knn(q, bank, 2, backend=backend)
    for k in (np.int64(2), np.int32(2)):
        dist, idx = ops.knn(q, bank, k, backend=backend)
        assert dist.shape == (5, 2) and torch.equal(idx, want_i) and torch.equal(dist, want_d)
    for k in (np.True_, np.float64(2.0), np.int64(17)):
        with pytest.raises(ConfigError, match="must be an integer in 1..16"):
            ops.knn(q, bank, k, backend=backend)


def test_knn_says_when_out_is_non_contiguous():
    q, bank = torch.randn(5, 8), torch.randn(10, 8)
    out = (torch.empty(2, 5).t(), torch.empty(5, 2, dtype=torch.long))
    with pytest.raises(DataError, match=r"out distances must be a contiguous .*; got a non-contiguous torch.float32"):
        ops.knn(q, bank, 2, out=out)
    # a wrong dtype alone is not called non-contiguous
    with pytest.raises(DataError, match=r"out indices .*; got torch.int32 \(5, 2\)"):
        ops.knn(q, bank, 2, out=(torch.empty(5, 2), torch.empty(5, 2, dtype=torch.int32)))
