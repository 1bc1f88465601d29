"""knn: Triton kernel (interpreter on CPU) vs torch reference vs float64 brute force."""
from __future__ import annotations

import pytest
import torch

from edgecmg.kernels import _common
from edgecmg.kernels.knn import (
    _knn_configs,
    _knn_kernel,
    _knn_merge_kernel,
    bank_sq_norms_reference,
    knn_reference,
    knn_triton,
)
from kernel_checks import assert_knn_equivalent

DTYPES = [torch.float32, torch.float16]


def _data(n, m, d, dtype, seed=0, lead=()):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*lead, n, d, generator=g)
    bank = torch.randn(m, d, generator=g).to(dtype)
    return q, bank


# ---------------------------------------------------------------- reference (fast: bigger shapes)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 3, 16])
@pytest.mark.parametrize(
    "n,m,d",
    [(1, 1, 1), (1, 40, 1), (7, 3, 5), (33, 100, 17), (257, 1031, 96), (64, 5003, 128)],
    ids=["single", "d1", "m<k", "odd", "odd-96", "bank5k"],
)
def test_reference_matches_brute_force(n, m, d, k, dtype):
    q, bank = _data(n, m, d, dtype)
    dist, idx = knn_reference(q, bank, k)
    assert_knn_equivalent(dist, idx, q, bank, k)


@pytest.mark.parametrize("chunk_elements", [1, 64, 1000])
def test_reference_chunking_is_invisible(chunk_elements):
    # Tiny chunks force many running-top-k merges, including chunks smaller than k.
    q, bank = _data(20, 301, 12, torch.float32, seed=1)
    for k in (1, 6):
        dist, idx = knn_reference(q, bank, k, chunk_elements=chunk_elements)
        ref_d, ref_i = knn_reference(q, bank, k)
        torch.testing.assert_close(dist, ref_d, atol=1e-4, rtol=0)
        assert_knn_equivalent(dist, idx, q, bank, k)


def test_reference_batched_and_precomputed_norms():
    q, bank = _data(9, 50, 8, torch.float16, lead=(3,))
    norms = bank_sq_norms_reference(bank)
    dist, idx = knn_reference(q, bank, 4, bank_sq_norms=norms)
    assert dist.shape == (3, 9, 4)
    for f in range(3):
        d1, i1 = knn_reference(q[f], bank, 4)
        torch.testing.assert_close(dist[f], d1)
        assert torch.equal(idx[f], i1)
    assert_knn_equivalent(dist, idx, q, bank, 4)


# ---------------------------------------------------------------- kernel (interpreter: small shapes)
KERNEL_SHAPES = [
    pytest.param(1, 1, 1, id="single-q-d1-m1"),
    pytest.param(1, 21, 1, id="single-q-d1"),
    pytest.param(5, 3, 7, id="m<k"),
    pytest.param(37, 53, 20, id="odd"),
    pytest.param(18, 45, 70, id="d>resident-fp32"),
]


@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("k", [1, 5])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,m,d", KERNEL_SHAPES)
def test_kernel_matches_reference_and_brute_force(n, m, d, dtype, k, splits, kernel_device):
    q, bank = _data(n, m, d, dtype, seed=n + m + d)
    q, bank = q.to(kernel_device), bank.to(kernel_device)
    dist, idx = knn_triton(q, bank, k, splits=splits)
    assert_knn_equivalent(dist, idx, q, bank, k)
    ref_d, _ = knn_reference(q, bank, k)
    torch.testing.assert_close(dist.cpu(), ref_d.cpu(), atol=1e-4 * (1 + d), rtol=1e-5)


@pytest.mark.parametrize("k", [1, 4])
def test_kernel_batched_frames_one_launch(k, kernel_device):
    q, bank = _data(11, 40, 24, torch.float16, seed=3, lead=(3,))
    q, bank = q.to(kernel_device), bank.to(kernel_device)
    dist, idx = knn_triton(q, bank, k, splits=2)
    assert dist.shape == (3, 11, k) and idx.shape == (3, 11, k)
    assert_knn_equivalent(dist, idx, q, bank, k)


def test_kernel_preallocated_output_and_norms(kernel_device):
    q, bank = _data(16, 30, 16, torch.float32, seed=4)
    q, bank = q.to(kernel_device), bank.to(kernel_device)
    out = (torch.full((16, 3), -7.0, device=kernel_device), torch.full((16, 3), -7, dtype=torch.int64,
                                                                        device=kernel_device))
    res = knn_triton(q, bank, 3, bank_sq_norms=bank_sq_norms_reference(bank), out=out)
    assert res[0] is out[0] and res[1] is out[1]
    assert_knn_equivalent(out[0], out[1], q, bank, 3)


def test_kernel_non_contiguous_inputs(kernel_device):
    q, bank = _data(40, 20, 10, torch.float32, seed=5)
    q = q.to(kernel_device).t().contiguous().t()  # column-major queries
    bank = bank.to(kernel_device)[::2]  # strided rows
    dist, idx = knn_triton(q, bank, 2)
    assert_knn_equivalent(dist, idx, q, bank, 2)


# ---------------------------------------------------------------- exact ties
def _tied_bank(dtype):
    """Integer-valued vectors: every product and sum is exact in fp16 and fp32, so tied distances are
    bit-identical and the lower-index rule must hold exactly. Row 9 duplicates row 2, row 14 row 5, and
    rows 4, 11, 17 are all equidistant from query 0 (permuted coordinates)."""
    g = torch.Generator().manual_seed(7)
    bank = torch.randint(-3, 4, (20, 6), generator=g).float()
    bank[9] = bank[2]
    bank[14] = bank[5]
    bank[4] = torch.tensor([1.0, 0, 0, 0, 0, 0])
    bank[11] = torch.tensor([0, 1.0, 0, 0, 0, 0])
    bank[17] = torch.tensor([0, 0, 0, 0, 0, 1.0])
    q = torch.stack([torch.zeros(6), bank[2], bank[5], 2 * bank[17]])
    return q, bank.to(dtype)


def _faiss_expected(q, bank, k):
    """Lexicographic (distance, index) order from exact float64 distances."""
    full = ((q.double()[:, None] - bank.double()[None]) ** 2).sum(-1)
    m = full.shape[1]
    key = full * (m + 1) + torch.arange(m, dtype=torch.float64)  # exact: small integers
    order = key.argsort(dim=1)[:, :k]
    return full.gather(1, order).float(), order


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("splits", [1, 4])
def test_kernel_exact_ties_lower_index_wins(dtype, k, splits, kernel_device):
    q, bank = _tied_bank(dtype)
    dist, idx = knn_triton(q.to(kernel_device), bank.to(kernel_device), k, splits=splits)
    exp_d, exp_i = _faiss_expected(q, bank, k)
    torch.testing.assert_close(dist.cpu(), exp_d, atol=0, rtol=0)
    assert torch.equal(idx.cpu(), exp_i), (idx, exp_i)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 3, 7])
def test_reference_exact_ties(dtype, k):
    q, bank = _tied_bank(dtype)
    exp_d, exp_i = _faiss_expected(q, bank, k)
    for chunk_elements in (1 << 23, 12):
        dist, idx = knn_reference(q, bank, k, chunk_elements=chunk_elements)
        torch.testing.assert_close(dist, exp_d, atol=0, rtol=0)
        if k == 1:  # min() keeps the first index: exact faiss order
            assert torch.equal(idx, exp_i)
        assert_knn_equivalent(dist, idx, q, bank, k, atol=0.0)  # either index inside a tie
        # within the returned rows, equal distances are ordered by index
        same = dist[:, 1:] == dist[:, :-1]
        assert (idx[:, 1:][same] > idx[:, :-1][same]).all()


# ---------------------------------------------------------------- GPU compiler checks without a GPU
def _knn_signature(bank_ty):
    sig = {"q_ptr": "*fp32", "bank_ptr": bank_ty, "norm_ptr": "*fp32", "out_d_ptr": "*fp32", "out_i_ptr": "*i64"}
    for name in ("n", "m", "d", "rows_per_split", "stride_q", "stride_b", "stride_os", "stride_on",
                 "n_bucket", "m_bucket"):
        sig[name] = "i32"
    return sig


@pytest.mark.parametrize(
    "arch,bank_ty,consts,num_warps",
    [
        # the headline shape: fp16 bank, d=128, k=1, largest autotune tile
        (90, "*fp16", dict(K=1, K_PAD=1, FINAL=False, RESIDENT=True, BLOCK_D=128, PRECISION="tf32",
                           BLOCK_N=128, BLOCK_M=128), 8),
        # Jetson Orin, fp32 bank streamed in d chunks, k>1 with padded slots
        (87, "*fp32", dict(K=5, K_PAD=8, FINAL=True, RESIDENT=False, BLOCK_D=32, PRECISION="tf32x3",
                           BLOCK_N=64, BLOCK_M=64), 4),
    ],
    ids=["sm90-fp16-k1", "sm87-fp32-k5"],
)
def test_knn_kernel_compiles_for_gpu(arch, bank_ty, consts, num_warps):
    """tl.dot shape rules, loop-carried types of the while loop etc. are only checked by the GPU
    compiler; Triton ships LLVM and ptxas, so build a cubin here without a GPU."""
    if not _common.triton_available():
        pytest.skip("triton is not installed")
    sig = _knn_signature(bank_ty)
    sig.update({name: "constexpr" for name in consts})
    compiled = _common.compile_for_target(_knn_kernel, sig, consts, arch=arch, num_warps=num_warps)
    assert compiled.asm["cubin"]
    assert compiled.metadata.shared <= 227 * 1024


def test_knn_merge_kernel_compiles_for_gpu():
    if not _common.triton_available():
        pytest.skip("triton is not installed")
    sig = {"part_d_ptr": "*fp32", "part_i_ptr": "*i32", "out_d_ptr": "*fp32", "out_i_ptr": "*i64",
           "n": "i32", "splits": "i32", "stride_ps": "i32", "stride_pn": "i32", "stride_on": "i32",
           "K": "constexpr", "SK_PAD": "constexpr", "BLOCK_N": "constexpr"}
    compiled = _common.compile_for_target(_knn_merge_kernel, sig, dict(K=4, SK_PAD=64, BLOCK_N=16), arch=90)
    assert compiled.asm["cubin"]


@pytest.mark.slow
@pytest.mark.parametrize("arch", [90, 87])
@pytest.mark.parametrize("bank_ty,block_d", [("*fp16", 128), ("*fp16", 256), ("*fp32", 64)])
def test_every_knn_autotune_config_compiles(arch, bank_ty, block_d):
    if not _common.triton_available():
        pytest.skip("triton is not installed")
    for cfg in _knn_configs():
        for k, k_pad in ((1, 1), (16, 16)):
            consts = dict(K=k, K_PAD=k_pad, FINAL=False, RESIDENT=True, BLOCK_D=block_d,
                          PRECISION="tf32x3" if bank_ty == "*fp32" else "tf32", **cfg.kwargs)
            sig = _knn_signature(bank_ty)
            sig.update({name: "constexpr" for name in consts})
            _common.compile_for_target(_knn_kernel, sig, consts, arch=arch, num_warps=cfg.num_warps,
                                       num_stages=cfg.num_stages)
