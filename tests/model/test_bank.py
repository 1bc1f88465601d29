import pytest
import torch

from edgecmg import ops
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
def test_distances_without_ignores_the_rows_left_out(dtype, k):
    g = torch.Generator().manual_seed(0)
    queries, rows = torch.randn(37, 8, generator=g), torch.randn(50, 8, generator=g).to(dtype)
    left_out = torch.zeros(50, dtype=torch.bool)
    left_out[::3] = True
    got = bank.distances_without(queries, rows, left_out, k)
    kept = rows[~left_out].float()
    q = queries.to(dtype).float()  # an fp16 bank rounds the queries as the kNN reference does
    brute = torch.cdist(q.double(), kept.double()).topk(k, largest=False).values.mean(dim=1)
    torch.testing.assert_close(got.double(), brute, atol=1e-4, rtol=1e-4)
    # the same rows as a bank of their own: what the scorer computes at inference
    ref, _ = ops.knn(queries, kept.to(dtype), k=k)
    torch.testing.assert_close(got, ref.clamp_min(0).sqrt().mean(dim=1), atol=1e-5, rtol=1e-5)


def test_distances_without_is_inf_when_too_few_rows_remain():
    rows = torch.randn(4, 3)
    got = bank.distances_without(torch.randn(2, 3), rows, torch.tensor([True, True, True, False]), 2)
    assert torch.isinf(got).all()
