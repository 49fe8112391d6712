"""Read a sequential ONNX ReLU network (as VNN-COMP benchmarks ship them) into the normal-form ops."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .network import (
    ConvOp,
    DenseOp,
    ElementwiseOp,
    FlattenOp,
    ReshapeOp,
    UnsupportedLayerError,
)

SUPPORTED = ("Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Conv", "Relu", "Flatten", "Reshape", "Constant")


def _attrs(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def onnx_to_ops(path: str | Path) -> tuple[list[tuple[str, object]], tuple[int, ...]]:
    """Parse ``path`` into ``[("affine", op) | ("relu", None), ...]`` and the input shape (no batch)."""
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises several types for corrupt files
        raise ValueError(f"cannot read ONNX file {path}: {exc}") from exc
    graph = model.graph
    consts: dict[str, np.ndarray] = {
        init.name: numpy_helper.to_array(init).astype(np.float64) for init in graph.initializer
    }
    inputs = [i for i in graph.input if i.name not in consts]
    if len(inputs) != 1:
        raise UnsupportedLayerError(f"{path.name}: expected exactly one graph input, found {len(inputs)}")
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    if not dims or any(d <= 0 for d in dims[1:]):
        raise UnsupportedLayerError(f"{path.name}: input needs a static shape, got {dims}")
    input_shape = tuple(int(d) for d in dims[1:])
    current, shape = inputs[0].name, input_shape
    ops: list[tuple[str, object]] = []

    def const(name: str, where: str) -> np.ndarray:
        if name not in consts:
            raise UnsupportedLayerError(f"{where}: operand '{name}' must be a constant")
        return consts[name]

    for idx, node in enumerate(graph.node):
        where = f"ONNX op {node.op_type} (node {idx}{', ' + node.name if node.name else ''})"
        a = _attrs(node)
        if node.op_type == "Constant":
            consts[node.output[0]] = numpy_helper.to_array(a["value"]).astype(np.float64)
            continue
        if node.op_type not in SUPPORTED:
            raise UnsupportedLayerError(f"unsupported {where}; supported ops: {', '.join(SUPPORTED)}")
        if current not in node.input:
            # a computation on constants only (e.g. shape arithmetic) is not supported
            raise UnsupportedLayerError(f"{where} does not act on the network's data path")
        f64 = torch.float64
        if node.op_type == "Relu":
            ops.append(("relu", None))
        elif node.op_type == "Flatten":
            if a.get("axis", 1) != 1:
                raise UnsupportedLayerError(f"{where}: only axis=1 is supported")
            op = FlattenOp(shape)
            ops.append(("affine", op))
            shape = op.out_shape
        elif node.op_type == "Reshape":
            target = [int(v) for v in const(node.input[1], where)]
            target = target[1:] if len(target) == len(shape) + 1 or target[0] in (1, -1) else target
            n = math.prod(shape)
            if -1 in target:
                known = math.prod(t for t in target if t != -1)
                target = [n // known if t == -1 else t for t in target]
            target = [shape[i] if t == 0 else t for i, t in enumerate(target)]
            op = ReshapeOp(shape, tuple(target))
            ops.append(("affine", op))
            shape = op.out_shape
        elif node.op_type in ("Gemm", "MatMul"):
            if len(shape) != 1:
                raise UnsupportedLayerError(f"{where}: input must be flat, got shape {shape}")
            if node.input[0] != current:
                raise UnsupportedLayerError(f"{where}: the data must be the first operand")
            w = const(node.input[1], where)
            if node.op_type == "Gemm":
                if a.get("transA", 0):
                    raise UnsupportedLayerError(f"{where}: transA=1 is not supported")
                w = w.T if a.get("transB", 0) else w  # now (in, out)
                w = a.get("alpha", 1.0) * w
                b = a.get("beta", 1.0) * const(node.input[2], where) if len(node.input) > 2 else 0.0
            else:
                b = 0.0
            if w.ndim != 2 or w.shape[0] != shape[0]:
                raise ValueError(f"{where}: weight of shape {w.shape} does not fit input {shape}")
            b = np.broadcast_to(np.asarray(b, dtype=np.float64), (w.shape[1],))
            op = DenseOp(torch.tensor(w.T.copy(), dtype=f64), torch.tensor(b.copy(), dtype=f64))
            ops.append(("affine", op))
            shape = op.out_shape
        elif node.op_type in ("Add", "Sub", "Mul", "Div"):
            other = node.input[1] if node.input[0] == current else node.input[0]
            c = const(other, where)
            c = np.broadcast_to(c, (1,) + tuple(shape)).reshape(shape) if c.size > 1 else np.full(shape, float(c.reshape(-1)[0]))
            first = node.input[0] == current
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
            op = ElementwiseOp(torch.tensor(scale, dtype=f64), torch.tensor(shift, dtype=f64), tuple(shape))
            ops.append(("affine", op))
        elif node.op_type == "Conv":
            if len(shape) != 3:
                raise UnsupportedLayerError(f"{where}: input must be (C, H, W), got {shape}")
            if a.get("group", 1) != 1 or any(d != 1 for d in a.get("dilations", [1, 1])):
                raise UnsupportedLayerError(f"{where}: only group=1 and dilation=1 are supported")
            if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                raise UnsupportedLayerError(f"{where}: auto_pad is not supported")
            w = const(node.input[1], where)
            b = const(node.input[2], where) if len(node.input) > 2 else np.zeros(w.shape[0])
            pads = list(a.get("pads", [0, 0, 0, 0]))
            if pads[0] != pads[2] or pads[1] != pads[3]:
                raise UnsupportedLayerError(f"{where}: asymmetric padding {pads} is not supported")
            op = ConvOp(
                torch.tensor(w, dtype=f64),
                torch.tensor(b, dtype=f64),
                tuple(int(s) for s in a.get("strides", [1, 1])),
                (int(pads[0]), int(pads[1])),
                tuple(shape),
            )
            ops.append(("affine", op))
            shape = op.out_shape
        current = node.output[0]
    outputs = [o.name for o in graph.output]
    if outputs != [current]:
        raise UnsupportedLayerError(f"{path.name}: the graph output {outputs} is not the end of one data path")
    return ops, input_shape
