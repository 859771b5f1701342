"""The attention products of a static int8 ViT: which MatMuls they are, and 7-bit operands.

At 1,200 tokens (ViT-S/16 at 640x480) ``q.k^T`` and ``softmax.v`` are a third of the
backbone's arithmetic; in float they held over half of the int8 model's time. Static int8
quantises ``q.k^T`` by default (uint8 ``q``, int8 ``k``: the operand kinds of x86 integer
GEMMs) and keeps ``softmax.v`` float: 8 bits with one scale for every row step by
``max p / 255``, coarser than the ~1/1,200 probabilities of a diffuse head (``all`` quantises it
too, for a further ~10% of the time; measured on the demo model: AP unchanged, worst feature
error 3x).

The second operands (``k^T``, ``v``) are activations, and ``quantize_static`` reduces the range
of weights only; ``narrow_to_7_bits`` clips them to their calibrated range and quantises that
to [-64, 64], so a pair of uint8 x int8 products cannot saturate the 16-bit sums of AVX2-only
CPUs (``runtime.quantize``): the file gives the same result on every CPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from vit_perception.runtime.quantize import REDUCED_WEIGHT_MAX

# What static int8 quantises among the attention products: "scores" (q.k^T), "all" (and
# softmax.v), "float" (neither).
MODES = ("scores", "all", "float")


def attention_products(proto: Any, float_scopes: Sequence[str]) -> tuple[dict[str, str],
                                                                         dict[str, str]]:
    """The MatMuls of two activations outside ``float_scopes``: ``({q.k^T node: its k^T
    input}, {softmax.v node: its v input})``, told apart by the first's transposed operand."""
    inits = {i.name for i in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}
    scores: dict[str, str] = {}
    mixes: dict[str, str] = {}
    for n in proto.graph.node:
        if n.op_type != "MatMul" or any(s in n.name for s in float_scopes) \
                or n.input[1] in inits:
            continue
        up = producer.get(n.input[1])
        if up is not None and up.op_type == "Constant":
            continue
        if up is not None and up.op_type == "Transpose":
            scores[n.name] = n.input[1]
        else:
            mixes[n.name] = n.input[1]
    return scores, mixes


def split_by_mode(scores: dict[str, str], mixes: dict[str, str],
                  mode: str) -> tuple[dict[str, str], list[str]]:
    """(``{node: second operand}`` to quantise, nodes to keep float) for ``mode``."""
    if mode not in MODES:
        raise ValueError(f"int8 attention {mode!r} not in {list(MODES)}")
    quantised = {"scores": scores, "all": {**scores, **mixes}, "float": {}}[mode]
    return quantised, [n for n in (*scores, *mixes) if n not in quantised]


def narrow_to_7_bits(proto: Any, tensors: Iterable[str]) -> int:
    """Clip each of ``tensors`` (symmetric int8 activations) to its calibrated range and
    quantise that to [-64, 64] (scale x 127/64); returns how many. The scale initializer is
    the one the DequantizeLinear (or the integer GEMM made from it) reads, so it follows."""
    from onnx import helper, numpy_helper

    names = set(tensors)
    inits = {i.name: i for i in proto.graph.initializer}
    nodes = []
    count = 0
    for node in proto.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] in names:
            init = inits[node.input[1]]
            old = numpy_helper.to_array(init).astype(np.float32)
            bound = old * np.float32(127)
            init.CopyFrom(numpy_helper.from_array(
                (old * np.float32(127 / REDUCED_WEIGHT_MAX)).astype(np.float32), init.name))
            clipped = f"{node.input[0]}_clip7"
            proto.graph.initializer.extend([
                numpy_helper.from_array(-bound.reshape(()), f"{clipped}_min"),
                numpy_helper.from_array(bound.reshape(()), f"{clipped}_max")])
            nodes.append(helper.make_node("Clip", [node.input[0], f"{clipped}_min",
                                                   f"{clipped}_max"], [clipped],
                                          name=f"{node.name}_clip7"))
            node.input[0] = clipped
            count += 1
        nodes.append(node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return count
