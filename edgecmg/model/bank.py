"""Memory bank: greedy k-center coreset of normal patch features, kNN scoring, map smoothing."""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from edgecmg.errors import ConfigError


def greedy_coreset(features: torch.Tensor, size: int, *, projection_dim: int = 32, max_pool: int = 65536,
                   seed: int = 0, progress: Optional[Callable[[int], None]] = None) -> torch.Tensor:
    """Indices [size] of a greedy k-center coreset (Sener and Savarese 2018; PatchCore).

    Each step adds the point farthest from the chosen set, so the bank covers the feature space with
    the smallest worst-case gap. The loop is O(pool * size), so two approximations keep fitting on a
    2-core CPU within minutes: distances are computed in a random Gaussian projection to
    ``projection_dim`` dims (Johnson-Lindenstrauss), and the candidates are a seeded random pool of
    at most ``max_pool`` patches (neighbouring patches of normal images are highly redundant).
    """
    n = features.shape[0]
    if n == 0:
        raise ConfigError("no training patch features to build a memory bank from")
    if size >= n:
        if progress is not None:
            progress(n)
        return torch.arange(n)
    generator = torch.Generator().manual_seed(seed)
    pool = torch.randperm(n, generator=generator)[:max(max_pool, size)].sort().values if n > max_pool else None
    x = features.float() if pool is None else features[pool].float()
    n = x.shape[0]
    if x.shape[1] > projection_dim:
        proj = torch.randn(x.shape[1], projection_dim, generator=generator) / math.sqrt(projection_dim)
        x = x @ proj
    x_sq = (x * x).sum(dim=1)
    start = int(torch.randint(n, (1,), generator=generator))
    chosen = torch.empty(size, dtype=torch.long)
    chosen[0] = start
    min_dist = (x_sq - 2 * x @ x[start] + x_sq[start]).clamp_min_(0)
    for i in range(1, size):
        nxt = int(torch.argmax(min_dist))
        chosen[i] = nxt
        dist = (x_sq - 2 * x @ x[nxt] + x_sq[nxt]).clamp_min_(0)
        torch.minimum(min_dist, dist, out=min_dist)
        if progress is not None and i % 256 == 0:
            progress(256)
    if progress is not None:
        progress(size - 256 * ((size - 1) // 256))  # the rest, so a progress bar ends at its total
    return chosen if pool is None else pool[chosen]


def gaussian_kernel1d(sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian taps, radius 4 sigma (PatchCore smooths its maps with sigma = 4)."""
    radius = max(1, int(math.ceil(4 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    taps = torch.exp(-0.5 * (x / sigma) ** 2)
    return taps / taps.sum()


def shift_up_left(maps: torch.Tensor, pixels: int) -> torch.Tensor:
    """Move the content of [B, 1, H, W] maps ``pixels`` up and left; the last row and column repeat
    into the vacated border. With ``smooth``, the 2-D definition of what ``map_operator`` does (scoring
    runs the operators; the tests hold them to these)."""
    pixels = min(pixels, maps.shape[-2] - 1, maps.shape[-1] - 1)
    if pixels <= 0:
        return maps
    return F.pad(maps[..., pixels:, pixels:], (0, pixels, 0, pixels), mode="replicate")


def smooth(maps: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of [B, 1, H, W] with replicate padding (plain convs: exports cleanly)."""
    r = taps.numel() // 2
    x = F.pad(maps, (r, r, 0, 0), mode="replicate")
    x = F.conv2d(x, taps.view(1, 1, 1, -1))
    x = F.pad(x, (0, 0, r, r), mode="replicate")
    return F.conv2d(x, taps.view(1, 1, -1, 1))


def map_operator(patches: int, size: int, offset: int, taps: torch.Tensor) -> torch.Tensor:
    """[size, patches]: the patch scores -> map steps along one axis, as one matrix.

    The steps are the bilinear upsampling (``F.interpolate``, align_corners=False), ``shift_up_left``
    by ``offset`` pixels (already clamped to the map) and ``smooth``. Each is linear and acts on the
    two axes separately, so a whole map is ``rows @ scores @ cols.T``: two small products instead of
    a resize, a pad and two convolutions over the full-size map (a torch predict at 800x320 went from
    43.7 to 39.1 ms on a 2-core CPU). Built by passing the identity through the same steps in 1-D;
    equal to the 2-D steps up to float rounding (tests/model/test_map_alignment.py).
    """
    basis = torch.eye(patches, dtype=torch.float32, device=taps.device)[:, None, :]  # [patches, 1, patches]
    rows = F.interpolate(basis, size=size, mode="linear", align_corners=False)
    if offset > 0:
        rows = F.pad(rows[..., offset:], (0, offset), mode="replicate")
    r = taps.numel() // 2
    rows = F.conv1d(F.pad(rows, (r, r), mode="replicate"), taps.float().view(1, 1, -1))
    return rows[:, 0, :].t().contiguous()
