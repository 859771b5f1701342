"""TorchRunner: half-precision paths agree with fp32, the CUDA-graph path is guarded and its
per-shape cache works (its logic is checked on the CPU with a stand-in graph object)."""

from __future__ import annotations

import warnings

import pytest
import torch
from scipy.optimize import linear_sum_assignment

from vit_perception.runtime.base import RunnerError
from vit_perception.runtime.graph_cache import GraphCache, graph_key
from vit_perception.runtime.loading import load_torch_model
from vit_perception.runtime.torch_runner import TorchRunner, _Captured, default_cast

W, H = 96, 64  # vit_tiny_detr: 6 x 4 cells, fewer than its 30 queries

# Tolerances for "the same detections": a box coordinate (normalised to the input) may move by
# one rounding step of the dtype at 1.0 (bf16: 2^-8 = 0.4 px at 96 px; fp16: 2^-10), and a
# class probability by 0.01 (a random-weight head gives probabilities near 1/(K+1), so this is
# a few percent of a score; measured: bf16 0.004, fp16 0.002, boxes 0.0016 / 0.0002).
BOX_TOL = {"bf16": 2.0 ** -8, "fp16": 2.0 ** -10}
PROB_TOL = 0.01


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One thread: two contended threads on a shared 2-core machine run many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net, _post, _cfg = load_torch_model("vit_tiny_detr", (W, H))
    return net


def _match_errors(ref: dict, out: dict) -> tuple[float, float]:
    """Largest box and probability differences after pairing each fp32 query with one query of
    ``out`` (query order may differ: the two-stage top-k ranks near-equal scores differently).
    The grid has fewer cells than queries, so every cell is selected in both: a near-tie
    ranked differently cannot change which proposals are decoded."""
    box_err = prob_err = 0.0
    for b in range(ref["pred_boxes"].shape[0]):
        pa, pb = ref["pred_logits"][b].softmax(-1), out["pred_logits"][b].float().softmax(-1)
        ba, bb = ref["pred_boxes"][b], out["pred_boxes"][b].float()
        cost = torch.cdist(torch.cat([ba, pa], -1), torch.cat([bb, pb], -1), p=1)
        rows, cols = linear_sum_assignment(cost.numpy())
        box_err = max(box_err, float((ba[rows] - bb[cols]).abs().max()))
        prob_err = max(prob_err, float((pa[rows] - pb[cols]).abs().max()))
    return box_err, prob_err


@pytest.mark.parametrize("precision,cast", [("bf16", "half"), ("fp16", "half"),
                                            ("bf16", "autocast"), ("fp16", "autocast")])
def test_half_precision_matches_fp32(tiny, precision, cast):
    x = torch.randn(2, 3, H, W, generator=torch.Generator().manual_seed(0))
    ref = {k: v.clone() for k, v in TorchRunner(tiny).infer({"images": x}).items()}
    runner = TorchRunner(tiny, precision=precision, cast=cast)
    try:
        out = runner.infer({"images": x})
    finally:
        tiny.float()  # cast="half" converts the module in place
    if cast == "half":
        assert runner.input_dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        assert out["pred_boxes"].dtype == runner.input_dtype  # the whole model followed
    box_err, prob_err = _match_errors(ref, out)
    assert box_err <= BOX_TOL[precision], box_err
    assert prob_err <= PROB_TOL, prob_err
    rel = (out["features"].float() - ref["features"]).abs().max() / ref["features"].abs().max()
    assert rel < 0.03


def test_swin_follows_half_weights():
    """torchvision's Swin (relative position tables, shift masks) in bf16 end to end."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net, _post, _cfg = load_torch_model("swin_t_detr", (W, H))
    x = torch.randn(1, 3, H, W, generator=torch.Generator().manual_seed(1))
    ref = {k: v.clone() for k, v in TorchRunner(net).infer({"images": x}).items()}
    out = TorchRunner(net, precision="bf16", cast="half").infer({"images": x})
    assert out["pred_logits"].dtype == torch.bfloat16
    box_err, prob_err = _match_errors(ref, out)
    assert box_err <= BOX_TOL["bf16"] and prob_err <= PROB_TOL


def test_cuda_graphs_guarded_on_cpu(tiny):
    assert TorchRunner(tiny).cuda_graphs is False  # None: off on the CPU
    with pytest.raises(RunnerError, match="CUDA graphs need a CUDA device"):
        TorchRunner(tiny, cuda_graphs=True)
    assert default_cast("fp16", torch.device("cuda")) == "half"
    assert default_cast("bf16", torch.device("cuda")) == "autocast"
    assert default_cast("fp16", torch.device("cpu")) == "autocast"
    with pytest.raises(RunnerError, match="cast"):
        TorchRunner(tiny, cast="float8")


def test_graph_cache_keys_and_evicts():
    evicted: list[str] = []
    cache: GraphCache[str] = GraphCache(max_size=2, on_evict=evicted.append)
    k1 = graph_key(torch.zeros(1, 3, 48, 64))
    k8 = graph_key(torch.zeros(8, 3, 48, 64))
    kh = graph_key(torch.zeros(1, 3, 48, 64, dtype=torch.float16))
    assert k1 == (1, 3, 48, 64, "float32") and len({k1, k8, kh}) == 3
    assert cache.put(k1, "b1") == [] and cache.put(k8, "b8") == []
    assert cache.get(k1) == "b1"  # k1 is now the most recently used
    assert cache.put(kh, "half") == [k8] and evicted == ["b8"]
    assert cache.keys() == [k1, kh] and k8 not in cache and cache.get(k8) is None
    cache.clear()
    assert len(cache) == 0 and sorted(evicted) == ["b1", "b8", "half"]
    with pytest.raises(ValueError, match="at least 1"):
        GraphCache(max_size=0)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        graph_key(torch.zeros(3, 48, 64))


class _ReplayEager:
    """Stands in for ``torch.cuda.CUDAGraph``: replay reruns the model on the static input."""

    def __init__(self, runner: TorchRunner, entry: _Captured) -> None:
        self.runner, self.entry, self.replays, self.was_reset = runner, entry, 0, False

    def replay(self) -> None:
        self.replays += 1
        for k, v in self.runner._run(self.entry.static_in).items():
            self.entry.static_out[k].copy_(v)

    def reset(self) -> None:
        self.was_reset = True


def test_graph_path_captures_once_per_shape(tiny, monkeypatch):
    runner = TorchRunner(tiny, graph_cache_size=2)
    runner.cuda_graphs = True  # the CUDA branch of _infer, with captures replaced (no GPU here)
    captured: list[_Captured] = []

    def capture(images: torch.Tensor) -> _Captured:
        entry = _Captured(None, images.clone(), {})  # type: ignore[arg-type]
        entry.graph = _ReplayEager(runner, entry)  # type: ignore[assignment]
        entry.static_out = {k: v.clone() for k, v in runner._run(entry.static_in).items()}
        captured.append(entry)
        return entry

    monkeypatch.setattr(runner, "_capture", capture)
    gen = torch.Generator().manual_seed(2)
    one, two = torch.randn(1, 3, H, W, generator=gen), torch.randn(1, 3, H, W, generator=gen)
    eager = TorchRunner(tiny)
    a = runner.infer({"images": one})
    b = runner.infer({"images": two})  # same shape: replayed with the new input copied in
    assert len(captured) == 1 and captured[0].graph.replays == 2
    torch.testing.assert_close(b["pred_boxes"], eager.infer({"images": two})["pred_boxes"])
    assert not torch.equal(a["pred_boxes"], b["pred_boxes"])  # a was cloned out, not aliased
    runner.infer({"images": torch.randn(4, 3, H, W)})  # a new batch size: a second capture
    runner.infer({"images": torch.randn(2, 3, H, W)})  # a third: the oldest (batch 1) goes
    assert len(captured) == 3 and runner.graphs.captures == 3
    assert captured[0].graph.was_reset and [k[0] for k in runner.graphs.keys()] == [4, 2]
    runner.deactivate()
    assert len(runner.graphs) == 0 and all(c.graph.was_reset for c in captured)


def test_graphs_keep_the_cached_tables_they_read(tiny):
    """A real capture keeps a reference to every cached constant (sine grid, anchors): the
    model's tables for this input are among them."""
    from vit_perception.runtime.torch_runner import cached_constants

    TorchRunner(tiny).infer({"images": torch.zeros(1, 3, H, W)})
    shapes = {tuple(t.shape) for t in cached_constants()}
    grid = (H // 16, W // 16)
    assert (1, tiny.head.position.num_pos_feats * 2, *grid) in shapes  # the sine grid
    assert (1, grid[0] * grid[1], 4) in shapes  # the two-stage anchors


def test_compiled_model_on_the_cpu_matches_eager(tiny, tmp_path, monkeypatch):
    """``compile=True`` on the CPU (inductor's C++ kernels) gives eager's detections and
    features (the compiled code goes to a fresh cache, so this test compiles)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    x = torch.randn(1, 3, H, W, generator=torch.Generator().manual_seed(2))
    ref = {k: v.clone() for k, v in TorchRunner(tiny).infer({"images": x}).items()}
    runner = TorchRunner(tiny, compile=True, cache_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = runner.infer({"images": x})
    box_err, prob_err = _match_errors(ref, out)
    assert box_err < 1e-4 and prob_err < 1e-4, (box_err, prob_err)
    assert torch.allclose(out["features"], ref["features"], atol=1e-4, rtol=1e-4)
    assert any((tmp_path / "inductor").iterdir())


def test_compile_cache_dir(tmp_path, monkeypatch):
    from vit_perception.runtime.torch_runner import inductor_cache_dir

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert inductor_cache_dir(tmp_path) == tmp_path / "inductor"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert inductor_cache_dir(tmp_path) == tmp_path / "elsewhere"


def test_command_switches_reach_the_runner(capsys):
    import argparse

    from vit_perception.cli import main
    from vit_perception.runtime.runner_options import (
        add_torch_runner_arguments,
        torch_runner_options,
    )

    parser = argparse.ArgumentParser()
    add_torch_runner_arguments(parser, with_cast=True)
    assert torch_runner_options(parser.parse_args([])) == {}
    args = parser.parse_args(["--no-cuda-graphs", "--compile", "--cast", "half"])
    assert torch_runner_options(args) == {"cuda_graphs": False, "compile": True, "cast": "half"}
    assert torch_runner_options(args, backend="onnxruntime") == {}
    common = ["bench", "--config", "vit_tiny_detr", "--size", "64x48", "--iters", "2",
              "--warmup", "0", "--backend", "torch", "--threads", "1"]
    assert main(common + ["--no-cuda-graphs"]) == 0
    assert "torch " in capsys.readouterr().out  # label without +graphs on the CPU
    assert main(common + ["--cuda-graphs"]) == 1  # the only backend cannot run: said why
    assert "CUDA graphs need a CUDA device" in capsys.readouterr().err


def test_threads_option(tiny):
    before = torch.get_num_threads()
    try:
        with TorchRunner(tiny, threads=1):
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert TorchRunner(tiny, threads=0).threads == 0
    with pytest.raises(RunnerError, match="threads"):
        TorchRunner(tiny, threads=-1)


def test_predictor_warmup_captures_each_batch_size(monkeypatch):
    """``Predictor.warmup`` runs every batch size once: on CUDA that is one capture each."""
    from vit_perception.runtime.predictor import Predictor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = Predictor.load("vit_tiny_detr", input_size=(W, H))
    seen: list[int] = []
    infer = pred.runner.infer
    monkeypatch.setattr(pred.runner, "infer", lambda x: seen.append(len(x["images"])) or infer(x))
    pred.warmup((1, 3), frame_size=(64, 48))
    assert seen == [1, 3]
    pred.close()
