"""int8 in ONNX Runtime: dynamic (weights only) on every x86 CPU kind, static (calibrated)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from vit_perception.runtime.base import RunnerError
from vit_perception.runtime.loading import load_torch_model
from vit_perception.runtime.metadata import ModelMetadata, state_dict_hash
from vit_perception.runtime.onnx_export import export_onnx
from vit_perception.runtime.onnx_runner import OnnxRunner, ort_cpu_model
from vit_perception.runtime.quantize import (
    REDUCED_WEIGHT_MAX,
    int8_needs_reduced_range,
    int8_variant_tag,
    ort_int8_model,
)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The tiny model exported at 160x128 (calibration time grows with the input)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net, _post, cfg = load_torch_model("vit_tiny_detr", (160, 128))
    meta = ModelMetadata.from_config(cfg, state_dict_hash(net))
    return export_onnx(net, tmp_path_factory.mktemp("small") / "small.onnx", meta.input_size,
                       metadata=meta), meta


def _int8_weights(path) -> list[np.ndarray]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return [numpy_helper.to_array(i) for i in model.graph.initializer
            if i.data_type == onnx.TensorProto.INT8]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / a.norm())


def test_int8_weight_range_follows_the_cpu():
    """Full 8-bit weights only where u8 x s8 products are summed in 32 bits (VNNI, AMX)."""
    assert int8_needs_reduced_range({"sse4_2", "avx", "avx2", "fma"}, "x86_64")  # EPYC Rome
    assert int8_needs_reduced_range({"avx2", "avx512f", "avx512bw"}, "x86_64")  # Skylake-SP
    assert int8_needs_reduced_range(set(), "x86_64")  # unreadable flags: the safe choice
    assert int8_needs_reduced_range({"asimd", "asimddp"}, "aarch64")
    for wide in ({"avx2", "avx512bw", "avx512_vnni"}, {"avx2", "avx_vnni"}, {"amx_int8"}):
        assert not int8_needs_reduced_range(wide, "x86_64"), wide
    assert int8_variant_tag(True) != int8_variant_tag(False)


@pytest.mark.parametrize("reduce_range", [True, False], ids=["7bit-avx2", "8bit-vnni"])
def test_onnxruntime_int8_weights_are_quantised_cached_and_close(small, reduce_range):
    """precision int8, both weight ranges: a cached copy (one per range, so a copy made on one
    CPU kind is not reused on another) whose MatMul/Attention weights are int8; the backbone
    features stay within a few percent of fp32; the exported file is untouched.

    The 7-bit copy is what an AVX2-only CPU runs: its weights are at most 64 in magnitude, so a
    pair of u8 x s8 products (2 * 255 * 64 = 32640) cannot saturate the 16-bit sums of the
    AVX2 kernel, and integer products are exact: the error measured here is the error there.
    The 8-bit copy saturates on AVX2 (measured 0.100 on features there); it runs only on
    VNNI/AMX CPUs, so its accuracy is checked only on one.
    """
    import onnx

    path, meta = small
    before = path.read_bytes()
    q = ort_int8_model(ort_cpu_model(path), path, reduce_range=reduce_range)
    assert q.name.endswith(f".{int8_variant_tag(reduce_range)}.onnx")
    assert path.read_bytes() == before
    assert ort_int8_model(ort_cpu_model(path), path, reduce_range=reduce_range) == q  # cached
    ops = {n.op_type for n in onnx.load(str(q)).graph.node}
    assert {"DynamicQuantizeMatMul", "MatMulInteger", "QAttention"} & ops, sorted(ops)
    weights = _int8_weights(q)
    largest = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
    if reduce_range:
        assert largest <= REDUCED_WEIGHT_MAX and 2 * 255 * largest <= 32767
    else:
        assert largest > REDUCED_WEIGHT_MAX  # really the full range
    w, h = meta.input_size
    x = {"images": torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(5))}
    with OnnxRunner(path) as fp32, OnnxRunner(path, precision="int8",
                                              int8_reduce_range=reduce_range) as int8:
        assert int8.model_file == q
        a, b = fp32.infer(x), int8.infer(x)
    if not reduce_range and int8_needs_reduced_range():
        pytest.skip("full-range int8 runs only on VNNI/AMX CPUs; this one saturates it")
    for name in ("features", "embedding"):
        rel = _rel(a[name], b[name])
        # measured 0.009-0.011 (features) and 0.020-0.027 (embedding) on both ranges
        assert 0 < rel < 0.05, (name, rel)  # quantised (not identical), yet close


def test_onnxruntime_int8_default_takes_this_cpus_range(small):
    path, _meta = small
    with OnnxRunner(path, precision="int8") as runner:
        assert runner.model_file is not None
        assert runner.model_file.name.endswith(
            f".{int8_variant_tag(int8_needs_reduced_range())}.onnx")
    with pytest.raises(RunnerError, match="precision"):
        OnnxRunner(path, precision="fp16")


# --- static int8, calibrated on bags ---------------------------------------------------------

TOPIC = "/camera/image_raw"


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    from vit_perception.data.synth import write_synthetic_bag

    root = tmp_path_factory.mktemp("bags")
    calib = write_synthetic_bag(root / "calib", frames=12, seed=1, size=(160, 120))
    held = write_synthetic_bag(root / "held", frames=4, seed=2, size=(160, 120))
    return calib, held


def _backbone_errors(export, int8_runner, frames, meta) -> dict[str, float]:
    from vit_perception.runtime.calibration import FrameReader

    reader = FrameReader(frames, "images", meta.input_size, meta.mean, meta.std)
    worst: dict[str, float] = {}
    with OnnxRunner(export) as fp32:
        while (x := reader.get_next()) is not None:
            feed = {"images": torch.from_numpy(x["images"])}
            a, b = fp32.infer(feed), int8_runner.infer(feed)
            for name in ("features", "embedding", "attention"):
                worst[name] = max(worst.get(name, 0.0), _rel(a[name], b[name]))
    return worst


def _quantised_keys(path, frames, meta) -> list[np.ndarray]:
    """The int8 values of every 7-bit-narrowed attention operand (k^T), over ``frames``."""
    import onnx
    import onnxruntime as ort

    from vit_perception.runtime.calibration import FrameReader

    proto = onnx.load(str(path))
    clipped = {n.output[0] for n in proto.graph.node if n.name.endswith("_clip7")}
    names = [n.output[0] for n in proto.graph.node
             if n.op_type == "QuantizeLinear" and n.input[0] in clipped]
    for name in names:
        proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT8,
                                                                     None))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    reader = FrameReader(frames, "images", meta.input_size, meta.mean, meta.std)
    values = []
    while (x := reader.get_next()) is not None:
        values += session.run(names, x)
    return values


def test_static_int8_is_calibrated_on_the_bag_recorded_and_close_to_fp32(tmp_path, small, bags):
    """Calibrated on 8 frames of a bag (its last quarter held out), the int8 copy beside the
    export names its calibration set, has 7-bit per-channel weights and 7-bit attention keys on
    every frame (no AVX2 saturation: the same result on every CPU), runs its GEMMs and q.k^T
    as integer GEMMs with float outputs (no requantised QLinearMatMul), keeps the DETR head's
    activations unquantised by calibration (dynamic int8), is what ``precision: int8`` runs, and
    stays close to fp32 on the calibration frames and on held-out frames.

    Bound 0.06 on the backbone outputs: measured 0.018-0.029 (features, embedding) on both
    sets; a calibration on uniform grey frames gives 1.3, so the bound tells a calibration
    that saw the data from one that did not. Detections are not compared one to one: with
    random weights the two-stage head's top-k proposals are near ties that any perturbation
    reorders (the AP check of ``export --int8-calibrate`` is the measure on a trained model).
    """
    import shutil

    import onnx

    from vit_perception.data.bags import read_frames
    from vit_perception.runtime.calibration import (
        calibration_frames,
        int8_info,
        quantize_calibrated,
        static_int8_path,
    )

    export, meta = Path(shutil.copy(small[0], tmp_path / "small.onnx")), small[1]
    calib_bag, held_bag = bags
    calib = calibration_frames([calib_bag], TOPIC, 8, holdout=0.25)
    assert len(calib.frames) == 8 and calib.holdout_from == [9]
    assert all(i < 9 for _b, i in calib.picked) and calib.picked[-1] == (0, 8)  # spread
    q = quantize_calibrated(export, calib, "percentile")
    assert q == static_int8_path(export) and q.name == "small.int8.onnx"
    info = int8_info(q)
    assert info is not None and info["bags"] == [str(calib_bag)] and info["topic"] == TOPIC
    assert info["frames"] == 8 and info["method"] == "percentile" and info["kind"] == "static"
    assert int8_info(export) is None
    assert info["attention"] == "scores" and info["head"] == "dynamic"
    proto = onnx.load(str(q))
    ops = [n.op_type for n in proto.graph.node]
    depth = sum(n.name.endswith("/attn/Softmax") and "/head/" not in n.name
                for n in proto.graph.node)
    assert "QLinearMatMul" not in ops and "QuantizeLinear" in ops
    # per block qkv, proj, fc1, fc2 and q.k^T, plus the [CLS] map's q.k^T (the exporter merged
    # its qkv with the last block's)
    assert ops.count("MatMulIntegerToFloat") == info["integer_matmuls"] == 5 * depth + 1
    assert info["int8_attention_products"] == depth + 1 == ops.count("Clip")
    assert "DynamicQuantizeLinear" in ops  # the head
    weights = _int8_weights(q)
    assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) \
        <= REDUCED_WEIGHT_MAX
    dequantized = {o for n in proto.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    head = [n for n in proto.graph.node if "/head/" in n.name]
    assert head and not any(i in dequantized for n in head for i in n.input)
    held = [f.image for f in read_frames(held_bag, TOPIC, None)]
    held += [f.image for f in read_frames(calib_bag, TOPIC, None) if f.index >= 9]
    keys = _quantised_keys(q, calib.frames + held, meta)
    assert len(keys) == (depth + 1) * len(calib.frames + held)
    assert max(int(np.abs(k.astype(np.int32)).max()) for k in keys) <= REDUCED_WEIGHT_MAX
    with OnnxRunner(export, precision="int8") as runner:
        assert runner.model_file == q and runner.int8_kind.startswith("static")
        assert str(calib_bag) in runner.int8_kind
        for frames in (calib.frames, held):
            for name, rel in _backbone_errors(export, runner, frames, meta).items():
                assert 0 < rel < 0.06, (name, rel)


@pytest.mark.parametrize("mode", ["all", "float"])
def test_static_int8_attention_modes(tmp_path, small, bags, mode):
    """``all`` also runs softmax.v as an integer GEMM (no MatMul of two activations left in the
    backbone), ``float`` neither product (q.k^T and softmax.v stay float MatMuls); the record
    says which; an unknown mode is a clear error."""
    import shutil

    import onnx

    from vit_perception.runtime.calibration import (
        CalibrationError,
        calibration_frames,
        int8_info,
        quantize_calibrated,
    )
    from vit_perception.runtime.int8_attention import attention_products

    export = Path(shutil.copy(small[0], tmp_path / "m.onnx"))
    scores, mixes = attention_products(onnx.load(str(export)), ("/head/",))
    assert scores and mixes and not set(scores) & set(mixes)
    calib = calibration_frames([bags[0]], TOPIC, 2)
    q = quantize_calibrated(export, calib, "minmax", attention=mode)
    info = int8_info(q)
    assert info is not None and info["attention"] == mode
    left = {n.name for n in onnx.load(str(q)).graph.node if n.op_type == "MatMul"}
    if mode == "all":
        assert not (set(scores) | set(mixes)) & left
        assert info["int8_attention_products"] == len(scores) + len(mixes)
    else:
        assert set(scores) | set(mixes) <= left and info["int8_attention_products"] == 0
    with pytest.raises(CalibrationError, match="'some'"):
        quantize_calibrated(export, calib, "minmax", attention="some")


def test_integer_matmuls_compute_what_the_qdq_graph_does():
    """A QDQ MatMul with per-column int8 weights and a bias, and one of two quantised
    activations (uint8 x int8), become two ``MatMulIntegerToFloat`` (bias folded in, no
    DequantizeLinear left) whose outputs equal the QDQ graph's, run unoptimised as reference.
    Every int8 operand is within 64 (|x| < 5 at scale 0.08), so AVX2 cannot saturate."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from vit_perception.runtime.qdq_integer import integer_matmuls

    rng = np.random.default_rng(0)
    w = rng.integers(-64, 65, (16, 12)).astype(np.int8)
    inits = {"xs": np.float32(0.02), "xz": np.uint8(120), "w": w,
             "ws": rng.uniform(0.001, 0.01, 12).astype(np.float32), "wz": np.zeros(12, np.int8),
             "bias": rng.standard_normal(12).astype(np.float32), "ts": np.float32(0.08),
             "tz": np.int8(0)}
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=1),
        helper.make_node("MatMul", ["xd", "wd"], ["mm"], name="weights"),
        helper.make_node("Add", ["mm", "bias"], ["y1"]),  # unnamed, as other exporters write
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
        helper.make_node("QuantizeLinear", ["xt", "ts", "tz"], ["tq"]),
        helper.make_node("DequantizeLinear", ["tq", "ts", "tz"], ["td"]),
        helper.make_node("MatMul", ["xd", "td"], ["y2"], name="scores"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16])],
        [helper.make_tensor_value_info("y1", TensorProto.FLOAT, [1, 8, 12]),
         helper.make_tensor_value_info("y2", TensorProto.FLOAT, [1, 8, 8])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = {"x": rng.standard_normal((1, 8, 16)).astype(np.float32)}
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    want = ort.InferenceSession(proto.SerializeToString(), plain).run(None, x)
    assert integer_matmuls(proto) == 2
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("MatMulIntegerToFloat") == 2
    assert "DequantizeLinear" not in ops and "Add" not in ops and "MatMul" not in ops
    onnx.checker.check_model(proto)
    got = ort.InferenceSession(proto.SerializeToString(), plain).run(None, x)
    for a, b in zip(want, got):
        assert a.shape == b.shape and np.abs(a - b).max() <= 1e-4 * np.abs(a).max()


def test_a_stale_calibrated_copy_falls_back_to_dynamic(tmp_path, small, bags):
    import shutil

    import onnx

    from vit_perception.runtime.calibration import calibration_frames, quantize_calibrated

    export = Path(shutil.copy(small[0], tmp_path / "m.onnx"))
    quantize_calibrated(export, calibration_frames([bags[0]], TOPIC, 2), "minmax")
    with OnnxRunner(export, precision="int8") as runner:
        assert runner.int8_kind.startswith("static")
    proto = onnx.load(str(export))
    proto.doc_string = "exported again"  # a different export: the calibrated copy is stale
    onnx.save(proto, str(export))
    with OnnxRunner(export, precision="int8") as runner:
        assert runner.int8_kind.startswith("dynamic")


def test_missing_or_empty_calibration_bag_is_a_clear_error(tmp_path, bags):
    from vit_perception.data.synth import write_synthetic_bag
    from vit_perception.runtime.calibration import CalibrationError, calibration_frames

    missing = tmp_path / "nope"
    with pytest.raises(CalibrationError, match=f"calibration bag not found: {missing}"):
        calibration_frames([bags[0], missing], TOPIC, 4)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CalibrationError, match="calibration bag") as err:
        calibration_frames([empty], TOPIC, 4)  # "not a bag", or "no topic" with no topics
    assert str(empty) in str(err.value)
    only_labels = write_synthetic_bag(tmp_path / "no_frames", frames=0, size=(160, 120))
    with pytest.raises(CalibrationError, match=f"no topic {TOPIC}"):
        calibration_frames([only_labels], TOPIC, 4)
    with pytest.raises(CalibrationError, match="/other"):
        calibration_frames([bags[0]], "/other", 4)


def test_export_int8_calibrate_prints_the_ap_change(tmp_path, bags, capsys):
    """`export --int8-calibrate BAG --val BAG` writes <out>.int8.onnx and prints AP50/AP of
    fp32 and int8 on the held-out bag (random weights: the figures are near 0, the lines are
    what is checked); a missing calibration bag fails before anything is exported."""
    import yaml

    from vit_perception.cli import main
    from vit_perception.config import resolve_config_path

    calib_bag, held_bag = bags
    cfg = yaml.safe_load(resolve_config_path("vit_tiny_detr").read_text())
    cfg["classes"] = (calib_bag / "classes.txt").read_text().split()  # the bag's classes
    config = tmp_path / "tiny_bag_classes.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "m.onnx"
    args = ["export", "--model", str(config), "--size", "160x128", "--out", str(out),
            "--verify", "0", "--calib-frames", "4", "--calib-method", "minmax"]
    assert main([*args, "--int8-calibrate", str(tmp_path / "missing")]) != 0
    err = capsys.readouterr().err
    assert f"calibration bag not found: {tmp_path / 'missing'}" in err and "Traceback" not in err
    assert not out.exists()
    assert main([*args, "--int8-calibrate", str(calib_bag), "--val", str(held_bag)]) == 0
    text = capsys.readouterr().out
    assert f"static int8: wrote {tmp_path / 'm.int8.onnx'}" in text
    assert f"held-out: 4 frames of {held_bag} (4 labelled)" in text
    rows = {line.split()[0]: line.split()[1:3] for line in text.splitlines()
            if line.split()[:1] in (["fp32"], ["int8"], ["change"])}
    assert set(rows) == {"fp32", "int8", "change"}
    fp32, int8, change = ([float(v) for v in rows[k]] for k in ("fp32", "int8", "change"))
    assert change == pytest.approx([int8[0] - fp32[0], int8[1] - fp32[1]], abs=2e-4)
    assert "detections vs fp32 (top 10 a frame" in text
    assert (tmp_path / "m.int8.onnx").is_file()


def test_int8_detections_agreement_pairs_each_fp32_detection_with_its_int8_counterpart():
    """The top fp32 detections each find the same-class int8 box that overlaps most: IoU 1 and
    no score change for an unchanged one, the overlap of a shifted one, 0 where int8 has none
    of that class; only the ``top`` highest-scoring fp32 detections count."""
    from types import SimpleNamespace

    from vit_perception.evaluation.int8_check import agreement

    def det(boxes, scores, labels):
        return SimpleNamespace(boxes=np.asarray(boxes, np.float32),
                               scores=np.asarray(scores, np.float32), labels=np.asarray(labels))

    fp32 = det([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 5, 5], [50, 50, 60, 60]],
               [0.9, 0.8, 0.7, 0.1], [0, 1, 2, 0])
    int8 = det([[0, 0, 10, 10], [25, 20, 35, 30], [50, 50, 60, 60]], [0.9, 0.6, 0.2], [0, 1, 0])
    pairs = agreement(fp32, int8, top=3)
    assert pairs == [(1.0, 0.0), (pytest.approx(50 / 150), pytest.approx(0.2)),
                     (0.0, pytest.approx(0.7))]
