"""CMLE, Cross-modal Linear Embedding (Chen et al., IEEE TMM 2024, arXiv 2310.02821).

1. Language structure: each training image i has a text embedding t_i (a caption, or the pseudo-text
   t_i = sum_c p_ic e_c from the ImageNet head and MiniLM class embeddings). Locally-linear weights
   W_ij reconstruct t_i from its k nearest text neighbours (rows sum to 1): the correlation
   structure matrix.
2. Vision embedding: find the linear map z = P^T (x - mu) that best preserves those weights,
       min_P tr(P^T X^T M X P)  s.t.  P^T (X^T X + eps I) P = I,    M = (I - W)^T (I - W),
   the generalised eigenproblem X^T M X p = lambda (X^T X + eps I) p, smallest eigenvalues first.
   Semantically similar images then lie close in the vision latent space. The map is linear, so it
   applies unchanged to patch features (the image feature is their mean).
"""
from __future__ import annotations

import numpy as np
import scipy.linalg
import torch

from edgecmg.errors import ConfigError


def lle_weights(text: torch.Tensor, neighbors: int, reg: float = 1e-3) -> torch.Tensor:
    """Locally-linear reconstruction weights [N, N] over each row's ``neighbors`` nearest (cosine)."""
    n = text.shape[0]
    if n < 3:
        raise ConfigError(f"CMLE needs at least 3 training images, got {n}")
    k = min(neighbors, n - 1)
    t = torch.nn.functional.normalize(text.double(), dim=1)
    sim = t @ t.T
    sim.fill_diagonal_(-float("inf"))
    nbrs = sim.topk(k, dim=1).indices
    weights = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        diff = t[nbrs[i]] - t[i]                      # [k, dim]
        gram = diff @ diff.T
        gram += torch.eye(k, dtype=gram.dtype) * (reg * torch.trace(gram).clamp_min(1e-12))
        w = torch.linalg.solve(gram, torch.ones(k, dtype=gram.dtype))
        weights[i, nbrs[i]] = w / w.sum()
    return weights.float()


def reconstruction_error(features: torch.Tensor, weights: torch.Tensor) -> float:
    """Mean squared error of reconstructing each (standardised) feature row from its weights."""
    z = features.double()
    return float(((z - weights.double() @ z) ** 2).sum(dim=1).mean())


def fit_projection(features: torch.Tensor, weights: torch.Tensor, dim: int,
                   eps: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve the whitened generalised eigenproblem; returns (mean [D], projection [D, dim])."""
    x = features.double()
    mean = x.mean(dim=0)
    xc = (x - mean).numpy()
    n, d = xc.shape
    dim = min(dim, d)
    i_minus_w = np.eye(n) - weights.double().numpy()
    m = i_minus_w.T @ i_minus_w
    a = xc.T @ m @ xc
    b = xc.T @ xc
    b += np.eye(d) * eps * np.trace(b) / d
    a = (a + a.T) / 2
    _, vectors = scipy.linalg.eigh(a, b, subset_by_index=[0, dim - 1])
    return mean.float(), torch.from_numpy(vectors).float()


def pca_projection(features: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Whitened PCA with the same output convention, the reference CMLE is compared against."""
    x = features.double()
    mean = x.mean(dim=0)
    _, s, vt = torch.linalg.svd(x - mean, full_matrices=False)
    proj = vt[:dim].T / (s[:dim] + 1e-12)
    return mean.float(), proj.float()
