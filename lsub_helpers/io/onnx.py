"""Read a sequential ONNX ReLU network (as VNN-COMP benchmarks and PyTorch exporters write them) into the
normal-form ops of :mod:`lsub_helpers.ops`.

One rule per ONNX op (``_RULES``); every op in :data:`SUPPORTED` becomes an affine op, a ReLU, a max
pooling layer (:class:`~lsub_helpers.network.MaxPoolLayer`), nothing (Identity, Dropout) or, last, a Softmax/LogSoftmax that :class:`~lsub_helpers.network.SoftmaxPolicy` drops
or refuses.  Every other op raises :class:`~lsub_helpers.network.UnsupportedLayerError` naming the op, the
node and what to do.  Files are read with ``onnx.load_from_string`` (protobuf, no pickle); ``.gz`` files are
decompressed first, as VNN-COMP publishes them.
"""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..network import (
    MaxPoolLayer,
    OutputActivation,
    ReluNetwork,
    SoftmaxPolicy,
    UnsupportedLayerError,
    split_output_activation,
)
from ..ops import (
    AvgPoolOp,
    ChannelAffineOp,
    ConvOp,
    DenseOp,
    ElementwiseOp,
    FlattenOp,
    PadOp,
    ReshapeOp,
    TransposeOp,
)

__all__ = ["SUPPORTED", "LoadedNetwork", "load_onnx", "onnx_to_ops", "read_onnx_model"]

F64 = torch.float64

_NOT_PIECEWISE_LINEAR = (
    "the verifier is exact for piecewise-linear ReLU networks and refuses to approximate {op}; "
    "retrain with ReLU activations"
)
_HINTS = {
    "Sigmoid": _NOT_PIECEWISE_LINEAR,
    "Tanh": _NOT_PIECEWISE_LINEAR,
    "Softplus": _NOT_PIECEWISE_LINEAR,
    "Elu": _NOT_PIECEWISE_LINEAR,
    "Gelu": _NOT_PIECEWISE_LINEAR,
    "LeakyRelu": "LeakyRelu is not supported; retrain with ReLU",
    "Shape": "export with static shapes and constant folding (torch.onnx.export(..., do_constant_folding=True)) "
    "so that shape computations become constants, or use nn.Flatten instead of x.view(x.size(0), -1)",
}
_DEFAULT_HINT = "export the model without it, or fold it into an adjacent linear layer before export"


@dataclass(frozen=True, eq=False)
class LoadedNetwork:
    """A network read from ONNX and the final Softmax/LogSoftmax left out of it (None if there was none)."""

    net: ReluNetwork
    dropped: OutputActivation | None


def read_onnx_model(path: str | Path):
    """The checked ``ModelProto`` of ``path`` (``.onnx`` or ``.onnx.gz``)."""
    import onnx

    path = Path(path)
    try:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx and gzip raise several types for corrupt files
        raise ValueError(f"cannot read ONNX file {path}: {exc}") from exc
    return model


def load_onnx(path: str | Path, *, softmax: SoftmaxPolicy | str = SoftmaxPolicy.REFUSE) -> LoadedNetwork:
    """Read ``path`` into a :class:`ReluNetwork` and say which final activation was dropped."""
    ops, input_shape = onnx_to_ops(path)
    ops, dropped = split_output_activation(ops, softmax, Path(path).name)
    return LoadedNetwork(ReluNetwork._from_op_list(ops, input_shape), dropped)


def _attrs(node) -> dict:
    import onnx

    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


class _Graph:
    """The walk along the one data path of a graph: the current tensor's name and shape, and constants."""

    def __init__(self, consts: dict[str, np.ndarray], current: str, shape: tuple[int, ...]):
        self.consts = consts
        self.current = current
        self.shape = shape
        self.ops: list[tuple[str, object]] = []

    def const(self, name: str, where: str) -> np.ndarray:
        if name not in self.consts:
            raise UnsupportedLayerError(f"{where}: operand '{name}' must be a constant (an initializer)")
        return np.asarray(self.consts[name], dtype=np.float64)

    def add(self, op) -> None:
        if tuple(op.in_shape) != tuple(self.shape):
            raise ValueError(f"{type(op).__name__} expects {op.in_shape}, the data has shape {self.shape}")
        self.ops.append(("affine", op))
        self.shape = tuple(op.out_shape)


def onnx_to_ops(path: str | Path) -> tuple[list[tuple[str, object]], tuple[int, ...]]:
    """Parse ``path`` into ``[("affine", op) | ("relu", None) | ("softmax", kind), ...]`` and the input
    shape (no batch)."""
    from onnx import numpy_helper

    path = Path(path)
    model = read_onnx_model(path)
    graph = model.graph
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=13)
    consts: dict[str, np.ndarray] = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in consts]
    if len(inputs) != 1:
        raise UnsupportedLayerError(f"{path.name}: expected exactly one graph input, found {len(inputs)}")
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    if not dims or any(d <= 0 for d in dims[1:]):
        raise UnsupportedLayerError(f"{path.name}: input needs a static shape, got {dims}")
    g = _Graph(consts, inputs[0].name, tuple(int(d) for d in dims[1:]))
    input_shape = g.shape
    nodes = list(graph.node)
    for idx, node in enumerate(nodes):
        where = f"ONNX op {node.op_type} (node {idx}{', ' + repr(node.name) if node.name else ''})"
        a = _attrs(node)
        if all(not name or name in consts for name in node.input):
            # a computation on constants only (e.g. the pads of a padding as exporters write them): evaluate it
            _evaluate_constant(node, consts, where)
            continue
        rule = _RULES.get(node.op_type)
        if rule is None:
            hint = _HINTS.get(node.op_type, _DEFAULT_HINT).format(op=node.op_type)
            raise UnsupportedLayerError(f"unsupported {where}: {hint}. Supported ops: {', '.join(SUPPORTED)}")
        if g.current not in node.input:
            raise UnsupportedLayerError(
                f"{where} does not act on the network's data path (only one chain of ops from the input to the "
                f"output is supported): {_HINTS['Shape'] if node.op_type in ('Reshape', 'Gather') else _DEFAULT_HINT}"
            )
        if node.input[0] != g.current and node.op_type not in ("Add", "Sub", "Mul", "Div", "Gemm", "MatMul"):
            raise UnsupportedLayerError(f"{where}: the data must be the first operand")
        rule(g, node, a, where, opset)
        if node.op_type in ("Softmax", "LogSoftmax") and idx != len(nodes) - 1:
            raise UnsupportedLayerError(f"{where}: a softmax is supported only as the last op of the network")
        g.current = node.output[0]
    outputs = [o.name for o in graph.output]
    if outputs != [g.current]:
        raise UnsupportedLayerError(f"{path.name}: the graph output {outputs} is not the end of one data path")
    return g.ops, input_shape


def _evaluate_constant(node, consts: dict[str, np.ndarray], where: str) -> None:
    """Evaluate a node whose inputs are all constants with onnx's reference implementation."""
    from onnx.reference import ReferenceEvaluator

    try:
        outs = ReferenceEvaluator(node).run(None, {n: consts[n] for n in node.input if n})
    except Exception as exc:  # the reference evaluator raises many types
        raise UnsupportedLayerError(f"{where}: cannot evaluate this computation on constants ({exc}); "
                                    f"{_HINTS['Shape']}") from exc
    for name, value in zip(node.output, outs):
        if name:
            consts[name] = np.asarray(value)


# ---------------------------------------------------------------------------------------------------
# One rule per op
# ---------------------------------------------------------------------------------------------------


def _relu(g, node, a, where, opset):
    g.ops.append(("relu", None))


def _identity(g, node, a, where, opset):
    if node.op_type == "Dropout":
        if a.get("is_test", 1) == 0 and opset < 7:
            raise UnsupportedLayerError(f"{where}: Dropout in training mode; export the model in eval mode")
        if len(node.input) > 2 and node.input[2] and bool(g.const(node.input[2], where).reshape(-1)[0]):
            raise UnsupportedLayerError(f"{where}: Dropout with training_mode=true; export in eval mode")
    # Identity and inference-mode Dropout: nothing to do


def _softmax(g, node, a, where, opset):
    axis = a.get("axis", 1 if opset < 13 else -1)
    if len(g.shape) != 1 or axis not in (1, -1):
        raise UnsupportedLayerError(f"{where}: only a softmax over the flat output vector is supported")
    kind = OutputActivation.SOFTMAX if node.op_type == "Softmax" else OutputActivation.LOG_SOFTMAX
    g.ops.append(("softmax", kind))


def _flatten(g, node, a, where, opset):
    if a.get("axis", 1) != 1:
        raise UnsupportedLayerError(f"{where}: only axis=1 (keep the batch dimension) is supported")
    g.add(FlattenOp(g.shape))


def _reshape(g, node, a, where, opset):
    shape = g.shape
    target = [int(v) for v in g.const(node.input[1], where)]
    target = target[1:] if len(target) == len(shape) + 1 or target[0] in (1, -1) else target
    n = math.prod(shape)
    if -1 in target:
        known = math.prod(t for t in target if t != -1)
        target = [n // known if t == -1 else t for t in target]
    target = [shape[i] if t == 0 else t for i, t in enumerate(target)]
    g.add(ReshapeOp(shape, tuple(target)))


def _transpose(g, node, a, where, opset):
    perm = list(a.get("perm", reversed(range(len(g.shape) + 1))))
    if perm[0] != 0:
        raise UnsupportedLayerError(f"{where}: a transpose that moves the batch dimension ({perm}) is not supported")
    g.add(TransposeOp(tuple(p - 1 for p in perm[1:]), g.shape))


def _dense(g, node, a, where, opset):
    if len(g.shape) != 1:
        raise UnsupportedLayerError(f"{where}: input must be flat, got shape {g.shape}; add a Flatten before it")
    if node.input[0] != g.current:
        raise UnsupportedLayerError(f"{where}: the data must be the first operand (x @ W); export x @ W.T instead")
    w = g.const(node.input[1], where)
    b = 0.0
    if node.op_type == "Gemm":
        if a.get("transA", 0):
            raise UnsupportedLayerError(f"{where}: transA=1 (a transposed data operand) is not supported")
        w = w.T if a.get("transB", 0) else w  # now (in, out)
        w = a.get("alpha", 1.0) * w
        if len(node.input) > 2 and node.input[2]:
            b = a.get("beta", 1.0) * g.const(node.input[2], where)
    if w.ndim != 2 or w.shape[0] != g.shape[0]:
        raise ValueError(f"{where}: weight of shape {w.shape} does not fit input {g.shape}")
    b = np.asarray(b, dtype=np.float64)
    if b.size not in (1, w.shape[1]):
        raise ValueError(f"{where}: bias of shape {b.shape} does not fit {w.shape[1]} outputs")
    b = np.broadcast_to(b.reshape(-1), (w.shape[1],))
    g.add(DenseOp(torch.tensor(w.T.copy(), dtype=F64), torch.tensor(np.array(b), dtype=F64)))


def _elementwise(g, node, a, where, opset):
    shape = g.shape
    first = node.input[0] == g.current
    other = node.input[1] if first else node.input[0]
    if other == g.current:
        raise UnsupportedLayerError(f"{where}: both operands are the data; not affine")
    c = g.const(other, where)
    if c.size > 1:
        if c.ndim > len(shape) + 1:
            raise UnsupportedLayerError(f"{where}: constant of shape {c.shape} broadcasts over the batch")
        c = np.broadcast_to(c, (1,) + tuple(shape)).reshape(shape)
    else:
        c = np.full(shape, float(c.reshape(-1)[0]))
    one, zero = np.ones(shape), np.zeros(shape)
    if node.op_type == "Add":
        scale, shift = one, c
    elif node.op_type == "Sub":
        scale, shift = (one, -c) if first else (-one, c)
    elif node.op_type == "Mul":
        scale, shift = c, zero
    else:
        if not first:
            raise UnsupportedLayerError(f"{where}: division by the data is not affine")
        if np.any(c == 0):
            raise ValueError(f"{where}: division by zero")
        scale, shift = 1.0 / c, zero
    g.add(ElementwiseOp(torch.tensor(scale, dtype=F64), torch.tensor(shift, dtype=F64), tuple(shape)))


def _spatial_pads(a: dict, where: str) -> tuple[tuple[int, int], tuple[int, int]]:
    if a.get("auto_pad", "NOTSET") != "NOTSET":
        raise UnsupportedLayerError(f"{where}: auto_pad={a['auto_pad']} is not supported; export explicit pads")
    if any(d != 1 for d in a.get("dilations", [1, 1])):
        raise UnsupportedLayerError(f"{where}: dilations {list(a['dilations'])} are not supported; export with dilation 1")
    pads = [int(p) for p in a.get("pads", [0, 0, 0, 0])]
    if len(pads) != 4:
        raise UnsupportedLayerError(f"{where}: only 2-D (N, C, H, W) tensors are supported, pads {pads}")
    return (pads[0], pads[2]), (pads[1], pads[3])  # (top, bottom), (left, right)


def _conv(g, node, a, where, opset):
    if len(g.shape) != 3:
        raise UnsupportedLayerError(f"{where}: input must be (C, H, W), got {g.shape}")
    if a.get("group", 1) != 1:
        raise UnsupportedLayerError(f"{where}: grouped/depthwise convolution (group={a['group']}) is not supported")
    (t, bt), (l, r) = _spatial_pads(a, where)
    w = g.const(node.input[1], where)
    b = g.const(node.input[2], where) if len(node.input) > 2 and node.input[2] else np.zeros(w.shape[0])
    if (t, l) != (bt, r):  # asymmetric: an explicit zero padding, then the convolution without padding
        g.add(PadOp(((0, 0), (t, bt), (l, r)), g.shape))
        t, l = 0, 0
    strides = tuple(int(s) for s in a.get("strides", [1, 1]))
    op = ConvOp(torch.tensor(w, dtype=F64), torch.tensor(b, dtype=F64), strides, (t, l), tuple(g.shape))
    if min(op.out_shape) <= 0:
        raise ValueError(f"{where}: output shape {op.out_shape} is empty")
    g.add(op)


def _batch_norm(g, node, a, where, opset):
    if a.get("training_mode", 0) or a.get("is_test", 1) == 0:
        raise UnsupportedLayerError(f"{where}: BatchNormalization in training mode; export the model in eval mode")
    if a.get("spatial", 1) != 1:
        raise UnsupportedLayerError(f"{where}: spatial=0 is not supported")
    gamma, beta, mean, var = (g.const(n, where) for n in node.input[1:5])
    g.add(ChannelAffineOp.batch_norm(gamma, beta, mean, var, float(a.get("epsilon", 1e-5)), g.shape))


def _average_pool(g, node, a, where, opset):
    if len(g.shape) != 3:
        raise UnsupportedLayerError(f"{where}: input must be (C, H, W), got {g.shape}")
    if node.op_type == "GlobalAveragePool":
        k = tuple(g.shape[1:])
        g.add(AvgPoolOp(k, k, (0, 0), True, g.shape))
        return
    k = tuple(int(v) for v in a["kernel_shape"])
    s = tuple(int(v) for v in a.get("strides", [1, 1]))
    (t, bt), (l, r) = _spatial_pads(a, where)
    include = bool(a.get("count_include_pad", 0))
    if (t, l) != (bt, r) or 2 * t > k[0] or 2 * l > k[1]:
        if not include and (t or bt or l or r):
            raise UnsupportedLayerError(f"{where}: asymmetric or large pads {[t, l, bt, r]} with "
                                        "count_include_pad=0 are not supported")
        g.add(PadOp(((0, 0), (t, bt), (l, r)), g.shape))
        t, l = 0, 0
    op = AvgPoolOp(k, s, (t, l), include, g.shape)
    if a.get("ceil_mode", 0):
        _, h, w = g.shape
        ceil = tuple(-(-(n + 2 * p - kk) // ss) + 1 for n, p, kk, ss in zip((h, w), (t, l), k, s))
        if ceil != op.out_shape[1:]:
            raise UnsupportedLayerError(f"{where}: ceil_mode=1 changes the output shape; export with ceil_mode=0")
    g.add(op)


def _max_pool(g, node, a, where, opset):
    if len(g.shape) != 3:
        raise UnsupportedLayerError(f"{where}: input must be (C, H, W), got {g.shape}")
    if a.get("ceil_mode", 0):
        raise UnsupportedLayerError(f"{where}: ceil_mode=1 is not supported; export with ceil_mode=0 "
                                    "(torch: MaxPool2d(..., ceil_mode=False))")
    if len(node.output) > 1 and node.output[1]:
        raise UnsupportedLayerError(f"{where}: the Indices output of MaxPool is not supported")
    pads = _spatial_pads(a, where)  # refuses auto_pad and dilations other than 1
    k = tuple(int(v) for v in a["kernel_shape"])
    s = tuple(int(v) for v in a.get("strides", [1, 1]))
    if len(k) != 2 or len(s) != 2:
        raise UnsupportedLayerError(f"{where}: only 2-D max pooling is supported, kernel_shape {list(k)}")
    pool = MaxPoolLayer(k, s, pads, tuple(g.shape))
    g.ops.append(("maxpool", pool))
    g.shape = pool.out_shape


def _pad(g, node, a, where, opset):
    mode = a.get("mode", "constant")
    if mode != "constant":
        raise UnsupportedLayerError(f"{where}: only constant zero padding is supported, not mode '{mode}'")
    rank = len(g.shape) + 1
    if opset < 11:
        pads, value, axes = list(a["pads"]), float(a.get("value", 0.0)), list(range(rank))
    else:
        pads = [int(v) for v in g.const(node.input[1], where)]
        value = float(g.const(node.input[2], where).reshape(-1)[0]) if len(node.input) > 2 and node.input[2] else 0.0
        axes = ([int(v) % rank for v in g.const(node.input[3], where)] if len(node.input) > 3 and node.input[3]
                else list(range(rank)))
    if value != 0.0:
        raise UnsupportedLayerError(f"{where}: padding with {value} is not supported (only zero); "
                                    "pad the input domain instead")
    full = [(0, 0)] * rank
    for i, ax in enumerate(axes):
        full[ax] = (int(pads[i]), int(pads[i + len(axes)]))
    if full[0] != (0, 0):
        raise UnsupportedLayerError(f"{where}: padding the batch dimension is not supported")
    g.add(PadOp(tuple(full[1:]), g.shape))


_RULES = {
    "Relu": _relu,
    "Identity": _identity,
    "Dropout": _identity,
    "Softmax": _softmax,
    "LogSoftmax": _softmax,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Gemm": _dense,
    "MatMul": _dense,
    "Add": _elementwise,
    "Sub": _elementwise,
    "Mul": _elementwise,
    "Div": _elementwise,
    "Conv": _conv,
    "BatchNormalization": _batch_norm,
    "AveragePool": _average_pool,
    "GlobalAveragePool": _average_pool,
    "MaxPool": _max_pool,
    "Pad": _pad,
}
SUPPORTED = tuple(_RULES) + ("Constant",)
