"""The one place that decides which implementation of a hot op runs: Triton kernel or torch reference.

Everything else in edgecmg calls ``edgecmg.ops.knn`` (or ``knn_distances``) / ``edgecmg.ops.masked_similarity`` and never
imports a kernel directly. Selection, in order:

1. ``backend="torch"`` or ``backend="triton"`` passed by the caller;
2. with ``backend="auto"``, the environment variable ``EDGECMG_KERNELS=torch|triton`` (a deployment
   switch, e.g. to rule the kernels out while chasing a numerical difference);
3. otherwise Triton for CUDA tensors when ``import triton`` works, the torch reference for the rest.

Triton on CPU tensors runs only under ``TRITON_INTERPRET=1`` (the CI path: slow, for correctness).
This module also validates inputs at the public boundary (shapes, dtypes, empty bank, NaN/Inf), so the
implementations can assume well-formed tensors.
"""
from __future__ import annotations

import functools
import logging
import operator
import os
from typing import Optional

import numpy as np
import torch

from edgecmg.errors import BackendUnavailableError, ConfigError, DataError
from edgecmg.kernels import _common
from edgecmg.kernels.knn import MAX_K, bank_sq_norms_reference, knn_distances_reference, knn_reference, knn_triton
from edgecmg.kernels.masked_similarity import MODES, masked_similarity_reference, masked_similarity_triton

log = logging.getLogger("edgecmg")

__all__ = ["BACKENDS", "ENV_VAR", "bank_sq_norms", "knn", "knn_distances", "masked_similarity", "resolve_backend"]

BACKENDS = ("auto", "triton", "torch")
ENV_VAR = "EDGECMG_KERNELS"
_BANK_DTYPES = (torch.float32, torch.float16)
_QUERY_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def resolve_backend(backend: str, device: torch.device) -> str:
    """Return "triton" or "torch" for tensors on ``device`` (rules in the module docstring).

    Raises ConfigError for an unknown name, BackendUnavailableError when Triton was asked for
    (argument or environment) but cannot run here.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend={backend!r}: choose one of {BACKENDS}")
    from_env = False  # who asked for Triton: the argument or EDGECMG_KERNELS, which the fix differs for
    if backend == "auto":
        env = os.environ.get(ENV_VAR, "").strip().lower()
        if env in ("", "auto"):
            if device.type != "cuda" or not _common.triton_available():
                if device.type == "cuda" and _common.triton_installed():
                    _note_old_triton()
                return "torch"
            try:  # installed but broken (e.g. no matching CUDA toolkit): auto falls back, quietly
                _common.require_triton()
            except BackendUnavailableError:
                return "torch"
            return "triton"
        if env not in ("torch", "triton"):
            raise ConfigError(f"{ENV_VAR}={env!r}: set it to 'torch', 'triton' or 'auto' (or unset it)")
        backend, from_env = env, True
    if backend == "triton":
        _common.require_triton()
        if device.type != "cuda" and not _common.interpret_mode():
            raise BackendUnavailableError(
                "triton",
                f"{ENV_VAR if from_env else 'argument backend'} asks for the Triton kernels but the tensors are on "
                f"{device.type}; they need a "
                "CUDA device, or Triton's (slow) CPU interpreter: TRITON_INTERPRET=1 set before triton is "
                "first imported",
                "move the tensors to a CUDA device or "
                + (f"unset {ENV_VAR} (or set it to 'auto'): the variable overrides every kernel call's backend"
                   if from_env else "use backend='torch'"),
            )
    return backend


@functools.lru_cache(maxsize=1)
def _note_old_triton() -> None:
    """Say once why a GPU runs the torch references although Triton is installed."""
    log.info("%s, the oldest the kernels are checked on: the torch references run the memory-bank search and "
             "masked similarity (%s)", _common.too_old_triton(), _common.TRITON_INSTALL_HINT)


def _check_tensor(name: str, x, dims: tuple[int, ...]) -> None:
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in dims:
        want = " or ".join(f"{d}-D" for d in dims)
        raise DataError(f"{name} must be {want}, got shape {tuple(x.shape)}")


def _finite_flag(x: torch.Tensor) -> torch.Tensor:
    """0-dim bool on x's device, True when every element is finite (no host sync).

    A NaN/Inf anywhere makes the fp32 sum non-finite, so a finite sum proves all elements finite: one
    reduction, cheaper than isfinite().all() (a bool temporary plus a second pass). A finite tensor
    whose sum overflows reads as bad here; ``_raise_non_finite`` then finds nothing and lets it pass.
    """
    if x.numel() == 0:
        return torch.ones((), dtype=torch.bool, device=x.device)
    return torch.isfinite(x.sum(dtype=torch.float32))


def _all_true(flags: list[torch.Tensor]) -> bool:
    """One host sync for all the checks of a call (each sync costs tens of microseconds on a GPU).
    A single flag is read as it is: stacking it would add two launches to every frame's call."""
    if len(flags) == 1:
        return bool(flags[0])
    return bool(torch.stack(flags).all())


def _raise_non_finite(name: str, x: torch.Tensor, what_to_do: str, unit: str = "value(s)") -> None:
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise DataError(f"{name} contains NaN/Inf: {bad} {unit}; {what_to_do}")


_BANK_ADVICE = "the memory bank is corrupt (or its norms overflow fp32): rebuild it"


def _checked_norms(bank: torch.Tensor) -> torch.Tensor:
    norms = bank_sq_norms_reference(bank)
    if not _all_true([_finite_flag(norms)]):
        _raise_non_finite("bank", norms, _BANK_ADVICE, "row(s)")
    return norms


def bank_sq_norms(bank: torch.Tensor) -> torch.Tensor:
    """Squared L2 norm of every bank row, float32 [m]: compute once per bank, pass to ``knn``.

    Also the bank's validity check: a NaN or Inf anywhere in a row makes its norm non-finite, which is
    refused here, so a caller passing precomputed norms to ``knn`` has already checked the bank.
    """
    _check_tensor("bank", bank, (2,))
    if bank.dtype not in _BANK_DTYPES:
        raise DataError(f"bank dtype {bank.dtype} unsupported: store the memory bank as float32 or float16")
    return _checked_norms(bank)


def knn(
    queries: torch.Tensor,
    bank: torch.Tensor,
    k: int = 1,
    *,
    bank_sq_norms: Optional[torch.Tensor] = None,
    out: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """k nearest bank rows of every query by squared L2 distance (faiss convention).

    queries [n, d] or [b, n, d] (several frames at once), float32/float16/bfloat16; bank [m, d]
    float32 or float16 on the same device; k in 1..16. Returns (D float32, I int64), each
    queries.shape[:-1] + (k,): D[..., r] = ||q - bank[I[..., r]]||^2 clamped at 0, ascending, ties to
    the lower index; if m < k the missing entries are (inf, -1). An fp16 bank also rounds the queries
    to fp16 before the product (fp32 accumulation).

    bank_sq_norms: float32 [m] from ``edgecmg.ops.bank_sq_norms(bank)``, computed once per bank
        (passing them also skips re-checking the bank for NaN, which that function did).
    out: optional preallocated (D, I) with the output shape, float32 / int64, contiguous, on the
        queries' device; filled and returned.
    backend: "auto", "triton" or "torch"; see ``resolve_backend``.
    The Triton path records no autograd history: its D does not require grad even when the queries
    do (use backend="torch" to differentiate through the distances).
    Formula, algorithm and references: ``edgecmg.kernels.knn``. Only the distances needed:
    ``knn_distances``, cheaper on a CPU.
    """
    k, bank_sq_norms = _checked_knn_inputs(queries, bank, k, bank_sq_norms)
    out_shape = tuple(queries.shape[:-1]) + (k,)
    if out is not None:
        _check_out(out, out_shape, queries.device)

    impl = resolve_backend(backend, queries.device)
    if impl == "triton":
        return knn_triton(queries, bank, k, bank_sq_norms=bank_sq_norms, out=out)
    dist, idx = knn_reference(queries, bank, k, bank_sq_norms=bank_sq_norms)
    if out is None:
        return dist, idx
    out[0].copy_(dist)
    out[1].copy_(idx)
    return out


def knn_distances(
    queries: torch.Tensor,
    bank: torch.Tensor,
    k: int = 1,
    *,
    bank_sq_norms: Optional[torch.Tensor] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """``knn(...)[0]``, the same values bit for bit, for callers that never look at which bank rows
    they are (scoring): the torch path then keeps no indices, which made it several times cheaper
    per bank chunk on a CPU (``edgecmg.kernels.knn.knn_distances_reference``). Same arguments,
    checks and errors as ``knn``; D float32, queries.shape[:-1] + (k,).
    """
    k, bank_sq_norms = _checked_knn_inputs(queries, bank, k, bank_sq_norms)
    if resolve_backend(backend, queries.device) == "triton":
        return knn_triton(queries, bank, k, bank_sq_norms=bank_sq_norms)[0]
    return knn_distances_reference(queries, bank, k, bank_sq_norms=bank_sq_norms)


def _checked_knn_inputs(queries: torch.Tensor, bank: torch.Tensor, k,
                        bank_sq_norms: Optional[torch.Tensor]) -> tuple[int, torch.Tensor]:
    """knn's input checks: (k as an int, the bank's norms, computed and checked where not given)."""
    _check_tensor("queries", queries, (2, 3))
    _check_tensor("bank", bank, (2,))
    k = _check_k(k)
    if bank.shape[0] == 0:
        raise DataError("bank is empty (0 rows): fit the detector on good images before scoring")
    if bank.dtype not in _BANK_DTYPES:
        raise DataError(f"bank dtype {bank.dtype} unsupported: store the memory bank as float32 or float16")
    if queries.dtype not in _QUERY_DTYPES:
        raise DataError(f"queries dtype {queries.dtype} unsupported: use float32, float16 or bfloat16")
    if queries.shape[-1] != bank.shape[1]:
        raise DataError(f"feature dims differ: queries {tuple(queries.shape)} vs bank {tuple(bank.shape)}; "
                        "the bank must come from the same backbone and projection as the queries")
    if bank.shape[1] == 0:
        raise DataError("features have 0 dimensions")
    if queries.device != bank.device:
        raise DataError(f"queries on {queries.device} but bank on {bank.device}: move both to one device")
    # An fp16 bank compares the queries rounded to fp16: a query beyond fp16's range would become
    # Inf there (NaN distances, or distance 0 in the kernel). Checking the rounded queries covers both.
    fp16_bank = bank.dtype == torch.float16
    flags = [_finite_flag(queries.to(torch.float16) if fp16_bank else queries)]
    computed = bank_sq_norms is None
    if computed:
        # A NaN/Inf anywhere in a bank row makes its norm non-finite: checking m norms checks the bank.
        bank_sq_norms = bank_sq_norms_reference(bank)
        flags.append(_finite_flag(bank_sq_norms))
    else:
        # Given norms come from ops.bank_sq_norms, which checked them once per bank: only their
        # type is checked per call (fp16 norms of a large bank overflow to Inf).
        if (not isinstance(bank_sq_norms, torch.Tensor) or tuple(bank_sq_norms.shape) != (bank.shape[0],)
                or bank_sq_norms.dtype != torch.float32):
            got = (f"{tuple(bank_sq_norms.shape)} {bank_sq_norms.dtype}" if isinstance(bank_sq_norms, torch.Tensor)
                   else type(bank_sq_norms).__name__)
            raise DataError(f"bank_sq_norms must be a float32 tensor of shape ({bank.shape[0]},) from "
                            f"edgecmg.ops.bank_sq_norms(bank), got {got}")
        if bank_sq_norms.device != bank.device:
            raise DataError(f"bank_sq_norms on {bank_sq_norms.device} but bank on {bank.device}")
    if not _all_true(flags):
        _raise_non_finite("queries", queries, "check the frame and the feature extractor (fp16 overflow?)")
        if fp16_bank and not bool(torch.isfinite(queries.to(torch.float16)).all()):
            raise DataError(f"queries exceed float16's range (largest magnitude {float(queries.abs().max()):.4g} "
                            "> 65504), in which the fp16 bank compares them; check the feature extractor or "
                            "store the bank as float32")
        if computed:
            _raise_non_finite("bank", bank_sq_norms, _BANK_ADVICE, "row(s)")
    return k, bank_sq_norms


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _check_k(k) -> int:
    """k as a Python int: any integer type (numpy's too, through ``__index__``) but a bool (numpy
    before 2.0 still lets ``np.bool_`` pass as an index)."""
    try:
        value = None if isinstance(k, (bool, np.bool_)) else operator.index(k)
    except TypeError:
        value = None
    if value is None or not 1 <= value <= MAX_K:
        raise ConfigError(f"k={k!r} must be an integer in 1..{MAX_K}")
    return value


def _check_out(out, shape: tuple[int, ...], device: torch.device) -> None:
    if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)):
        raise DataError("out must be a (distances, indices) pair of tensors")
    for t, dtype, name in ((out[0], torch.float32, "distances"), (out[1], torch.int64, "indices")):
        if tuple(t.shape) != shape or t.dtype != dtype or t.device != device or not t.is_contiguous():
            layout = "" if t.is_contiguous() else "a non-contiguous "
            raise DataError(f"out {name} must be a contiguous {dtype} tensor of shape {shape} on {device}; "
                            f"got {layout}{t.dtype} {tuple(t.shape)} on {t.device}")


def masked_similarity(
    features: torch.Tensor,
    masks: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    text: torch.Tensor,
    *,
    mode: str = "expectation",
    backend: str = "auto",
    params_checked: bool = False,
) -> torch.Tensor:
    """Score every masked variant of every image against the text vector; [b, K] float32.

    features [b, p, c] patch features; masks [K, p] float or bool (1 = keep; soft weights allowed,
    each mask must keep something); weight [c, C], bias [C] the head; text [C]. mode "expectation":
    sum_j softmax(W^T x + bias)_j * text_j; mode "cosine": cos(W^T x, text), bias unused; x is the
    masked mean of the patch features. Formula and references: ``edgecmg.kernels.masked_similarity``.

    params_checked: the caller has already had masks, weight, bias and text through this check and
        they have not changed since (a model's own head, text vector and masks are the same on every
        frame): only the features' values are read. Shapes, dtypes and devices are always checked.

    An fp16/bf16 head rounds the features to its dtype (the kernel's tensor-core products), so features
    beyond that dtype's range (fp16: 65,504) are refused, on either backend.
    """
    if mode not in MODES:
        raise ConfigError(f"mode={mode!r}: choose one of {MODES}")
    _check_tensor("features", features, (3,))
    _check_tensor("masks", masks, (2,))
    _check_tensor("weight", weight, (2,))
    _check_tensor("bias", bias, (1,))
    _check_tensor("text", text, (1,))
    b, p, c = features.shape
    if masks.shape[1] != p:
        raise DataError(f"masks {tuple(masks.shape)} must have one entry per patch ({p}) of features "
                        f"{tuple(features.shape)}")
    if weight.shape[0] != c:
        raise DataError(f"weight {tuple(weight.shape)} must have {c} rows, the feature width of features")
    C = weight.shape[1]
    if tuple(bias.shape) != (C,) or tuple(text.shape) != (C,):
        raise DataError(f"bias {tuple(bias.shape)} and text {tuple(text.shape)} must both be ({C},), one entry "
                        "per column of weight")
    if min(b, p, c, C, masks.shape[0]) == 0:
        raise DataError(f"empty input: features {tuple(features.shape)}, masks {tuple(masks.shape)}, "
                        f"weight {tuple(weight.shape)}")
    for name, t in (("features", features), ("masks", masks), ("weight", weight), ("bias", bias), ("text", text)):
        if t.device != features.device:
            raise DataError(f"{name} on {t.device} but features on {features.device}: move all to one device")
        if t is not masks and not t.is_floating_point():
            raise DataError(f"{name} must be floating point, got {t.dtype}")
    if weight.dtype not in (torch.float32, torch.float16, torch.bfloat16):  # the GPU kernel builds only these
        raise DataError(f"weight dtype {weight.dtype} unsupported: use float32, float16 or bfloat16")
    if masks.dtype != torch.bool and not masks.is_floating_point():
        raise DataError(f"masks must be bool or floating point, got {masks.dtype}")
    # An fp16/bf16 head: the kernel rounds the features to the head's dtype before pooling, where a
    # value beyond its range (fp16: 65,504) is Inf and every mask's score NaN. Checking the rounded
    # features (as knn does for queries against an fp16 bank) covers NaN/Inf and range in one pass.
    half_head = weight.dtype != torch.float32
    checked = [("features", features)]
    if not params_checked:
        checked += [("weight", weight), ("bias", bias), ("text", text)]
        if masks.dtype != torch.bool:
            checked.append(("masks", masks))
    rounded = features.to(weight.dtype) if half_head else features
    flags = [_finite_flag(rounded if t is features else t) for _, t in checked]
    if not params_checked:
        mask_w = masks.to(torch.float32)
        flags += [(mask_w >= 0).all(), (mask_w.sum(dim=1) > 0).all()]
    if not _all_true(flags):  # the slow path only finds out which check failed, for the message
        for name, t in checked:
            _raise_non_finite(name, t, "masks are keep-weights in [0, 1]" if name == "masks" else "check the inputs")
        if half_head and not bool(torch.isfinite(rounded).all()):
            limit = torch.finfo(weight.dtype).max
            raise DataError(f"features exceed {_dtype_name(weight.dtype)}'s range (largest magnitude "
                            f"{float(features.abs().max()):.4g} > {limit:.6g}), the dtype of the head (weight) that "
                            "they are rounded to; check the feature extractor, scale the features down (and the "
                            "head up), or use a float32 head")
        if not params_checked:
            if bool((mask_w < 0).any()):
                raise DataError("masks contain negative weights; use 1 = keep, 0 = drop")
            empty = (mask_w.sum(dim=1) <= 0).nonzero().flatten().tolist()
            if empty:
                raise DataError(f"mask(s) {empty[:8]} keep no patch: every variant must keep at least one patch")

    impl = resolve_backend(backend, features.device)
    if impl == "triton":
        return masked_similarity_triton(features, masks, weight, bias, text, mode=mode)
    return masked_similarity_reference(features, masks, weight, bias, text, mode=mode)
