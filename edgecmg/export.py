"""Export a fitted model to ONNX: the featurizer alone, or the whole detector in one graph.

Graph contract (``edgecmg.result``, ``edgecmg.runtime.base``):

- input ``image``: uint8 [B, H, W, 3] RGB at the model's input size (H, W fixed, batch dynamic).
  Pre-processing (layout, cast, normalisation) is inside the graph, so an exported model and the
  torch model see the same numbers and cannot drift apart.
- featurizer graph: outputs ``embeddings`` [B, P, d] and ``match_scores`` [B, 1 + K]; the bank
  scoring (``BankScorer``) runs on the host from tensors stored in the file (see below).
- full graph (``ExportConfig.with_scoring``): outputs ``score`` [B], ``anomaly_map`` [B, H, W] and
  ``kept_mask`` [B, g, g] bool. The full graph is the featurizer graph with the scorer graph
  appended (scorer node and tensor names start with ``scorer/``), so INT8 calibration can
  quantise the featurizer and keep the scoring head in floating point by construction.

Memory-bank distances are exported in matmul form, ``||q||^2 + ||m||^2 - 2 q.m``, one MatMul per
bank chunk followed by ReduceMin (k = 1) or TopK, never cdist. Chunks are sized so that the
largest [B, P, chunk] block at ``ExportConfig.max_batch`` holds at most ``max_chunk_elements``
(< 2**31) elements: TensorRT refuses tensors of 2**31 elements or more.

Self-sufficient files: the ONNX ``metadata_props`` carry

- ``edgecmg.header``: JSON, the artifact header (input size, grid, threshold, model spec, ...)
  plus an ``export`` section (graph kind, opset, batch range, artifact SHA-256, edgecmg version);
- ``edgecmg.scorer`` (featurizer graphs only): base64 of the safetensors of the BankScorer state,
  so ``load_scorer_from_onnx`` rebuilds host scoring from the ONNX file alone.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import SafetensorError
from torch import nn

from edgecmg import __version__, ops
from edgecmg.artifact import _check_sizes_against_tensors, _check_tensors, model_spec
from edgecmg.config import ExportConfig, expect_config
from edgecmg.errors import ArtifactError, ConfigError, DataError
from edgecmg.fileio import atomic_path, check_file_suffix, is_range_cache
from edgecmg.model.detector import BankScorer, CMGModel, Geometry, add_missing_normal_level, score_top_fraction
# Reading and checking an export needs no torch (edgecmg.onnx_header); its names stay importable from
# here, where they were defined before.
from edgecmg.onnx_header import (  # noqa: F401 (kept importable from here)
    CHECKSUMS_SINCE_FORMAT,
    FEATURIZER_OUTPUTS,
    GRAPH_FEATURIZER,
    GRAPH_FULL,
    GRAPH_SHA_KEY,
    HEADER_KEY,
    HEADER_SHA_KEY,
    ONNX_DOMAINS,
    ONNX_INSTALL_HINT,
    SCORER_KEY,
    _load_proto,
    _onnx,
    check_model_header,
    graph_sha256,
    header_sha256,
    metadata_props,
    read_onnx_header,
    scorer_payload,
    set_metadata_props,
)
from edgecmg.result import INPUT_NAME, OUTPUT_NAMES

log = logging.getLogger("edgecmg")

# The exported graph's revision: raise it with every change to what export writes for the same model
# (an op, a constant, a checksum). The ONNX Runtime export cache keys its entries on it, so a new edgecmg
# exports afresh instead of running an export an older one made (__version__ does not move between
# releases). 2: the masked-similarity floor of 2026-12 (1e-12 -> float32's smallest normal). 3: the
# anomaly map as two MatMuls (bank.map_operator) instead of Resize, Slice, Pad and two Convs. 4: CMER's
# kept cells broadcast to the pixels instead of gathered by a per-pixel index (the same scores, faster).
EXPORT_REVISION = 4
SCORER_PREFIX = "scorer/"


# --------------------------------------------------------------------------------------------------
# export-time scoring: the BankScorer in an exportable form
# --------------------------------------------------------------------------------------------------
def bank_chunk_rows(bank_size: int, patches: int, max_batch: int, max_chunk_elements: int) -> int:
    """Bank rows per distance chunk so that max_batch * patches * rows <= max_chunk_elements."""
    rows = max_chunk_elements // max(1, max_batch * patches)
    if rows < 1:
        raise ConfigError(
            f"one [max_batch={max_batch}, patches={patches}] query block already exceeds "
            f"max_chunk_elements={max_chunk_elements}; lower max_batch or raise max_chunk_elements")
    return max(1, min(bank_size, rows))


class BankDistances(nn.Module):
    """Squared L2 distances of every patch embedding to its k nearest bank rows, matmul form.

    embeddings [B, P, d] -> [B, P, k] float32, ascending, clamped at 0: the same numbers as
    ``edgecmg.ops.knn(..., k)[0]`` (an fp16 bank also rounds the queries to fp16, as the reference
    does). Per bank chunk, one MatMul gives ``||m||^2 - 2 q.m`` directly: the queries get a
    constant 1 appended and the chunk is stored as [d + 1, rows] = [-2 m^T; ||m||^2] (exact:
    scaling by -2 is exact in binary floating point), so no separate pass over the [B * P, rows]
    block adds the norms. Then ReduceMin (k = 1) or TopK per chunk, merged the same way. No tensor
    exceeds [B * P, chunk_rows]; every chunk is its own initializer (no Slice); all shapes are
    static but the batch.
    """

    def __init__(self, memory_bank: torch.Tensor, bank_sq_norms: torch.Tensor, k: int, chunk_rows: int) -> None:
        super().__init__()
        self.k = int(k)
        self.round_queries_fp16 = memory_bank.dtype == torch.float16
        self.bank_rows = int(memory_bank.shape[0])
        self.dim = int(memory_bank.shape[1])
        self.chunks = 0
        for start in range(0, self.bank_rows, chunk_rows):
            block = memory_bank[start:start + chunk_rows].float()
            norms = bank_sq_norms[start:start + chunk_rows].float()
            self.register_buffer(f"bank_t{self.chunks}", torch.cat([block.t() * -2.0, norms[None]]).contiguous())
            self.chunks += 1

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        patches = embeddings.shape[1]
        q = embeddings.float().reshape(-1, self.dim)
        if self.round_queries_fp16:
            q = q.half().float()
        q_norm = (q * q).sum(dim=-1, keepdim=True)
        q1 = torch.cat([q, q[:, :1] * 0.0 + 1.0], dim=1)  # [B*P, d + 1], static shapes (a Pad would not be)
        kk = min(self.k, self.bank_rows)
        best: list[torch.Tensor] = []
        for i in range(self.chunks):
            bank_t = getattr(self, f"bank_t{i}")
            key = torch.matmul(q1, bank_t)  # ||m||^2 - 2 q.m, [B*P, rows]
            best.append(self._smallest(key, min(kk, bank_t.shape[1])))
        merged = best[0] if len(best) == 1 else self._smallest(torch.cat(best, dim=-1), kk)
        dist = torch.clamp(merged + q_norm, min=0.0)
        if kk < self.k:  # fewer bank rows than k: the reference pads with +inf
            pad = torch.full_like(dist[:, :1], float("inf")).expand(dist.shape[0], self.k - kk)
            dist = torch.cat([dist, pad], dim=-1)
        return dist.reshape(-1, int(patches), self.k)

    @staticmethod
    def _smallest(key: torch.Tensor, k: int) -> torch.Tensor:
        if k == 1:
            return key.amin(dim=-1, keepdim=True)
        return torch.topk(key, k, dim=-1, largest=False, sorted=True).values


class ExportScorer(nn.Module):
    """BankScorer in exportable form: (embeddings, match_scores) -> (score, anomaly_map, kept_mask).

    Same maths as ``BankScorer.forward`` (its map and score steps are reused); only the kNN is
    rewritten (``BankDistances``).
    """

    def __init__(self, scorer: BankScorer, *, max_batch: int, max_chunk_elements: int) -> None:
        super().__init__()
        self.scorer = scorer
        geometry = scorer.geometry
        ph, pw = geometry.patch_size
        rows = bank_chunk_rows(int(scorer.memory_bank.shape[0]), ph * pw, max_batch, max_chunk_elements)
        self.distances = BankDistances(scorer.memory_bank, scorer.bank_sq_norms, scorer.knn_k, rows)

    def forward(self, embeddings: torch.Tensor, match_scores: torch.Tensor):
        maps = self.scorer.maps_from_patch_scores(self.distances(embeddings).sqrt().mean(dim=-1))
        kept = self.scorer.kept_cells(match_scores)
        g = self.scorer.geometry.grid
        return self.scorer.image_score(maps, kept), maps, kept.reshape(-1, g, g)


# --------------------------------------------------------------------------------------------------
# scorer state <-> bytes (shared with the engine file)
# --------------------------------------------------------------------------------------------------
def scorer_state_bytes(scorer: BankScorer) -> bytes:
    """The BankScorer's tensors as safetensors bytes."""
    from safetensors.torch import save as save_safetensors

    return save_safetensors({k: v.detach().contiguous().cpu() for k, v in scorer.state_dict().items()})


def scorer_from_bytes(header: dict[str, Any], payload: bytes, origin: str = "model file") -> BankScorer:
    """Rebuild a BankScorer (eval mode, CPU) from a checked model header (``check_model_header``) and
    ``scorer_state_bytes``; raises ArtifactError naming ``origin`` when they do not make one. The
    tensors get the checks an .edgecmg payload's scorer gets (``artifact.load``), under its names."""
    from safetensors.torch import load as load_safetensors

    def as_artifact(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {f"scorer.{name}": tensor for name, tensor in tensors.items()}

    path = Path(origin)
    try:
        tensors = load_safetensors(payload)
    except SafetensorError as exc:  # its checksum matched: written wrongly, or edited and sealed again
        raise ArtifactError(f"{origin}: the scorer payload is not a valid safetensors buffer ({exc}); export the "
                            "model again") from exc
    # The build allocates by the header's sizes: they must first be those of the payload's tensors,
    # which are only as large as the file.
    _check_sizes_against_tensors(path, header, as_artifact(tensors))
    spec = header["model"]
    geometry = Geometry.from_header(header)
    try:
        scorer = BankScorer(geometry, feature_dim=spec["feature_dim"], bank_size=spec["bank_size"],
                            use_cmer=spec["use_cmer"], knn_k=spec["knn_k"], smoothing_sigma=1.0,
                            score_top_fraction=score_top_fraction(spec))
    except ConfigError as exc:  # sizes that pass one by one but not together (grid vs input size, ...)
        raise ArtifactError(f"{origin}: the header's model does not fit together: {exc}") from exc
    add_missing_normal_level(tensors, geometry, "normal_map")
    built = scorer.state_dict()
    _check_tensors(path, as_artifact(tensors), as_artifact(built), geometry)  # names, dtypes, shapes, finite
    # As artifact.load does: copies of other state are rebuilt, never read (the bank's norms, the
    # header's threshold, the geometry's cells).
    derived = {"bank_sq_norms": ops.bank_sq_norms(tensors["memory_bank"]),
               "threshold": torch.tensor(float(header["threshold"]))}
    fitted = {name: tensor for name, tensor in tensors.items() if name != "pixel_cells"}
    scorer.smoothing_taps = tensors["smoothing_taps"]  # its length is the file's: checked above
    scorer.load_state_dict({**built, **fitted, **derived}, strict=True)
    return scorer.eval()


# --------------------------------------------------------------------------------------------------
# ONNX metadata
# --------------------------------------------------------------------------------------------------
def load_scorer_from_onnx(model_or_path, *, origin: str | None = None) -> tuple[BankScorer, dict[str, Any]]:
    """(BankScorer, header) from a featurizer-only ONNX export, for host-side scoring.

    Raises ArtifactError when the file has no edgecmg metadata or no scorer (a full graph scores
    inside the graph and needs none), or when its scorer is damaged or does not fit its header.
    ``origin`` names a parsed model in those errors (a path names itself).
    """
    proto = _load_proto(model_or_path)
    if origin is None:
        origin = str(model_or_path) if isinstance(model_or_path, (str, Path)) else "ONNX model"
    header = read_onnx_header(proto, origin)
    props = {p.key: p.value for p in proto.metadata_props}
    return scorer_from_bytes(header, scorer_payload(props, header, origin), origin), header


# --------------------------------------------------------------------------------------------------
# torch -> ONNX
# --------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _attention_fastpath_off():
    """nn.MultiheadAttention's inference fast path is one fused op with no ONNX symbolic; a CLIP
    matcher's transformer exports through the plain ops instead."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None:
        yield
        return
    was_enabled = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(was_enabled)


# torch.onnx.export (and warnings.catch_warnings) keep process-wide state: two threads exporting at
# once failed ("GLOBALS.in_onnx_export must be True"). Re-entrant: cached_onnx holds it around its
# check-then-export, so threads opening one model export it once. Always read as ``export._EXPORT_LOCK``
# (not imported by name): a forked child gets a new one, below.
_EXPORT_LOCK = threading.RLock()


# Held while torch.onnx.export runs, and taken by a fork (below): the export's process-wide state
# (torch's "in an export" flag, the warning filters, attention's fast path) is half-set during it,
# and a child forked then failed every export of its own ("GLOBALS.in_onnx_export must be False").
# A fork waits for the export under way (seconds); never held around anything else, and re-entrant
# so that a fork from inside an export (none is known) does not wait for itself.
_TORCH_EXPORT_RUNNING = threading.RLock()


def _export_locks_in_child() -> None:
    """A child forked while another thread of its parent was inside cached_onnx (a worker pool started
    beside a model's first load) inherits _EXPORT_LOCK taken by a thread it does not have: its first
    export, or even its look into the export cache, would wait forever. The child runs no export
    yet: new, free locks are the right state."""
    global _EXPORT_LOCK, _TORCH_EXPORT_RUNNING
    _EXPORT_LOCK = threading.RLock()
    _TORCH_EXPORT_RUNNING = threading.RLock()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(before=lambda: _TORCH_EXPORT_RUNNING.acquire(),
                        after_in_parent=lambda: _TORCH_EXPORT_RUNNING.release(),
                        after_in_child=_export_locks_in_child)


def _torch_export(module: nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
                  dynamic_axes: Optional[dict], opset: int) -> None:
    """torch.onnx.export through the TorchScript tracer (deterministic names, constant folding)."""
    kwargs = dict(input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes,
                  opset_version=opset, do_constant_folding=True)
    with _EXPORT_LOCK, _TORCH_EXPORT_RUNNING, warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        with torch.no_grad(), _attention_fastpath_off():
            try:
                torch.onnx.export(module, args, str(path), dynamo=False, **kwargs)
            except TypeError as exc:  # torch < 2.5 has no `dynamo` argument
                if "dynamo" not in str(exc):
                    raise
                torch.onnx.export(module, args, str(path), **kwargs)


def _export_featurizer(model: CMGModel, path: Path, config: ExportConfig) -> None:
    h, w = model.geometry.input_size
    batch = 2 if config.dynamic_batch else config.batch  # trace at 2 so nothing specialises to 1
    frames = torch.zeros(batch, h, w, 3, dtype=torch.uint8)
    axes = None
    if config.dynamic_batch:
        axes = {name: {0: "batch"} for name in (INPUT_NAME, *FEATURIZER_OUTPUTS)}
    _torch_export(model.featurizer, (frames,), path, [INPUT_NAME], list(FEATURIZER_OUTPUTS), axes, config.opset)


def export_scorer_graph(model: CMGModel, path: str | Path, config: ExportConfig = ExportConfig()) -> Path:
    """The scoring head alone as ONNX: (embeddings, match_scores) -> (score, anomaly_map, kept_mask)."""
    path = Path(path)
    scorer = ExportScorer(model.scorer, max_batch=config.max_batch if config.dynamic_batch else config.batch,
                          max_chunk_elements=config.max_chunk_elements).eval()
    ph, pw = model.geometry.patch_size
    batch = 2 if config.dynamic_batch else config.batch
    embeddings = torch.zeros(batch, ph * pw, int(model.scorer.memory_bank.shape[1]))
    matches = torch.zeros(batch, 1 + model.geometry.grid ** 2)
    axes = None
    if config.dynamic_batch:
        axes = {name: {0: "batch"} for name in (*FEATURIZER_OUTPUTS, *OUTPUT_NAMES)}
    _torch_export(scorer, (embeddings, matches), path, list(FEATURIZER_OUTPUTS), list(OUTPUT_NAMES), axes,
                  config.opset)
    return path


def append_scorer(featurizer, scorer):
    """Featurizer ModelProto + scorer ModelProto -> one full-detector ModelProto.

    The scorer's internal names get the ``scorer/`` prefix; its inputs are wired to the featurizer
    outputs of the same names; the result's outputs are the scorer's. Metadata props are the
    featurizer's (minus the scorer payload, which the full graph does not need).
    """
    onnx = _onnx()
    merged = onnx.ModelProto()
    merged.CopyFrom(featurizer)
    graph = merged.graph
    keep = set(FEATURIZER_OUTPUTS) | set(OUTPUT_NAMES)

    def rename(name: str) -> str:
        return name if (not name or name in keep) else SCORER_PREFIX + name

    s_graph = scorer.graph
    for init in s_graph.initializer:
        new = graph.initializer.add()
        new.CopyFrom(init)
        new.name = rename(init.name)
    for node in s_graph.node:
        new = graph.node.add()
        new.CopyFrom(node)
        new.name = SCORER_PREFIX + (node.name or node.op_type)
        new.input[:] = [rename(n) for n in node.input]
        new.output[:] = [rename(n) for n in node.output]
    for vi in s_graph.value_info:
        new = graph.value_info.add()
        new.CopyFrom(vi)
        new.name = rename(vi.name)
    outputs = [onnx.ValueInfoProto() for _ in s_graph.output]
    for out, src in zip(outputs, s_graph.output):
        out.CopyFrom(src)
    del graph.output[:]
    graph.output.extend(outputs)
    # Opsets: the union, the default domain at the featurizer's version.
    have = {o.domain for o in merged.opset_import}
    for o in scorer.opset_import:
        if o.domain not in have:
            merged.opset_import.add().CopyFrom(o)
    props = [p for p in merged.metadata_props if p.key != SCORER_KEY]
    del merged.metadata_props[:]
    merged.metadata_props.extend(props)
    return merged


def cast_uint8_inputs_first(model) -> int:
    """Make every uint8 graph input feed Cast nodes only (in place); returns the casts added.

    torch traces ``frames.permute(...).float()`` as Transpose(uint8) -> Cast; TensorRT handles
    uint8 only as network I/O going through a Cast, so the uint8 tensor is cast to float first and
    the Transpose moves onto float data (the later Cast to float becomes a no-op). Same numbers.
    """
    onnx = _onnx()
    added = 0
    uint8_inputs = [v.name for v in model.graph.input
                    if v.type.tensor_type.elem_type == onnx.TensorProto.UINT8]
    for name in uint8_inputs:
        users = [n for n in model.graph.node if name in n.input and n.op_type != "Cast"]
        if not users:
            continue
        cast_out = f"{name}_as_float"
        cast = onnx.helper.make_node("Cast", [name], [cast_out], to=onnx.TensorProto.FLOAT, name=f"/{name}_to_float")
        for node in users:
            node.input[:] = [cast_out if n == name else n for n in node.input]
        model.graph.node.insert(0, cast)
        added += 1
    if added:  # types of tensors downstream changed: let consumers re-infer them
        del model.graph.value_info[:]
    return added


def _export_header(header: dict[str, Any], config: ExportConfig, graph: str, source_sha256: Optional[str],
                   scorer_sha256: Optional[str]) -> dict[str, Any]:
    out = dict(header)
    out["export"] = {
        "graph": graph,
        "opset": config.opset,
        "input": INPUT_NAME,
        "outputs": list(OUTPUT_NAMES if graph == GRAPH_FULL else FEATURIZER_OUTPUTS),
        "dynamic_batch": config.dynamic_batch,
        "batch": None if config.dynamic_batch else config.batch,
        "max_batch": config.max_batch if config.dynamic_batch else config.batch,
        "max_chunk_elements": config.max_chunk_elements,
        "artifact_sha256": source_sha256,
        "scorer_sha256": scorer_sha256,
        "precision": "fp32",
        "edgecmg": __version__,
        "torch": torch.__version__,
    }
    return out


def _save_atomic(model, path: Path) -> None:
    """Write an edgecmg ONNX file: its graph checksum first, then through a temporary file so a
    crash never leaves half a model under the final name."""
    onnx = _onnx()
    seal = {GRAPH_SHA_KEY: graph_sha256(model)}
    header = next((p.value for p in model.metadata_props if p.key == HEADER_KEY), None)
    if header is not None:
        seal[HEADER_SHA_KEY] = header_sha256(header)
    set_metadata_props(model, seal)
    with atomic_path(path, what="the ONNX file") as tmp:
        onnx.save(model, str(tmp))


def check_onnx_suffix(path: str | Path) -> Path:
    """``path`` if it ends in .onnx; a ConfigError otherwise, before any work: Detector.load, build and
    the CLI tell model files apart by their suffix, so the file would be written and then refused."""
    return check_file_suffix(path, ".onnx", name="an ONNX file", files="ONNX exports")


def export_model(model: CMGModel, header: dict[str, Any], out_path: str | Path,
                 config: ExportConfig = ExportConfig(), *, source_sha256: Optional[str] = None) -> Path:
    """Export an in-memory fitted model (``header``: the artifact header or fit metadata)."""
    config = expect_config(config, ExportConfig, "export_model")
    onnx = _onnx()
    out_path = check_onnx_suffix(out_path)
    model = model.eval()
    if "model" not in header:  # fit() metadata: add what the artifact header would carry
        header = {**header, "features": model.geometry.features, "model": model_spec(model)}
    with tempfile.TemporaryDirectory(prefix="edgecmg-export-") as tmp:
        feat_path = Path(tmp) / "featurizer.onnx"
        _export_featurizer(model, feat_path, config)
        proto = onnx.load(str(feat_path))
        cast_uint8_inputs_first(proto)
        scorer_payload = scorer_state_bytes(model.scorer)
        scorer_sha = hashlib.sha256(scorer_payload).hexdigest()
        graph = GRAPH_FULL if config.with_scoring else GRAPH_FEATURIZER
        props = {HEADER_KEY: json.dumps(_export_header(header, config, graph, source_sha256, scorer_sha),
                                        sort_keys=True)}
        if not config.with_scoring:
            props[SCORER_KEY] = base64.b64encode(scorer_payload).decode("ascii")
        set_metadata_props(proto, props)
        if config.with_scoring:
            scorer_path = export_scorer_graph(model, Path(tmp) / "scorer.onnx", config)
            proto = append_scorer(proto, onnx.load(str(scorer_path)))
    proto.producer_name = "edgecmg"
    proto.producer_version = __version__
    proto.doc_string = (f"edgecmg {graph} graph: uint8 RGB [B, H, W, 3] '{INPUT_NAME}' -> "
                        f"{', '.join(o.name for o in proto.graph.output)}")
    onnx.checker.check_model(proto)
    _save_atomic(proto, out_path)
    log.debug("exported %s graph to %s", graph, out_path)  # the CLI says "wrote" itself
    return out_path


def check_artifact_input(path: str | Path, command: str) -> None:
    """The model given to ``command`` (export, calibrate), by its suffix before it is read, as info and
    predict check theirs: an image, an export, an engine or calibrate's range cache is a one-line error
    saying what the command takes (not "bad magic" with the file's first bytes). A folder or a missing
    file is left to the reader, which names it as such."""
    path = Path(path)
    if path.is_dir() or not (path.exists() or path.is_symlink()):
        return
    suffix = path.suffix.lower()
    if suffix == ".edgecmg":
        return
    takes = f"{command} takes a .edgecmg model file (from `edgecmg fit`)"
    made_from = f"{command} takes the .edgecmg model (from `edgecmg fit`) it was made from"
    if is_range_cache(path):
        raise DataError(f"{path} holds calibrate's activation ranges, not a model: {takes}")
    if suffix == ".onnx":
        raise DataError(f"{path} is an ONNX export, not an edgecmg model: {made_from}")
    if suffix in (".engine", ".plan"):
        raise DataError(f"{path} is a TensorRT engine, not an edgecmg model: {made_from}")
    from edgecmg.imageio import IMAGE_EXTENSIONS

    if suffix in IMAGE_EXTENSIONS:
        raise DataError(f"{path} is an image, not a model: {takes}")
    kind = f"a {suffix} file" if suffix else "a file without a suffix"
    raise DataError(f"{path}: {takes}, not {kind}")


def export_onnx(artifact_path: str | Path, out_path: str | Path, config: ExportConfig = ExportConfig()) -> Path:
    """``edgecmg export M.edgecmg --format onnx [--with-scoring] -o M.onnx``: returns ``out_path``.

    The featurizer graph (default) leaves the memory-bank search to the host, in torch; the full graph
    (``ExportConfig(with_scoring=True)``) runs all of it in the ONNX session or engine, which on a
    2-core CPU is the faster of the two (benchmarks/results/bench.md).
    """
    from edgecmg import artifact

    config = expect_config(config, ExportConfig, "export_onnx")

    check_artifact_input(artifact_path, "export")
    artifact.prepare_output(check_onnx_suffix(out_path))  # an unwritable place fails before the export
    data, sha = artifact.read_file(artifact_path)
    model, header = artifact.load(artifact_path, data=data)
    return export_model(model, header, out_path, config, source_sha256=sha)

