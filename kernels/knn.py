"""Exact k-nearest-neighbour search of patch features against a memory bank (squared L2).

Formula (queries q_i, bank rows m_j, both d-dimensional):

    D[i, r] = ||q_i||^2 + ||m_j||^2 - 2 <q_i, m_j>,   j = I[i, r],   r = 0..k-1

clamped at 0 (the expansion can go slightly negative through rounding). Rows of D ascend; ties are
broken by the lower bank index, which is faiss' convention (``IndexFlatL2.search``). When the bank
holds fewer than k rows the missing results are ``D = inf``, ``I = -1``.

Shapes: queries [n, d] or [b, n, d] (several frames in one call), bank [m, d] (float32 or float16
storage; products accumulate in float32; an fp16 bank rounds the queries to fp16 too, so a distance is
the exact distance between two fp16 vectors up to accumulation error), bank_sq_norms [m] float32.
Returns D float32 and I int64 of shape queries.shape[:-1] + (k,).

Three implementations, one semantics:

- ``knn_reference``: torch (``knn_distances_reference``: its D alone, cheaper). Chunks over the bank with a running top-k, so the n x m distance matrix
  never exists at once; each chunk is one ``addmm``. It is the CPU production path, the correctness
  oracle, and what the ONNX exporter traces (shape-driven Python only, no branch on tensor values).
- ``knn_triton``: launcher of ``_knn_kernel``. Each program owns BLOCK_N queries and one contiguous
  slice of the bank ("split"); bank tiles of BLOCK_M rows stream through on-chip memory, ``tl.dot``
  gives the inner products in float32, and a running top-k per query lives in registers. When the
  bank is split (to fill all SMs when n is small), ``_knn_merge_kernel`` merges the per-split lists.
- ``edgecmg.ops.knn`` is the only place that chooses between them.

GPU specifics: a few spill-free launch configurations per case (tile sizes, warps, and the bank split
sized to the tile) are timed once per power-of-two bucket of n and m (``_candidates``,
``_common.LaunchTuner``), and ``n``/``m``/``rows_per_split`` are not specialised by the JIT, so a
stream whose sizes wobble neither recompiles nor re-tunes. fp16 banks use fp16 tensor-core
``tl.dot``; fp32 banks use three-pass TF32 (near-fp32 accuracy). Indices are int32 inside the kernel
(banks below 2^31 rows).

References: Johnson, Douze, Jegou, "Billion-scale similarity search with GPUs" (faiss, 2017) for the
norm expansion and the k-selection; Roth et al., "Towards Total Recall in Industrial Anomaly
Detection" (PatchCore, CVPR 2022) for why patch-to-bank nearest neighbours score anomalies.
"""
from __future__ import annotations

from typing import Optional

import torch

from ._common import (
    LaunchTuner,
    cdiv,
    interpret_mode,
    lazy_jit,
    next_pow2,
    num_sms,
    require_triton,
    shape_bucket,
    split_evenly,
)

# triton.language, bound on the first launch (see kernels/_common.py: importing Triton fixes its
# interpreter mode, and the references below must import without it).
tl = None

MAX_K = 16
# Elements of knn_reference's [n, chunk] float32 distance block. On a CPU a block that stays in cache
# lets the min / top-k pass read what addmm has just written: 4 MiB instead of 64 MiB halved the
# search for one 800x320 frame (1,000 patches x 10,000 bank rows x 128 dims, fp16 bank: 27.8 -> 13.3
# ms; 1,024 x 16,000: 47.8 -> 21.5 ms; 256 x 6,784 unchanged at 2.5 ms; 2-core Intel Xeon,
# 2026-12-05). Elsewhere (CUDA without Triton, tracing) fewer and larger blocks are kept.
CPU_CHUNK_ELEMENTS = 1 << 20
CHUNK_ELEMENTS = 1 << 24
# Largest padded feature dim whose query block stays resident (registers) for the whole bank sweep,
# per bank element size; above it the kernel streams d in chunks of _D_CHUNK and re-reads the
# cache-hot query block per bank tile. Limits from sm_90/sm_87 AOT builds: beyond them ptxas spills on
# sm_87 (an fp32 block also carries the hi/lo halves of the three-pass TF32 product).
_MAX_RESIDENT_D = {2: 128, 4: 32}
_D_CHUNK = 32
# Bank rows per split are a multiple of this on a GPU, so every candidate's BLOCK_M (<= 128) divides a split.
_SPLIT_ALIGN = 256
_INT32_MAX = 2**31 - 1
# Constexpr globals of the kernels, bound (replaced by tl.constexpr) with `tl` on first launch:
# kernel-only names.
_KERNEL_CONSTS = {"_I32_MAX": _INT32_MAX}
_I32_MAX = _INT32_MAX


# --------------------------------------------------------------------------------------------------
# torch reference
# --------------------------------------------------------------------------------------------------
def bank_sq_norms_reference(bank: torch.Tensor, chunk_rows: int = 65536) -> torch.Tensor:
    """||m_j||^2 in float32 for every bank row, [m]. Chunked so an fp16 bank is never upcast whole."""
    if bank.shape[0] <= chunk_rows:
        b = bank.float()
        return (b * b).sum(dim=-1)
    parts = []
    for start in range(0, bank.shape[0], chunk_rows):
        b = bank[start:start + chunk_rows].float()
        parts.append((b * b).sum(dim=-1))
    return torch.cat(parts)


def _order_ties_by_index(dist: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reorder each row of k results by (distance, index) lexicographically.

    topk orders equal values arbitrarily; a stable sort would fix that but does not export to ONNX.
    With k <= 16 the rank of every entry is a [rows, k, k] comparison, and ranks are a permutation,
    so an ordinary argsort of them is exact.
    """
    dv, di = dist.unsqueeze(-1), idx.unsqueeze(-1)
    before = (dist.unsqueeze(-2) < dv) | ((dist.unsqueeze(-2) == dv) & (idx.unsqueeze(-2) < di))
    rank = before.to(torch.int64).sum(dim=-1)
    order = torch.argsort(rank, dim=-1)
    return dist.gather(-1, order), idx.gather(-1, order)


def _k_smallest_first_on_ties(values: torch.Tensor, kk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, column positions) of the ``kk`` smallest entries of each row, where of the entries
    tied at the kk-th value the leftmost win (faiss keeps the lower index; ``topk`` picks any).

    Everything below the kk-th value is taken; the rest is filled from the ties at it, in column
    order (a running count of them). Results come in column order. Exports to ONNX (TopK, CumSum,
    Where).
    """
    smallest, smallest_pos = torch.topk(values, kk, dim=1, largest=False, sorted=True)
    kth = smallest[:, -1:]
    if not _tracing() and bool(((values <= kth).sum(dim=1) == kk).all()):
        # No tie straddles the kk-th place in any row (the usual case with real-valued distances):
        # topk's set is already the answer. Skips the passes below over the whole [n, chunk] block
        # (about 2.5x faster for k > 1 on a CPU); a traced graph cannot branch on values, so it
        # always takes the general path.
        pos = smallest_pos.sort(dim=1).values
        return values.gather(1, pos), pos
    below = values < kth
    room = kk - below.to(torch.int64).sum(dim=1, keepdim=True)
    at = values == kth
    take = below | (at & (at.to(torch.int64).cumsum(dim=1) <= room))
    cols = torch.arange(values.shape[1], device=values.device).expand_as(values)
    pos = torch.topk(torch.where(take, cols, values.shape[1]), kk, dim=1, largest=False, sorted=True).values
    return values.gather(1, pos), pos


def _tracing() -> bool:
    """True while torch.jit / torch.export / torch.compile trace the caller (no out= buffers then)."""
    if torch.jit.is_tracing():
        return True
    compiler = getattr(torch, "compiler", None)
    for name in ("is_compiling", "is_exporting"):
        probe = getattr(compiler, name, None)
        if probe is not None and probe():
            return True
    return False


def knn_reference(
    queries: torch.Tensor,
    bank: torch.Tensor,
    k: int = 1,
    *,
    bank_sq_norms: Optional[torch.Tensor] = None,
    chunk_elements: Optional[int] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact kNN in torch: see the module docstring for the formula, shapes and conventions.
    Details in ``_knn_torch``."""
    dist, idx = _knn_torch(queries, bank, k, bank_sq_norms, chunk_elements, with_indices=True)
    assert idx is not None
    return dist, idx


def knn_distances_reference(
    queries: torch.Tensor,
    bank: torch.Tensor,
    k: int = 1,
    *,
    bank_sq_norms: Optional[torch.Tensor] = None,
    chunk_elements: Optional[int] = None,
) -> torch.Tensor:
    """``knn_reference``'s D alone, bit for bit, without tracking which bank row each distance is.

    Which of several equal distances is kept does not change the values, so the tie rules drop out:
    a chunk's k smallest are ``amin`` (k = 1) or a plain ``topk``, several times cheaper on a CPU
    than ``min``/``topk`` with their indices (0.04 against 0.60 ms for a [4000, 262] block, 2-core
    AMD EPYC). Traced into ONNX, it is ReduceMin / TopK without the index bookkeeping.
    """
    return _knn_torch(queries, bank, k, bank_sq_norms, chunk_elements, with_indices=False)[0]


def _knn_torch(
    queries: torch.Tensor,
    bank: torch.Tensor,
    k: int,
    bank_sq_norms: Optional[torch.Tensor],
    chunk_elements: Optional[int],
    *,
    with_indices: bool,
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The chunked search behind ``knn_reference`` (with_indices) and ``knn_distances_reference``.

    The bank is processed in chunks of ``chunk_elements // n`` rows (the [n, chunk] float32 block is
    the only large temporary; by default 4 MiB on a CPU outside tracing, else 64 MiB, see
    ``CPU_CHUNK_ELEMENTS``), each scored with a single ``addmm``
    (``||m||^2 - 2 q m^T``; the constant ||q||^2 is added to the k survivors only) and reduced with
    ``min`` (k = 1: first index wins ties, exactly faiss) or the k smallest with ties at the k-th
    distance going to the lower index (faiss again), merged into a running top-k; the returned rows
    are ordered by (distance, index). No input checks: this is also
    traced into ONNX graphs; ``edgecmg.ops.knn`` validates. Without indices, I is None.

    Outside tracing and autograd the chunks reuse one buffer: a fresh 64 MiB block per chunk is
    served by mmap and page-faulted anew each time, which cost ~20% of the CPU path when measured.
    """
    d = bank.shape[-1]
    lead = queries.shape[:-1]
    q = queries.reshape(-1, d)
    if bank.dtype == torch.float16:
        q = q.to(torch.float16)  # same rounding of the queries as the fp16 kernel's tensor-core dot
    q = q.float()
    norms = bank_sq_norms_reference(bank) if bank_sq_norms is None else bank_sq_norms.float()
    if chunk_elements is None:
        cache_sized = q.device.type == "cpu" and not _tracing()
        chunk_elements = CPU_CHUNK_ELEMENTS if cache_sized else CHUNK_ELEMENTS
    n, m = q.shape[0], bank.shape[0]
    kk = min(k, m)
    chunk = max(kk, min(m, chunk_elements // max(n, 1)), 1)

    reuse = m > chunk and not _tracing() and not (torch.is_grad_enabled() and (q.requires_grad or bank.requires_grad))
    buffer = torch.empty((n, chunk), dtype=torch.float32, device=q.device) if reuse else None

    best_v: Optional[torch.Tensor] = None
    best_i: Optional[torch.Tensor] = None
    for start in range(0, m, chunk):
        block = bank[start:start + chunk].float()
        bias = norms[start:start + chunk].unsqueeze(0)
        if buffer is not None and block.shape[0] == chunk:
            key = torch.addmm(bias, q, block.t(), beta=1.0, alpha=-2.0, out=buffer)
        else:
            key = torch.addmm(bias, q, block.t(), beta=1.0, alpha=-2.0)
        if not with_indices:  # values only: no tie rule to keep, see knn_distances_reference
            v = key.amin(dim=1, keepdim=True) if kk == 1 else torch.topk(
                key, min(kk, block.shape[0]), dim=1, largest=False, sorted=False).values
            if best_v is None:
                best_v = v
            elif kk == 1:
                best_v = torch.where(v < best_v, v, best_v)
            else:
                best_v = torch.topk(torch.cat([best_v, v], dim=1), kk, dim=1, largest=False, sorted=False).values
            continue
        if kk == 1:
            v, i = key.min(dim=1, keepdim=True)
        else:
            v, i = _k_smallest_first_on_ties(key, min(kk, block.shape[0]))
        i = i + start
        if best_v is None:
            best_v, best_i = v, i
        elif kk == 1:
            # strict: an equal distance from a later chunk has the higher index and loses the tie
            better = v < best_v
            best_v = torch.where(better, v, best_v)
            best_i = torch.where(better, i, best_i)
        else:
            # Both sides come in index order and the running side holds only lower indices, so column
            # order is index order: ties at the k-th place go to the lower index.
            cand_v = torch.cat([best_v, v], dim=1)
            cand_i = torch.cat([best_i, i], dim=1)
            best_v, pos = _k_smallest_first_on_ties(cand_v, kk)
            best_i = cand_i.gather(1, pos)

    assert best_v is not None, "empty bank reached knn_reference"
    q_norm = (q * q).sum(dim=1, keepdim=True)
    dist = torch.clamp(best_v + q_norm, min=0.0)
    idx = best_i
    if kk > 1:
        if idx is None:
            dist = dist.sort(dim=1).values
        else:
            dist, idx = _order_ties_by_index(dist, idx)
    if kk < k:
        dist = torch.cat([dist, torch.full((n, k - kk), float("inf"), dtype=dist.dtype, device=dist.device)], 1)
        if idx is not None:
            idx = torch.cat([idx, torch.full((n, k - kk), -1, dtype=idx.dtype, device=idx.device)], 1)
    return dist.reshape(*lead, k), None if idx is None else idx.reshape(*lead, k)


# --------------------------------------------------------------------------------------------------
# Triton kernels (plain functions here, decorated lazily by _common.lazy_jit; see its docstring)
# --------------------------------------------------------------------------------------------------
def _knn_kernel(
    q_ptr, bank_ptr, norm_ptr, out_d_ptr, out_i_ptr,
    n, m, d, rows_per_split,
    stride_q, stride_b, stride_os, stride_on,
    K: tl.constexpr, K_PAD: tl.constexpr, FINAL: tl.constexpr,
    RESIDENT: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
):
    """Running top-k of ``||m_j||^2 - 2 <q_i, m_j>`` over one bank split for BLOCK_N queries.

    Grid (cdiv(n, BLOCK_N), splits). Writes k (distance, index) pairs per query, sorted by
    (distance, index), to out[split, query, :]; with FINAL the distances are clamped at 0 (one split:
    these are the results), otherwise the merge kernel clamps. Padding columns load a +inf norm so they
    never rank.
    """
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    lo = pid_s * rows_per_split
    hi = tl.minimum(lo + rows_per_split, m)

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < n
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    dot_ty = bank_ptr.dtype.element_ty
    inf = float("inf")

    # Query block and its norm, from the same (possibly fp16-rounded) values the dot product sees.
    if RESIDENT:
        q = tl.load(q_ptr + offs_n[:, None] * stride_q + offs_d[None, :],
                    mask=n_mask[:, None] & (offs_d[None, :] < d), other=0.0).to(dot_ty)
        qf = q.to(tl.float32)
        q_norm = tl.sum(qf * qf, axis=1)
    else:
        q_norm = tl.zeros([BLOCK_N], dtype=tl.float32)
        for d0 in range(0, d, BLOCK_D):
            dd = d0 + offs_d
            qc = tl.load(q_ptr + offs_n[:, None] * stride_q + dd[None, :],
                         mask=n_mask[:, None] & (dd[None, :] < d), other=0.0).to(dot_ty).to(tl.float32)
            q_norm += tl.sum(qc * qc, axis=1)

    if K == 1:
        best_v = tl.full([BLOCK_N], inf, tl.float32)
        best_i = tl.full([BLOCK_N], -1, tl.int32)
    else:
        slots = tl.arange(0, K_PAD)
        # Real slots start empty (+inf) with distinct negative ids (the replace step needs every slot
        # of a row to be distinguishable); padding slots hold -inf so they are never the worst.
        top_v = tl.where(slots[None, :] < K, inf, -inf) + tl.zeros([BLOCK_N, K_PAD], tl.float32)
        top_i = (-1 - slots)[None, :] + tl.zeros([BLOCK_N, K_PAD], tl.int32)

    if K == 1 and RESIDENT:
        # Software-pipelined: the next tile's product is issued before this tile's reduction, so the
        # tensor cores work while the running minimum is updated (an H100 at n=1024, m=100k, d=128
        # fp16, 128 x 64 tiles, 4 warps: 72.6 us against 77.3 us for the plain loop).
        b = tl.load(bank_ptr + (lo + offs_m).to(tl.int64)[:, None] * stride_b + offs_d[None, :],
                    mask=((lo + offs_m) < hi)[:, None] & (offs_d[None, :] < d), other=0.0)
        dot = tl.dot(q, tl.trans(b), input_precision=PRECISION)
        b_norm = tl.load(norm_ptr + lo + offs_m, mask=(lo + offs_m) < hi, other=inf)
        for start in range(lo, hi, BLOCK_M):
            nxt = start + BLOCK_M + offs_m
            nxt_mask = nxt < hi
            b = tl.load(bank_ptr + nxt.to(tl.int64)[:, None] * stride_b + offs_d[None, :],
                        mask=nxt_mask[:, None] & (offs_d[None, :] < d), other=0.0)
            dot_next = tl.dot(q, tl.trans(b), input_precision=PRECISION)
            norm_next = tl.load(norm_ptr + nxt, mask=nxt_mask, other=inf)
            key = b_norm[None, :] - 2.0 * dot  # ||q||^2 is constant per row: added to the survivor only
            v, j = tl.min(key, axis=1, return_indices=True)  # lowest column wins a tie
            better = v < best_v  # strict: earlier tiles hold lower indices
            best_v = tl.where(better, v, best_v)
            best_i = tl.where(better, start + j, best_i)
            dot = dot_next
            b_norm = norm_next
    else:
        for start in range(lo, hi, BLOCK_M):
            cols = start + offs_m
            c_mask = cols < hi
            rows_b = cols.to(tl.int64) * stride_b  # 64-bit: m * d passes 2^31 for banks beyond ~8M x 256
            if RESIDENT:
                b = tl.load(bank_ptr + rows_b[:, None] + offs_d[None, :],
                            mask=c_mask[:, None] & (offs_d[None, :] < d), other=0.0)
                dot = tl.dot(q, tl.trans(b), input_precision=PRECISION)
            else:
                dot = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
                for d0 in range(0, d, BLOCK_D):
                    dd = d0 + offs_d
                    qc = tl.load(q_ptr + offs_n[:, None] * stride_q + dd[None, :],
                                 mask=n_mask[:, None] & (dd[None, :] < d), other=0.0).to(dot_ty)
                    b = tl.load(bank_ptr + rows_b[:, None] + dd[None, :],
                                mask=c_mask[:, None] & (dd[None, :] < d), other=0.0)
                    dot = tl.dot(qc, tl.trans(b), acc=dot, input_precision=PRECISION)
            b_norm = tl.load(norm_ptr + cols, mask=c_mask, other=inf)
            key = b_norm[None, :] - 2.0 * dot  # ||q||^2 is constant per row: added to the survivors only

            if K == 1:
                v, j = tl.min(key, axis=1, return_indices=True)  # lowest column wins a tie
                better = v < best_v  # strict: earlier tiles hold lower indices
                best_v = tl.where(better, v, best_v)
                best_i = tl.where(better, start + j, best_i)
            else:
                # Pull the tile's best candidates one at a time, only while some row of the block still
                # improves; after the first tiles this loop rarely runs, which is what keeps k > 1 cheap.
                worst = tl.max(top_v, axis=1)
                v, j = tl.min(key, axis=1, return_indices=True)
                todo = v < worst
                while tl.max(todo.to(tl.int32), axis=0) > 0:
                    # Evict the worst slot, the one with the highest index among equal worst distances.
                    is_worst = top_v == worst[:, None]
                    worst_i = tl.max(tl.where(is_worst, top_i, -_I32_MAX), axis=1)
                    evict = is_worst & (top_i == worst_i[:, None]) & todo[:, None]
                    top_v = tl.where(evict, v[:, None], top_v)
                    top_i = tl.where(evict, (start + j)[:, None], top_i)
                    key = tl.where(offs_m[None, :] == j[:, None], inf, key)
                    worst = tl.max(top_v, axis=1)
                    v, j = tl.min(key, axis=1, return_indices=True)
                    todo = v < worst

    out_row = out_d_ptr + pid_s * stride_os + offs_n * stride_on
    out_irow = out_i_ptr + pid_s * stride_os + offs_n * stride_on
    if K == 1:
        dist = best_v + q_norm
        if FINAL:
            dist = tl.maximum(dist, 0.0)
        tl.store(out_row, dist, mask=n_mask)
        tl.store(out_irow, best_i.to(out_i_ptr.dtype.element_ty), mask=n_mask)
    else:
        dist = top_v + q_norm[:, None]
        if FINAL:
            dist = tl.maximum(dist, 0.0)
        dist = tl.where(slots[None, :] < K, dist, inf)
        ids = tl.where(slots[None, :] < K, top_i, _I32_MAX)
        # Selection sort of K_PAD <= 16 register slots by (distance, index); empty slots (negative
        # ids) come out as (inf, -1).
        for r in tl.static_range(K):
            v = tl.min(dist, axis=1)
            i = tl.min(tl.where(dist == v[:, None], ids, _I32_MAX), axis=1)
            hit = (dist == v[:, None]) & (ids == i[:, None])
            tl.store(out_row + r, v, mask=n_mask)
            tl.store(out_irow + r, tl.where(i < 0, -1, i).to(out_i_ptr.dtype.element_ty), mask=n_mask)
            dist = tl.where(hit, inf, dist)
            ids = tl.where(hit, _I32_MAX, ids)


def _knn_merge_kernel(
    part_d_ptr, part_i_ptr, out_d_ptr, out_i_ptr,
    n, splits,
    stride_ps, stride_pn, stride_on,
    K: tl.constexpr, SK_PAD: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Merge ``splits`` lists of K (distance, index) pairs per query into the final top-K.

    Grid (cdiv(n, BLOCK_N),). Loads all splits * K candidates of BLOCK_N queries as one
    [BLOCK_N, SK_PAD] block and selects K times by (distance, index); clamps distances at 0.
    Unused candidates are (inf, INT32_MAX); missing results (index -1) come out as (inf, -1).
    Assumes every real distance is finite (ops refuses NaN/Inf inputs).
    """
    pid = tl.program_id(0)
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < n
    c = tl.arange(0, SK_PAD)
    s = c // K
    r = c % K
    valid = n_mask[:, None] & (s[None, :] < splits)
    ptr = offs_n[:, None] * stride_pn + s[None, :] * stride_ps + r[None, :]
    dist = tl.load(part_d_ptr + ptr, mask=valid, other=float("inf"))
    dist = tl.maximum(dist, 0.0)
    ids = tl.load(part_i_ptr + ptr, mask=valid, other=_I32_MAX)
    ids = tl.where(ids < 0, -1, ids)  # empty slots: all alike, ordered before unused padding
    for q in tl.static_range(K):
        v = tl.min(dist, axis=1)
        i = tl.min(tl.where(dist == v[:, None], ids, _I32_MAX), axis=1)
        # Empty slots repeat (inf, -1): retire one candidate per round, the first matching column.
        pos = tl.min(tl.where((dist == v[:, None]) & (ids == i[:, None]), c[None, :], SK_PAD), axis=1)
        hit = c[None, :] == pos[:, None]
        tl.store(out_d_ptr + offs_n * stride_on + q, v, mask=n_mask)
        tl.store(out_i_ptr + offs_n * stride_on + q, tl.where(i == _I32_MAX, -1, i).to(out_i_ptr.dtype.element_ty),
                 mask=n_mask)
        dist = tl.where(hit, float("inf"), dist)
        ids = tl.where(hit, _I32_MAX, ids)


# --------------------------------------------------------------------------------------------------
# launcher
# --------------------------------------------------------------------------------------------------
# Launch configurations: a few candidates per case, timed once per shape bucket by ``_TUNER`` (see
# _common.LaunchTuner) with the first as the default when tuning is off. Every candidate builds
# without register spills for sm_90 (H100/H200) and sm_87 (Jetson Orin), checked with ptxas by
# tests/kernels/test_gpu_compile.py; tiles that spill on either were dropped even where an H100 timed
# them well, because a spilling tile runs several times slower on the other device.


def _tile(block_n: int, block_m: int, num_warps: int) -> dict:
    return {"BLOCK_N": block_n, "BLOCK_M": block_m, "num_warps": num_warps, "num_stages": 3}


# fp16 bank, k = 1, d <= 128 (the stream's case): the software-pipelined loop. On an H100 at n=1,024,
# m=100k, d=128, 37 tile / warp / split combinations of the plain loop took 77-143 us; the pipelined
# loop with 128 x 64 tiles 72.6 us (4 warps; 8 warps keep that tile spill-free on sm_87). 64 x 64 tiles
# with 4 warps spill on sm_87 with Triton 3.9 for fp16 and bf16 queries at d = 128 (255 registers and a
# 40-byte stack; fp32 queries just fit, and 3.4 built all three clean), so they get 8 warps too: with
# 3.4 and 3.9 at most 211 registers on sm_87, no stack, for fp32, fp16 and bf16 queries at d = 64 and 128.
_CANDIDATES_FP16_K1 = [_tile(128, 64, 8), _tile(64, 128, 8), _tile(64, 64, 8)]
# fp16 bank with k > 1 (the register top-k), or d streamed in chunks.
_CANDIDATES_FP16 = [_tile(64, 32, 4), _tile(32, 32, 4)]
# fp32 bank: three-pass TF32 carries hi/lo halves of both operands, about twice the registers. With
# Triton 3.8 (what torch 2.14.1 pins, and the newest for aarch64) 64 x 32 / 8 warps, 32 x 32 / 4,
# 64 x 64 / 8, 16 x 64 / 4 and 32 x 128 / 8 spill at k > 1 on sm_87 (16 x 64 / 8 even on sm_90);
# these two build clean with 3.4 to 3.9. Not timed on a GPU: fp32 banks are not what fit stores.
_CANDIDATES_FP32 = [_tile(32, 64, 8), _tile(32, 32, 8)]
# The CPU interpreter runs the smallest tile a GPU tl.dot accepts (16), so tests exercise shapes a GPU
# could run; a second candidate lets the tests drive the tuner (EDGECMG_AUTOTUNE=1).
_INTERPRET_CANDIDATES = [_tile(16, 16, 4), _tile(32, 16, 4)]
_MERGE_BLOCK_N = 16
_TUNER = LaunchTuner()


def _candidates(k: int, resident: bool, bank_element_size: int) -> list[dict]:
    """Launch configurations for a case, the default first."""
    if interpret_mode():
        return _INTERPRET_CANDIDATES
    if bank_element_size == 4:
        return _CANDIDATES_FP32
    if k == 1 and resident:
        return _CANDIDATES_FP16_K1
    return _CANDIDATES_FP16


def _choose_splits(n: int, m: int, device, block_n: int) -> int:
    """Bank splits so that programs fill at most two waves of the GPU, even for one frame.

    1,024 queries make only 8 blocks of 128; without splitting the bank, 8 of an H100's 132 SMs would
    work. The count is rounded down, never up: on an H100, 17 splits of 16 query blocks (272
    programs, a few more than two waves of 132) measured 0.12 ms where 16 splits (256) took 0.085 ms,
    the extra programs running alone in a third wave. Each split keeps at least 2 * _SPLIT_ALIGN bank
    rows so the merge stays negligible.
    """
    if interpret_mode():
        return 1
    target = 2 * num_sms(device)
    return max(1, min(target // cdiv(max(n, 1), block_n), cdiv(m, 2 * _SPLIT_ALIGN), 64))


def _launch(q, bank, norms, dims: dict, cfg: dict, splits: Optional[int]) -> None:
    """One search with one configuration: the kernel over the bank splits, then the merge."""
    n, m, k = dims["n"], dims["m"], dims["k"]
    out_d, out_i = dims["final_d"], dims["final_i"]
    if splits is None:
        splits = _choose_splits(n, m, q.device, cfg["BLOCK_N"])
    splits, rows_per_split = split_evenly(m, splits, _SPLIT_ALIGN)
    final = splits == 1

    if final:
        dst_d, dst_i, stride_os = out_d, out_i, 0
    else:
        dst_d = torch.empty((splits, n, k), dtype=torch.float32, device=q.device)
        dst_i = torch.empty((splits, n, k), dtype=torch.int32, device=q.device)
        stride_os = n * k

    kernel = lazy_jit(_knn_kernel, _KERNEL_CONSTS, do_not_specialize=["n", "m", "rows_per_split"])
    kernel[(cdiv(n, cfg["BLOCK_N"]), splits)](
        q, bank, norms, dst_d, dst_i, n, m, dims["d"], rows_per_split,
        q.stride(0), bank.stride(0), stride_os, dst_d.stride(-2),
        K=k, K_PAD=dims["k_pad"], FINAL=final, RESIDENT=dims["resident"], BLOCK_D=dims["block_d"],
        PRECISION=dims["precision"], BLOCK_N=cfg["BLOCK_N"], BLOCK_M=cfg["BLOCK_M"],
        num_warps=cfg.get("num_warps", 4), num_stages=cfg.get("num_stages", 3))

    if not final:
        merge = lazy_jit(_knn_merge_kernel, _KERNEL_CONSTS)
        merge[(cdiv(n, _MERGE_BLOCK_N),)](
            dst_d, dst_i, out_d, out_i, n, splits, n * k, k, out_d.stride(0),
            K=k, SK_PAD=next_pow2(splits * k), BLOCK_N=_MERGE_BLOCK_N, num_warps=4,
        )


def knn_triton(
    queries: torch.Tensor,
    bank: torch.Tensor,
    k: int = 1,
    *,
    bank_sq_norms: Optional[torch.Tensor] = None,
    out: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    splits: Optional[int] = None,
    config: Optional[dict] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch ``_knn_kernel`` (+ ``_knn_merge_kernel`` when the bank is split). Same contract as
    ``knn_reference``; shapes and dtypes are assumed validated by ``edgecmg.ops.knn``.

    splits: bank slices processed by separate programs (None: sized to the GPU; 1 under the
        interpreter). config: {"BLOCK_N", "BLOCK_M", "num_warps"[, "num_stages"]} to use instead of
        the tuned choice (``EDGECMG_AUTOTUNE=0``: the first of ``_candidates``).
    out: optional preallocated (D float32, I int64) of shape queries.shape[:-1] + (k,), contiguous.
    """
    require_triton()
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k={k} outside 1..{MAX_K}")
    d = bank.shape[1]
    lead = queries.shape[:-1]
    q = queries.reshape(-1, d)
    if q.stride(-1) != 1:
        q = q.contiguous()
    if bank.stride(-1) != 1:
        bank = bank.contiguous()
    n, m = q.shape[0], bank.shape[0]
    if m > _INT32_MAX:
        raise ValueError(f"bank of {m} rows exceeds the kernel's int32 indices")
    norms = bank_sq_norms_reference(bank) if bank_sq_norms is None else bank_sq_norms
    norms = norms.to(torch.float32).contiguous()

    if out is None:
        out_d = torch.empty((n, k), dtype=torch.float32, device=q.device)
        out_i = torch.empty((n, k), dtype=torch.int64, device=q.device)
        result = (out_d.reshape(*lead, k), out_i.reshape(*lead, k))
    else:
        result = out
        out_d, out_i = out[0].view(n, k), out[1].view(n, k)
    if n == 0:
        return result

    d_pad = next_pow2(max(d, 16))
    resident = d_pad <= _MAX_RESIDENT_D[bank.element_size()]
    block_d = d_pad if resident else _D_CHUNK
    # fp32 bank: three-pass TF32 keeps ~fp32 accuracy on tensor cores (plain TF32 would silently
    # round the features to 10 mantissa bits); fp16 ignores the setting.
    precision = "tf32x3" if bank.dtype == torch.float32 else "tf32"

    dims = dict(n=n, m=m, d=d, k=k, k_pad=next_pow2(k), resident=resident, block_d=block_d,
                precision=precision, final_d=out_d, final_i=out_i)
    if config is not None:
        _launch(q, bank, norms, dims, dict(config), splits)
        return result
    candidates = _candidates(k, resident, bank.element_size())
    key = (q.device.type, q.device.index, str(bank.dtype), d_pad, k, shape_bucket(n), shape_bucket(m), splits)
    cfg = _TUNER.choose(key, candidates, lambda c: _launch(q, bank, norms, dims, c, splits), q.device)
    _launch(q, bank, norms, dims, cfg, splits)
    return result
