"""What TensorRT's ONNX parser accepts, checked on the ONNX graph with no TensorRT needed.

``check_onnx_for_tensorrt`` lists what would stop (or silently degrade) a TensorRT 10/11 build:
opsets, operators and their restrictions, tensor volumes, the Q/DQ structure. ``edgecmg build`` runs
it on the network it hands TensorRT (a failed build quotes what it found), and ``edgecmg calibrate``
on the INT8 graph it writes. The graph readers here (``tensor_types``, ``is_quantized``, ...) serve
the float16 cast pass (``edgecmg.fp16_cast``) too.
"""
from __future__ import annotations

import logging
from typing import Any, NamedTuple

log = logging.getLogger("edgecmg")

# TensorRT's limit: no tensor may hold 2**31 elements or more.
MAX_TENSOR_VOLUME = (1 << 31) - 1


def _onnx():
    from edgecmg.export import _onnx as load

    return load()


def _as_model(model_or_path):
    from edgecmg.export import _load_proto

    return _load_proto(model_or_path)


def is_quantized(model_or_path) -> bool:
    """True when the graph holds QuantizeLinear/DequantizeLinear nodes (explicit quantisation)."""
    model = _as_model(model_or_path)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


# Operators of the default ONNX domain that TensorRT 10/11's ONNX parser imports at opsets 17..20
# (written from the onnx-tensorrt operator support matrix; restrictions checked separately below).
TENSORRT_OPS = frozenset("""
Abs Acos Acosh Add AffineGrid And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh
CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike
Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
Greater GreaterOrEqual GridSample GroupNormalization GRU HammingWindow HannWindow HardSigmoid HardSwish
Hardmax Identity If InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log
LogSoftmax Loop LpNormalization LpPool LRN LSTM MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish
Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear
RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2
ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu
Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu
Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze
Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())
TENSORRT_OPSETS = (17, 20)
# Ops TensorRT runs as INT8 kernels: with Q/DQ, their data and weight inputs must come from DQ.
QUANTIZABLE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_QUANT_TYPES = ("INT8", "FLOAT8E4M3FN", "INT4")
_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
_RESIZE_COORDS = ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners")
_CONSTANT_INPUTS = {"TopK": (1,), "Conv": (1,), "ConvTranspose": (1,)}


def _attr(node, name: str, default=None):
    onnx = _onnx()
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _with_batch(model, batch: int):
    """A copy whose dynamic leading input dims are ``batch`` and whose shapes are re-inferred."""
    onnx = _onnx()
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for inp in m.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = batch
    del m.graph.value_info[:]
    try:
        return onnx.shape_inference.infer_shapes(m, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - report, do not crash the check
        log.warning("shape inference failed (%s); tensor volumes unchecked", exc)
        return m


def tensor_types(model) -> dict[str, Any]:
    """name -> TypeProto.tensor_type of every typed value (inputs, outputs, value_info, initializers)."""
    onnx = _onnx()
    types = {}
    for vi in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type
    for init in model.graph.initializer:
        t = onnx.TypeProto.Tensor()
        t.elem_type = init.data_type
        for d in init.dims:
            t.shape.dim.add().dim_value = d
        types[init.name] = t
    return types


def _constant_values(model) -> dict[str, Any]:
    """name -> numpy array of initializers and Constant-node outputs."""
    onnx = _onnx()
    values = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        value = _constant_tensor(node) if node.op_type == "Constant" else None
        if value is not None:
            values[node.output[0]] = onnx.numpy_helper.to_array(value)
    return values


def _constant_tensor(node):
    """The TensorProto a Constant node produces (value, value_float(s), value_int(s)); None for the
    sparse and string forms, which the cast pass leaves as nodes."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    for attribute in node.attribute:
        if attribute.name == "value":
            tensor = TensorProto()
            tensor.CopyFrom(attribute.t)
            return tensor
        if attribute.name == "value_float":
            return numpy_helper.from_array(np.array(attribute.f, np.float32))
        if attribute.name == "value_floats":
            return numpy_helper.from_array(np.array(attribute.floats, np.float32))
        if attribute.name == "value_int":
            return numpy_helper.from_array(np.array(attribute.i, np.int64))
        if attribute.name == "value_ints":
            return numpy_helper.from_array(np.array(attribute.ints, np.int64))
    return None


def check_onnx_for_tensorrt(model_or_path, *, max_batch: int = 8, strict_shapes: bool = False) -> list[str]:
    """Problems that would stop (or silently degrade) a TensorRT 10/11 build of this ONNX graph.

    Checks, with no TensorRT needed:
    - default-domain opset in 17..20 and no other domains (com.microsoft contrib ops, ...);
    - every operator in TensorRT's supported set, plus the restrictions that matter here (constant
      conv weights and TopK k, Resize modes, 2-D/3-D pooling, no float64, uint8 only as graph I/O
      going through Cast);
    - tensor volumes with shape inference at batch = ``max_batch``: none may reach 2**31 elements
      (``strict_shapes`` also reports tensors whose shape could not be inferred);
    - Q/DQ: every QuantizeLinear feeds only DequantizeLinear; scales finite and strictly positive;
      zero points are 0 (TensorRT is symmetric) and quantised types int8/fp8/int4 (no int32 bias, no uint8); activation scales
      per-tensor; every quantised Conv/ConvTranspose/Gemm/MatMul takes all its data and weight
      inputs from DequantizeLinear.
    Returns a list of human-readable problems, empty when the graph looks TensorRT-friendly.
    """
    model = _as_model(model_or_path)
    problems = _opset_problems(model)
    lookups = _graph_lookups(model, max_batch)
    problems += _operator_problems(model.graph, lookups)
    problems += _tensor_problems(lookups, max_batch, strict_shapes)
    problems += _qdq_problems(model.graph, lookups)
    return problems


class _GraphLookups(NamedTuple):
    """What the sections of ``check_onnx_for_tensorrt`` read of the graph, built once for all of them."""

    types: dict[str, Any]  # name -> tensor type, shapes inferred at batch = max_batch
    constants: dict[str, Any]  # name -> numpy array of initializers and Constant-node outputs
    initializers: set[str]
    producers: dict[str, Any]  # tensor name -> the node that writes it
    consumers: dict[str, list]  # tensor name -> the nodes that read it


def _graph_lookups(model, max_batch: int) -> _GraphLookups:
    graph = model.graph
    types = tensor_types(_with_batch(model, max_batch))
    constants = _constant_values(model)
    initializers = {i.name for i in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return _GraphLookups(types, constants, initializers, producers, consumers)


def _node_label(node) -> str:
    return f"{node.op_type} node '{node.name or node.output[0]}'"


def _opset_problems(model) -> list[str]:
    """The default-domain opset outside TENSORRT_OPSETS, and every other domain that a node uses."""
    problems = []
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            if not TENSORRT_OPSETS[0] <= o.version <= TENSORRT_OPSETS[1]:
                problems.append(f"opset {o.version}: TensorRT 10/11 support is verified for opsets "
                                f"{TENSORRT_OPSETS[0]}..{TENSORRT_OPSETS[1]}; export with --opset 17")
        elif any(n.domain == o.domain for n in model.graph.node):
            problems.append(f"operator domain '{o.domain}' (e.g. ONNX Runtime contrib ops) is not parsed by TensorRT")
    return problems


def _operator_problems(graph, lookups: _GraphLookups) -> list[str]:
    """Operators outside TENSORRT_OPS, and the restrictions of those inside it."""
    problems = []
    for node in graph.node:
        label = _node_label(node)
        if node.domain not in ("", "ai.onnx"):
            continue  # reported with its domain by _opset_problems
        if node.op_type not in TENSORRT_OPS:
            problems.append(f"{label}: operator {node.op_type} is not supported by TensorRT's ONNX parser")
            continue
        for idx in _CONSTANT_INPUTS.get(node.op_type, ()):
            if idx < len(node.input) and node.input[idx]:
                src = node.input[idx]
                prod = lookups.producers.get(src)
                from_dq = (prod is not None and prod.op_type == "DequantizeLinear"
                           and prod.input[0] in lookups.constants)
                if src not in lookups.constants and not from_dq:
                    problems.append(f"{label}: input {idx} ('{src}') must be a constant for TensorRT")
        if node.op_type == "Resize":
            mode = _attr(node, "mode", b"nearest")
            coord = _attr(node, "coordinate_transformation_mode", b"half_pixel")
            mode, coord = (v.decode() if isinstance(v, bytes) else v for v in (mode, coord))
            if mode not in ("nearest", "linear", "cubic"):
                problems.append(f"{label}: Resize mode '{mode}' is not supported by TensorRT")
            if coord not in _RESIZE_COORDS:
                problems.append(f"{label}: Resize coordinate_transformation_mode '{coord}' is not supported "
                                "by TensorRT")
        if node.op_type in ("AveragePool", "MaxPool", "LpPool"):
            kernel = _attr(node, "kernel_shape", [])
            if len(kernel) not in (2, 3):
                problems.append(f"{label}: TensorRT pools in 2-D or 3-D only (kernel {list(kernel)})")
    return problems


def _tensor_problems(lookups: _GraphLookups, max_batch: int, strict_shapes: bool) -> list[str]:
    """float64 tensors, uint8 tensors read by more than Cast/DQ, and volumes past MAX_TENSOR_VOLUME at
    ``max_batch``; tensors of unresolved shape are a problem with ``strict_shapes``, else logged."""
    onnx = _onnx()
    problems = []
    unknown = []
    for name, ttype in lookups.types.items():
        elem = ttype.elem_type
        if elem == onnx.TensorProto.DOUBLE:
            problems.append(f"tensor '{name}' is float64: TensorRT has no double kernels; export float32")
        if elem == onnx.TensorProto.UINT8 and name not in lookups.initializers:
            bad = [n.op_type for n in lookups.consumers.get(name, [])
                   if n.op_type not in ("Cast", "DequantizeLinear")]
            if bad:  # uint8 Q/DQ tensors are reported with the Q/DQ checks
                problems.append(f"uint8 tensor '{name}' feeds {bad}: TensorRT takes uint8 only as network I/O "
                                "going through a Cast; cast it to float first")
        if name in lookups.initializers:
            continue
        dims = ttype.shape.dim if ttype.HasField("shape") else None
        if dims is None or any(not d.HasField("dim_value") for d in dims):
            unknown.append(name)
            continue
        volume = 1
        for d in dims:
            volume *= d.dim_value
        if volume > MAX_TENSOR_VOLUME:
            problems.append(f"tensor '{name}' has {volume} elements at batch {max_batch} "
                            f"(shape {[d.dim_value for d in dims]}): TensorRT's limit is 2**31 - 1; "
                            "lower the max batch or chunk it")
    if unknown:
        msg = (f"{len(unknown)} tensor(s) have shapes that inference could not resolve at batch {max_batch}, "
               f"their volume is unchecked (e.g. {unknown[:3]})")
        if strict_shapes:
            problems.append(msg)
        else:
            log.debug(msg)  # nothing for a user to do: the outputs' sizes follow the input's
    return problems


def _qdq_problems(graph, lookups: _GraphLookups) -> list[str]:
    """The Q/DQ structure TensorRT needs, node by node (see check_onnx_for_tensorrt)."""
    problems = []
    for node in graph.node:
        label = _node_label(node)
        scale = lookups.constants.get(node.input[1]) if node.op_type in _QDQ_OPS and len(node.input) > 1 else None
        if node.op_type == "QuantizeLinear":
            problems += _quantize_problems(node, label, scale, lookups)
        if node.op_type in _QDQ_OPS:
            problems += _scale_and_zero_point_problems(node, label, scale, lookups)
        if node.op_type in QUANTIZABLE_OPS:
            problems += _quantised_input_problems(node, label, lookups)
    return problems


def _quantize_problems(node, label: str, scale, lookups: _GraphLookups) -> list[str]:
    """A QuantizeLinear that feeds more than DequantizeLinear, or whose scale is not one constant per tensor."""
    problems = []
    outs = lookups.consumers.get(node.output[0], [])
    if not outs or any(c.op_type != "DequantizeLinear" for c in outs):
        problems.append(f"{label}: its output must feed DequantizeLinear only (a Q/DQ pair), "
                        f"feeds {[c.op_type for c in outs] or 'nothing'}")
    if scale is None:
        problems.append(f"{label}: scale must be a constant")
    elif node.input[0] not in lookups.constants and scale.size != 1:
        problems.append(f"{label}: activation scale is per-channel ({scale.size} values); TensorRT "
                        "quantises activations per tensor")
    return problems


def _scale_and_zero_point_problems(node, label: str, scale, lookups: _GraphLookups) -> list[str]:
    """A Q/DQ scale not finite and positive, a zero point not a constant 0, a type outside _QUANT_TYPES."""
    elem_name = _onnx().TensorProto.DataType.Name
    problems = []
    as_float = None if scale is None else scale.astype("float64")
    if as_float is not None and not ((as_float > 0) & (as_float < float("inf"))).all():  # NaN fails too
        problems.append(f"{label}: scale from {float(as_float.min())} to {float(as_float.max())}; TensorRT "
                        "needs every scale finite and strictly positive")
    zp_name = node.input[2] if len(node.input) > 2 else ""
    qtype = None
    if zp_name:
        zp = lookups.constants.get(zp_name)
        if zp is None:
            problems.append(f"{label}: zero point must be a constant")
        elif zp.any():
            problems.append(f"{label}: zero point is not 0; TensorRT quantises symmetrically "
                            "(calibrate with the 'tensorrt' profile)")
        qtype = lookups.types.get(zp_name).elem_type if zp_name in lookups.types else None
    if node.op_type == "DequantizeLinear" and node.input[0] in lookups.types:
        qtype = lookups.types[node.input[0]].elem_type
    if qtype is not None and elem_name(qtype) not in _QUANT_TYPES:
        problems.append(f"{label}: quantised type {elem_name(qtype)}; TensorRT accepts "
                        f"{'/'.join(t.lower() for t in _QUANT_TYPES)} only (no int32 bias, no uint8)")
    return problems


def _quantised_input_problems(node, label: str, lookups: _GraphLookups) -> list[str]:
    """A Conv/ConvTranspose/Gemm/MatMul with DequantizeLinear on some of its data and weight inputs only."""
    data_inputs = [n for n in node.input[:2] if n]
    from_dq = [lookups.producers.get(n) is not None and lookups.producers[n].op_type == "DequantizeLinear"
               for n in data_inputs]
    if any(from_dq) and not all(from_dq):
        missing = [n for n, ok in zip(data_inputs, from_dq) if not ok]
        return [f"{label}: quantised op without a Q/DQ pair on input(s) {missing}; TensorRT "
                "needs DequantizeLinear on every data and weight input of an INT8 op"]
    return []
