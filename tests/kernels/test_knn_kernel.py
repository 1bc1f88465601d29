"""knn: Triton kernel (interpreter on CPU) vs torch reference vs float64 brute force."""
from __future__ import annotations

import pytest
import torch

from edgecmg.kernels.knn import bank_sq_norms_reference, knn_distances_reference, knn_reference, knn_triton
from kernel_checks import assert_knn_equivalent, tolerance

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


@pytest.mark.parametrize("chunk_elements", [100, 400, 1000])
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


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 3])
def test_reference_distances_are_never_negative(dtype, k):
    """||m||^2 - 2 q.m + ||q||^2 cancels to about 0 for a query on a bank row, and large features round
    it below 0 (a third of these rows unclamped): sqrt of it would be NaN in the anomaly map."""
    _, bank = _data(1, 200, 32, torch.float32)
    bank = (bank * 30).to(dtype)
    dist, idx = knn_reference(bank.float(), bank, k)
    assert (dist >= 0).all() and not dist.sqrt().isnan().any()
    assert torch.equal(idx[:, 0], torch.arange(200))


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
    torch.testing.assert_close(dist.cpu(), ref_d.cpu(), atol=tolerance(q.cpu(), bank.cpu()), rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,m,d,k", [(9, 50, 200, 16), (5, 12, 33, 16), (7, 300, 257, 2)])
def test_kernel_largest_k_and_features_wider_than_one_chunk(n, m, d, k, dtype, kernel_device):
    """k = 16 (the largest supported, here also with m < k) and d above 128, where an fp16 bank's
    features stream through the kernel in chunks."""
    q, bank = _data(n, m, d, dtype, seed=d)
    q, bank = q.to(kernel_device), bank.to(kernel_device)
    dist, idx = knn_triton(q, bank, k, splits=2)
    assert_knn_equivalent(dist, idx, q, bank, k)


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
        assert torch.equal(idx, exp_i), (k, chunk_elements, idx, exp_i)  # the lower index wins, as faiss


def test_reference_ties_at_the_kth_place_go_to_the_lower_index_across_chunks():
    # 40 identical rows, and a tie at the k-th place split over chunks: torch's topk alone returned
    # e.g. [26, 27, 28] and [450, 470, 1, 3]; the kernel and faiss give the lowest indices.
    q = torch.zeros(2, 4)
    dist, idx = knn_reference(q, torch.zeros(40, 4), 3)
    assert idx.tolist() == [[0, 1, 2]] * 2
    g = torch.Generator().manual_seed(0)
    bank = torch.randn(500, 4, generator=g) + 5.0
    bank[[0, 1, 3, 450, 470]] = torch.tensor([0.0, 0, 0, 0.5])
    bank[[450, 470]] = torch.tensor([0.0, 0, 0, 0.25])  # nearer than rows 0, 1, 3, which tie
    for chunk_elements in (1 << 23, 200, 30):
        dist, idx = knn_reference(q[:1], bank, 4, chunk_elements=chunk_elements)
        assert idx.tolist() == [[450, 470, 0, 1]], chunk_elements


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 3, 16])
@pytest.mark.parametrize("chunk_elements", [None, 30, 400])
def test_distances_alone_are_knn_references_distances_bit_for_bit(dtype, k, chunk_elements):
    # Scoring keeps only D: the same numbers whatever the chunking, the bank size against k (m < k
    # pads with inf) or ties (a tie changes which index, never the value), batched frames too.
    cases = [_data(33, 301, 17, dtype, seed=2), _data(5, 7, 4, dtype, seed=3, lead=(2,)), _tied_bank(dtype)]
    for q, bank in cases:
        want, _ = knn_reference(q, bank, k, chunk_elements=chunk_elements)
        got = knn_distances_reference(q, bank, k, chunk_elements=chunk_elements)
        assert got.dtype == torch.float32 and got.shape == want.shape
        assert torch.equal(got, want), (dtype, k, chunk_elements, tuple(q.shape), tuple(bank.shape))


# ---------------------------------------------------------------- GPU launch planning (no GPU needed)
def test_split_plan_fills_an_h100(monkeypatch):
    from edgecmg.kernels import knn as knn_mod

    monkeypatch.setattr(knn_mod, "interpret_mode", lambda: False)
    monkeypatch.setattr(knn_mod, "num_sms", lambda device: 132)
    for block_n in (32, 64, 128):
        blocks = 1024 // block_n
        one_frame = knn_mod._choose_splits(1024, 100_000, "cuda", block_n)
        # row blocks x splits: at least one wave of 132 SMs, two at most
        assert 132 <= blocks * one_frame <= 2 * 132
        eight_frames = knn_mod._choose_splits(8192, 100_000, "cuda", block_n)
        assert eight_frames < one_frame  # more queries, fewer splits needed
    assert knn_mod._choose_splits(1024, 300, "cuda", 64) == 1  # tiny bank: no split


def test_split_evenly_aligns_slices_on_a_gpu_and_returns_the_count_to_launch(monkeypatch):
    from edgecmg.kernels import _common

    monkeypatch.setattr(_common, "interpret_mode", lambda: False)
    assert _common.split_evenly(100_000, 16, 256) == (16, 6400)  # 6,250 rounded up to 25 x 256
    assert _common.split_evenly(1000, 8, 256) == (4, 256)  # rounding leaves 4 slices, not 8
    assert _common.split_evenly(300, 1, 256) == (1, 300)  # one slice: the whole bank, unaligned
    assert _common.split_evenly(5, 9, 256) == (1, 256)  # never more slices than items
    monkeypatch.setattr(_common, "interpret_mode", lambda: True)
    assert _common.split_evenly(70, 3, 256) == (3, 24)  # interpreter: as even as possible


def test_candidate_configs_cover_every_case_and_fit_shared_memory(monkeypatch):
    from edgecmg.kernels import knn as knn_mod

    monkeypatch.setattr(knn_mod, "interpret_mode", lambda: False)
    for esize in (2, 4):
        for d in (1, 64, 96, 128, 256, 1000):
            d_pad = knn_mod.next_pow2(max(d, 16))
            resident = d_pad <= knn_mod._MAX_RESIDENT_D[esize]
            block_d = d_pad if resident else knn_mod._D_CHUNK
            for k in (1, 5, 16):
                cands = knn_mod._candidates(k, resident, esize)
                assert cands, (esize, d, k)
                for c in cands:
                    # tl.dot needs tiles of at least 16; a query block and a bank tile in shared memory
                    assert c["BLOCK_N"] >= 16 and c["BLOCK_M"] >= 16
                    assert (c["BLOCK_N"] + c["BLOCK_M"]) * block_d * esize <= 64 * 1024


def test_tuner_times_each_candidate_once_per_bucket_and_gives_exact_results(monkeypatch, kernel_device):
    """EDGECMG_AUTOTUNE=1 drives the tuner under the interpreter: both candidates run, one is kept for
    the whole shape bucket, and the answer is the same whichever won."""
    from edgecmg.kernels import knn as knn_mod

    monkeypatch.setenv("EDGECMG_AUTOTUNE", "1")
    monkeypatch.setattr(knn_mod, "_TUNER", knn_mod.LaunchTuner(repeats=1))
    gen = torch.Generator().manual_seed(5)
    bank = torch.randn(70, 24, generator=gen)
    for n in (33, 40):  # one bucket (64)
        q = torch.randn(n, 24, generator=gen)
        dist, idx = knn_mod.knn_triton(q.to(kernel_device), bank.to(kernel_device), 3)
        dist, idx = dist.cpu(), idx.cpu()
        exp_d, exp_i = knn_reference(q, bank, 3)
        torch.testing.assert_close(dist, exp_d, atol=1e-4, rtol=1e-4)
        assert_knn_equivalent(dist, idx, q, bank, 3, atol=1e-4)
    assert len(knn_mod._TUNER.timings) == 1
    (key, seconds), = knn_mod._TUNER.timings.items()
    candidates = knn_mod._candidates(3, True, 4)
    assert len(seconds) == len(candidates) and all(t > 0 for t in seconds)
    assert knn_mod._TUNER.chosen[key] == candidates[min(range(len(seconds)), key=seconds.__getitem__)]
