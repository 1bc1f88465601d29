"""GPU compiler checks without a GPU.

The interpreter does not enforce what only the GPU compiler checks (``tl.dot`` tile shapes, types
carried through the top-k ``while`` loop, shared-memory limits). Triton ships LLVM and ptxas, so the
kernels are built to cubins for sm_90 (H100/H200) and sm_87 (Jetson Orin) here. The build runs in a
subprocess because this test session imported Triton in interpreter mode, which cannot compile.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from edgecmg.kernels import _common

_KNN_ARGS = ["q_ptr", "bank_ptr", "norm_ptr", "out_d_ptr", "out_i_ptr", "n", "m", "d", "rows_per_split",
             "stride_q", "stride_b", "stride_os", "stride_on", "n_bucket", "m_bucket"]
_MS_ARGS = ["x_ptr", "cnt_ptr", "w_ptr", "bias_ptr", "text_ptr", "part_ptr", "R", "n_masks", "c", "C",
            "classes_per_split", "stride_x", "stride_w", "stride_pc", "stride_ps", "r_bucket", "c_bucket",
            "cls_bucket"]
_MS_PTRS = {"x_ptr": "*fp32", "cnt_ptr": "*fp32", "bias_ptr": "*fp32", "text_ptr": "*fp32", "part_ptr": "*fp32"}


def _sig(names, ptrs):
    return {n: ptrs.get(n, "i32") for n in names}


SPECS = {
    # the headline shape: fp16 bank, d=128, k=1, largest autotune tile
    "knn-sm90-fp16-k1": dict(
        module="edgecmg.kernels.knn", fn="_knn_kernel", arch=90, num_warps=8,
        sig=_sig(_KNN_ARGS, {"q_ptr": "*fp32", "bank_ptr": "*fp16", "norm_ptr": "*fp32", "out_d_ptr": "*fp32",
                             "out_i_ptr": "*i64"}),
        consts=dict(K=1, K_PAD=1, FINAL=False, RESIDENT=True, BLOCK_D=128, PRECISION="tf32", BLOCK_N=128,
                    BLOCK_M=128)),
    # the k > 1 path with its while loop and padded slots, wide features
    "knn-sm90-fp16-k16-d256": dict(
        module="edgecmg.kernels.knn", fn="_knn_kernel", arch=90, num_warps=4,
        sig=_sig(_KNN_ARGS, {"q_ptr": "*fp16", "bank_ptr": "*fp16", "norm_ptr": "*fp32", "out_d_ptr": "*fp32",
                             "out_i_ptr": "*i64"}),
        consts=dict(K=16, K_PAD=16, FINAL=True, RESIDENT=True, BLOCK_D=256, PRECISION="tf32", BLOCK_N=64,
                    BLOCK_M=64)),
    # Jetson Orin, fp32 bank streamed in d chunks, three-pass TF32
    "knn-sm87-fp32-k5-chunked": dict(
        module="edgecmg.kernels.knn", fn="_knn_kernel", arch=87, num_warps=4,
        sig=_sig(_KNN_ARGS, {"q_ptr": "*fp32", "bank_ptr": "*fp32", "norm_ptr": "*fp32", "out_d_ptr": "*fp32",
                             "out_i_ptr": "*i32"}),
        consts=dict(K=5, K_PAD=8, FINAL=False, RESIDENT=False, BLOCK_D=32, PRECISION="tf32x3", BLOCK_N=64,
                    BLOCK_M=64)),
    "knn-merge-sm90": dict(
        module="edgecmg.kernels.knn", fn="_knn_merge_kernel", arch=90, num_warps=4,
        sig=_sig(["part_d_ptr", "part_i_ptr", "out_d_ptr", "out_i_ptr", "n", "splits", "stride_ps", "stride_pn",
                  "stride_on"], {"part_d_ptr": "*fp32", "part_i_ptr": "*i32", "out_d_ptr": "*fp32",
                                 "out_i_ptr": "*i64"}),
        consts=dict(K=4, SK_PAD=64, BLOCK_N=16)),
    "masked-similarity-sm90-fp16-expectation": dict(
        module="edgecmg.kernels.masked_similarity", fn="_masked_similarity_kernel", arch=90, num_warps=4,
        sig=_sig(_MS_ARGS, {**_MS_PTRS, "w_ptr": "*fp16"}),
        consts=dict(COSINE=False, PRECISION="tf32", BLOCK_R=32, BLOCK_CLS=64, BLOCK_C=64)),
    "masked-similarity-sm87-fp32-cosine": dict(
        module="edgecmg.kernels.masked_similarity", fn="_masked_similarity_kernel", arch=87, num_warps=4,
        sig=_sig(_MS_ARGS, {**_MS_PTRS, "w_ptr": "*fp32"}),
        consts=dict(COSINE=True, PRECISION="tf32x3", BLOCK_R=16, BLOCK_CLS=64, BLOCK_C=32)),
    "masked-similarity-merge-sm90": dict(
        module="edgecmg.kernels.masked_similarity", fn="_masked_similarity_merge_kernel", arch=90, num_warps=4,
        sig=_sig(["part_ptr", "text_ptr", "out_ptr", "R", "C", "splits", "stride_pc", "stride_ps"],
                 {"part_ptr": "*fp32", "text_ptr": "*fp32", "out_ptr": "*fp32"}),
        consts=dict(COSINE=True, S_PAD=8, BLOCK_R=64, BLOCK_T=256)),
    "masked-similarity-merge-sm87-expectation": dict(
        module="edgecmg.kernels.masked_similarity", fn="_masked_similarity_merge_kernel", arch=87, num_warps=4,
        sig=_sig(["part_ptr", "text_ptr", "out_ptr", "R", "C", "splits", "stride_pc", "stride_ps"],
                 {"part_ptr": "*fp32", "text_ptr": "*fp32", "out_ptr": "*fp32"}),
        consts=dict(COSINE=False, S_PAD=1, BLOCK_R=64, BLOCK_T=256)),
}

_BUILD = r"""
import importlib, json, sys, traceback
from edgecmg.kernels import _common
specs = json.loads(sys.stdin.read())
out = {}
for name, s in specs.items():
    mod = importlib.import_module(s["module"])
    try:
        sig = dict(s["sig"]); sig.update({k: "constexpr" for k in s["consts"]})
        k = _common.compile_for_target(getattr(mod, s["fn"]), sig, s["consts"], arch=s["arch"],
                                       num_warps=s["num_warps"],
                                       globals_constexprs=getattr(mod, "_KERNEL_CONSTS", None))
        out[name] = {"ok": bool(k.asm["cubin"]), "shared": k.metadata.shared}
    except Exception:
        out[name] = {"ok": False, "error": traceback.format_exc()[-3000:]}
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def builds():
    if not _common.triton_available():
        pytest.skip("triton is not installed")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    proc = subprocess.run([sys.executable, "-c", _BUILD], input=json.dumps(SPECS), capture_output=True,
                          text=True, env=env, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    if not lines:
        pytest.fail(f"build subprocess failed (rc={proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT"):])


@pytest.mark.parametrize("name", list(SPECS))
def test_kernel_compiles_for_gpu(builds, name):
    res = builds[name]
    assert res["ok"], res.get("error")
    assert res["shared"] <= 227 * 1024  # Hopper's per-block shared memory; Orin's is 163 KiB
    if SPECS[name]["arch"] == 87:
        assert res["shared"] <= 163 * 1024


def _all_config_specs():
    """Every autotune configuration the launchers can pick, for the shapes that matter."""
    from edgecmg.kernels.knn import _knn_configs, _prune_knn_configs
    from edgecmg.kernels.masked_similarity import _ms_configs

    class _Bank:
        def __init__(self, esize):
            self.esize = esize

        def element_size(self):
            return self.esize

    specs = {}
    for arch in (90, 87):
        for bank_ty, esize, block_d, k, k_pad, prec in (("*fp16", 2, 128, 1, 1, "tf32"), ("*fp16", 2, 256, 16, 16, "tf32"),
                                                        ("*fp32", 4, 64, 1, 1, "tf32x3")):
            for cfg in _prune_knn_configs(_knn_configs(), {"bank_ptr": _Bank(esize)}, BLOCK_D=block_d, K_PAD=k_pad):
                consts = dict(K=k, K_PAD=k_pad, FINAL=False, RESIDENT=True, BLOCK_D=block_d, PRECISION=prec,
                              **cfg.kwargs)
                specs[f"knn-sm{arch}-{bank_ty[1:]}-d{block_d}-k{k}-{cfg.kwargs}"] = dict(
                    module="edgecmg.kernels.knn", fn="_knn_kernel", arch=arch, num_warps=cfg.num_warps,
                    sig=_sig(_KNN_ARGS, {"q_ptr": "*fp32", "bank_ptr": bank_ty, "norm_ptr": "*fp32",
                                         "out_d_ptr": "*fp32", "out_i_ptr": "*i32"}), consts=consts)
        for wide, w_ty, prec in ((False, "*fp16", "tf32"), (True, "*fp32", "tf32x3")):
            for cfg in _ms_configs(wide):
                specs[f"ms-sm{arch}-{w_ty[1:]}-{cfg.kwargs}"] = dict(
                    module="edgecmg.kernels.masked_similarity", fn="_masked_similarity_kernel", arch=arch,
                    num_warps=cfg.num_warps,
                    sig=_sig(_MS_ARGS, {**_MS_PTRS, "w_ptr": w_ty}),
                    consts=dict(COSINE=False, PRECISION=prec, **cfg.kwargs))
    return specs


@pytest.mark.slow
def test_every_autotune_config_compiles():
    """Minutes of ptxas: run with ``-m slow`` after touching a kernel or its config lists."""
    if not _common.triton_available():
        pytest.skip("triton is not installed")
    specs = _all_config_specs()
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    proc = subprocess.run([sys.executable, "-c", _BUILD], input=json.dumps(specs), capture_output=True, text=True,
                          env=env, timeout=3600)
    res = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1][len("RESULT"):])
    failed = {name: r.get("error", "")[-500:] for name, r in res.items() if not r["ok"]}
    assert not failed, failed
