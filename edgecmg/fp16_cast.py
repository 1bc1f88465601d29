"""The float16 cast pass: a float16 copy of an ONNX graph (``convert_to_fp16``), no TensorRT needed.

A strongly typed TensorRT network takes its precision from the tensor types, not from builder
flags, so ``edgecmg.engine`` builds from this copy where FP16 has no builder flag (TensorRT 11) and
for INT8 (Q/DQ from ``edgecmg calibrate``): its scales become float16 too, so that the layers left
in float run in FP16 and each DequantizeLinear still feeds its quantised op directly.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

from edgecmg.errors import EngineBuildError
from edgecmg.onnx_checks import _QDQ_OPS, _as_model, _attr, _constant_tensor, _onnx, tensor_types

# Inputs that must stay float32 whatever the node's precision: (op, input index).
_FP32_ONLY_INPUTS = {("Resize", 1), ("Resize", 2), ("Upsample", 1)}
# Ops kept in float32 by default: quantisation nodes (their scales define their output type).
DEFAULT_FP32_OPS = _QDQ_OPS
# QuantizeLinear / DequantizeLinear take float16 scales (and so give float16 outputs) from opset 19.
QDQ_FP16_OPSET = 19


def _integer_limits(dtype) -> Optional[tuple[int, int]]:
    """(min, max) code of an integer quantised type (ONNX int4/uint4 included); None for float8."""
    import numpy as np

    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return int(info.min), int(info.max)
    return {"int4": (-8, 7), "uint4": (0, 15)}.get(np.dtype(dtype).name)


def _qdq_for_fp16(model):
    """A Q/DQ model made ready for float16 scales (INT8 with FP16 outside the quantised layers, as a
    strongly typed TensorRT network wants it): the default opset raised to 19 where lower (and the IR
    version with it), and every constant scale made a positive normal float16. A per-channel weight
    scale of a near-dead channel (1e-10 here) would flush to 0 in float16, which TensorRT refuses
    (scales must be strictly positive), so scales are clamped up to float16's smallest normal; the
    constant integer weights behind every scale that changed are quantised again against it, from
    their original codes and once per (weight, scale) pair, so they dequantize to the same values as
    before, to the new step. A scale beyond float16's range is refused. Changes ``model`` in place
    (``convert_to_fp16`` passes its own copy); returns it, or the opset-converted copy."""
    onnx = _onnx()
    from onnx import numpy_helper

    default = next((o for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if default is not None and default.version < QDQ_FP16_OPSET:
        model = onnx.version_converter.convert_version(model, QDQ_FP16_OPSET)
    model.ir_version = max(model.ir_version, onnx.helper.find_min_ir_version_for(list(model.opset_import)))
    inits = {i.name: i for i in model.graph.initializer}
    scales = _fp16_scales(model.graph, inits)
    _requantise_weights(model.graph, inits, scales)
    for name, (old, new) in scales.items():
        inits[name].CopyFrom(numpy_helper.from_array(new.reshape(old.shape), name))
    return model


def _fp16_scales(graph, inits: dict[str, Any]) -> dict[str, Any]:
    """Scale initializer of a Q/DQ node -> (old float32 values, new float16-exact float32 values), the
    new ones clamped up to float16's smallest normal; EngineBuildError for a scale beyond its range."""
    import numpy as np
    from onnx import numpy_helper

    tiny, largest = np.finfo(np.float16).tiny, np.finfo(np.float16).max
    scales = {}
    for node in graph.node:
        if node.op_type in _QDQ_OPS and len(node.input) > 1 and node.input[1] in inits:
            name = node.input[1]
            if name not in scales:
                old = numpy_helper.to_array(inits[name]).astype(np.float32)
                if not np.isfinite(old).all() or old.max() > largest:
                    raise EngineBuildError(
                        f"{node.op_type} node '{node.name}': scale up to {float(old.max()):g} is beyond float16's "
                        f"range ({float(largest):g}), so this INT8 graph cannot run its float layers in FP16; "
                        "calibrate again (its activation ranges are unusable)")
                scales[name] = (old, np.maximum(old, tiny).astype(np.float16).astype(np.float32))
    return scales


def _requantise_weights(graph, inits: dict[str, Any], scales: dict[str, Any]) -> None:
    """Re-quantise each constant integer weight behind a scale that changed against its new scale, from
    the original codes, once per (weight, scale) pair; a weight under a second scale gets its own copy."""
    import numpy as np
    from onnx import numpy_helper

    codes: dict[str, Any] = {}  # the original codes and zero points, read before any is re-quantised

    def original(name: str):
        if name not in codes:
            codes[name] = numpy_helper.to_array(inits[name])
        return codes[name]

    requantised: dict[str, str] = {}  # weight -> the scale its codes were re-quantised against
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits or node.input[1] not in scales:
            continue
        old, new = scales[node.input[1]]
        weight = node.input[0]
        q = original(weight)
        limits = _integer_limits(q.dtype)
        if np.array_equal(old, new) or limits is None:  # float8 codes carry their own exponent
            continue
        if requantised.get(weight) == node.input[1]:
            continue
        zp = original(node.input[2]).astype(np.float64) if len(node.input) > 2 and node.input[2] in inits else 0.0
        requant = _requantised_codes(node, q, zp, old, new, limits)
        if weight in requantised:  # shared with another scale: this node gets a copy of its own
            name = f"{weight}_{node.name or len(inits)}_fp16_codes"
            graph.initializer.append(numpy_helper.from_array(requant, name))
            inits[name] = graph.initializer[-1]
            node.input[0] = name
        else:
            inits[weight].CopyFrom(numpy_helper.from_array(requant, weight))
            requantised[weight] = node.input[1]


def _requantised_codes(node, q, zp, old, new, limits: tuple[int, int]):
    """Codes ``q`` (zero point ``zp``) dequantized with scale ``old`` and quantised again with ``new``."""
    import numpy as np

    shape = [1] * q.ndim
    if old.size > 1:  # per channel along the node's axis (default 1)
        shape[_attr(node, "axis", 1) % q.ndim] = old.size
    zp = np.reshape(zp, shape) if np.ndim(zp) else zp
    values = (q.astype(np.float64) - zp) * old.reshape(shape)
    return np.clip(np.round(values / new.reshape(shape)) + zp, *limits).astype(q.dtype)


def convert_to_fp16(model_or_path, *, keep_fp32_ops: Iterable[str] = DEFAULT_FP32_OPS,
                    keep_fp32_prefixes: Iterable[str] = (), keep_fp32_nodes: Iterable[str] = ()):
    """Float16 copy of an ONNX model: float initializers, constants and activations become float16,
    with Cast nodes where float32 and float16 parts meet. Graph inputs and outputs keep their types
    (Cast after float inputs, before float outputs), so callers see the same interface.

    Nodes whose op type is in ``keep_fp32_ops``, whose name starts with one of ``keep_fp32_prefixes``
    (e.g. ``"scorer/"``: the norm-expanded distances lose too much in float16) or whose name is in
    ``keep_fp32_nodes`` stay float32. Resize roi/scales inputs stay float32 (the ONNX spec).
    With QuantizeLinear/DequantizeLinear left out of ``keep_fp32_ops`` their scales become float16
    too (``_qdq_for_fp16``: opset 19, positive normal scales): an INT8 graph whose float layers run
    in FP16 and whose DequantizeLinear feeds each quantised op directly, with no Cast between them.
    Subgraphs (If/Loop bodies) are not converted.
    """
    onnx = _onnx()
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    src = _as_model(model_or_path)
    keep_ops, keep_prefixes, keep_nodes = set(keep_fp32_ops), tuple(keep_fp32_prefixes), set(keep_fp32_nodes)
    model = onnx.ModelProto()
    model.CopyFrom(src)
    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16

    _constants_to_initializers(model.graph)
    if not set(_QDQ_OPS) <= keep_ops and any(n.op_type in _QDQ_OPS for n in model.graph.node):
        model = _qdq_for_fp16(model)  # after the step above, so that every scale is an initializer
    graph = model.graph

    del graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(model)
    elem = {name: t.elem_type for name, t in tensor_types(inferred).items()}
    inits = {i.name: i for i in graph.initializer}
    fresh = _fresh_names(graph)
    precision: dict[str, int] = {v.name: FLOAT for v in graph.input if elem.get(v.name) == FLOAT}
    half_inits: dict[str, str] = {}
    casts: dict[tuple[str, int], str] = {}
    new_nodes = []

    def provide(name: str, want: int) -> str:
        """Name of ``name`` in precision ``want`` (an fp16 initializer copy or a Cast)."""
        if name in inits and inits[name].data_type == FLOAT:
            if want == FLOAT:
                return name
            if name not in half_inits:
                half = numpy_helper.from_array(numpy_helper.to_array(inits[name]).astype(np.float16),
                                               fresh(name + "_fp16"))
                graph.initializer.append(half)
                half_inits[name] = half.name
            return half_inits[name]
        have = precision.get(name)
        if have is None or have == want:
            return name
        key = (name, want)
        if key not in casts:
            out = fresh(f"{name}_to_{'fp16' if want == HALF else 'fp32'}")
            new_nodes.append(helper.make_node("Cast", [name], [out], to=want, name=fresh(f"cast_{out}")))
            casts[key] = out
        return casts[key]

    for node in graph.node:
        fp32_node = (node.op_type in keep_ops or node.name in keep_nodes
                     or (keep_prefixes and node.name.startswith(keep_prefixes)))
        want_default = FLOAT if fp32_node else HALF
        for i, name in enumerate(node.input):
            if not name or elem.get(name) != FLOAT:
                continue
            want = FLOAT if (node.op_type, i) in _FP32_ONLY_INPUTS else want_default
            node.input[i] = provide(name, want)
        if not fp32_node:
            _float_attributes_to_fp16(node)
        for out in node.output:
            if out and elem.get(out) == FLOAT:
                precision[out] = FLOAT if fp32_node else HALF
        new_nodes.append(node)

    _cast_outputs_back_to_fp32(graph, new_nodes, precision, fresh)
    del graph.node[:]
    graph.node.extend(new_nodes)
    _drop_unread_initializers(graph)
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model)
    return model


def _constants_to_initializers(graph) -> None:
    """Constant nodes become initializers, so that the cast pass handles every constant alike (a scale
    written as value_float would otherwise stay float32 behind a node marked float16)."""
    nodes = []
    for node in graph.node:
        value = _constant_tensor(node) if node.op_type == "Constant" else None
        if value is not None:
            value.name = node.output[0]
            graph.initializer.append(value)
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)


def _fresh_names(graph):
    """A function that returns ``base``, or ``base_1``, ``base_2``, ..., never a name ``graph`` uses
    nor one it returned before."""
    used_names = {n for node in graph.node for n in (*node.input, *node.output)} | \
        {i.name for i in graph.initializer} | {v.name for v in (*graph.input, *graph.output)}

    def fresh(base: str) -> str:
        name, i = base, 0
        while name in used_names:
            i += 1
            name = f"{base}_{i}"
        used_names.add(name)
        return name

    return fresh


def _float_attributes_to_fp16(node) -> None:
    """A float16 node's float32 attributes made float16: a Cast's target type, a ConstantOfShape's value."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    if node.op_type == "Cast" and _attr(node, "to") == TensorProto.FLOAT:
        for a in node.attribute:
            if a.name == "to":
                a.i = TensorProto.FLOAT16
    if node.op_type == "ConstantOfShape":
        for a in node.attribute:
            if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))


def _cast_outputs_back_to_fp32(graph, new_nodes: list, precision: dict[str, int], fresh) -> None:
    """Graph outputs keep float32: the fp16 producer's tensor is renamed in ``new_nodes`` and a Cast
    appended to them gives it back under the old name."""
    from onnx import TensorProto, helper

    renames = {}
    for out in graph.output:
        if precision.get(out.name) == TensorProto.FLOAT16:
            renames[out.name] = fresh(out.name + "_fp16")
    if renames:
        for node in new_nodes:
            node.input[:] = [renames.get(n, n) for n in node.input]
            node.output[:] = [renames.get(n, n) for n in node.output]
        for old, new in renames.items():
            new_nodes.append(helper.make_node("Cast", [new], [old], to=TensorProto.FLOAT,
                                              name=fresh(f"cast_{old}_to_fp32")))


def _drop_unread_initializers(graph) -> None:
    """Drop the initializers nobody reads any more (the float32 originals of float16 copies)."""
    read = {n for node in graph.node for n in node.input}
    outputs = {o.name for o in graph.output}
    keep = [i for i in graph.initializer if i.name in read or i.name in outputs]
    del graph.initializer[:]
    graph.initializer.extend(keep)
