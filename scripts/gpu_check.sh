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

GPU_WHEELS_NAME=gpu_check
# shellcheck source=scripts/gpu_wheels.sh
source "$repo/scripts/gpu_wheels.sh"
if [[ "${1:-}" == "--download" ]]; then
    gpu_wheels_download "$whl" "${carried[@]}"
    exit 0
fi
site="${GPU_CHECK_SITE:-${TMPDIR:-/tmp}/vit_perception_gpu_check_site}"
gpu_wheels_install "$py" "$site" "$whl" "${carried[@]}"

export PYTHONPATH="$repo:$site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec timeout --signal=INT --kill-after=10 360 "$py" "$repo/scripts/gpu_check.py" "$@"
