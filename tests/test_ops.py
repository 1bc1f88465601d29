"""edgecmg.ops: backend selection, input validation, and the references' traceability."""
from __future__ import annotations

import os
import re

# Triton fixes its interpreter mode when first imported (see kernels/_common.py); the Triton-backend
# tests below run on CPU tensors, so ask for the interpreter before anything imports Triton.
os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import edgecmg.ops as ops  # noqa: E402
from edgecmg.errors import BackendUnavailableError, ConfigError, DataError, EdgeCMGError  # noqa: E402
from edgecmg.kernels import _common  # noqa: E402
from edgecmg.kernels.knn import knn_reference  # noqa: E402
from edgecmg.kernels.masked_similarity import masked_similarity_reference  # noqa: E402

CPU = torch.device("cpu")
CUDA = torch.device("cuda")  # only used as a device *description*; nothing is allocated on it


def _needs_interpreter():
    if not (_common.triton_available() and _common.interpret_mode()):
        pytest.skip("needs triton in interpreter mode (TRITON_INTERPRET=1 before triton is imported)")


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch):
    monkeypatch.delenv(ops.ENV_VAR, raising=False)


def _knn_data(n=30, m=70, d=12, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(m, d, generator=g).to(dtype)


def _brute_knn(queries, bank, k):
    """(distances, indices) of the k nearest bank rows in float64, ties to the lower index."""
    full = ((queries.double()[:, None] - bank.double()[None]) ** 2).sum(-1)
    dist, idx = full.sort(dim=1, stable=True)
    return dist[:, :k], idx[:, :k]


def _ms_data(b=2, K=4, p=9, c=16, C=21, seed=0):
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(K, p, generator=g) > 0.5
    masks[:, 0] = True
    return (torch.randn(b, p, c, generator=g), masks, torch.randn(c, C, generator=g) / 4,
            torch.randn(C, generator=g), torch.rand(C, generator=g))


# ------------------------------------------------------------------------------- backend selection
def test_auto_picks_torch_on_cpu_and_triton_on_cuda(monkeypatch):
    assert ops.resolve_backend("auto", CPU) == "torch"
    monkeypatch.setattr(_common, "triton_available", lambda: True)
    monkeypatch.setattr(_common, "require_triton", lambda: None)
    assert ops.resolve_backend("auto", CUDA) == "triton"
    monkeypatch.setattr(_common, "triton_available", lambda: False)
    assert ops.resolve_backend("auto", CUDA) == "torch"


def test_auto_falls_back_when_triton_is_broken(monkeypatch):
    def broken():
        raise BackendUnavailableError("triton", "cannot import triton (RuntimeError)", _common.TRITON_INSTALL_HINT)

    monkeypatch.setattr(_common, "triton_available", lambda: True)
    monkeypatch.setattr(_common, "require_triton", broken)
    assert ops.resolve_backend("auto", CUDA) == "torch"


def test_a_triton_older_than_the_checked_floor_is_refused(monkeypatch, caplog):
    """torch 2.5's pinned Triton 3.1: its interpreter misreads the kernels (checked on Python 3.10);
    auto runs the torch references on a GPU instead and says so once, an explicit ask is refused."""
    monkeypatch.setattr(_common, "triton_installed", lambda: True)
    monkeypatch.setattr(_common, "triton_version", lambda: "3.1.0")
    assert not _common.triton_available()
    with pytest.raises(BackendUnavailableError, match=r"triton 3\.1\.0 is older than 3\.4") as info:
        _common.require_triton()
    assert "torch 2.8 or later" in info.value.install_hint
    with pytest.raises(BackendUnavailableError, match="older than 3.4"):
        ops.resolve_backend("triton", CUDA)
    ops._note_old_triton.cache_clear()
    with caplog.at_level("INFO", logger="edgecmg"):
        assert ops.resolve_backend("auto", CUDA) == "torch"
        assert ops.resolve_backend("auto", CUDA) == "torch"
    assert len(caplog.records) == 1 and "triton 3.1.0 is older than 3.4" in caplog.records[0].getMessage()
    assert ops.resolve_backend("auto", CPU) == "torch"  # no note for CPU tensors: nothing to explain
    for version in ("3.4.0", "3.10.1+git5d1f", None):  # None: a build that does not say
        monkeypatch.setattr(_common, "triton_version", lambda v=version: v)
        assert _common.triton_available()


def test_env_override(monkeypatch):
    monkeypatch.setattr(_common, "triton_available", lambda: True)
    monkeypatch.setattr(_common, "require_triton", lambda: None)
    monkeypatch.setenv(ops.ENV_VAR, "torch")
    assert ops.resolve_backend("auto", CUDA) == "torch"
    # the explicit argument beats the environment
    assert ops.resolve_backend("torch", CUDA) == "torch"
    monkeypatch.setenv(ops.ENV_VAR, "Auto")
    assert ops.resolve_backend("auto", CPU) == "torch"
    monkeypatch.setenv(ops.ENV_VAR, "cuda")
    with pytest.raises(ConfigError, match=ops.ENV_VAR):
        ops.resolve_backend("auto", CPU)


def test_unknown_backend_is_a_config_error():
    with pytest.raises(ConfigError, match="backend"):
        ops.resolve_backend("faiss", CPU)
    with pytest.raises(ConfigError):
        ops.knn(*_knn_data(), backend="cuda")


def test_triton_on_cpu_without_interpreter_is_unavailable(monkeypatch):
    if not _common.triton_available():
        pytest.skip(f"no triton >= {_common.TRITON_MIN_VERSION[0]}.{_common.TRITON_MIN_VERSION[1]} installed")
    monkeypatch.setattr(_common, "interpret_mode", lambda: False)
    with pytest.raises(BackendUnavailableError, match="CUDA") as info:
        ops.resolve_backend("triton", CPU)
    assert info.value.backend == "triton" and "backend='torch'" in info.value.install_hint
    monkeypatch.setenv(ops.ENV_VAR, "triton")
    with pytest.raises(BackendUnavailableError, match=ops.ENV_VAR) as info:
        ops.knn(*_knn_data())
    # the variable, not an argument, asked for Triton: the fix is to unset it
    assert f"unset {ops.ENV_VAR}" in info.value.install_hint and "backend='torch'" not in info.value.install_hint


def test_missing_triton_is_unavailable_with_install_hint(monkeypatch):
    def no_triton():
        raise BackendUnavailableError("triton", "cannot import triton (ImportError)", _common.TRITON_INSTALL_HINT)

    monkeypatch.setattr(_common, "require_triton", no_triton)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'triton>=3\.4' \(edgecmg's \[triton\] extra; in a clone: pip install -e '\.\[triton\]'\)"):
        ops.resolve_backend("triton", CUDA)
    assert isinstance(BackendUnavailableError("x", "y"), EdgeCMGError)


def test_env_selects_the_implementation(monkeypatch):
    calls = []
    monkeypatch.setattr(ops, "knn_triton", lambda *a, **kw: calls.append("triton") or knn_reference(*a[:3]))
    monkeypatch.setattr(_common, "interpret_mode", lambda: True)
    monkeypatch.setattr(_common, "require_triton", lambda: None)
    ops.knn(*_knn_data())
    assert calls == []  # auto on CPU: the reference
    monkeypatch.setenv(ops.ENV_VAR, "triton")
    ops.knn(*_knn_data())
    assert calls == ["triton"]
    monkeypatch.setenv(ops.ENV_VAR, "torch")
    ops.knn(*_knn_data(), backend="triton")  # the argument wins
    assert calls == ["triton", "triton"]


# ------------------------------------------------------------------------------- knn
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_knn_matches_reference_batched(dtype):
    q, bank = _knn_data(dtype=dtype)
    qb = torch.stack([q, q.flip(0)])
    dist, idx = ops.knn(qb, bank, k=3)
    assert dist.shape == (2, 30, 3) and idx.dtype == torch.int64 and dist.dtype == torch.float32
    # Against float64 brute force, not knn_reference (which is what ops runs on CPU): for both batch
    # entries, the neighbours in (distance, index) order and distances to fp32 accuracy.
    query_fp = q.to(torch.float16).double() if dtype == torch.float16 else q.double()
    for rows, got_d, got_i in ((query_fp, dist[0], idx[0]), (query_fp.flip(0), dist[1], idx[1])):
        full = ((rows[:, None] - bank.double()[None]) ** 2).sum(-1)
        want_d, want_i = full.sort(dim=1, stable=True)
        torch.testing.assert_close(got_d.double(), want_d[:, :3], atol=1e-4, rtol=1e-5)
        assert torch.equal(got_i, want_i[:, :3])
    assert (dist >= 0).all()


def test_knn_precomputed_norms_and_out():
    q, bank = _knn_data()
    norms = ops.bank_sq_norms(bank)
    out = (torch.empty(30, 2), torch.empty(30, 2, dtype=torch.int64))
    res = ops.knn(q, bank, 2, bank_sq_norms=norms, out=out)
    assert res[0] is out[0] and res[1] is out[1]
    want_d, want_i = _brute_knn(q, bank, 2)
    torch.testing.assert_close(out[0].double(), want_d, atol=1e-4, rtol=1e-5)
    assert torch.equal(out[1], want_i)
    # The norms given are the ones used: shifted by 1, every distance moves by 1 and no neighbour changes.
    shifted_d, shifted_i = ops.knn(q, bank, 2, bank_sq_norms=norms + 1.0)
    torch.testing.assert_close(shifted_d, out[0] + 1.0)
    assert torch.equal(shifted_i, out[1])


def test_knn_under_no_grad_and_with_grad_inputs():
    q, bank = _knn_data()
    with torch.no_grad():
        d1, i1 = ops.knn(q, bank)
    d2, i2 = ops.knn(q.requires_grad_(), bank)
    torch.testing.assert_close(d1, d2.detach())
    assert torch.equal(i1, i2)


def test_bank_sq_norms():
    _, bank = _knn_data(dtype=torch.float16)
    norms = ops.bank_sq_norms(bank)
    assert norms.dtype == torch.float32 and norms.shape == (70,)
    torch.testing.assert_close(norms, bank.float().pow(2).sum(1))
    bad = bank.clone()
    bad[5, 3] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        ops.bank_sq_norms(bad)


def test_knn_refuses_empty_bank():
    q, _ = _knn_data()
    with pytest.raises(DataError, match="empty"):
        ops.knn(q, torch.empty(0, 12))


@pytest.mark.parametrize("where", ["queries", "bank"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_knn_refuses_non_finite(where, value):
    q, bank = _knn_data()
    (q if where == "queries" else bank)[3, 4] = value
    with pytest.raises(DataError, match=f"{where} contains NaN/Inf: 1 "):
        ops.knn(q, bank)


@pytest.mark.parametrize("k", [0, 17, True, 2.0, -1])
def test_knn_refuses_bad_k(k):
    with pytest.raises(ConfigError, match="k="):
        ops.knn(*_knn_data(), k=k)


def test_knn_refuses_bad_shapes_and_dtypes():
    q, bank = _knn_data()
    with pytest.raises(DataError, match="feature dims differ"):
        ops.knn(q[:, :5], bank)
    with pytest.raises(DataError, match="2-D or 3-D"):
        ops.knn(q[0], bank)
    with pytest.raises(DataError, match="bank dtype"):
        ops.knn(q, bank.to(torch.float64))
    with pytest.raises(DataError, match="queries dtype"):
        ops.knn(q.long(), bank)
    with pytest.raises(DataError, match="torch.Tensor"):
        ops.knn(q.numpy(), bank)
    with pytest.raises(DataError, match="bank_sq_norms"):
        ops.knn(q, bank, bank_sq_norms=torch.ones(3))
    with pytest.raises(DataError, match="out distances"):
        ops.knn(q, bank, 2, out=(torch.empty(30, 3), torch.empty(30, 2, dtype=torch.int64)))
    with pytest.raises(DataError, match="out indices"):
        ops.knn(q, bank, 2, out=(torch.empty(30, 2), torch.empty(30, 2, dtype=torch.int32)))


def test_knn_distances_refuses_what_knn_refuses_in_the_same_words():
    q, bank = _knn_data()
    nan_q = q.clone()
    nan_q[3, 4] = float("nan")
    bad_calls = [((q, torch.empty(0, 12)), {}), ((q, bank), {"k": 17}), ((q[:, :5], bank), {}),
                 ((q, bank), {"bank_sq_norms": torch.ones(3)}), ((nan_q, bank), {}),
                 ((q, bank), {"backend": "cuda"})]
    for args, kwargs in bad_calls:
        with pytest.raises(EdgeCMGError) as by_knn:
            ops.knn(*args, **kwargs)
        with pytest.raises(type(by_knn.value), match="^" + re.escape(str(by_knn.value)) + "$"):
            ops.knn_distances(*args, **kwargs)


@pytest.mark.parametrize("k", [1, 4])
def test_knn_distances_are_knns_distances(k):
    q, bank = _knn_data(dtype=torch.float16)
    qb = torch.stack([q, q + 1])
    norms = ops.bank_sq_norms(bank)
    assert torch.equal(ops.knn_distances(qb, bank, k, bank_sq_norms=norms), ops.knn(qb, bank, k)[0])


def test_knn_triton_backend_through_ops():
    _needs_interpreter()
    q, bank = _knn_data(n=20, m=45, d=10, dtype=torch.float16)
    qb = torch.stack([q, q + 1])
    d_t, i_t = ops.knn(qb, bank, 4, backend="triton")
    d_r, i_r = ops.knn(qb, bank, 4, backend="torch")
    torch.testing.assert_close(d_t, d_r, atol=1e-3, rtol=1e-5)
    assert torch.equal(i_t, i_r)  # same fp16 rounding of the queries, same tie rule: the same neighbours
    assert torch.equal(ops.knn_distances(qb, bank, 4, backend="triton"), d_t)


# ------------------------------------------------------------------------------- masked_similarity
@pytest.mark.parametrize("mode", ["expectation", "cosine"])
def test_masked_similarity_matches_reference(mode):
    args = _ms_data()
    with torch.no_grad():
        got = ops.masked_similarity(*args, mode=mode)
    assert got.shape == (2, 4) and got.dtype == torch.float32
    # Against the definition in float64 (on CPU ops runs masked_similarity_reference itself).
    features, masks, weight, bias, text = (t.double() for t in args)
    pooled = (masks @ features) / masks.sum(dim=1, keepdim=True)        # [b, K, c]
    logits = pooled @ weight                                              # [b, K, C]
    if mode == "expectation":
        want = (torch.softmax(logits + bias, dim=-1) * text).sum(-1)
    else:
        want = (logits @ text) / (logits.norm(dim=-1) * text.norm())
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)


def test_masked_similarity_triton_backend_through_ops():
    _needs_interpreter()
    args = _ms_data()
    for mode in ("expectation", "cosine"):
        got = ops.masked_similarity(*args, mode=mode, backend="triton")
        torch.testing.assert_close(got, ops.masked_similarity(*args, mode=mode, backend="torch"),
                                   atol=1e-5, rtol=1e-5)


def test_masked_similarity_validation():
    feats, masks, weight, bias, text = _ms_data()
    with pytest.raises(ConfigError, match="mode"):
        ops.masked_similarity(feats, masks, weight, bias, text, mode="softmax")
    empty = masks.clone()
    empty[2] = False
    with pytest.raises(DataError, match=r"mask\(s\) \[2\] keep no patch"):
        ops.masked_similarity(feats, empty, weight, bias, text)
    with pytest.raises(DataError, match="one entry per patch"):
        ops.masked_similarity(feats, masks[:, :5], weight, bias, text)
    with pytest.raises(DataError, match="rows"):
        ops.masked_similarity(feats, masks, weight[:5], bias, text)
    with pytest.raises(DataError, match="bias"):
        ops.masked_similarity(feats, masks, weight, bias[:3], text)
    with pytest.raises(DataError, match="negative"):
        ops.masked_similarity(feats, masks.float() - 0.5, weight, bias, text)
    nan_feats = feats.clone()
    nan_feats[0, 0, 0] = float("nan")
    with pytest.raises(DataError, match="features contains NaN/Inf: 1 value"):
        ops.masked_similarity(nan_feats, masks, weight, bias, text)
    with pytest.raises(DataError, match="floating point"):
        ops.masked_similarity(feats.long(), masks, weight, bias, text)
    with pytest.raises(DataError, match="bool or floating"):
        ops.masked_similarity(feats, masks.long(), weight, bias, text)


def test_masked_similarity_params_checked_reads_only_the_features():
    feats, masks, weight, bias, text = _ms_data()
    bad_weight = weight.clone()
    bad_weight[0, 0] = float("nan")
    with pytest.raises(DataError, match="weight contains NaN/Inf"):
        ops.masked_similarity(feats, masks, bad_weight, bias, text)
    # The caller vouches for the parameters: their values are not read (NaN flows through)...
    out = ops.masked_similarity(feats, masks, bad_weight, bias, text, params_checked=True)
    assert torch.isnan(out).all()
    # ...but the features always are, and shapes always are.
    nan_feats = feats.clone()
    nan_feats[1, 2, 3] = float("inf")
    with pytest.raises(DataError, match="features contains NaN/Inf"):
        ops.masked_similarity(nan_feats, masks, weight, bias, text, params_checked=True)
    with pytest.raises(DataError, match="rows"):
        ops.masked_similarity(feats, masks, weight[:5], bias, text, params_checked=True)
    # Finite features whose float32 sum overflows trip the one-reduction check; the slow path then
    # finds nothing wrong and the call goes on, with or without the parameters' checks.
    huge = torch.full_like(feats, 3e38)
    for checked in (True, False):
        out = ops.masked_similarity(huge, masks, weight, bias, text, params_checked=checked)
        assert out.shape == (feats.shape[0], masks.shape[0])


def test_zero_shot_matcher_rechecks_its_parameters_after_an_in_place_write(monkeypatch):
    from edgecmg.model import matcher as matcher_mod
    from edgecmg.model.matcher import ZeroShotMatcher

    flags = []
    real = ops.masked_similarity

    def spy(*args, params_checked=False, **kwargs):
        flags.append(params_checked)
        return real(*args, params_checked=params_checked, **kwargs)

    monkeypatch.setattr(matcher_mod.ops, "masked_similarity", spy)
    feats, masks, weight, bias, text = _ms_data(b=2, p=9, c=16, C=21)
    head_layer = torch.nn.Linear(16, 21)
    matcher = ZeroShotMatcher(head_layer, text)
    head = feats.transpose(1, 2).reshape(2, 16, 3, 3)
    first = matcher.score_variants(None, head, masks.float())
    torch.testing.assert_close(matcher.score_variants(None, head, masks.float()), first)  # new masks object
    keep = masks.float()
    matcher.score_variants(None, head, keep)
    matcher.score_variants(None, head, keep)  # same tensors, unchanged: values not read again
    assert flags == [False, False, False, True]
    with torch.no_grad():
        matcher.class_text_sim[3] = float("nan")  # in place: torch bumps the version counter
    with pytest.raises(DataError, match="text contains NaN/Inf"):
        matcher.score_variants(None, head, keep)
    with torch.no_grad():
        matcher.class_text_sim[3] = 0.5
        head_layer.weight[0, 0] = float("inf")
    with pytest.raises(DataError, match="weight contains NaN/Inf"):
        matcher.score_variants(None, head, keep)
    assert flags[4:] == [False, False]


# ------------------------------------------------------------------------------- traceability
class _KnnScorer(torch.nn.Module):
    """What the exporter does: the bank and its norms become constants of the graph."""

    def __init__(self, bank, k):
        super().__init__()
        self.register_buffer("bank", bank)
        self.register_buffer("norms", ops.bank_sq_norms(bank))
        self.k = k

    def forward(self, queries):
        return knn_reference(queries, self.bank, self.k, bank_sq_norms=self.norms, chunk_elements=30 * 25)


class _MaskedSim(torch.nn.Module):
    def __init__(self, masks, weight, bias, text, mode):
        super().__init__()
        for name, t in (("masks", masks), ("weight", weight), ("bias", bias), ("text", text)):
            self.register_buffer(name, t)
        self.mode = mode

    def forward(self, features):
        return masked_similarity_reference(features, self.masks, self.weight, self.bias, self.text, mode=self.mode)


@pytest.mark.parametrize("k", [1, 3])
def test_knn_reference_is_torch_exportable(k):
    q, bank = _knn_data()
    ep = torch.export.export(_KnnScorer(bank, k), (q,), strict=False)
    d, i = ep.module()(q)
    ref_d, ref_i = knn_reference(q, bank, k)
    torch.testing.assert_close(d, ref_d)
    assert torch.equal(i, ref_i)


# The legacy exporter warns that Python ints computed from shapes (bank rows, chunk sizes) become
# constants of the graph: intended, the bank is a constant of the exported model.
_EXPORT_WARNINGS = [pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
                    pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.mark.parametrize("k", [1, 3])
@_EXPORT_WARNINGS[0]
@_EXPORT_WARNINGS[1]
def test_knn_reference_exports_to_onnx(tmp_path, k):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    q, bank = _knn_data()
    path = tmp_path / "knn.onnx"
    # several bank chunks (chunk_elements above) so the running top-k merge is in the graph too
    torch.onnx.export(_KnnScorer(bank, k), (q,), str(path), input_names=["queries"],
                      output_names=["distances", "indices"], dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    d, i = sess.run(None, {"queries": q.numpy()})
    want_d, want_i = _brute_knn(q, bank, k)  # no near-ties in this seeded data: indices must match
    torch.testing.assert_close(torch.from_numpy(d).double(), want_d, atol=1e-4, rtol=1e-5)
    assert torch.equal(torch.from_numpy(i), want_i)


@pytest.mark.parametrize("mode", ["expectation", "cosine"])
@_EXPORT_WARNINGS[0]
@_EXPORT_WARNINGS[1]
def test_masked_similarity_reference_exports_to_onnx(tmp_path, mode):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    feats, masks, weight, bias, text = _ms_data()
    path = tmp_path / "ms.onnx"
    torch.onnx.export(_MaskedSim(masks, weight, bias, text, mode), (feats,), str(path), input_names=["features"],
                      output_names=["scores"], dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"features": feats.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), masked_similarity_reference(feats, masks, weight, bias, text,
                                                                                  mode=mode), atol=1e-5, rtol=1e-5)


def test_knn_no_queries():
    _, bank = _knn_data()
    d, i = ops.knn(torch.empty(0, 12), bank, 3)
    assert d.shape == (0, 3) and i.shape == (0, 3)
    d, i = ops.knn(torch.empty(2, 0, 12), bank, 3)
    assert d.shape == (2, 0, 3)


def test_knn_refuses_queries_beyond_fp16_with_an_fp16_bank():
    # The fp16 bank compares queries rounded to fp16: 7e4 would be Inf there (NaN in torch, a distance
    # of 0 in the kernel: a broken patch scored perfectly normal).
    q, bank = _knn_data(n=4, m=10, d=6)
    q[2, 3] = 7e4
    with pytest.raises(DataError, match=r"exceed float16's range \(largest magnitude 7e\+04"):
        ops.knn(q, bank.half(), k=1)
    ops.knn(q, bank, k=1)  # an fp32 bank holds it


def test_knn_refuses_given_norms_of_the_wrong_type():
    q, bank = _knn_data(n=4, m=10, d=6)
    for norms, got in ((ops.bank_sq_norms(bank).half(), r"\(10,\) torch.float16"),
                       (ops.bank_sq_norms(bank)[:5], r"\(5,\) torch.float32"),
                       ([1.0] * 10, "list")):
        with pytest.raises(DataError, match=f"bank_sq_norms must be a float32 tensor of shape \\(10,\\).*got {got}"):
            ops.knn(q, bank, k=1, bank_sq_norms=norms)


def test_masked_similarity_refuses_a_float64_head():
    features, masks, weight, bias, text = _ms_data()
    with pytest.raises(DataError, match="weight dtype torch.float64 unsupported"):
        ops.masked_similarity(features, masks, weight.double(), bias, text)


# ------------------------------------------------------------------------------- boundary checks
def test_knn_takes_the_largest_k_and_refuses_degenerate_inputs():
    from edgecmg.kernels.knn import MAX_K

    q, bank = _knn_data(n=5, m=40, d=6)
    dist, idx = ops.knn(q, bank, k=MAX_K)
    assert dist.shape == (5, MAX_K)
    _, want = _brute_knn(q, bank, MAX_K)
    assert torch.equal(idx, want)
    with pytest.raises(DataError, match="features have 0 dimensions"):
        ops.knn(torch.empty(5, 0), torch.empty(40, 0))
    with pytest.raises(DataError, match="bank_sq_norms on meta but bank on cpu"):
        ops.knn(q, bank, bank_sq_norms=ops.bank_sq_norms(bank).to("meta"))
    # out must be contiguous (the kernels write it by row): a transposed view is refused, not filled
    out = (torch.empty(3, 5).t(), torch.empty(5, 3, dtype=torch.int64))
    with pytest.raises(DataError, match="out distances must be a contiguous"):
        ops.knn(q, bank, 3, out=out)


def test_bank_sq_norms_refuses_a_bank_dtype_knn_refuses():
    _, bank = _knn_data()
    for dtype in (torch.bfloat16, torch.float64):
        with pytest.raises(DataError, match="bank dtype"):
            ops.bank_sq_norms(bank.to(dtype))


def test_masked_similarity_refuses_no_masks_integer_parameters_and_nan_masks():
    feats, masks, weight, bias, text = _ms_data()
    with pytest.raises(DataError, match="empty input"):
        ops.masked_similarity(feats, masks[:0], weight, bias, text)
    for name, args in (("bias", (weight, bias.long(), text)), ("text", (weight, bias, text.long()))):
        with pytest.raises(DataError, match=f"{name} must be floating point"):
            ops.masked_similarity(feats, masks, *args)
    soft = masks.float()
    soft[1, 0] = float("nan")
    with pytest.raises(DataError, match="masks contains NaN/Inf: 1 value"):
        ops.masked_similarity(feats, soft, weight, bias, text)


def test_zero_shot_image_embedding_before_set_prompt_says_so():
    """A loaded model's matcher holds the prompt's vector, not the class embeddings (fit time only)."""
    from edgecmg.model.matcher import ZeroShotMatcher

    matcher = ZeroShotMatcher(torch.nn.Linear(16, 21), torch.zeros(21))
    with pytest.raises(ConfigError, match=r"call set_prompt\(\) first"):
        matcher.image_embedding(None, torch.rand(1, 16, 3, 3))


def test_triton_version_is_the_imported_modules_then_any_of_its_distributions(monkeypatch):
    """An imported triton's own version wins (a source build may carry no distribution); without one,
    each pip distribution that installs the module counts (torch's pytorch-triton, triton-windows)."""
    import importlib.metadata
    import sys
    import types

    old = types.ModuleType("triton")
    old.__version__ = "3.1.0"
    monkeypatch.setitem(sys.modules, "triton", old)
    assert _common.triton_version() == "3.1.0" and not _common.triton_available()

    monkeypatch.delitem(sys.modules, "triton")
    real_version = importlib.metadata.version

    def only_pytorch_triton(name):
        if name == "pytorch-triton":
            return "3.5.0+git1234"
        if name in ("triton", "triton-windows"):
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(_common.metadata, "version", only_pytorch_triton)
    assert _common.triton_version() == "3.5.0+git1234"
