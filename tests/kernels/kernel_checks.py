"""Brute-force oracles and the faiss-style tie-tolerant comparison shared by the kernel tests."""
from __future__ import annotations

import torch


def brute_knn_distances(queries: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """All squared distances in float64 by explicit differences, [n, m] (queries [n, d] or [b, n, d]).

    An fp16 bank rounds the queries to fp16 first, as the contract says.
    """
    d = bank.shape[-1]
    q = queries.reshape(-1, d)
    if bank.dtype == torch.float16:
        q = q.to(torch.float16)
    q = q.double()
    b = bank.double()
    return ((q[:, None, :] - b[None, :, :]) ** 2).sum(-1)


# Relative (to the largest squared norm) distance tolerance per bank dtype. The expansion
# ||q||^2 + ||m||^2 - 2<q, m> in fp32 loses a few ulps of the norms whatever the storage; fp16 storage
# rounds the inputs, which the oracle reproduces, but fp16 products summed in a different order (the
# tensor-core tiles) earn a little more slack.
REL_TOL = {torch.float32: 2e-5, torch.float16: 5e-5}


def tolerance(queries: torch.Tensor, bank: torch.Tensor) -> float:
    """Absolute distance tolerance for this data (see REL_TOL)."""
    scale = float(queries.double().pow(2).sum(-1).max()) + float(bank.double().pow(2).sum(-1).max())
    return REL_TOL[bank.dtype] * scale + 1e-5


def assert_knn_equivalent(dist: torch.Tensor, idx: torch.Tensor, queries: torch.Tensor, bank: torch.Tensor,
                          k: int, atol: float | None = None) -> None:
    """Faiss-style check: distances equal the brute-force k smallest, each index's true distance
    equals its reported distance, indices are valid and unique; either index inside a tie passes."""
    n_lead = tuple(queries.shape[:-1])
    assert tuple(dist.shape) == n_lead + (k,), (dist.shape, n_lead, k)
    assert tuple(idx.shape) == n_lead + (k,)
    assert dist.dtype == torch.float32 and idx.dtype == torch.int64
    dist = dist.reshape(-1, k).cpu().double()
    idx = idx.reshape(-1, k).cpu()
    full = brute_knn_distances(queries.cpu(), bank.cpu())
    m = full.shape[1]
    atol = tolerance(queries.cpu(), bank.cpu()) if atol is None else atol
    kk = min(k, m)
    expect = full.sort(dim=1).values[:, :kk]
    torch.testing.assert_close(dist[:, :kk], expect, atol=atol, rtol=0)
    if kk < k:  # missing neighbours: (inf, -1)
        assert torch.isinf(dist[:, kk:]).all() and (idx[:, kk:] == -1).all()
    got = idx[:, :kk]
    assert ((got >= 0) & (got < m)).all(), "index out of range"
    assert (got.sort(dim=1).values.diff(dim=1) != 0).all(), "duplicate neighbour in a row"
    torch.testing.assert_close(full.gather(1, got), dist[:, :kk], atol=atol, rtol=0)
    assert (dist[:, :kk].diff(dim=1) >= 0).all(), "distances not ascending"


def brute_masked_similarity(features, masks, weight, bias, text, mode):
    """Loop-by-definition oracle in float64, [b, K]."""
    f, w, bi, s = features.double(), weight.double(), bias.double(), text.double()
    mk = masks.double()
    out = torch.empty(features.shape[0], masks.shape[0], dtype=torch.float64)
    for i in range(features.shape[0]):
        for j in range(masks.shape[0]):
            x = (mk[j][:, None] * f[i]).sum(0) / mk[j].sum()
            z = x @ w
            if mode == "expectation":
                out[i, j] = (torch.softmax(z + bi, 0) * s).sum()
            else:
                out[i, j] = (z @ s) / (z.norm() * s.norm())
    return out
