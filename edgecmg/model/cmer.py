"""CMER, Cross-modal Entropy Reduction (Chen et al., IEEE TMM 2024, arXiv 2310.02821).

The feature map is split into a g x g grid. For every image, K = g*g variants each drop one cell;
the matcher scores every variant against the prompt in one batched call. A cell whose removal
*raises* the match by more than ``margin`` carries information irrelevant to the text and is
discarded from image-level scoring. The margin is set on the training images, so on normal data
only the rare outliers beyond the chosen quantile are dropped; never all cells are discarded.
"""
from __future__ import annotations

import torch

from edgecmg.errors import ConfigError


def cell_index(height: int, width: int, grid: int) -> torch.Tensor:
    """Grid cell of each position of an [height, width] map, row-major: int64 [height * width]."""
    if grid > min(height, width):
        raise ConfigError(
            f"CMER grid {grid}x{grid} is finer than the {height}x{width} head map; use grid <= {min(height, width)} "
            "or a larger input size")
    rows = torch.arange(height) * grid // height
    cols = torch.arange(width) * grid // width
    return (rows[:, None] * grid + cols[None, :]).flatten()


def drop_one_masks(height: int, width: int, grid: int) -> torch.Tensor:
    """Variant masks [K, height*width], float: variant k keeps every position except those of cell k."""
    cells = cell_index(height, width, grid)
    k = grid * grid
    return (cells[None, :] != torch.arange(k)[:, None]).float()


def match_gain(full_score: torch.Tensor, variant_scores: torch.Tensor) -> torch.Tensor:
    """How much dropping each cell raises the text match: [B, K]."""
    return variant_scores - full_score[:, None]


def kept_cells(gain: torch.Tensor, margin: torch.Tensor | float) -> torch.Tensor:
    """Bool [B, K]: cells that stay. A cell goes when its gain exceeds ``margin``; the most relevant
    cell (smallest gain) always stays, so an image never loses every cell."""
    keep = gain <= margin
    most_relevant = torch.nn.functional.one_hot(gain.argmin(dim=1), gain.shape[1]).bool()
    return keep | most_relevant


def fit_margin(train_gain: torch.Tensor, quantile: float) -> float:
    """Margin from the gains seen on normal training images: their ``quantile``, and never below 0
    (a cell whose removal lowers the match always matters)."""
    if train_gain.numel() == 0:
        raise ConfigError("CMER needs at least one training image to set its margin")
    return max(0.0, float(torch.quantile(train_gain.flatten().float(), quantile)))


def expand_cells(kept: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """[B, K] cell mask -> [B, P] position mask through the cell index of each position."""
    return kept[:, cells]
