"""Graph surgery shared by the ONNX rewrites (attention fusion, integer GEMMs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def replace_nodes(proto: Any, kept: Sequence[Any]) -> None:
    """Make ``kept`` the graph's nodes, minus every node whose outputs nobody reads any more
    (repeated until none is left), and declare the ``com.microsoft`` opset the rewrites use."""
    from onnx import helper

    graph = proto.graph
    outputs = {o.name for o in graph.output}
    kept = list(kept)
    while True:
        used = {i for n in kept for i in n.input} | outputs
        alive = [n for n in kept if any(o in used for o in n.output)]
        if len(alive) == len(kept):
            break
        kept = alive
    del graph.node[:]
    graph.node.extend(kept)
    if not any(o.domain == "com.microsoft" for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
