"""GPU compiler checks without a GPU.

The interpreter does not enforce what only the GPU compiler checks (``tl.dot`` tile shapes, types
carried through the top-k ``while`` loop, shared-memory limits, registers). Triton ships LLVM, ptxas
and cuobjdump, so every launch configuration the launchers' tuners can pick (``knn._candidates``,
``masked_similarity._candidates``) is built to a cubin for sm_90 (H100/H200) and sm_87 (Jetson Orin)
here, and its resource usage is read back: a configuration that spills registers to local memory
(a stack frame) runs several times slower on the device, which no CPU test would notice. The build
runs in a subprocess because this test session imported Triton in interpreter mode, which cannot
compile.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from unittest import mock

import pytest

from edgecmg.kernels import _common, knn, masked_similarity

# (case name, arch, kernel case): the cases each launcher distinguishes when it picks its tiles.
KNN_CASES = [
    # name, bank type, d (padded), k, query type; resident or streamed d follows knn._MAX_RESIDENT_D
    ("fp16-d128-k1", "*fp16", 128, 1, "*fp32"),  # the headline shape: the pipelined loop
    # fp16 and bf16 queries: with Triton 3.9, 64 x 64 tiles with 4 warps built clean for fp32 queries
    # but spilled for these on sm_87
    ("fp16-d128-k1-fp16-queries", "*fp16", 128, 1, "*fp16"),
    ("fp16-d128-k1-bf16-queries", "*fp16", 128, 1, "*bf16"),
    ("fp16-d64-k1", "*fp16", 64, 1, "*fp16"),
    ("fp16-d128-k16", "*fp16", 128, 16, "*fp16"),  # the while loop and padded slots, resident
    ("fp16-d256-k1", "*fp16", 256, 1, "*fp32"),  # d streamed in chunks
    ("fp16-d256-k16", "*fp16", 256, 16, "*fp16"),
    ("fp32-d32-k1", "*fp32", 32, 1, "*fp32"),  # three-pass TF32, resident
    ("fp32-d128-k5", "*fp32", 128, 5, "*fp32"),  # three-pass TF32, streamed
    ("fp32-d64-k16", "*fp32", 64, 16, "*fp32"),
]
MS_CASES = [
    # name, head type, mask type, cosine
    ("fp16-head-bool-masks-expectation", "*fp16", "*i1", False),
    # float masks reach a half head rounded to its dtype (masked_similarity._masks_for_half_head)
    ("fp16-head-fp16-masks-cosine", "*fp16", "*fp16", True),
    ("bf16-head-bool-masks-expectation", "*bf16", "*i1", False),
    ("bf16-head-bf16-masks-cosine", "*bf16", "*bf16", True),
    ("fp32-head-float-masks-cosine", "*fp32", "*fp32", True),
    ("fp32-head-float-masks-expectation", "*fp32", "*fp32", False),  # CMER at fit time (model/matcher.py)
]


def _gpu_candidates(module, *args) -> list[dict]:
    """What a launcher's tuner may pick on a GPU (this process runs the interpreter)."""
    with mock.patch.object(module, "interpret_mode", lambda: False):
        return module._candidates(*args)


_BUILD = r"""
import json, os, subprocess, sys, tempfile, traceback
import triton
from edgecmg.kernels import _common, knn, masked_similarity as ms

cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")

def usage(cubin):
    if not os.path.exists(cuobjdump):
        return None
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        text = subprocess.run([cuobjdump, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    finally:
        os.unlink(f.name)
    line = next(l for l in text.splitlines() if "REG:" in l)
    fields = dict(tok.split(":", 1) for tok in line.split() if ":" in tok)
    return {"regs": int(fields["REG"]), "stack": int(fields["STACK"])}

def build(fn, sig, consts, arch, num_warps, num_stages, module):
    sig = dict(sig); sig.update({k: "constexpr" for k in consts})
    k = _common.compile_for_target(fn, sig, consts, arch=arch, num_warps=num_warps, num_stages=num_stages,
                                   globals_constexprs=getattr(module, "_KERNEL_CONSTS", None))
    return {"ok": bool(k.asm["cubin"]), "shared": k.metadata.shared, "usage": usage(k.asm["cubin"])}

jobs = json.loads(sys.argv[1])
out = {}
for name, job in jobs.items():
    try:
        if job["kernel"] == "knn":
            bank_ty, d_pad, kk, q_ty = job["case"]
            cfg = job["config"]
            resident = d_pad <= knn._MAX_RESIDENT_D[2 if bank_ty == "*fp16" else 4]
            args = ["q_ptr", "bank_ptr", "norm_ptr", "out_d_ptr", "out_i_ptr", "n", "m", "d", "rows_per_split",
                    "stride_q", "stride_b", "stride_os", "stride_on"]
            sig = {a: "i32" for a in args}
            sig.update(q_ptr=q_ty, bank_ptr=bank_ty, norm_ptr="*fp32", out_d_ptr="*fp32", out_i_ptr="*i32")
            consts = dict(K=kk, K_PAD=knn.next_pow2(kk), FINAL=False, RESIDENT=resident,
                          BLOCK_D=d_pad if resident else knn._D_CHUNK,
                          PRECISION="tf32x3" if bank_ty == "*fp32" else "tf32",
                          BLOCK_N=cfg["BLOCK_N"], BLOCK_M=cfg["BLOCK_M"])
            out[name] = build(knn._knn_kernel, sig, consts, job["arch"], cfg["num_warps"], cfg["num_stages"], knn)
        elif job["kernel"] == "knn-merge":
            sig = {a: "i32" for a in ["n", "splits", "stride_ps", "stride_pn", "stride_on"]}
            sig.update(part_d_ptr="*fp32", part_i_ptr="*i32", out_d_ptr="*fp32", out_i_ptr="*i64")
            out[name] = build(knn._knn_merge_kernel, sig, dict(K=4, SK_PAD=64, BLOCK_N=16), job["arch"], 4, 3, knn)
        elif job["kernel"] == "ms":
            w_ty, m_ty, cosine = job["case"]
            cfg = dict(job["config"], BLOCK_P=ms._block_p(64))
            args = ["n_masks", "p", "c", "C", "classes_per_split", "stride_fb", "stride_fp", "stride_fc", "stride_mk",
                    "stride_mp", "stride_wc", "stride_wj", "stride_pc", "stride_ps"]
            sig = {a: "i32" for a in args}
            sig.update(f_ptr="*fp32", m_ptr=m_ty, w_ptr=w_ty, bias_ptr="*fp32", text_ptr="*fp32", part_ptr="*fp32",
                       out_ptr="*fp32")
            consts = dict(COSINE=cosine, FINAL=False, PRECISION="tf32x3" if w_ty == "*fp32" else "tf32",
                          **{k: v for k, v in cfg.items() if k != "num_warps"})
            out[name] = build(ms._masked_similarity_kernel, sig, consts, job["arch"], cfg["num_warps"], 3, ms)
        else:
            sig = {a: "i32" for a in ["R", "C", "splits", "stride_pc", "stride_ps"]}
            sig.update(part_ptr="*fp32", text_ptr="*fp32", out_ptr="*fp32")
            out[name] = build(ms._masked_similarity_merge_kernel, sig,
                              dict(COSINE=job["case"], S_PAD=8, BLOCK_R=64, BLOCK_T=256), job["arch"], 4, 3, ms)
    except Exception:
        out[name] = {"ok": False, "error": traceback.format_exc()[-3000:]}
print("RESULT" + json.dumps(out))
"""


def _tiles(cfg: dict) -> str:
    return "-".join(f"{v}" for v in cfg.values())


def _jobs() -> dict:
    jobs = {}
    for arch in (90, 87):
        for name, bank_ty, d_pad, k, q_ty in KNN_CASES:
            esize = 2 if bank_ty == "*fp16" else 4
            resident = d_pad <= knn._MAX_RESIDENT_D[esize]
            for cfg in _gpu_candidates(knn, k, resident, esize):
                jobs[f"knn-sm{arch}-{name}-{_tiles(cfg)}"] = {
                    "kernel": "knn", "arch": arch, "case": [bank_ty, d_pad, k, q_ty], "config": cfg}
        for name, *case in MS_CASES:
            for cfg in _gpu_candidates(masked_similarity, 4 if case[0] == "*fp32" else 2):
                jobs[f"ms-sm{arch}-{name}-{_tiles(cfg)}"] = {"kernel": "ms", "arch": arch, "case": case, "config": cfg}
        jobs[f"knn-merge-sm{arch}"] = {"kernel": "knn-merge", "arch": arch}
        jobs[f"ms-merge-sm{arch}-cosine"] = {"kernel": "ms-merge", "arch": arch, "case": True}
        jobs[f"ms-merge-sm{arch}-expectation"] = {"kernel": "ms-merge", "arch": arch, "case": False}
    return jobs


JOBS = _jobs()


@pytest.fixture(scope="module")
def builds():
    if not _common.triton_available():
        pytest.skip(f"no triton >= {_common.TRITON_MIN_VERSION[0]}.{_common.TRITON_MIN_VERSION[1]} installed")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    # One build process per arch, side by side (each compile is single-threaded).
    procs = []
    for arch in (90, 87):
        jobs = {name: job for name, job in JOBS.items() if job["arch"] == arch}
        procs.append(subprocess.Popen([sys.executable, "-c", _BUILD, json.dumps(jobs)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=env))
    results = {}
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=900)
        lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT")]
        if not lines:
            pytest.fail(f"build subprocess failed (rc={proc.returncode}):\n{stderr[-3000:]}")
        results.update(json.loads(lines[-1][len("RESULT"):]))
    return results


@pytest.mark.parametrize("name", list(JOBS))
def test_launcher_config_compiles_without_spills(builds, name):
    res = builds[name]
    assert res["ok"], res.get("error")
    limit = 163 * 1024 if JOBS[name]["arch"] == 87 else 227 * 1024  # per-block shared memory: Orin, Hopper
    assert res["shared"] <= limit
    if res["usage"] is None:
        pytest.skip("cuobjdump is not bundled with this Triton: registers not checked")
    assert res["usage"]["stack"] == 0, f"{name} spills registers to local memory: {res['usage']}"
