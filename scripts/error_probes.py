#!/usr/bin/env python3
"""Run every probe of issue 16 (bad input to each subcommand) and print a table.

    python scripts/error_probes.py [--workdir DIR] [--json OUT.json] [--only ID ...]

Each probe runs ``python -m vit_perception ...`` in a subprocess and records its exit code, the
first line of stderr (the last line too when that first line is a traceback header) and, for
the probes about half-written output, what it left behind. Takes a few minutes on a laptop CPU
(a one-epoch tiny training run is made first); the figures are what the issue's closing table
shows, before and after the fix.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

TINY = ["--set", "input.width=96", "--set", "input.height=64", "--set", "train.threads=1",
        "--set", "train.warmup_steps=0"]


def cli(*argv: str, env: dict | None = None, timeout: float = 600) -> tuple[int, str, str]:
    full = {**os.environ, **(env or {})}
    p = subprocess.run([sys.executable, "-m", "vit_perception", *argv], capture_output=True,
                       text=True, env=full, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def first_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith(("INFO ",
                                                                                  "WARNING "))]
    if not lines:
        return ""
    if lines[0].startswith("usage:"):  # argparse: the error is on its last line
        return next((ln for ln in lines if ": error:" in ln), lines[-1])
    if lines[0].startswith("Traceback"):
        last = [ln for ln in lines if not ln.startswith((" ", "\t"))][-1]
        return f"Traceback ... {last}"
    return lines[0]


def setup(d: Path) -> dict:
    """Bags, a tiny trained run, broken checkpoints / ONNX files; returns their paths."""
    import numpy as np
    import torch

    from vit_perception.config import load_config
    from vit_perception.data.synth import write_synthetic_bag
    from vit_perception.models.builder import build
    from vit_perception.models.checkpoint import save_checkpoint

    p: dict = {}
    p["bag"] = write_synthetic_bag(d / "bag", frames=6, seed=0, size=(160, 120), num_classes=2)
    rc, out, err = cli("train", "--config", "vit_tiny_detr", "--train", str(p["bag"]), "--val",
                       str(p["bag"]), "--out", str(d / "run"), "--epochs", "1", "--batch-size",
                       "2", "--no-progress", *TINY)
    if rc != 0:
        raise SystemExit(f"setup: training failed:\n{err}")
    p["run"] = d / "run"
    p["ckpt"] = d / "run" / "best.pt"
    (d / "empty.pt").write_bytes(b"")
    p["empty_pt"] = d / "empty.pt"
    data = p["ckpt"].read_bytes()
    (d / "trunc.pt").write_bytes(data[: len(data) // 2])
    p["trunc_pt"] = d / "trunc.pt"
    torch.save({"format": "x", "ns": argparse.Namespace(a=1)}, d / "evil.pt")
    p["evil_pt"] = d / "evil.pt"
    rc, out, err = cli("export", "--model", str(p["ckpt"]), "--out", str(d / "model.onnx"),
                       "--verify", "0")
    if rc != 0:
        raise SystemExit(f"setup: export failed:\n{err}")
    p["onnx"] = d / "model.onnx"
    onnx_bytes = p["onnx"].read_bytes()
    (d / "trunc.onnx").write_bytes(onnx_bytes[: len(onnx_bytes) // 3])
    (d / "random.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    p["trunc_onnx"], p["random_onnx"] = d / "trunc.onnx", d / "random.onnx"
    (d / "emptydir").mkdir()
    (d / "metaonly").mkdir()
    shutil.copy(p["bag"] / "metadata.yaml", d / "metaonly" / "metadata.yaml")
    tb = d / "truncbag"
    shutil.copytree(p["bag"], tb)
    for f in tb.iterdir():
        if f.suffix in (".mcap", ".db3"):
            raw = f.read_bytes()
            f.write_bytes(raw[: len(raw) // 2])
    p["truncbag"] = tb
    # a checkpoint of another architecture: --init matches only a few of its tensors
    cfg = load_config("vit_tiny_detr", {"input": {"width": 96, "height": 64},
                                        "classes": ["a", "b"],
                                        "model": {"backbone": {"embed_dim": 96, "depth": 2},
                                                  "head": {"hidden_dim": 64, "ffn_dim": 128}}})
    model, _c, _p = build(cfg, load_pretrained=False)
    save_checkpoint(d / "other.pt", model, cfg)
    p["other_pt"] = d / "other.pt"
    # COCO folders for extract --from-coco
    rc, out, err = cli("extract", str(p["bag"]), str(d / "coco"))
    if rc != 0:
        raise SystemExit(f"setup: extract failed:\n{err}")
    p["coco"] = d / "coco"
    return p


def probes(d: Path, p: dict) -> list[tuple[str, str, callable]]:
    """(id, description, function returning (rc, first line, note))."""
    bag, ckpt = str(p["bag"]), str(p["ckpt"])

    def run(*argv, env=None, note=None):
        def f():
            rc, _out, err = cli(*argv, env=env)
            return rc, first_line(err), (note() if note else "")
        return f

    def train(out: str, *extra: str, config: str = "vit_tiny_detr"):
        return ("train", "--config", config, "--train", bag, "--val", bag, "--out", str(d / out),
                "--epochs", "1", "--batch-size", "2", "--no-progress", *TINY, *extra)

    def p1():
        run_dir = d / "run_p1"
        shutil.copytree(p["run"], run_dir)
        before = {f.name: f.stat().st_mtime_ns for f in run_dir.iterdir() if f.is_file()}
        rows = len((run_dir / "metrics.jsonl").read_text().splitlines())
        rc, _o, err = cli(*train("run_p1"))
        after = {f.name: f.stat().st_mtime_ns for f in run_dir.iterdir() if f.is_file()}
        changed = sorted(k for k in before if after.get(k) != before[k])
        rows_after = len((run_dir / "metrics.jsonl").read_text().splitlines())
        return rc, first_line(err), (f"changed: {', '.join(changed) or 'none'}; metrics rows "
                                     f"{rows} -> {rows_after}")

    def p1b():
        run_dir = d / "run_p1b"
        shutil.copytree(p["run"], run_dir)
        (run_dir / "notes.txt").write_text("not the run's")
        rc, _o, err = cli(*train("run_p1b", "--overwrite"))
        rows = len((run_dir / "metrics.jsonl").read_text().splitlines())
        kept = (run_dir / "notes.txt").exists()
        return rc, first_line(err), f"new run: metrics rows {rows}; notes.txt kept: {kept}"

    def leftovers(pattern: str, root: Path | None = None):
        return lambda: "left: " + (", ".join(sorted(x.name for x in (root or d).glob(pattern)))
                                   or "nothing")

    def p5a():
        rc, _o, err = cli("eval", "--bag", str(p["truncbag"]), "--model", ckpt, "--json",
                          str(d / "p5a" / "m.json"))
        left = sorted(x.name for x in (d / "p5a").glob("*")) if (d / "p5a").exists() else []
        return rc, first_line(err), "left: " + (", ".join(left) or "nothing")

    def p5b():
        rc, _o, err = cli("extract", str(p["truncbag"]), str(d / "p5b"))
        left = sorted(str(x.relative_to(d / "p5b")) for x in (d / "p5b").rglob("*")) \
            if (d / "p5b").exists() else []
        return rc, first_line(err), f"left: {len(left)} files" + (
            ", annotations.json" if "annotations.json" in left else ", no annotations.json")

    def p5c():
        src = d / "coco_missing"
        shutil.copytree(p["coco"], src)
        victim = sorted((src / "images").iterdir())[3]
        victim.rename(victim.with_suffix(".bak"))
        rc, _o, err = cli("extract", "--from-coco", str(src / "annotations.json"),
                          str(d / "p5c_bag"))
        left = sorted(x.name for x in (d / "p5c_bag").iterdir()) if (d / "p5c_bag").exists() \
            else []
        victim.with_suffix(".bak").rename(victim)
        rc2, _o, err2 = cli("extract", "--from-coco", str(src / "annotations.json"),
                            str(d / "p5c_bag"))
        return rc, first_line(err), (f"left: {', '.join(left) or 'nothing'}; rerun with the "
                                     f"image back: rc {rc2} {first_line(err2)}")

    def p5d():
        run_dir = d / "run_p5d"
        shutil.copytree(p["run"], run_dir)
        stale = run_dir / ".last.pt.k1ll3d.tmp"
        stale.write_bytes(b"\0" * 1024)
        rc, _o, err = cli("train", "--train", bag, "--val", bag, "--out", str(run_dir),
                          "--resume", "--no-progress")
        return rc, first_line(err), f"stale tmp {'still there' if stale.exists() else 'removed'}"

    def p6():
        src = d / "coco_traversal"
        shutil.copytree(p["coco"], src)
        outside = d / "outside.png"
        shutil.copy(sorted((src / "images").iterdir())[0], outside)
        coco = json.loads((src / "annotations.json").read_text())
        coco["images"][0]["file_name"] = "../outside.png"
        coco["images"][1]["file_name"] = str(outside)
        (src / "images" / Path(coco["images"][1]["file_name"]).name).unlink(missing_ok=True)
        (src / "annotations.json").write_text(json.dumps(coco))
        rc, _o, err = cli("extract", "--from-coco", str(src / "annotations.json"),
                          str(d / "p6_bag"))
        return rc, first_line(err), f"bag written: {(d / 'p6_bag').exists()}"

    def p7():
        cache = d / "p7_cache"
        rc, _o, err = cli("eval", "--bag", bag, "--model", ckpt, "--backend", "tensorrt",
                          "--out-bag", "none", env={"VIT_PERCEPTION_CACHE": str(cache)})
        onnx = sorted(x.name for x in cache.rglob("*.onnx")) if cache.exists() else []
        return rc, first_line(err), f"cache: {', '.join(onnx) or 'empty'}"

    existing = d / "existing_bag"
    existing.mkdir(exist_ok=True)
    return [
        ("1", "train --out RUN_DIR (existing run), no --resume", p1),
        ("1b", "train --out RUN_DIR --overwrite (existing run)", p1b),
        ("2a", "eval --model truncated.pt (CheckpointError)",
         run("eval", "--bag", bag, "--model", str(p["trunc_pt"]))),
        ("2b", "export --model truncated.pt (CheckpointError)",
         run("export", "--model", str(p["trunc_pt"]))),
        ("2c", "bench --model truncated.pt", run("bench", "--model", str(p["trunc_pt"]),
                                                 "--iters", "1", "--warmup", "0")),
        ("2d", "train --train truncated bag (BagError)",
         run("train", "--train", str(p["truncbag"]), "--val", bag, "--out", str(d / "p2d"),
             "--epochs", "1", "--no-progress", *TINY)),
        ("2e", "bench --model random.onnx (ONNX DecodeError)",
         run("bench", "--model", str(p["random_onnx"]), "--backend", "onnxruntime",
             "--iters", "1")),
        ("2f", "eval --json /sys/... (PermissionError)",
         run("eval", "--bag", bag, "--model", ckpt, "--out-bag", "none", "--json",
             "/sys/vp_probe/m.json")),
        ("2g", "eval --out-bag EXISTING_EMPTY_DIR (rosbags WriterError)",
         run("eval", "--bag", bag, "--model", ckpt, "--out-bag", str(existing))),
        ("2g'", "eval --out-bag EXISTING_BAG", run("eval", "--bag", bag, "--model", ckpt,
                                                   "--out-bag", bag)),
        ("2h", "train --set 'train.lr=!!python/object/apply:os.getcwd []' (yaml)",
         run(*train("p2h", "--set", "train.lr=!!python/object/apply:os.getcwd []"))),
        ("3a", "eval --bag NONEXISTENT", run("eval", "--bag", str(d / "nope"), "--model", ckpt)),
        ("3b", "eval --bag EMPTY_DIR", run("eval", "--bag", str(d / "emptydir"), "--model", ckpt)),
        ("3c", "eval --bag DIR_WITH_ONLY_metadata.yaml",
         run("eval", "--bag", str(d / "metaonly"), "--model", ckpt)),
        ("3d", "eval --model empty.pt", run("eval", "--bag", bag, "--model", str(p["empty_pt"]))),
        ("3e", "eval --model pickle-with-object.pt",
         run("eval", "--bag", bag, "--model", str(p["evil_pt"]))),
        ("3f", "export --model X.onnx", run("export", "--model", str(p["onnx"]))),
        ("3g", "eval --model DIR", run("eval", "--bag", bag, "--model", str(d / "run"))),
        ("3h", "eval --model random.onnx",
         run("eval", "--bag", bag, "--model", str(p["random_onnx"]))),
        ("3i", "eval --model truncated.onnx",
         run("eval", "--bag", bag, "--model", str(p["trunc_onnx"]))),
        ("3j", "eval --device cuda (no CUDA)",
         run("eval", "--bag", bag, "--model", ckpt, "--device", "cuda", "--out-bag", "none")),
        ("3k", "eval --device tpu",
         run("eval", "--bag", bag, "--model", ckpt, "--device", "tpu", "--out-bag", "none")),
        ("3l", "bench --backend tensorrt (no TensorRT)",
         run("bench", "--model", ckpt, "--backend", "tensorrt", "--iters", "1")),
        ("4a", "train --set nonexistent.key=1", run(*train("p4a", "--set", "nonexistent.key=1"))),
        ("4b", "train --set train.lrr=1", run(*train("p4b", "--set", "train.lrr=1"))),
        ("4c", "train --set train.lr=notanumber",
         run(*train("p4c", "--set", "train.lr=notanumber"))),
        ("4d", "synth --frames -3", run("synth", str(d / "p4d"), "--frames", "-3")),
        ("4e", "train --time-budget -1", run(*train("p4e", "--time-budget", "-1"))),
        ("4f", "export --size 0x0", run("export", "--model", ckpt, "--size", "0x0", "--out",
                                        str(d / "p4f.onnx"))),
        ("4g", "bench --size 0x0", run("bench", "--model", ckpt, "--size", "0x0", "--iters",
                                       "1")),
        ("4h", "train --init CHECKPOINT_OF_ANOTHER_ARCH",
         run(*train("p4h", "--init", str(p["other_pt"])))),
        ("4i", "train --resume --config vit_s16_detr (another config)",
         run("train", "--config", "vit_s16_detr", "--train", bag, "--val", bag, "--out",
             str(d / "run"), "--resume", "--no-progress")),
        ("5a", "eval --bag TRUNCATED (predictions bag left?)", p5a),
        ("5b", "extract TRUNCATED_BAG OUT", p5b),
        ("5c", "extract --from-coco with an image missing, then again", p5c),
        ("5d", "stale .last.pt.*.tmp in RUN_DIR, train --resume", p5d),
        ("6", "extract --from-coco with ../ and absolute file_name", p6),
        ("7", "eval --backend tensorrt (no TensorRT): ONNX left in the cache?", p7),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=None, help="scratch folder (default: a new temp dir)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--only", nargs="*", help="probe ids to run")
    args = ap.parse_args()
    import tempfile

    d = Path(args.workdir or tempfile.mkdtemp(prefix="vp_probes_"))
    if d.exists() and any(d.iterdir()):
        shutil.rmtree(d)
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    paths = setup(d)
    print(f"setup {time.perf_counter() - t0:.0f} s in {d}", file=sys.stderr)
    results = []
    for pid, desc, fn in probes(d, paths):
        if args.only and pid not in args.only:
            continue
        rc, line, note = fn()
        results.append({"id": pid, "probe": desc, "rc": rc, "stderr": line, "note": note})
        print(f"| {pid} | {desc} | {rc} | {line[:160]} | {note} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
