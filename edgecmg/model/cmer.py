"""CMER, Cross-modal Entropy Reduction (Chen et al., IEEE TMM 2024, arXiv 2310.02821).

The feature map is split into a g x g grid. For every image, K = g*g variants each drop one cell;
the matcher scores every variant against the prompt in one batched call. A cell whose removal
*raises* the match by more than its ``margin`` carries information irrelevant to the text and is
discarded from image-level scoring; never all cells are discarded.

The margin is set per cell on the training images: a quantile (default: the maximum) of the gains
that cell showed on normal data. With the zero-shot matcher some cells of a part raise the match
when removed on almost every normal image (on KolektorSDD the right half of the commutator does in
94-100% of them), so a single pooled quantile would drop those cells routinely. Per cell, a cell
goes only when it looks more irrelevant to the prompt than it ever did on a normal part.

Measured limit: this does not make the gate harmless. A defect can itself make its cell look
irrelevant (in an experiment outside the repo, 9.6% of defective KolektorSDD test images lost a
cell, 3.4% of good ones), so gating still cost image AUROC (bench_core.py: 0.899 -> 0.870); the
scorer therefore keeps the ungated score above the stored threshold (``BankScorer.image_score``),
which brought it to 0.886 (benchmarks/results/core.md).
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
    """Bool [B, K]: cells that stay. Cell k goes when its gain exceeds ``margin`` (a scalar or one
    value per cell, [K]); the most relevant cell (smallest gain) always stays, so an image never
    loses every cell."""
    keep = gain <= margin
    most_relevant = torch.nn.functional.one_hot(gain.argmin(dim=1), gain.shape[1]).bool()
    return keep | most_relevant


def fit_margin(train_gain: torch.Tensor, quantile: float, slack: float = 1.0) -> torch.Tensor:
    """Per-cell margins [K] from the gains [N, K] of normal training images: each cell's ``quantile``
    raised by ``slack`` times its distance above the cell's median gain, never below 0 (a cell whose
    removal lowers the match always matters).

    Why the slack: an unseen normal part beats the largest of N training gains about once in N+1
    per cell, so with the bare maximum a g x g grid drops some cell of many normal frames (on
    unseen crops of a full-frame texture, 8 to 16 of 26 frames at g = 8). Raised by the gains' own
    spread, the margin is passed only by a cell far less relevant to the prompt than on any normal
    part (0 of 26 there, while the foreign objects the bare maximum caught are still caught).
    """
    if train_gain.ndim != 2 or train_gain.shape[0] == 0:
        raise ConfigError(f"CMER needs gains [images, cells] of at least one training image, got "
                          f"shape {tuple(train_gain.shape)}")
    if not 0.0 < quantile <= 1.0:
        raise ConfigError(f"cmer_quantile={quantile} must be in (0, 1]")
    if not slack >= 0.0:
        raise ConfigError(f"cmer_slack={slack} must be >= 0 (0: the quantile itself)")
    gains = train_gain.float()
    top = torch.quantile(gains, quantile, dim=0)
    typical = torch.quantile(gains, 0.5, dim=0)
    return (top + slack * (top - typical).clamp_min(0.0)).clamp_min(0.0)
