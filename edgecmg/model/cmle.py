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
3. fit() keeps the directions of P and rescales each to unit length (``unit_directions``): the
   whitening only fixes the solution; as a metric for patches it amplifies noise.

With more channels than training images (304 vs ~235 on KolektorSDD), X^T X is singular: outside
the span of the image features both sides vanish, the ratio is 0 / eps, and the smallest
eigenvalues pick exactly those directions, which carry patch-level noise amplified by
1 / sqrt(eps). So the problem is solved inside the leading principal subspace of the image features
(as Neighborhood Preserving Embedding does). Measured in a feature-cache experiment outside the
repo (session 3), 96 output dims, image AUROC, no projection / full space / principal subspace of 128: KolektorSDD 0.909 / 0.901 / 0.913, elpv mono
0.954 / 0.949 / 0.952.
"""
from __future__ import annotations

import logging

import numpy as np
import scipy.linalg
import torch

from edgecmg.errors import ConfigError, DataError

log = logging.getLogger("edgecmg")


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


def fit_projection(features: torch.Tensor, weights: torch.Tensor, dim: int, *, subspace: int | None = None,
                   eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve the whitened generalised eigenproblem; returns (mean [D], projection [D, dim]) with
    P^T (X^T X + eps I) P = I.

    subspace: principal components of the image features the problem is solved in (default
        ``4 * dim / 3``, capped by D and N - 1, at least ``dim``).
    """
    x = features.double()
    mean = x.mean(dim=0)
    xc = (x - mean).numpy()
    n, d = xc.shape
    dim = min(dim, d, n - 1)
    rank = subspace or (4 * dim) // 3
    rank = max(dim, min(rank, d, n - 1))
    _, singular, vt = np.linalg.svd(xc, full_matrices=False)
    # Directions with no variance (near-duplicate images: frames from a paused line) have
    # eigenvalue 0/eps and would rank first: solve only in the span the images really have.
    spanned = int((singular > 1e-6 * singular[0]).sum()) if singular.size and singular[0] > 0 else 0
    if spanned == 0:
        raise DataError("CMLE: the training images' features do not vary (every image alike?); fit on "
                        "distinct good parts, or turn CMLE off: cmle=False (--no-cmle)")
    out_dim = dim
    if spanned < dim:
        # The output keeps its size (the model was built for it); the extra columns are zero, so
        # they add nothing to any distance.
        log.warning("CMLE: the training images span only %d directions (near-duplicate images?); %d of the "
                    "%d output dims are left zero", spanned, dim - spanned, dim)
        dim = spanned
    rank = min(rank, spanned)
    basis = vt[:rank].T                                   # [D, r] principal directions
    i_minus_w = np.eye(n) - weights.double().numpy()
    m = i_minus_w.T @ i_minus_w
    xb = xc @ basis                                       # [N, r]
    a = xb.T @ m @ xb
    a = (a + a.T) / 2
    b = np.diag(singular[:rank] ** 2)                     # basis^T X^T X basis
    b += np.eye(rank) * eps * np.trace(b) / rank
    _, vectors = scipy.linalg.eigh(a, b, subset_by_index=[0, dim - 1])
    projection = np.zeros((d, out_dim))
    projection[:, :dim] = basis @ vectors                 # [D, out_dim]
    return mean.float(), torch.from_numpy(projection).float()


def unit_directions(projection: torch.Tensor) -> torch.Tensor:
    """Rescale each column of a CMLE projection to unit length: keep the directions, drop the whitening.

    The whitening constraint fixes the eigenproblem's solution up to scale, and scales each output
    coordinate to unit variance over the *image* features. Patch features vary along those
    directions far more than image means do, so whitened coordinates amplify patch-level noise in
    the directions where images barely differ. With unit columns a coordinate is the plain length of
    the feature along a CMLE direction, and distances stay in the backbone's own units. Measured
    with ``benchmarks/bench_core.py`` settings before the map alignment (layouts.response_offset;
    baseline vs +CMLE, 128 dims; the whitened column from a one-off script outside the repo), KolektorSDD pixel AUROC
    0.9096 / whitened 0.8965 / unit 0.9006; image AUROC 0.8988 / 0.9268 / 0.9315; elpv image AUROC
    0.9547 / 0.9536 / 0.9543 (one fit each, no CMER).
    """
    return projection / projection.norm(dim=0, keepdim=True).clamp_min(1e-12)


def pca_projection(features: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Whitened PCA with the same output convention, the reference CMLE is compared against."""
    x = features.double()
    mean = x.mean(dim=0)
    _, s, vt = torch.linalg.svd(x - mean, full_matrices=False)
    proj = vt[:dim].T / (s[:dim] + 1e-12)
    return mean.float(), proj.float()
