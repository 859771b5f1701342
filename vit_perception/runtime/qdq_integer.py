"""QDQ MatMuls as ONNX Runtime's integer GEMM with a float output (``MatMulIntegerToFloat``).

ONNX Runtime's CPU optimiser turns ``DequantizeLinear -> MatMul -> QuantizeLinear`` into
``QLinearMatMul`` (int8 out: a requantisation, then another DequantizeLinear before the bias,
GELU or softmax that follows), and leaves ``DequantizeLinear -> MatMul`` with per-channel
weights and a float output as a float GEMM on dequantised weights. ``integer_matmuls`` writes
the form its dynamic quantisation runs: ``QuantizeLinear -> MatMulIntegerToFloat`` (uint8
activations, int8 or uint8 second operand, per-column scales allowed, the bias folded in), one
integer GEMM and one float output per MatMul. Integer products are exact, so the result is the
QDQ model's on every CPU (given operands that cannot saturate: ``runtime.quantize``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from vit_perception.runtime.onnx_graph import replace_nodes


def integer_matmuls(proto: Any) -> int:
    """Replace each MatMul whose two inputs come from ``DequantizeLinear`` (first operand uint8
    per tensor; second per tensor, or per column for a 2-D constant) by ``MatMulIntegerToFloat``
    on the quantised inputs; a following ``Add`` of a constant ``[N]`` bias is folded in.
    Returns how many MatMuls were replaced. Dequantize nodes left unread are dropped."""
    from onnx import TensorProto, helper

    graph = proto.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            consumers[i].append(n)
    inits = {i.name: i for i in graph.initializer}

    def shape(name: str) -> tuple[int, ...] | None:
        return tuple(inits[name].dims) if name in inits else None

    def dq_parts(name: str) -> tuple[str, str, str, int] | None:
        dq = producer.get(name)
        if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 3:
            return None
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        return dq.input[0], dq.input[1], dq.input[2], axis

    position = {o: i for i, n in enumerate(graph.node) for o in n.output}
    replaced: dict[int, Any] = {}  # by position: exported nodes have names, others may not
    dropped: set[int] = set()
    for index, node in enumerate(graph.node):
        if node.op_type != "MatMul":
            continue
        a, b = dq_parts(node.input[0]), dq_parts(node.input[1])
        if a is None or b is None:
            continue
        a_zero = inits.get(a[2])
        if a_zero is None or a_zero.data_type != TensorProto.UINT8 or shape(a[1]) not in ((), (1,)):
            continue  # x86 integer GEMMs take uint8 first operands, one scale per tensor
        b_scale = shape(b[1])
        if b_scale not in ((), (1,)):
            weight = shape(b[0])
            if weight is None or len(weight) != 2 or b[3] not in (1, -1) \
                    or b_scale != (weight[1],):
                continue  # per column of a constant [K, N] only
        out = node.output[0]
        inputs = [a[0], b[0], a[1], b[1], a[2], b[2]]
        users = consumers.get(out, [])
        weight = shape(b[0])
        if len(users) == 1 and users[0].op_type == "Add" and weight and len(weight) == 2:
            add = users[0]
            bias = next((i for i in add.input if i != out), "")
            if bias in inits and shape(bias) == weight[1:]:
                inputs.append(bias)
                out = add.output[0]
                dropped.add(position[add.output[0]])
        replaced[index] = helper.make_node(
            "MatMulIntegerToFloat", inputs, [out], name=f"{node.name}_integer",
            domain="com.microsoft")
    if not replaced:
        return 0
    # the DequantizeLinear nodes nobody reads any more go, then their initializers
    replace_nodes(proto, [replaced.get(i, n) for i, n in enumerate(graph.node)
                          if i not in dropped])
    used = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    return len(replaced)
