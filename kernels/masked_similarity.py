"""CMER's inner loop: score many masked variants of each image against the text prompt.

For image b, mask k (``masks[k, p]`` in [0, 1], 1 = keep) and patch features F[b, p, c]:

    x[b, k]  = sum_p masks[k, p] F[b, p, :] / sum_p masks[k, p]            masked mean-pool, [c]
    z[b, k]  = W^T x[b, k] (+ bias)                                        head, [C]
    expectation:  S[b, k] = sum_j softmax(z[b, k] + bias)_j * s_j          expected text score
    cosine:       S[b, k] = <W^T x, s> / max(||W^T x|| * ||s||, 1e-8)      (bias not used)

Shapes: features [b, p, c], masks [K, p], weight [c, C], bias [C], text [C]; output [b, K] float32.
"expectation" is a zero-shot classifier head (e.g. CLIP text embeddings of C class prompts) turned
into one number by weighting each class probability with its relevance s to the prompt; "cosine"
is the plain CLIP-style image-text similarity after the projection W.

Implementations:

- ``masked_similarity_reference``: torch, materialises the [b, K, C] logits. CPU path and oracle;
  traceable (the mode is a Python string, nothing branches on tensor values).
- ``masked_similarity_triton``: ``_masked_similarity_kernel`` fuses everything: the masked sums (a
  tensor-core product of the masks with each image's patches), the mean's division, head, bias,
  softmax and weighted sum, with an online softmax (Milakov and Gimelshein, "Online normalizer
  calculation for softmax", 2018), so neither the pooled features nor the logits touch memory.
  Classes are split across programs to fill the GPU; each split leaves (running max, sum of exp, sum
  of exp * s), or (<z, s>, ||z||^2) for cosine, and ``_masked_similarity_merge_kernel`` combines the
  splits exactly. Two launches in all: at this size the host's launch time, not arithmetic, is the
  budget (on an H100 an earlier form with the pooling as a torch matmul, plus casts and counts, spent
  0.21 ms of host time per call for 0.044 ms of device work; this one 0.07 ms for 0.062 ms).

Reference: Chen et al., "Improving Vision Anomaly Detection with the Guidance of Language Modality"
(CMER, IEEE TMM 2024, arXiv 2310.02821).
"""
from __future__ import annotations

from typing import Optional

import torch

from ._common import (LaunchTuner, cdiv, interpret_mode, lazy_jit, next_pow2, num_sms, require_triton, shape_bucket,
                      split_evenly)

# triton.language, bound on the first launch (see kernels/_common.py).
tl = None

MODES = ("expectation", "cosine")
_COS_EPS = 1e-8
# The floor on a mask's sum (the mean's divisor): float32's smallest normal number, so that it only keeps
# a row that keeps nothing at 0 instead of NaN. A larger floor (it was 1e-12) cut the mean of a row of
# small soft weights short: a row summing to 1e-14 pooled to a hundredth of its mean.
_MIN_KEPT = float(torch.finfo(torch.float32).tiny)
# Constexpr globals of the kernels, bound (replaced by tl.constexpr) on first launch: kernel-only names.
_KERNEL_CONSTS = {"_K_COS_EPS": _COS_EPS, "_K_MIN_KEPT": _MIN_KEPT}
_K_COS_EPS = _COS_EPS
_K_MIN_KEPT = _MIN_KEPT
# Classes per split are a multiple of this so every BLOCK_CLS (64, 128) divides a split.
_CLASS_ALIGN = 128


def _pool(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Masked mean-pool, [b, K, c] float32. An all-zero mask pools to 0 (ops refuses such masks)."""
    w = masks.to(torch.float32)
    w = w / w.sum(dim=-1, keepdim=True).clamp_min(_MIN_KEPT)
    return torch.matmul(w, features.to(torch.float32))


def masked_similarity_reference(
    features: torch.Tensor,
    masks: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    text: torch.Tensor,
    *,
    mode: str = "expectation",
) -> torch.Tensor:
    """Torch reference: see the module docstring for the formula and shapes. Returns [b, K] fp32."""
    pooled = _pool(features, masks)
    z = torch.matmul(pooled, weight.to(torch.float32))
    s = text.to(torch.float32)
    if mode == "expectation":
        probs = torch.softmax(z + bias.to(torch.float32), dim=-1)
        return torch.matmul(probs, s)
    if mode == "cosine":
        denom = (torch.linalg.vector_norm(z, dim=-1) * torch.linalg.vector_norm(s)).clamp_min(_COS_EPS)
        return torch.matmul(z, s) / denom
    raise ValueError(f"mode={mode!r}: choose one of {MODES}")


# --------------------------------------------------------------------------------------------------
# Triton kernel (plain function, decorated lazily; see _common.lazy_jit)
# --------------------------------------------------------------------------------------------------
def _masked_similarity_kernel(
    f_ptr, m_ptr, w_ptr, bias_ptr, text_ptr, part_ptr, out_ptr,
    n_masks, p, c, C, classes_per_split,
    stride_fb, stride_fp, stride_fc, stride_mk, stride_mp, stride_wc, stride_wj, stride_pc, stride_ps,
    COSINE: tl.constexpr, FINAL: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_CLS: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Masked mean-pool, head and softmax statistics of BLOCK_K masks of one image over a slice of the
    classes.

    Grid (b * cdiv(n_masks, BLOCK_K), splits): program (i, s) takes image i // cdiv(n_masks, BLOCK_K).
    F [b, p, c], masks [n_masks, p] (bool or float), W [c, C], any strides (the JIT specialises unit
    strides, so a contiguous or transposed view loads as fast as a copy would, without the copy). For each BLOCK_C
    slice of the features the masked sums x = masks @ F[img] come from a tensor-core product over the
    patches and go straight into z += x W; the mean's division is applied to z (cheaper than to x).
    The pooling is recomputed per class tile: with the class split that is once or twice per program,
    and it saves the separate pooling matmul and its launches (at this size launches, not FLOPs, are
    the cost).
    With FINAL (one split) the score is written to out[row]; otherwise the partial statistics go to
    part (see ``_masked_similarity_merge_kernel``):
    expectation: part[0] = max_j z_j, part[1] = sum_j exp(z_j - max), part[2] = sum_j exp(z_j - max) s_j
    cosine:      part[1] = sum_j z_j^2, part[2] = sum_j z_j s_j   (part[0] unused)
    """
    pid_r = tl.program_id(0)
    pid_s = tl.program_id(1)
    mask_blocks = tl.cdiv(n_masks, BLOCK_K)
    img = pid_r // mask_blocks
    ks = (pid_r % mask_blocks) * BLOCK_K + tl.arange(0, BLOCK_K)
    k_mask = ks < n_masks
    offs_p = tl.arange(0, BLOCK_P)
    offs_cls = tl.arange(0, BLOCK_CLS)
    offs_c = tl.arange(0, BLOCK_C)
    w_ty = w_ptr.dtype.element_ty
    f_base = f_ptr + img.to(tl.int64) * stride_fb

    kept = tl.zeros([BLOCK_K], tl.float32)
    for p0 in range(0, p, BLOCK_P):
        pp = p0 + offs_p
        mk = tl.load(m_ptr + ks[:, None] * stride_mk + pp[None, :] * stride_mp,
                     mask=k_mask[:, None] & (pp[None, :] < p), other=0)
        kept += tl.sum(mk.to(tl.float32), axis=1)
    inv_kept = 1.0 / tl.maximum(kept, _K_MIN_KEPT)  # ops refuses masks that keep nothing

    cls_lo = pid_s * classes_per_split
    cls_hi = tl.minimum(cls_lo + classes_per_split, C)
    m_i = tl.full([BLOCK_K], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_K], tl.float32)
    a_i = tl.zeros([BLOCK_K], tl.float32)
    for j0 in range(cls_lo, cls_hi, BLOCK_CLS):
        cls = j0 + offs_cls
        cls_mask = cls < cls_hi
        z = tl.zeros([BLOCK_K, BLOCK_CLS], tl.float32)
        for c0 in range(0, c, BLOCK_C):
            cc = c0 + offs_c
            c_mask = cc < c
            x = tl.zeros([BLOCK_K, BLOCK_C], tl.float32)
            for p0 in range(0, p, BLOCK_P):
                pp = p0 + offs_p
                p_mask = pp < p
                mk = tl.load(m_ptr + ks[:, None] * stride_mk + pp[None, :] * stride_mp,
                             mask=k_mask[:, None] & p_mask[None, :], other=0).to(tl.float32).to(w_ty)
                f = tl.load(f_base + pp[:, None] * stride_fp + cc[None, :] * stride_fc,
                            mask=p_mask[:, None] & c_mask[None, :], other=0.0).to(w_ty)
                x = tl.dot(mk, f, acc=x, input_precision=PRECISION)
            w = tl.load(w_ptr + cc[:, None] * stride_wc + cls[None, :] * stride_wj,
                        mask=c_mask[:, None] & cls_mask[None, :], other=0.0)
            # The masked mean, in fp32, before the cast to the head's dtype: it fits wherever the features
            # do, while the masked sum of 64 patches can pass fp16's 65,504. (Scaling here, not in the
            # patch loop above, keeps that loop's registers within sm_87's budget.)
            z = tl.dot((x * inv_kept[:, None]).to(w_ty), w, acc=z, input_precision=PRECISION)
        s = tl.load(text_ptr + cls, mask=cls_mask, other=0.0).to(tl.float32)
        if COSINE:
            z = tl.where(cls_mask[None, :], z, 0.0)
            l_i += tl.sum(z * z, axis=1)
            a_i += tl.sum(z * s[None, :], axis=1)
        else:
            bias = tl.load(bias_ptr + cls, mask=cls_mask, other=0.0).to(tl.float32)
            z = tl.where(cls_mask[None, :], z + bias[None, :], float("-inf"))
            m_new = tl.maximum(m_i, tl.max(z, axis=1))
            alpha = tl.exp(m_i - m_new)  # first tile: exp(-inf) = 0 wipes the empty running sums
            e = tl.exp(z - m_new[:, None])
            l_i = l_i * alpha + tl.sum(e, axis=1)
            a_i = a_i * alpha + tl.sum(e * s[None, :], axis=1)
            m_i = m_new

    rows = img * n_masks + ks
    if FINAL:
        if COSINE:
            t_sq = tl.zeros([BLOCK_CLS], tl.float32)
            for t0 in range(0, C, BLOCK_CLS):
                t = tl.load(text_ptr + t0 + offs_cls, mask=t0 + offs_cls < C, other=0.0).to(tl.float32)
                t_sq += t * t
            denom = tl.sqrt(l_i) * tl.sqrt(tl.sum(t_sq, axis=0))
            score = a_i / tl.maximum(denom, _K_COS_EPS)
        else:
            score = a_i / l_i
        tl.store(out_ptr + rows, score, mask=k_mask)
    else:
        base = part_ptr + pid_s * stride_ps + rows
        tl.store(base, m_i, mask=k_mask)
        tl.store(base + stride_pc, l_i, mask=k_mask)
        tl.store(base + 2 * stride_pc, a_i, mask=k_mask)


def _masked_similarity_merge_kernel(
    part_ptr, text_ptr, out_ptr,
    R, C, splits, stride_pc, stride_ps,
    COSINE: tl.constexpr, S_PAD: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_T: tl.constexpr,
):
    """Combine the class splits exactly; out [R] float32. Grid (cdiv(R, BLOCK_R),).

    expectation: M = max_s m_s, score = sum_s e^(m_s - M) a_s / sum_s e^(m_s - M) l_s.
    cosine: score = sum_s a_s / max(sqrt(sum_s l_s) * ||text||, 1e-8); ||text|| is recomputed per
    program (C values, cheaper than another launch).
    """
    pid = tl.program_id(0)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    r_mask = rows < R
    sp = tl.arange(0, S_PAD)
    valid = r_mask[:, None] & (sp[None, :] < splits)
    ptr = part_ptr + sp[None, :] * stride_ps + rows[:, None]
    l_s = tl.load(ptr + stride_pc, mask=valid, other=0.0)
    a_s = tl.load(ptr + 2 * stride_pc, mask=valid, other=0.0)
    if COSINE:
        t_sq = tl.zeros([BLOCK_T], tl.float32)
        for t0 in range(0, C, BLOCK_T):
            offs = t0 + tl.arange(0, BLOCK_T)
            t = tl.load(text_ptr + offs, mask=offs < C, other=0.0).to(tl.float32)
            t_sq += t * t
        denom = tl.sqrt(tl.sum(l_s, axis=1)) * tl.sqrt(tl.sum(t_sq, axis=0))
        score = tl.sum(a_s, axis=1) / tl.maximum(denom, _K_COS_EPS)
    else:
        m_s = tl.load(ptr, mask=valid, other=float("-inf"))
        # Padded splits give exp(-inf) = 0; the floor keeps rows past R (all padding) free of inf - inf.
        m_max = tl.maximum(tl.max(m_s, axis=1), -3.0e38)
        scale = tl.exp(m_s - m_max[:, None])
        denom = tl.where(r_mask, tl.sum(scale * l_s, axis=1), 1.0)
        score = tl.sum(scale * a_s, axis=1) / denom
    tl.store(out_ptr + rows, score, mask=r_mask)


# Block sizes, a few candidates per head dtype timed once per shape bucket by ``_TUNER`` (see
# _common.LaunchTuner; the first is the default when tuning is off). On an H100 the shape
# (b=8, K=64, p=64, c=1280, C=1000, fp16 head) took 62-65 us of device time with every tile tried
# (BLOCK_K 16-64, BLOCK_CLS 64-128, BLOCK_C 32-128) once the classes were split 8 ways, so the list is
# short. All build without register spills for sm_90 and sm_87 (tests/kernels/test_gpu_compile.py);
# fp32 heads run three-pass TF32, which needs about twice the registers, hence BLOCK_C 32.
def _tile(block_k: int, block_cls: int, block_c: int, num_warps: int) -> dict:
    return {"BLOCK_K": block_k, "BLOCK_CLS": block_cls, "BLOCK_C": block_c, "num_warps": num_warps}


_CANDIDATES_HALF = [_tile(16, 128, 64, 8), _tile(32, 64, 64, 8)]
# fp32 in cosine mode: 16 x 64 x 32 / 4 warps, 16 x 64 x 32 / 8 and 16 x 64 x 16 / 4 spill on sm_87 with
# Triton 3.8 (torch 2.14.1's), 16 x 128 x 32 / 4 on sm_90 with 3.4; these two build clean with 3.4 to 3.9.
_CANDIDATES_FP32 = [_tile(16, 128, 32, 8), _tile(16, 128, 16, 8)]
_MAX_BLOCK_P = 32
# The interpreter runs the smallest tiles a GPU tl.dot accepts (16), so tests exercise the same shapes;
# a second candidate lets the tests drive the tuner (EDGECMG_AUTOTUNE=1).
_INTERPRET_CANDIDATES = [_tile(16, 16, 16, 4), _tile(16, 32, 16, 4)]
_MERGE_BLOCK_R = 64
_TUNER = LaunchTuner()


def _candidates(weight_element_size: int) -> list[dict]:
    """Block sizes for a head of this element size (4: fp32, 2: fp16/bf16), the default first."""
    if interpret_mode():
        return _INTERPRET_CANDIDATES
    return _CANDIDATES_FP32 if weight_element_size == 4 else _CANDIDATES_HALF


def _block_p(p: int) -> int:
    return 16 if interpret_mode() else min(_MAX_BLOCK_P, next_pow2(max(p, 16)))


def _choose_splits(R: int, C: int, device, block_k: int = 16) -> int:
    """Class splits: b * K = 512 rows make only 32 programs of 16 masks, too few for 132 SMs. On an
    H100 one split took 0.46 ms of device time at the issue's shape and eight took 0.062 ms."""
    if interpret_mode():
        return 1
    return max(1, min(cdiv(2 * num_sms(device), cdiv(R, block_k)), cdiv(C, _CLASS_ALIGN)))


def _launch(features, masks, weight, bias, text, out, mode: str, cfg: dict, splits: Optional[int]) -> None:
    """One evaluation with one configuration: the fused kernel over the class splits, then the merge."""
    b, p, c = features.shape
    K = masks.shape[0]
    C = weight.shape[1]
    R = b * K
    block_p = cfg.get("BLOCK_P", _block_p(p))
    if splits is None:
        splits = _choose_splits(R, C, features.device, cfg["BLOCK_K"])
    splits, per_split = split_evenly(C, splits, _CLASS_ALIGN)
    final = splits == 1
    part = out if final else torch.empty((3, splits, R), dtype=torch.float32, device=features.device)
    # fp32 head: three-pass TF32 keeps logits at ~fp32 accuracy (they go through exp); fp16/bf16 heads
    # use the tensor cores directly (the features are rounded to the head's dtype for both products).
    precision = "tf32x3" if weight.dtype == torch.float32 else "tf32"
    cosine = mode == "cosine"

    lazy_jit(_masked_similarity_kernel, _KERNEL_CONSTS)[(b * cdiv(K, cfg["BLOCK_K"]), splits)](
        features, masks, weight, bias, text, part, out, K, p, c, C, per_split,
        *features.stride(), *masks.stride(), *weight.stride(),
        0 if final else part.stride(0), 0 if final else part.stride(1),
        COSINE=cosine, FINAL=final, PRECISION=precision, BLOCK_K=cfg["BLOCK_K"], BLOCK_P=block_p,
        BLOCK_CLS=cfg["BLOCK_CLS"], BLOCK_C=cfg["BLOCK_C"], num_warps=cfg.get("num_warps", 4))
    if not final:
        lazy_jit(_masked_similarity_merge_kernel, _KERNEL_CONSTS)[(cdiv(R, _MERGE_BLOCK_R),)](
            part, text, out, R, C, splits, part.stride(0), part.stride(1),
            COSINE=cosine, S_PAD=next_pow2(splits), BLOCK_R=_MERGE_BLOCK_R, BLOCK_T=256, num_warps=4)


def _masks_for_half_head(masks: torch.Tensor, head_dtype: torch.dtype) -> torch.Tensor:
    """Soft masks for an fp16/bf16 head: each row divided by its largest weight in fp32, then rounded
    to the head's dtype, [K, p].

    The kernel rounds the mask weights to the head's dtype for the pooling's tensor-core product but
    sums ``kept`` (the mean's divisor) from the weights as loaded. Raw weights can round badly there: a
    mask scaled by 1e-8 flushed to 0 in fp16 while its fp32 sum did not (a pooled mean of 0), one scaled
    by 1e5 overflowed to Inf (NaN scores). The kernel's masked mean (sum_p m_p F_p) / (sum_p m_p), both
    sums over the same weights, is unchanged by scaling a row by any positive factor (the floor on the
    divisor, ``_MIN_KEPT``, never acts here: every divisor is at least 1), so each row is divided by its
    largest weight: that one becomes exactly 1 and the rest lie in [0, 1], which fp16 and bf16 hold to
    their precision (below fp16's normal range, 6.1e-5, a weight is off by at most 3e-8, small beside a
    divisor of at least 1). And as the kernel loads these already-rounded values, ``kept`` is summed
    from exactly the weights the product uses. Done here rather than in the kernel, which stays one
    load and cast per mask tile and gets no second pass for the row maxima. (ops refuses masks that
    keep nothing; for direct callers the floor keeps such a row 0 instead of NaN.)
    """
    w = masks.to(torch.float32)
    row_max = w.amax(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    return (w / row_max).to(head_dtype)


def masked_similarity_triton(
    features: torch.Tensor,
    masks: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    text: torch.Tensor,
    *,
    mode: str = "expectation",
    splits: Optional[int] = None,
    config: Optional[dict] = None,
) -> torch.Tensor:
    """Launch ``_masked_similarity_kernel`` (+ the merge kernel when the classes are split); same
    contract as the reference (inputs validated by ``edgecmg.ops.masked_similarity``). ``splits`` /
    ``config`` override the class split count and the block sizes.

    One launch with one split, two otherwise, and no other device work when bias and text are
    contiguous float32 and the masks bool or the head fp32 (features, masks and weight may have any
    strides, e.g. the transposed views a model passes): the eager call's cost is mostly the host's time
    to launch, so nothing else runs. Float masks with an fp16/bf16 head are first rescaled (a few small
    torch ops, see ``_masks_for_half_head``).
    """
    require_triton()
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: choose one of {MODES}")
    b, p, c = features.shape
    K = masks.shape[0]
    C = weight.shape[1]
    R = b * K
    if weight.dtype != torch.float32 and masks.dtype != torch.bool:
        masks = _masks_for_half_head(masks, weight.dtype)
    if weight.dtype == torch.bfloat16 and interpret_mode():
        # Triton's interpreter (3.9 at least) keeps bf16 tensors as their raw uint16 bits and tl.dot
        # multiplies those bits as integers: a bf16 head gives garbage there. That is the interpreter's
        # bug, not the kernel's (compiled for a GPU the bf16 products are fine), so on the interpreter
        # the operands of both products go in as fp32 holding the bf16 values the GPU would use: the
        # head as it is, the features rounded to bf16 by torch, the masks already bf16 or bool (above).
        # The kernel then runs the same maths in fp32 products, except that the pooled mean is not
        # rounded to bf16 before the head; CI still checks the bf16 path's pooling, head and softmax.
        weight = weight.to(torch.float32)
        features = features.to(torch.bfloat16)
    if bias.dtype != torch.float32 or not bias.is_contiguous():
        bias = bias.to(torch.float32).contiguous()
    if text.dtype != torch.float32 or not text.is_contiguous():
        text = text.to(torch.float32).contiguous()
    out = torch.empty((b, K), dtype=torch.float32, device=features.device)
    args = (features, masks, weight, bias, text, out, mode)
    if config is not None:
        _launch(*args, dict(config), splits)
        return out
    key = (features.device.type, features.device.index, str(weight.dtype), mode, c, C,
           shape_bucket(R), shape_bucket(p), splits)
    cfg = _TUNER.choose(key, _candidates(weight.element_size()), lambda cand: _launch(*args, cand, splits),
                        features.device)
    _launch(*args, cfg, splits)
    return out
