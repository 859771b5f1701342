"""mypy checks the TensorRT code against the TensorRT 10 signatures in tensorrt-stubs.

The PyPI stubs do not parse as published (parameters named ``in``, a non-default parameter after
defaults), so plain ``mypy`` (mypy.ini) skips ``tensorrt_bindings``. Here a repaired copy is put
on MYPYPATH and the TensorRT modules are checked against it for real.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = ["tensorrt_runner.py", "tensorrt_build.py", "engine_cache.py"]


def repair_stub(text: str) -> str:
    text = re.sub(r"\bin: ", "in_: ", text)
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.lstrip().startswith("def ") and "=" in line:
            head, _, rest = line.partition("(")
            args, _, ret = rest.rpartition(")")
            parts, seen = args.split(", "), False
            for j, p in enumerate(parts):
                if "=" in p:
                    seen = True
                elif seen and ":" in p and not p.lstrip().startswith("*"):
                    parts[j] = p + " = ..."
            lines[i] = f"{head}({', '.join(parts)}){ret}"
    return "\n".join(lines) + "\n"


@pytest.mark.slow
def test_tensorrt_code_type_checks_against_stubs(tmp_path):
    spec = importlib.util.find_spec("mypy")
    stubs = [importlib.util.find_spec(m) for m in ("tensorrt", "tensorrt_bindings")]
    if spec is None or any(s is None or not s.submodule_search_locations for s in stubs):
        pytest.skip("needs mypy and tensorrt-stubs")
    for s in stubs:
        src = Path(list(s.submodule_search_locations)[0])
        dst = tmp_path / "stubs" / src.name
        dst.mkdir(parents=True)
        for f in src.glob("*.pyi"):
            fixed = repair_stub(f.read_text())
            ast.parse(fixed)
            (dst / f.name).write_text(fixed)
    cfg = tmp_path / "mypy.ini"
    cfg.write_text(
        "[mypy]\npython_version = 3.10\ncheck_untyped_defs = True\nfollow_imports = silent\n"
        f"mypy_path = {tmp_path / 'stubs'}\n"
        "[mypy-tensorrt.*,tensorrt_bindings.*]\nignore_errors = True\n"
        "[mypy-tensorrt_libs.*,onnx.*,onnxruntime.*,yaml.*,cv2.*,scipy.*,timm.*]\n"
        "ignore_missing_imports = True\n"
    )
    files = [str(ROOT / "vit_perception" / "runtime" / m) for m in MODULES]
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(cfg),
         "--cache-dir", str(ROOT / ".mypy_cache" / "trt-stubs"), *files],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
