"""ONNX Runtime's fused ``Attention`` in a static int8 model: calibrated input, ``QAttention``.

The fused ``com.microsoft::Attention`` (``onnx_runner.fuse_attention``) holds each block's
``qkv`` projection, a quarter of the block's weight arithmetic. ONNX Runtime's QDQ quantiser
knows no such op, so without help it stays float, and so does the ``proj`` GEMM after it (the
contrib op has no shape inference: its output has no type, so it is never calibrated and the
``proj`` MatMul gets int8 weights but float activations, which ONNX Runtime runs as a float GEMM
on dequantised weights). Here:

- ``declare_outputs`` gives every Attention output a float type, so it is calibrated;
- ``quantize_inputs`` (a context around ``quantize_static``) has the QDQ quantiser put a
  Quantize/Dequantize pair on each Attention's input, calibrated like every other activation;
- ``to_qattention`` then replaces each ``DequantizeLinear -> Attention`` by ``QAttention`` on
  the quantised input, with the qkv weights in int8 per column. The softmax and the two
  attention products stay float inside the kernel (8 bits would lose the small probabilities
  of a 1,200-token softmax).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np


def declare_outputs(proto: Any) -> int:
    """Add a float ``value_info`` ``[batch, tokens, hidden]`` for each Attention output that
    has none, and give each Attention a weight of its own (the last block shares its ``qkv``
    weight with ``cls_attention``'s MatMul, whose quantisation would otherwise take it);
    returns how many Attention nodes there are."""
    from onnx import TensorProto, helper, numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    known = {v.name for v in proto.graph.value_info}
    nodes = [n for n in proto.graph.node if n.op_type == "Attention"]
    for node in nodes:
        if node.input[1] not in inits:
            continue
        if sum(name == node.input[1] for n in proto.graph.node for name in n.input) > 1:
            own = numpy_helper.to_array(inits[node.input[1]])
            node.input[1] = f"{node.input[1]}_attention"
            proto.graph.initializer.append(numpy_helper.from_array(own, node.input[1]))
            inits[node.input[1]] = proto.graph.initializer[-1]
        if node.output[0] in known:
            continue
        hidden = int(numpy_helper.to_array(inits[node.input[1]]).shape[0])
        proto.graph.value_info.append(helper.make_tensor_value_info(
            node.output[0], TensorProto.FLOAT, ["batch", "tokens", hidden]))
    return len(nodes)


@contextlib.contextmanager
def quantize_inputs() -> Iterator[None]:
    """While open, ``quantize_static`` in QDQ format quantises the activation input (only) of
    every ``Attention`` it is asked to (``op_types_to_quantize`` containing ``Attention``)."""
    from onnxruntime.quantization import registry
    from onnxruntime.quantization.operators.qdq_base_operator import QDQOperatorBase

    class _AttentionInput(QDQOperatorBase):
        def quantize(self) -> None:
            self.quantizer.quantize_activation_tensor(self.node.input[0])

    before = registry.QDQRegistry.get("Attention")
    registry.QDQRegistry["Attention"] = _AttentionInput
    try:
        yield
    finally:
        if before is None:
            registry.QDQRegistry.pop("Attention", None)
        else:
            registry.QDQRegistry["Attention"] = before


def per_column_int8(weight: np.ndarray, qmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per column of ``weight [in, out]``: (values in ``[-qmax, qmax]``, scales
    ``[out]``)."""
    absmax = np.abs(weight).max(axis=0).astype(np.float32)
    scale = np.where(absmax > 0, absmax / qmax, 1.0).astype(np.float32)
    q = np.clip(np.rint(weight / scale), -qmax, qmax).astype(np.int8)
    return q, scale


def to_qattention(proto: Any, weight_max: int) -> int:
    """Replace each ``Attention`` fed by a ``DequantizeLinear`` with ``QAttention`` on that
    DequantizeLinear's quantised input (same scale and zero point); weights in int8 per column,
    at most ``weight_max`` in magnitude. Returns how many were replaced."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    producer = {o: n for n in graph.node for o in n.output}
    inits = {i.name: i for i in graph.initializer}
    replaced: dict[str, Any] = {}
    for node in graph.node:
        dq = producer.get(node.input[0]) if node.op_type == "Attention" else None
        if dq is None or dq.op_type != "DequantizeLinear" or node.input[1] not in inits:
            continue
        weight = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        q, scale = per_column_int8(weight, weight_max)
        base = node.input[1]
        graph.initializer.extend([
            numpy_helper.from_array(q, f"{base}_qattn_int8"),
            numpy_helper.from_array(scale, f"{base}_qattn_scale"),
            numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{base}_qattn_zero_point"),
        ])
        x_scale = dq.input[1]
        x_zero = dq.input[2] if len(dq.input) > 2 else ""
        mask = node.input[3] if len(node.input) > 3 else ""
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        replaced[node.name] = helper.make_node(
            "QAttention",
            [dq.input[0], f"{base}_qattn_int8", node.input[2], x_scale,
             f"{base}_qattn_scale", mask, x_zero, f"{base}_qattn_zero_point"],
            list(node.output), name=f"{node.name}_quant", domain="com.microsoft", **attrs)
    if not replaced:
        return 0
    kept = [replaced.get(n.name, n) for n in graph.node]
    outputs = {o.name for o in graph.output}
    while True:  # drop nodes (the DequantizeLinear) whose outputs nobody reads any more
        used = {i for n in kept for i in n.input} | outputs
        alive = [n for n in kept if any(o in used for o in n.output)]
        if len(alive) == len(kept):
            break
        kept = alive
    del graph.node[:]
    graph.node.extend(kept)
    used = {i for n in kept for i in n.input}
    unused = [i for i in graph.initializer if i.name not in used]
    for init in unused:  # the float qkv weights
        graph.initializer.remove(init)
    return len(replaced)
