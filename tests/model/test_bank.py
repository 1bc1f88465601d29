import pytest
import torch

from edgecmg.model import bank


def test_greedy_coreset_picks_one_point_per_cluster():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0], [10, 0], [0, 10], [10, 10]])
    points = (centers[:, None] + 0.1 * torch.randn(4, 50, 2, generator=g)).reshape(-1, 2)
    chosen = bank.greedy_coreset(points, 4, projection_dim=64)
    clusters = {int(i) // 50 for i in chosen}
    assert clusters == {0, 1, 2, 3}


def test_coreset_covers_better_than_random():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3000, 16, generator=g) * torch.linspace(0.1, 3, 16)
    chosen = bank.greedy_coreset(x, 100, projection_dim=16)
    rand = torch.randperm(3000, generator=g)[:100]
    cover = lambda idx: torch.cdist(x, x[idx]).min(1).values.max()  # noqa: E731
    assert cover(chosen) < cover(rand)


def test_coreset_pool_returns_indices_into_the_full_set():
    x = torch.randn(5000, 8)
    chosen = bank.greedy_coreset(x, 50, max_pool=1000)
    assert chosen.max() < 5000 and len(set(chosen.tolist())) == 50


def test_coreset_from_a_pool_reaches_far_clusters_at_high_indices():
    """With more points than max_pool the coreset runs on a random pool: the indices it returns must be
    into the whole set (the pool's own positions stay below the pool size and would name other points)."""
    g = torch.Generator().manual_seed(0)
    near = 0.1 * torch.randn(4000, 2, generator=g)  # indices 0..3999: one blob at the origin
    centers = torch.tensor([[50.0, 0], [0, 50], [-50, 0], [0, -50]])
    far = (centers[:, None] + 0.1 * torch.randn(4, 250, 2, generator=g)).reshape(-1, 2)  # 4000..4999
    x = torch.cat([near, far])
    chosen = bank.greedy_coreset(x, 5, projection_dim=64, max_pool=1000)
    assert len(set(chosen.tolist())) == 5
    # one point per far cluster, and one in the blob
    assert {int(i) // 250 - 16 for i in chosen if i >= 4000} == {0, 1, 2, 3}
    assert sum(int(i) < 4000 for i in chosen) == 1
    assert torch.cdist(x[chosen], centers).min(dim=0).values.max() < 1


@pytest.mark.parametrize("size", [1, 2, 255, 256, 257, 512, 700, 900])
def test_coreset_progress_adds_up_to_the_points_chosen(size):
    # A progress bar with total=size must end full, whatever the remainder of the 256-point steps.
    steps = []
    chosen = bank.greedy_coreset(torch.randn(800, 8), size, progress=steps.append)
    assert sum(steps) == len(chosen) == min(size, 800)


def test_smoothing_preserves_mass_and_shape():
    taps = bank.gaussian_kernel1d(4.0)
    assert abs(float(taps.sum()) - 1) < 1e-6
    maps = torch.zeros(1, 1, 64, 40)
    maps[0, 0, 32, 20] = 1
    out = bank.smooth(maps, taps)
    assert out.shape == maps.shape and abs(float(out.sum()) - 1) < 1e-4 and out.argmax() == maps.argmax()



@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("k", [1, 3])
def test_patch_scores_limited_to_some_bank_rows_ignore_the_others(dtype, k):
    """What fit's normal level uses: bank images scored without their own rows."""
    from edgecmg.model.detector import BankScorer, Geometry

    g = torch.Generator().manual_seed(0)
    scorer = BankScorer(Geometry((64, 64), 2, "s16"), feature_dim=8, bank_size=50, use_cmer=False, knn_k=k,
                        smoothing_sigma=1.0)
    scorer.set_bank(torch.randn(50, 8, generator=g).to(dtype))
    queries = torch.randn(1, 16, 8, generator=g)
    others = torch.ones(50, dtype=torch.bool)
    others[::3] = False
    got = scorer.patch_scores(queries, bank_rows=others)
    kept = scorer.memory_bank[others].double()
    q = queries[0].to(scorer.memory_bank.dtype).double()  # an fp16 bank rounds the queries, as the reference does
    brute = torch.cdist(q, kept).topk(k, largest=False).values.mean(dim=1)
    torch.testing.assert_close(got[0].double(), brute, atol=1e-4, rtol=1e-4)
