"""ONNX Runtime backend: CPU execution provider, CUDA / TensorRT providers where installed."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vit_perception.runtime.base import Runner, RunnerError
from vit_perception.runtime.onnx_graph import replace_nodes
from vit_perception.runtime.threads import default_threads
from vit_perception.runtime.threads import physical_cores as physical_cores  # where bench looks

log = logging.getLogger(__name__)

# Provider names by short alias, in preference order for device "cuda".
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def session_options(intra_op_threads: int | None = None, allow_spinning: bool = False) -> Any:
    """Session options tuned for CPU inference: all graph optimisations, ``intra_op_threads``
    threads (default ``threads.default_threads()``: a core left to the camera driver).

    Spinning is off by default: ORT's idle workers otherwise busy-wait after every run and take
    the cores from the torch pre/post-processing that follows (measured: preprocess 10x slower).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = intra_op_threads or default_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return opts


_ATTN_OUT = re.compile(r"^(?P<prefix>.*/attn)/Reshape_1$")


def fuse_attention(proto: Any) -> int:
    """Replace each ViT block's exported attention (``qkv`` MatMul+Add, reshape/split, q.k^T,
    softmax, .v, reshape) by ONNX Runtime's fused ``com.microsoft::Attention``; returns how many.

    For the ONNX Runtime CPU path only: the deployable file stays plain ONNX (TensorRT cannot run
    contrib ops). Blocks that do not match the expected pattern are left as they are.
    """
    from onnx import helper, numpy_helper

    graph = proto.graph
    producer = {o: n for n in graph.node for o in n.output}
    inits = {i.name: i for i in graph.initializer}

    def const(name: str) -> np.ndarray | None:
        if name in inits:
            return numpy_helper.to_array(inits[name])
        node = producer.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute:
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    fused = 0
    new_nodes = []
    for node in graph.node:
        m = _ATTN_OUT.match(node.name) if node.op_type == "Reshape" else None
        if not m:
            continue
        pre = m.group("prefix")
        found = _qkv_of(node, pre, producer)
        if found is None:
            continue
        mm, add, split, scope = found
        weight = const(mm.input[1])
        bias_name = next((i for i in add.input if i != mm.output[0]), "")
        bias = const(bias_name)
        if weight is None or bias is None or weight.ndim != 2 or mm.output[0] not in add.input:
            continue
        if split.input[0] != add.output[0]:
            continue
        dims = _shape_dims(split.input[1], const, producer)
        hidden = weight.shape[1] // 3
        if len(dims) < 2 or dims[-1] * dims[-2] != hidden:
            continue
        scales = [v for n in scope if n.op_type == "Mul" for v in map(const, n.input)
                  if v is not None and v.size == 1]
        if len(scales) != 1:  # expect exactly the q * head_dim**-0.5 of the exported pattern
            continue
        new_nodes.append((node, helper.make_node(
            "Attention", [mm.input[0], mm.input[1], bias_name], [node.output[0]],
            name=f"{pre}/FusedAttention", domain="com.microsoft", num_heads=dims[-2],
            scale=float(np.asarray(scales[0]).reshape(-1)[0]))))
        fused += 1
    if not fused:
        return 0
    replaced = {old.name: new for old, new in new_nodes}
    replace_nodes(proto, [replaced.get(n.name, n) for n in graph.node])
    return fused


def _qkv_of(out: Any, prefix: str, producer: dict) -> tuple[Any, Any, Any, list] | None:
    """(qkv MatMul, its bias Add, the Reshape splitting heads, all ancestors in scope) among
    ``out``'s ancestors inside ``prefix`` (the attention module's scope), or None.

    The qkv MatMul/Add may sit outside the scope: the exporter's common-subexpression pass
    merges the last block's ``qkv`` with the one ``ViTBackbone.cls_attention`` computes first,
    and the merged nodes keep that caller's name (``/model/backbone/qkv/MatMul``)."""
    seen, stack, scope = set(), [out], []
    mm = add = split = None
    while stack:
        node = stack.pop()
        for name in node.input:
            up = producer.get(name)
            if up is None or up.name in seen:
                continue
            if up.op_type == "MatMul" and re.search(r"/qkv(_\d+)?/MatMul$", up.name):
                mm = mm or up
            elif up.op_type == "Add" and re.search(r"/qkv(_\d+)?/Add$", up.name):
                add = add or up
            elif not up.name.startswith(prefix + "/"):
                continue
            seen.add(up.name)
            stack.append(up)
            scope.append(up)
    if mm is None or add is None:
        return None
    for node in producer.values():
        if node.op_type == "Reshape" and node.input and node.input[0] == add.output[0]:
            split = node
    return (mm, add, split, scope) if split is not None else None


def _shape_dims(name: str, const: Any, producer: dict) -> list[int]:
    """The known trailing dims of a Reshape's shape input (a constant, or a Concat of pieces)."""
    value = const(name)
    if value is not None:
        return [int(v) for v in np.asarray(value).reshape(-1)]
    node = producer.get(name)
    if node is None or node.op_type != "Concat":
        return []
    pieces = [const(i) for i in node.input]
    return [int(np.asarray(p).reshape(-1)[0]) for p in pieces if p is not None and p.size == 1]


def _variant_path(path: Path, data: bytes, tag: str) -> Path:
    """``<stem>.<hash of data>.<tag>.onnx`` next to ``path`` (in the temporary directory where
    that directory is read-only): a derived file is rebuilt exactly when its source changes."""
    import tempfile

    cached = path.with_name(f"{path.stem}.{hashlib.sha256(data).hexdigest()[:16]}.{tag}.onnx")
    if not os.access(cached.parent, os.W_OK):
        cached = Path(tempfile.gettempdir()) / cached.name
    return cached


def ort_cpu_model(path: Path) -> Path:
    """The ONNX Runtime CPU variant of ``path`` (attention fused into contrib ops), cached as
    ``<name>.<hash>.ort-cpu2.onnx`` (``_variant_path``; "2": the fusion that also takes the last
    block, so copies made before it are not reused); ``path`` itself when nothing fuses."""
    import onnx

    data = path.read_bytes()
    cached = _variant_path(path, data, "ort-cpu2")
    if cached.is_file():
        return cached
    proto = onnx.load_from_string(data)
    if not fuse_attention(proto):
        return path
    tmp = cached.with_name(f"{cached.name}.tmp{os.getpid()}")
    tmp.write_bytes(proto.SerializeToString())
    os.replace(tmp, cached)
    return cached


class OnnxRunner(Runner):
    """Run an ONNX file in ONNX Runtime.

    ``device``: ``cpu`` or ``cuda``; ``providers`` overrides the provider list (aliases from
    ``PROVIDERS`` or full names). On CUDA, inputs and outputs stay on the GPU through IOBinding
    (``io_binding=True``, the default there); on CPU outputs are wrapped without a copy.
    ``fuse_attention`` (default: on for CPU-only providers) runs a copy of the file with the ViT
    attention fused into ONNX Runtime's ``Attention`` op (``ort_cpu_model``). ``threads`` (or
    its older name ``intra_op_threads``): intra-op threads, default ``default_threads()`` (all
    physical cores but one); idle workers do not spin (``allow_spinning``). ``precision``
    ``int8`` (CPU only) runs the calibrated static copy ``<stem>.int8.onnx`` made from this file
    by ``export --int8-calibrate`` (``calibration.static_int8_for``) when there is one, else a
    dynamic copy with int8 weights (``quantize.ort_int8_model``; 7-bit weights unless the CPU
    has VNNI/AMX, ``int8_reduce_range`` overrides); ``int8_calibrated`` True/False insists on
    one of the two; ``int8_kind`` says which ran. The file itself is never changed.
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        device: str | torch.device = "cpu",
        providers: Sequence[str] | None = None,
        io_binding: bool | None = None,
        intra_op_threads: int | None = None,
        provider_options: dict[str, dict[str, Any]] | None = None,
        allow_spinning: bool = False,
        fuse_attention: bool | None = None,
        precision: str = "fp32",
        int8_reduce_range: bool | None = None,
        threads: int | None = None,
        int8_calibrated: bool | None = None,
    ) -> None:
        super().__init__()
        if precision not in ("fp32", "int8"):
            raise RunnerError(f"onnxruntime: precision {precision!r} not in ['fp32', 'int8'] "
                              "(the exported graph is fp32; use tensorrt or torch for fp16/bf16)")
        self.precision = precision
        self.int8_reduce_range = int8_reduce_range
        self.int8_calibrated = int8_calibrated
        self.path = Path(path)
        if not self.path.is_file():
            raise RunnerError(f"onnxruntime: model file not found: {self.path}")
        self._device = torch.device(device)
        self._providers = [PROVIDERS.get(p, p) for p in providers] if providers else None
        self.io_binding = self._device.type == "cuda" if io_binding is None else io_binding
        if threads is not None and int(threads) < 0:
            raise RunnerError(f"onnxruntime: threads must be 0 (default) or more, not {threads}")
        self.intra_op_threads = int(threads or intra_op_threads or 0) or default_threads()
        self.provider_options = provider_options or {}
        self.allow_spinning = allow_spinning
        self.fuse_attention = fuse_attention
        self.session: Any = None
        self.model_file: Path | None = None  # the file the session runs (a derived copy or path)
        self.int8_kind = ""  # precision int8: "static, calibrated on ..." or "dynamic, ..."
        self._fixed_batch: int | None = None

    @property
    def device(self) -> torch.device:
        return self._device

    def providers(self) -> list[str]:
        import onnxruntime as ort

        available = ort.get_available_providers()
        if self._providers is not None:
            wanted = self._providers
        elif self._device.type == "cuda":
            wanted = [PROVIDERS["tensorrt"], PROVIDERS["cuda"], PROVIDERS["cpu"]]
        else:
            wanted = [PROVIDERS["cpu"]]
        chosen = [p for p in wanted if p in available]
        if self._device.type == "cuda" and PROVIDERS["cuda"] not in chosen:
            raise RunnerError(
                f"onnxruntime: device 'cuda' needs CUDAExecutionProvider; available: {available}"
                " (install onnxruntime-gpu)"
            )
        if not chosen:
            raise RunnerError(f"onnxruntime: none of {wanted} available; have {available}")
        return chosen

    def _activate(self) -> None:
        import onnxruntime as ort

        providers = self.providers()
        opts = [self.provider_options.get(p, {}) for p in providers]
        fuse = self.fuse_attention
        if fuse is None:
            fuse = providers == [PROVIDERS["cpu"]]
        if self.precision == "int8" and providers != [PROVIDERS["cpu"]]:
            raise RunnerError("onnxruntime: int8 runs on the CPU provider only")
        try:
            model = self._int8_model(fuse) if self.precision == "int8" else (
                ort_cpu_model(self.path) if fuse else self.path)
            self.model_file = Path(model)
            self.session = ort.InferenceSession(
                str(model), session_options(self.intra_op_threads, self.allow_spinning),
                providers=providers, provider_options=opts,
            )
        except RunnerError:
            raise
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise RunnerError(f"onnxruntime: cannot load {self.path}: {exc}") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        first = self.session.get_inputs()[0].shape
        self._fixed_batch = first[0] if first and isinstance(first[0], int) else None

    def _int8_model(self, fuse: bool) -> Path:
        """The static (calibrated, ``calibration.static_int8_for``) copy of the file when there
        is one, else the dynamic copy (``quantize.ort_int8_model``); ``int8_kind`` says which."""
        from vit_perception.runtime.calibration import int8_info, static_int8_for
        from vit_perception.runtime.quantize import ort_int8_model

        static = static_int8_for(self.path) if self.int8_calibrated is not False else None
        if static is None and self.int8_calibrated:
            raise RunnerError(f"onnxruntime: no calibrated int8 copy of {self.path} (make one "
                              "with `vit-perception export --int8-calibrate BAG`)")
        if static is not None:
            info = int8_info(static) or {}
            self.int8_kind = (f"static, calibrated with {info.get('method')} on "
                              f"{info.get('frames')} frames of {', '.join(info.get('bags', []))}")
            model = static
        else:
            model = ort_int8_model(ort_cpu_model(self.path) if fuse else self.path, self.path,
                                   self.int8_reduce_range)
            self.int8_kind = f"dynamic, {'7' if '-r7.' in model.name else '8'}-bit weights"
        log.info("onnxruntime int8 (%s): %s", self.int8_kind, model)
        return model

    def _deactivate(self) -> None:
        self.session = None

    def _infer(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        batch = inputs[self.input_names[0]].shape[0]
        if batch > 1 and self._fixed_batch == 1:  # exported for one image: run them in turn
            parts = [self._infer_one({n: inputs[n][i : i + 1] for n in self.input_names})
                     for i in range(batch)]
            return {n: torch.cat([p[n] for p in parts]) for n in self.output_names}
        return self._infer_one(inputs)

    def _infer_one(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.io_binding:
            return self._infer_bound(inputs)
        feed = {n: inputs[n].detach().float().cpu().contiguous().numpy() for n in self.input_names}
        outs = self.session.run(self.output_names, feed)
        return {n: torch.from_numpy(np.asarray(o)) for n, o in zip(self.output_names, outs)}

    def _infer_bound(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Bind torch tensors as ORT buffers: no host round trip when the device is CUDA."""
        binding = self.session.io_binding()
        dev = self._device
        index = (dev.index or 0) if dev.type == "cuda" else 0
        kept = [inputs[n].detach().to(dev, torch.float32).contiguous() for n in self.input_names]
        for n, t in zip(self.input_names, kept):
            binding.bind_input(n, dev.type, index, np.float32, list(t.shape), t.data_ptr())
        batch = kept[0].shape[0]
        out: dict[str, torch.Tensor] = {}
        for meta in self.session.get_outputs():
            shape = [d if isinstance(d, int) else None for d in meta.shape]
            if shape and shape[0] is None:
                shape[0] = batch
            if any(d is None for d in shape):  # unknown size: let ORT allocate, copy afterwards
                binding.bind_output(meta.name, dev.type, index)
                continue
            dims = [int(d) for d in shape if d is not None]
            t = torch.empty(dims, dtype=_TORCH_DTYPES.get(meta.type, torch.float32), device=dev)
            out[meta.name] = t
            binding.bind_output(
                meta.name, dev.type, index, _NUMPY_DTYPES[t.dtype], dims, t.data_ptr()
            )
        if dev.type == "cuda":
            torch.cuda.current_stream(dev).synchronize()
        self.session.run_with_iobinding(binding)
        for n, value in zip(self.output_names, binding.get_outputs()):
            if n not in out:
                out[n] = torch.from_numpy(value.numpy()).to(dev)
        return {n: out[n] for n in self.output_names}


_TORCH_DTYPES = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16}
_NUMPY_DTYPES = {torch.float32: np.float32, torch.float16: np.float16}
