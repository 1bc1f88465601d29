"""Benchmark the kNN and masked-similarity kernels against the torch alternatives (issue 3).

    python benchmarks/bench_kernels.py --device cuda --out benchmarks/results/kernels_h100.md
    python benchmarks/bench_kernels.py --device cpu --out benchmarks/results/kernels_cpu.md [--quick]

GPU rows compare, in one run and on the same data: the Triton kernel (``edgecmg.ops.knn``,
backend "triton"), torch ``cdist`` + ``topk`` (chunked over the bank so 1M banks fit), the
matmul-form torch reference (``knn_reference``: chunked fp32 ``addmm`` + running top-k), a torch
fp16 matmul with an fp32 epilogue (the fastest torch formulation we know), and faiss-gpu brute force
when ``import faiss`` works. Shapes: one 256x256 frame = 1,024 patch queries, batch 1 and 8 frames,
banks of 16k / 100k / 1M rows, d = 64 / 128 / 256.

Metrics: milliseconds (median over repetitions, CUDA events), achieved TFLOP/s (2 n m d flops, the
useful work of the distance products), achieved GB/s (bank + norms + queries + outputs, each read
or written once: the compulsory traffic), and "roof" = the roofline time divided by the measured
time, where the roofline time is max(flops / compute peak, bytes / memory peak) for the device.
Compute peak: fp16 dense tensor cores for fp16 banks; for fp32 banks one third of dense TF32
(the kernel's three-pass TF32 product). Peaks come from the table below; unknown devices report n/a.

On the CPU only the torch paths run (the reference is what a GPU-less user gets), plus one
correctness-only row of the Triton kernel under TRITON_INTERPRET (never a speed figure).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

# Dense peaks (no structured sparsity), vendor datasheets. tf32 = dense TF32 tensor-core TFLOP/s.
# Jetson boards all report "Orin"; the AGX Orin 64GB figures are used (NX / Nano are 2-4x lower).
PEAKS = {
    # name substring: (label, fp16 tensor TFLOP/s, tf32 TFLOP/s, memory TB/s)
    "H200": ("H200 SXM", 989.0, 494.0, 4.8),
    "H100 PCIe": ("H100 PCIe", 756.0, 378.0, 2.0),
    "H100 NVL": ("H100 NVL", 835.0, 418.0, 3.9),
    "H100": ("H100 SXM", 989.0, 494.0, 3.35),
    "A100": ("A100 SXM", 312.0, 156.0, 2.04),
    "Orin": ("Jetson AGX Orin 64GB", 42.5, 21.3, 0.2048),
}


FRAME_QUERIES = 1024  # patches of one 256x256 frame at stride 8
MS_SHAPE = (8, 64, 64, 1280, 1000)  # masked_similarity: b, K, p, c, C


def device_peaks(name: str):
    for key, val in PEAKS.items():
        if key.lower() in name.lower():
            return val
    return None


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ------------------------------------------------------------------------------------- timing
def time_ms(fn: Callable[[], object], device: str, min_time_s: float, max_reps: int = 100) -> float:
    """Median milliseconds of ``fn`` after warm-up (the first call also runs the launchers' tuner,
    edgecmg.kernels._common.LaunchTuner)."""
    for _ in range(2):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    times: list[float] = []
    start_all = time.perf_counter()
    while len(times) < max_reps and (len(times) < 3 or time.perf_counter() - start_all < min_time_s):
        if device == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def graph_ms(fn: Callable[[], object], eager_ms: float, budget_ms: float = 200.0, rounds: int = 3) -> Optional[float]:
    """Median milliseconds per call of ``fn`` captured once in a CUDA graph and replayed back to back.

    This is the device time without Python's launch overhead (what a captured per-frame pipeline pays);
    ``time_ms`` measures one synchronised eager call (what a plain Python caller pays). None when the
    call cannot be captured (it synchronises with the host, e.g. a NaN check that reads a flag).
    """
    from edgecmg.runtime.cuda_graphs import capture

    try:
        graph, _ = capture(fn, torch.device("cuda"))
    except Exception as exc:  # not capturable: report n/a, never a made-up figure (and say why)
        torch.cuda.synchronize()
        print(f"  graph capture failed: {type(exc).__name__}: {str(exc)[:120]}", file=sys.stderr, flush=True)
        return None
    graph.replay()
    torch.cuda.synchronize()
    reps = max(2, min(50, int(budget_ms / max(eager_ms, 1e-3))))  # ~budget_ms of replays per round
    per_call = []
    for _ in range(rounds):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(reps):
            graph.replay()
        b.record()
        b.synchronize()
        per_call.append(a.elapsed_time(b) / reps)
    del graph
    return statistics.median(per_call)


# ------------------------------------------------------------------------------------- torch variants
def knn_cdist_topk(q: torch.Tensor, bank: torch.Tensor, k: int, max_elems: int = 1 << 28):
    """torch.cdist + topk, chunked over the bank with a running top-k (squared distances)."""
    n = q.shape[0]
    chunk = max(k, min(bank.shape[0], max_elems // max(n, 1)))
    qf = q.float()
    best_v = best_i = None
    for s in range(0, bank.shape[0], chunk):
        dist = torch.cdist(qf, bank[s:s + chunk].float()).square_()
        v, i = torch.topk(dist, min(k, dist.shape[1]), dim=1, largest=False)
        i += s
        if best_v is None:
            best_v, best_i = v, i
        else:
            v, pos = torch.topk(torch.cat([best_v, v], 1), k, dim=1, largest=False)
            best_i, best_v = torch.cat([best_i, i], 1).gather(1, pos), v
    return best_v, best_i


def knn_mm_fp16(q: torch.Tensor, bank: torch.Tensor, k: int, norms: torch.Tensor, max_elems: int = 1 << 28):
    """fp16 tensor-core matmul (fp16 output) + fp32 epilogue, chunked: the fastest torch form."""
    n = q.shape[0]
    chunk = max(k, min(bank.shape[0], max_elems // max(n, 1)))
    qh = q.to(bank.dtype)
    best_v = best_i = None
    for s in range(0, bank.shape[0], chunk):
        dot = qh @ bank[s:s + chunk].t()
        key = norms[s:s + chunk] - 2.0 * dot.float()
        if k == 1:
            v, i = key.min(dim=1, keepdim=True)
        else:
            v, i = torch.topk(key, min(k, key.shape[1]), dim=1, largest=False)
        i += s
        if best_v is None:
            best_v, best_i = v, i
        else:
            v, pos = torch.topk(torch.cat([best_v, v], 1), k, dim=1, largest=False)
            best_i, best_v = torch.cat([best_i, i], 1).gather(1, pos), v
    return best_v, best_i


_FAISS_RES: list = []


def faiss_variant(bank: torch.Tensor):
    """faiss-gpu brute force on the same data, or None if faiss (with GPU support) is missing."""
    try:
        import faiss
        import faiss.contrib.torch_utils  # noqa: F401  (lets faiss take torch CUDA tensors)
    except Exception:
        return None
    if not hasattr(faiss, "StandardGpuResources"):
        return None
    if not _FAISS_RES:
        _FAISS_RES.append(faiss.StandardGpuResources())  # one scratch allocation for the whole run
    res = _FAISS_RES[0]
    bank32 = bank.float().contiguous()

    def run(q, k):
        return faiss.knn_gpu(res, q.float().contiguous(), bank32, k)

    return run


# ------------------------------------------------------------------------------------- rows
@dataclass
class Row:
    op: str
    shape: str
    variant: str
    ms: float  # one synchronised eager call
    tflops: Optional[float]
    gbs: Optional[float]
    roof: Optional[float]
    note: str = ""
    graph_ms: Optional[float] = None  # CUDA-graph replay; throughput columns use it when present


def tile_note(tuner) -> str:
    """The launch configuration a launcher's tuner used for the latest call, for the table's note."""
    cfg = tuner.last or {}
    tiles = "x".join(str(v) for k, v in cfg.items() if k.startswith("BLOCK_"))
    return f"tile {tiles}, {cfg.get('num_warps', '?')} warps" if cfg else "tile unknown"


def fmt(x: Optional[float], digits: int = 2) -> str:
    if x is None:
        return "n/a"
    if x >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}f}"


def knn_rows(device: str, shapes, min_time: float, peaks, variants: set[str]) -> list[Row]:
    from edgecmg import ops
    from edgecmg.kernels import knn as knn_mod
    from edgecmg.kernels.knn import knn_reference, knn_triton

    rows: list[Row] = []
    g = torch.Generator(device=device).manual_seed(0)
    for frames, m, d, k, dtype in shapes:
        n = FRAME_QUERIES * frames
        q = torch.randn(frames, FRAME_QUERIES, d, device=device, generator=g)
        bank = torch.randn(m, d, device=device, generator=g).to(dtype)
        norms = ops.bank_sq_norms(bank)
        flops = 2.0 * n * m * d
        nbytes = m * d * bank.element_size() + 4 * m + 4 * n * d + 12 * n * k
        m_txt = f"{m / 1e6:g}M" if m >= 1_000_000 else (f"{m // 1000}k" if m >= 1000 else str(m))
        shape = f"b={frames} n={n} m={m_txt} d={d} k={k} {str(dtype).replace('torch.', '')}"
        qf = q.reshape(n, d)
        cands: list[tuple[str, Callable]] = []
        if "triton" in variants:
            cands.append(("triton kernel", lambda: knn_triton(q, bank, k, bank_sq_norms=norms)))
            cands.append(("edgecmg.ops.knn (input checks + kernel)",
                          lambda: ops.knn(q, bank, k, bank_sq_norms=norms, backend="triton")))
        if "reference" in variants:
            cands.append(("torch reference (chunked addmm fp32)",
                          lambda: knn_reference(q, bank, k, bank_sq_norms=norms)))
        if "mm16" in variants and dtype == torch.float16:
            cands.append(("torch mm fp16 + fp32 epilogue (chunked)", lambda: knn_mm_fp16(qf, bank, k, norms)))
        if "cdist" in variants:
            cands.append(("torch cdist + topk (chunked)", lambda: knn_cdist_topk(qf, bank, k)))
        fv = faiss_variant(bank) if "faiss" in variants and device == "cuda" else None
        if fv is not None:
            cands.append(("faiss-gpu brute force (fp32 copy of the bank)", lambda: fv(qf, k)))
        best_torch: dict[str, float] = {}  # timing basis ("call", "graph") -> best torch ms
        torch_without_graph = False  # a torch variant that was not captured could be the fastest one
        kernel_row = None
        for name, fn in cands:
            try:
                ms = time_ms(fn, device, min_time)
                g_ms = graph_ms(fn, ms) if device == "cuda" else None
            except torch.cuda.OutOfMemoryError:
                rows.append(Row("knn", shape, name, float("nan"), None, None, None, "out of memory"))
                torch.cuda.empty_cache()
                continue
            t = g_ms if g_ms is not None else ms  # throughput from device time where we have it
            roof = None
            if peaks is not None:
                _, fp16_tf, tf32_tf, tbs = peaks
                compute_peak = fp16_tf if dtype == torch.float16 else tf32_tf / 3.0
                t_roof = max(flops / (compute_peak * 1e12), nbytes / (tbs * 1e12))
                roof = t_roof / (t * 1e-3)
            rows.append(Row("knn", shape, name, ms, flops / t / 1e9, nbytes / t / 1e6, roof, graph_ms=g_ms))
            print(f"{shape} | {name}: {ms:.3f} ms call, graph {g_ms if g_ms is None else round(g_ms, 4)} ms",
                  file=sys.stderr, flush=True)
            if name.startswith("torch"):
                torch_without_graph |= device == "cuda" and g_ms is None
                for basis, value in (("call", ms), ("graph", g_ms)):
                    if value is not None:
                        best_torch[basis] = min(best_torch.get(basis, value), value)
            if name == "triton kernel":
                kernel_row = rows[-1]
                kernel_row.note = tile_note(knn_mod._TUNER)
        if kernel_row is not None and "call" in best_torch:
            kernel_row.note = (f"{best_torch['call'] / kernel_row.ms:.1f}x vs best torch"
                               + (f" ({best_torch['graph'] / kernel_row.graph_ms:.1f}x in graphs)"
                                  if kernel_row.graph_ms is not None and "graph" in best_torch
                                  and not torch_without_graph else "")
                               + "; " + kernel_row.note)
        q = bank = norms = qf = fv = cands = None  # free the GPU copies before the next shape
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


def masked_similarity_rows(device: str, min_time: float, variants: set[str], dtype=torch.float16) -> list[Row]:
    from edgecmg import ops
    from edgecmg.kernels import masked_similarity as ms_mod
    from edgecmg.kernels.masked_similarity import masked_similarity_reference, masked_similarity_triton

    b, K, p, c, C = MS_SHAPE
    g = torch.Generator(device=device).manual_seed(0)
    feats = torch.randn(b, p, c, device=device, generator=g)
    masks = torch.rand(K, p, device=device, generator=g) > 0.5
    masks[:, 0] = True
    weight = (torch.randn(c, C, device=device, generator=g) / c ** 0.5).to(dtype if device == "cuda" else torch.float32)
    bias = torch.randn(C, device=device, generator=g)
    text = torch.rand(C, device=device, generator=g)
    flops = 2.0 * b * K * p * c + 2.0 * b * K * c * C
    shape = f"b={b} K={K} p={p} c={c} C={C} W {str(weight.dtype).replace('torch.', '')}"
    rows = []
    for mode in ("expectation", "cosine"):
        cands = []
        if "triton" in variants:
            cands.append(("triton kernel", lambda: masked_similarity_triton(feats, masks, weight, bias, text,
                                                                            mode=mode)))
        cands.append(("torch reference", lambda: masked_similarity_reference(feats, masks, weight, bias, text,
                                                                             mode=mode)))
        cands.append(("edgecmg.ops.masked_similarity (input checks + auto)",
                      lambda: ops.masked_similarity(feats, masks, weight, bias, text, mode=mode)))
        # CMER's call: head, text and masks were checked on the first frame (matcher.score_variants)
        cands.append(("edgecmg.ops.masked_similarity (params_checked=True, as CMER calls it)",
                      lambda: ops.masked_similarity(feats, masks, weight, bias, text, mode=mode,
                                                    params_checked=True)))
        for name, fn in cands:
            ms = time_ms(fn, device, min_time)
            g_ms = graph_ms(fn, ms) if device == "cuda" else None
            t = g_ms if g_ms is not None else ms
            note = ""
            if name == "triton kernel" or "params_checked" in name:
                note = "target < 0.2 ms: call " + ("met" if ms < 0.2 else "NOT met")
                if g_ms is not None:
                    note += ", graph " + ("met" if g_ms < 0.2 else "NOT met")
            if name == "triton kernel":
                note += "; " + tile_note(ms_mod._TUNER)
            rows.append(Row(f"masked_similarity ({mode})", shape, name, ms, flops / t / 1e9, None, None, note,
                            graph_ms=g_ms))
    return rows


def interpreter_sanity_row() -> Row:
    """Run the Triton kernel once through TRITON_INTERPRET in a fresh process (Triton's mode is fixed
    at import) and check it against the reference. A correctness row, never a speed figure."""
    code = (
        "import torch, time\n"
        "from edgecmg.kernels.knn import knn_triton, knn_reference\n"
        "q = torch.randn(64, 96); b = torch.randn(300, 96)\n"
        "t = time.perf_counter(); d, i = knn_triton(q, b, 4, splits=2); t = time.perf_counter() - t\n"
        "rd, ri = knn_reference(q, b, 4)\n"
        "ok = torch.allclose(d, rd, atol=1e-3) and (i == ri).float().mean() > 0.99\n"
        "print('RESULT', 'ok' if ok else 'MISMATCH', t * 1e3)\n"
    )
    env = dict(os.environ, TRITON_INTERPRET="1", TRITON_DEFAULT_FP_FUSION="1")
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1].split()
        status, ms = line[1], float(line[2])
    except Exception as exc:  # triton missing or broken: say so in the table
        status, ms = f"not run ({type(exc).__name__})", float("nan")
    return Row("knn", "b=1 n=64 m=300 d=96 k=4 float32", "triton kernel, TRITON_INTERPRET (CPU)", ms, None, None,
               None, f"correctness only, NOT a speed figure: {status}")


# ------------------------------------------------------------------------------------- main
def shapes_for(device: str, quick: bool):
    f16, f32 = torch.float16, torch.float32
    if device == "cuda":
        if quick:  # the headline shape, the detector's own bank, eight frames
            return [(1, 100_000, 128, 1, f16), (1, 16_384, 96, 1, f16), (8, 100_000, 128, 1, f16)]
        out = []
        for frames in (1, 8):
            for m in (16_384, 100_000, 1_000_000):
                for d in (64, 128, 256):
                    out.append((frames, m, d, 1, f16))
        out += [(1, 100_000, 128, 5, f16), (1, 100_000, 128, 16, f16), (1, 100_000, 128, 1, f32),
                (8, 16_384, 96, 1, f32)]
        return out
    # CPU: what the detector calls (m up to 16k, d = 96) first, then the shapes that fit
    if quick:
        return [(1, 16_384, 96, 1, f32), (4, 16_384, 96, 1, f32)]
    return [(1, 16_384, 96, 1, f32), (1, 16_384, 96, 5, f32), (4, 16_384, 96, 1, f32), (1, 16_384, 96, 1, f16),
            (1, 16_384, 64, 1, f32), (1, 16_384, 128, 1, f32), (1, 16_384, 256, 1, f32), (8, 16_384, 128, 1, f32),
            (1, 100_000, 128, 1, f32), (1, 100_000, 128, 1, f16)]


def targets_summary(rows: list[Row]) -> str:
    """The issue's H100 targets, checked against this run's rows."""
    out = ["Targets (issue 3, H100):", ""]
    head = [r for r in rows if r.op == "knn" and r.shape == "b=1 n=1024 m=100k d=128 k=1 float16"]
    kern = next((r for r in head if r.variant == "triton kernel"), None)
    for basis, pick in (("one eager call", lambda r: r.ms), ("CUDA-graph replay", lambda r: r.graph_ms)):
        torch_ms = [pick(r) for r in head if r.variant.startswith("torch") and pick(r) is not None and pick(r) == pick(r)]
        if kern is None or pick(kern) is None or not torch_ms:
            continue
        speedup = min(torch_ms) / pick(kern)
        out.append(f"- >= 3x the best torch variant at n=1024, m=100k, d=128, fp16, k=1 ({basis}): {speedup:.2f}x "
                   f"({'met' if speedup >= 3 else 'NOT met'})")
    if kern is not None and kern.roof is not None:
        basis = "CUDA-graph replay" if kern.graph_ms is not None else "one eager call"
        out.append(f"- >= 60% of the roofline there ({basis}): {100 * kern.roof:.0f}% "
                   f"({'met' if kern.roof >= 0.6 else 'NOT met'})")
    for r in rows:
        if r.op.startswith("masked_similarity") and r.variant == "triton kernel":
            line = f"- {r.op} {r.shape} under 0.2 ms: one eager call {r.ms:.3f} ms ({'met' if r.ms < 0.2 else 'NOT met'})"
            if r.graph_ms is not None:
                line += f", CUDA-graph replay {r.graph_ms:.3f} ms ({'met' if r.graph_ms < 0.2 else 'NOT met'})"
            out.append(line)
    return "\n".join(out)


def render(rows: list[Row], title: str, header_lines: list[str], giga: bool = False) -> str:
    """Markdown table; ``giga`` reports GFLOP/s instead of TFLOP/s (CPU figures)."""
    # "####": the table sits under the README's "### Kernels" section.
    out = [f"#### {title}", ""] + header_lines + [""]
    graphs = any(r.graph_ms is not None for r in rows)
    g_head, g_rule = (" graph ms |", " ---: |") if graphs else ("", "")
    out.append(f"| op | shape | variant | ms |{g_head} {'GFLOP/s' if giga else 'TFLOP/s'} | GB/s | roof | note |")
    out.append(f"| --- | --- | --- | ---: |{g_rule} ---: | ---: | ---: | --- |")
    for r in rows:
        ms = "n/a" if r.ms != r.ms else (f"{r.ms:.3f}" if r.ms < 10 else f"{r.ms:.1f}")
        roof = "n/a" if r.roof is None else f"{100 * r.roof:.0f}%"
        flops = None if r.tflops is None else (r.tflops * 1e3 if giga else r.tflops)
        gbs = r.gbs
        gbs_txt = "n/a" if gbs is None else (f"{gbs:.3f}" if gbs < 1 else fmt(gbs, 1))
        g_cell = ""
        if graphs:
            g_cell = " n/a |" if r.graph_ms is None else f" {r.graph_ms:.3f} |"
        out.append(f"| {r.op} | {r.shape} | {r.variant} | {ms} |{g_cell} {fmt(flops, 3)} | {gbs_txt} | {roof} | {r.note} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="a few headline shapes only")
    ap.add_argument("--out", help="also write the markdown table to this file")
    ap.add_argument("--min-time", type=float, default=None, help="seconds of repetitions per measurement")
    ap.add_argument("--variants", default="triton,reference,mm16,cdist,faiss",
                    help="comma list of: triton, reference, mm16, cdist, faiss")
    args = ap.parse_args(argv)
    variants = set(args.variants.split(","))

    if args.device == "cuda":
        if not torch.cuda.is_available():
            print("--device cuda but torch sees no CUDA device", file=sys.stderr)
            return 2
        name = torch.cuda.get_device_name()
        peaks = device_peaks(name)
        peak_txt = ("unknown (roof column n/a)" if peaks is None else
                    f"{peaks[0]}: fp16 dense tensor {peaks[1]:g} TFLOP/s, TF32 {peaks[2]:g} TFLOP/s, "
                    f"memory {peaks[3]:g} TB/s")
        min_time = 0.3 if args.min_time is None else args.min_time
    else:
        name = f"{cpu_name()} ({torch.get_num_threads()} torch threads)"
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        peaks, peak_txt = None, f"not tabulated for CPUs (roof column n/a); 1-min load average at start {load:.1f}"
        if load > (os.cpu_count() or 1):
            peak_txt += (f" on {os.cpu_count()} cores: the machine was shared with other jobs, so these "
                         "figures are pessimistic")
        min_time = 0.5 if args.min_time is None else args.min_time
        variants.discard("triton")
        variants.discard("faiss")
        variants.discard("mm16")

    header = [
        f"Device: **{name}**; peaks: {peak_txt}.",
        f"torch {torch.__version__}; {time.strftime('%Y-%m-%d')}; command: "
        f"`python benchmarks/bench_kernels.py {' '.join(argv if argv is not None else sys.argv[1:])}`.",
        "knn: n = 1,024 patch queries per 256x256 frame, b frames in one call; bank rows random normal. "
        "FLOP/s counts 2nmd; GB/s counts bank + norms + queries + outputs once; "
        "roof = roofline time / measured time.",
        "ms: one synchronised eager call from Python (launch overhead included); graph ms (GPU only): the "
        "same call captured in a CUDA graph and replayed back to back (device time, no Python overhead; "
        "n/a where the call cannot be captured, e.g. it syncs with the host; the reason goes to stderr). "
        "FLOP/s, GB/s and roof use graph ms where present. The kernel's speed-up 'in graphs' is given only "
        "where every torch variant was captured. "
        "A 100k x 128 fp16 bank (25.6 MB) stays in an H100's 50 MB L2 cache across repetitions; 100k x 256 "
        "(51.2 MB) and larger do not.",
    ]
    with torch.no_grad():
        rows = knn_rows(args.device, shapes_for(args.device, args.quick), min_time, peaks, variants)
        rows += masked_similarity_rows(args.device, min_time, variants)
    if args.device == "cpu":
        rows.append(interpreter_sanity_row())
    table = render(rows, f"edgecmg kernels on {name}", header, giga=args.device == "cpu")
    if args.device == "cuda":
        table += "\n" + targets_summary(rows) + "\n"
    print(table, flush=True)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
