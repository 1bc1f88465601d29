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
- ``masked_similarity_triton``: the masked sums are one batched matmul in torch (6% of the FLOPs
  in the issue's shape, and a cuBLAS bmm is already optimal for it); ``_masked_similarity_kernel``
  then fuses the mean's division, head, bias, softmax and weighted sum with an online softmax
  (Milakov and Gimelshein, "Online normalizer calculation for softmax", 2018), so the logits live
  only in registers. Classes are split across programs to fill the GPU; each split leaves (running
  max, sum of exp, sum of exp * s), or (<z, s>, ||z||^2) for cosine, and
  ``_masked_similarity_merge_kernel`` combines the splits exactly. Four launches in all (cast,
  count, bmm, kernel) + merge: at this size launch latency, not arithmetic, is the budget.

Reference: Chen et al., "Improving Vision Anomaly Detection with the Guidance of Language Modality"
(CMER, IEEE TMM 2024, arXiv 2310.02821).
"""
from __future__ import annotations

from typing import Optional

import torch

from ._common import bucket, cdiv, interpret_mode, lazy_autotune, lazy_jit, next_pow2, num_sms, require_triton

# triton.language, bound on the first launch (see kernels/_common.py).
tl = None

MODES = ("expectation", "cosine")
_COS_EPS = 1e-8
# Constexpr globals of the kernels, bound (replaced by tl.constexpr) on first launch: kernel-only names.
_KERNEL_CONSTS = {"_K_COS_EPS": _COS_EPS}
_K_COS_EPS = _COS_EPS
# Classes per split are a multiple of this so every autotune BLOCK_CLS divides a split.
_CLASS_ALIGN = 128


def _pool(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Masked mean-pool, [b, K, c] float32. An all-zero mask pools to 0 (ops refuses such masks)."""
    w = masks.to(torch.float32)
    w = w / w.sum(dim=-1, keepdim=True).clamp_min(1e-12)
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
    x_ptr, cnt_ptr, w_ptr, bias_ptr, text_ptr, part_ptr,
    R, n_masks, c, C, classes_per_split,
    stride_x, stride_w, stride_pc, stride_ps,
    r_bucket, c_bucket, cls_bucket,
    COSINE: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_CLS: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Partial softmax statistics of ``z = (x / cnt) W (+ bias)`` over one slice of the classes.

    Grid (cdiv(R, BLOCK_R), splits). x [R, c]: masked *sums* of the patch features, row r = image
    r // n_masks, mask r % n_masks; cnt [n_masks]: kept weight per mask (the mean's divisor, applied to
    z, which is cheaper than to x). W [c, C].
    expectation: part[0] = max_j z_j, part[1] = sum_j exp(z_j - max), part[2] = sum_j exp(z_j - max) s_j
    cosine:      part[1] = sum_j z_j^2, part[2] = sum_j z_j s_j   (part[0] unused)
    over the split's classes, each [splits, R] at part_ptr + comp * stride_pc + split * stride_ps.
    ``*_bucket`` only key the autotuner.
    """
    pid_r = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    r_mask = rows < R
    cls_lo = pid_s * classes_per_split
    cls_hi = tl.minimum(cls_lo + classes_per_split, C)
    offs_cls = tl.arange(0, BLOCK_CLS)
    offs_c = tl.arange(0, BLOCK_C)
    w_ty = w_ptr.dtype.element_ty
    inv_cnt = 1.0 / tl.load(cnt_ptr + rows % n_masks, mask=r_mask, other=1.0)

    m_i = tl.full([BLOCK_R], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_R], tl.float32)
    a_i = tl.zeros([BLOCK_R], tl.float32)
    for j0 in range(cls_lo, cls_hi, BLOCK_CLS):
        cls = j0 + offs_cls
        cls_mask = cls < cls_hi
        z = tl.zeros([BLOCK_R, BLOCK_CLS], tl.float32)
        for k0 in range(0, c, BLOCK_C):
            kk = k0 + offs_c
            k_mask = kk < c
            x = tl.load(x_ptr + rows[:, None] * stride_x + kk[None, :],
                        mask=r_mask[:, None] & k_mask[None, :], other=0.0).to(w_ty)
            w = tl.load(w_ptr + kk[:, None] * stride_w + cls[None, :],
                        mask=k_mask[:, None] & cls_mask[None, :], other=0.0)
            z = tl.dot(x, w, acc=z, input_precision=PRECISION)
        z = z * inv_cnt[:, None]
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
            p = tl.exp(z - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            a_i = a_i * alpha + tl.sum(p * s[None, :], axis=1)
            m_i = m_new

    base = part_ptr + pid_s * stride_ps + rows
    tl.store(base, m_i, mask=r_mask)
    tl.store(base + stride_pc, l_i, mask=r_mask)
    tl.store(base + 2 * stride_pc, a_i, mask=r_mask)


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


_INTERPRET_CONFIG = {"BLOCK_R": 16, "BLOCK_CLS": 16, "BLOCK_C": 16, "num_warps": 4}
_MERGE_BLOCK_R = 64


def _ms_configs(wide: bool):
    """Candidate configs; ``wide`` for fp32 heads, whose three-pass TF32 product needs about twice
    the registers (both lists picked from sm_90 builds that did not spill)."""
    import triton

    cfg = triton.Config
    if wide:
        return [
            cfg({"BLOCK_R": 16, "BLOCK_CLS": 64, "BLOCK_C": 32}, num_warps=4, num_stages=3),
            cfg({"BLOCK_R": 64, "BLOCK_CLS": 64, "BLOCK_C": 16}, num_warps=4, num_stages=3),
            cfg({"BLOCK_R": 64, "BLOCK_CLS": 64, "BLOCK_C": 32}, num_warps=8, num_stages=3),
            cfg({"BLOCK_R": 64, "BLOCK_CLS": 128, "BLOCK_C": 16}, num_warps=8, num_stages=3),
        ]
    return [
        cfg({"BLOCK_R": 16, "BLOCK_CLS": 64, "BLOCK_C": 64}, num_warps=4, num_stages=3),
        cfg({"BLOCK_R": 32, "BLOCK_CLS": 64, "BLOCK_C": 64}, num_warps=4, num_stages=3),
        cfg({"BLOCK_R": 64, "BLOCK_CLS": 64, "BLOCK_C": 32}, num_warps=4, num_stages=3),
        cfg({"BLOCK_R": 64, "BLOCK_CLS": 128, "BLOCK_C": 32}, num_warps=8, num_stages=3),
        cfg({"BLOCK_R": 128, "BLOCK_CLS": 64, "BLOCK_C": 32}, num_warps=8, num_stages=3),
    ]


def _choose_splits(R: int, C: int, device) -> int:
    """Class splits: b * K = 512 rows make only 8 to 32 row blocks, too few for 132 SMs."""
    if interpret_mode():
        return 1
    return max(1, min(cdiv(2 * num_sms(device), cdiv(R, 32)), cdiv(C, _CLASS_ALIGN)))


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
    """Launch ``_masked_similarity_kernel``; same contract as the reference (inputs validated by
    ``edgecmg.ops.masked_similarity``). ``splits``/``config`` override the class split count and the
    autotuned block sizes (the interpreter always uses a fixed small config)."""
    require_triton()
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: choose one of {MODES}")
    b, _, c = features.shape
    K = masks.shape[0]
    C = weight.shape[1]
    R = b * K
    # Masked sums by one batched matmul; the division by the kept count happens in the kernel.
    mask_w = masks.to(torch.float32)
    counts = mask_w.sum(dim=1)
    x = torch.matmul(mask_w, features.to(torch.float32)).reshape(R, c)  # contiguous fp32
    if weight.stride(-1) != 1:
        weight = weight.contiguous()
    bias = bias.to(torch.float32).contiguous()
    text = text.to(torch.float32).contiguous()

    if splits is None:
        splits = _choose_splits(R, C, x.device)
    splits = max(1, min(int(splits), C))
    per_split = cdiv(C, splits)
    if splits > 1 and not interpret_mode():
        per_split = cdiv(per_split, _CLASS_ALIGN) * _CLASS_ALIGN
    splits = cdiv(C, per_split)
    part = torch.empty((3, splits, R), dtype=torch.float32, device=x.device)
    out = torch.empty((b, K), dtype=torch.float32, device=x.device)
    # fp32 head: three-pass TF32 keeps logits at ~fp32 accuracy (they go through exp); fp16/bf16 heads
    # use the tensor cores directly.
    precision = "tf32x3" if weight.dtype == torch.float32 else "tf32"

    args = (x, counts, weight, bias, text, part, R, K, c, C, per_split,
            x.stride(0), weight.stride(0), part.stride(0), part.stride(1),
            bucket(R), bucket(c), bucket(C))
    consts = dict(COSINE=mode == "cosine", PRECISION=precision)
    if config is None and interpret_mode():
        config = _INTERPRET_CONFIG
    if config is not None:
        cfg = dict(config)
        num_warps = cfg.pop("num_warps", 4)
        lazy_jit(_masked_similarity_kernel, _KERNEL_CONSTS)[(cdiv(R, cfg["BLOCK_R"]), splits)](
            *args, **consts, **cfg, num_warps=num_warps)
    else:
        wide = weight.element_size() == 4
        kernel = lazy_autotune(_masked_similarity_kernel, lambda: _ms_configs(wide),
                               key=["r_bucket", "c_bucket", "cls_bucket", "COSINE", "PRECISION"],
                               jit_kwargs={"do_not_specialize": ["R", "C", "classes_per_split"]},
                               tag="-wide" if wide else "", constexprs=_KERNEL_CONSTS)
        kernel[lambda meta: (cdiv(R, meta["BLOCK_R"]), splits)](*args, **consts)

    lazy_jit(_masked_similarity_merge_kernel, _KERNEL_CONSTS)[(cdiv(R, _MERGE_BLOCK_R),)](
        part, text, out, R, C, splits, part.stride(0), part.stride(1),
        COSINE=mode == "cosine", S_PAD=next_pow2(splits), BLOCK_R=_MERGE_BLOCK_R, BLOCK_T=256, num_warps=4)
    return out
