#!/usr/bin/env bash
# The GPU figures of issue 14 on a bare GPU machine, in at most 6 minutes.
#
#   scripts/gpu_check.sh --download           # here, with PyPI: fill .whl/ (Python 3.12 wheels)
#   scripts/gpu_check.sh                      # there: every figure on cuda (budget 330 s)
#   scripts/gpu_check.sh --device cpu --quick # the dry run of the same code on a CPU
#
# The GPU machine needs Python with torch + CUDA, torchvision, numpy and pyyaml (a torch/timm
# image has them). What else the figures need (scipy for the matcher, faster-coco-eval for
# validation) is installed from the wheels in .whl/ into a private folder when missing; nothing
# of rclpy, OpenCV, rosbags, matplotlib or onnx is used. Other arguments go to gpu_check.py
# (--budget-s, --iters, --size WxH, --json PATH, --debug). Environment: PYTHON (python3),
# GPU_CHECK_WHEELS (.whl/), GPU_CHECK_SITE (where missing wheels are installed; $TMPDIR).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
whl="${GPU_CHECK_WHEELS:-$repo/.whl}"
py="${PYTHON:-python3}"
# module:distribution the figures need beyond torch/torchvision/numpy/pyyaml
carried=("scipy:scipy" "faster_coco_eval:faster-coco-eval")

die() { echo "gpu_check: $*" >&2; exit 2; }

if [[ "${1:-}" == "--download" ]]; then
    mkdir -p "$whl"
    dists=()
    for pair in "${carried[@]}"; do dists+=("${pair#*:}"); done
    # cp312 manylinux wheels, without their dependencies (numpy comes with torch)
    "$py" -m pip download --only-binary=:all: --no-deps --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$whl" "${dists[@]}"
    du -sh "$whl"
    exit 0
fi

command -v "$py" >/dev/null || die "no $py on PATH (set PYTHON=/path/to/python3.12)"
site="${GPU_CHECK_SITE:-${TMPDIR:-/tmp}/vit_perception_gpu_check_site}"
# one interpreter start: what is there (find_spec imports nothing), what must come from .whl/
probe="$(PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" "$py" - "${carried[@]}" <<'PY'
import importlib.util as u, sys
def has(module):
    try:
        return u.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
base = [m for m in ("torch", "torchvision", "numpy", "yaml") if not has(m)]
if base:
    print("BASE " + " ".join(base))
print("NEED " + " ".join(p.split(":")[1] for p in sys.argv[1:] if not has(p.split(":")[0])))
PY
)" || die "$py failed to start"
if grep -q '^BASE' <<<"$probe"; then
    die "$py lacks $(sed -n 's/^BASE //p' <<<"$probe") (torch with CUDA, torchvision, numpy and \
pyyaml are expected on the machine)"
fi
read -r -a need <<<"$(sed -n 's/^NEED *//p' <<<"$probe")"
if ((${#need[@]})); then
    ls "$whl"/*.whl >/dev/null 2>&1 || die "missing ${need[*]} and no wheels in $whl: run \
scripts/gpu_check.sh --download on a machine with PyPI access and bring .whl/ along"
    "$py" -m pip install --quiet --no-index --no-deps --find-links "$whl" --target "$site" \
        "${need[@]}" || die "could not install ${need[*]} from $whl (wheels for Python \
$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')? they are for 3.12)"
fi

export PYTHONPATH="$repo:$site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec timeout --signal=INT --kill-after=10 360 "$py" "$repo/scripts/gpu_check.py" "$@"
