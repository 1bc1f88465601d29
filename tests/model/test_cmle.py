import torch

from edgecmg.model import cmle


def _constructed_case(n=200, seed=0):
    """Vision features = a low-variance 2-D manifold that the text shares + high-variance noise dims.

    PCA keeps the high-variance noise; CMLE keeps the directions whose local linear structure
    agrees with the language modality.
    """
    g = torch.Generator().manual_seed(seed)
    angle = torch.rand(n, generator=g) * 6.28
    manifold = torch.stack([angle.cos(), angle.sin()], 1)            # shared semantic structure
    text = torch.cat([manifold, 0.01 * torch.randn(n, 6, generator=g)], 1)
    noise = 5.0 * torch.randn(n, 3, generator=g)                      # large, semantically empty
    vision = torch.cat([0.5 * manifold, noise], 1) @ torch.linalg.qr(torch.randn(5, 5, generator=g))[0]
    return vision, text


def test_lle_weights_rows_sum_to_one_over_k_neighbours():
    _, text = _constructed_case()
    w = cmle.lle_weights(text, neighbors=8)
    assert torch.allclose(w.sum(1), torch.ones(len(w)), atol=1e-5)
    assert ((w != 0).sum(1) <= 8).all() and (w.diagonal() == 0).all()


def test_projection_preserves_language_weights_better_than_pca():
    vision, text = _constructed_case()
    w = cmle.lle_weights(text, neighbors=8)
    # the whole 5-D space: the shared manifold is the low-variance part, outside a small PCA subspace
    mean, proj = cmle.fit_projection(vision, w, dim=2, subspace=5)
    pmean, pproj = cmle.pca_projection(vision, dim=2)
    z_cmle = (vision - mean) @ proj
    z_pca = (vision - pmean) @ pproj
    # both are whitened, so reconstruction errors are comparable
    assert cmle.reconstruction_error(z_cmle, w) < 0.5 * cmle.reconstruction_error(z_pca, w)


def test_projection_satisfies_whitening_constraint():
    vision, text = _constructed_case()
    w = cmle.lle_weights(text, neighbors=8)
    mean, proj = cmle.fit_projection(vision, w, dim=3, subspace=5, eps=0.0)
    z = (vision - mean) @ proj
    assert torch.allclose(z.T @ z, torch.eye(3), atol=1e-3)


def test_more_channels_than_images_stays_in_the_images_span():
    """304 channels, 40 images: the chosen directions lie in the span of the centred image features
    (outside it the whitened problem is degenerate, 0 / eps)."""
    g = torch.Generator().manual_seed(1)
    vision = torch.randn(40, 304, generator=g)
    text = torch.randn(40, 16, generator=g)
    mean, proj = cmle.fit_projection(vision, cmle.lle_weights(text, neighbors=5), dim=24)
    assert proj.shape == (304, 24) and torch.isfinite(proj).all()
    centred = (vision - mean).double()
    coeffs = torch.linalg.lstsq(centred.T, proj.double()).solution       # proj = X^T c
    assert torch.allclose(centred.T @ coeffs, proj.double(), atol=1e-6)


def test_unit_directions_keep_the_directions_and_drop_the_whitening():
    vision, text = _constructed_case()
    _, proj = cmle.fit_projection(vision, cmle.lle_weights(text, neighbors=8), dim=3, subspace=5)
    unit = cmle.unit_directions(proj)
    assert torch.allclose(unit.norm(dim=0), torch.ones(3), atol=1e-6)
    assert torch.allclose(torch.nn.functional.cosine_similarity(unit, proj, dim=0), torch.ones(3), atol=1e-6)


def test_near_duplicate_images_give_zero_columns_not_noise_directions():
    """20 images that are 4 parts seen 5 times each (a paused line) span 3 directions: CMLE keeps those,
    and the rest of its output is zero instead of directions outside the images' span."""
    import pytest

    from edgecmg.errors import DataError

    g = torch.Generator().manual_seed(3)
    parts = torch.randn(4, 64, generator=g)
    vision = parts.repeat_interleave(5, dim=0) + 1e-9 * torch.randn(20, 64, generator=g)
    text = torch.randn(20, 8, generator=g)
    mean, proj = cmle.fit_projection(vision, cmle.lle_weights(text, neighbors=4), dim=16)
    assert proj.shape == (64, 16) and torch.isfinite(proj).all()
    nonzero = proj.norm(dim=0) > 0
    assert int(nonzero.sum()) == 3
    centred = (parts - parts.mean(0)).double()
    coeffs = torch.linalg.lstsq(centred.T, proj.double()).solution
    assert torch.allclose(centred.T @ coeffs, proj.double(), atol=1e-6)  # inside the parts' span
    with pytest.raises(DataError, match="do not vary"):
        cmle.fit_projection(parts[:1].repeat(10, 1), cmle.lle_weights(text[:10], neighbors=4), dim=4)
