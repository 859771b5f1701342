#!/usr/bin/env bash
# Issue 17's figures in one run, on a quiet machine (nothing else running): int8 accuracy and
# speed per backend, YOLOS-S beside them, and the node beside 0/1/2 busy processes.
#
#   source env.sh && bash scripts/cpu_figures.sh            # ~30-40 min on 2 cores
#
# Needs: runs/demo from `vit-perception demo` (trained tiny model, lab bags). The photo-style
# bags (`synth --style photo`) and a tiny model trained on them for PHOTO_MINUTES (6.5) are
# made here unless PHOTO_CKPT names one, with PHOTO_CALIB / PHOTO_VAL its calibration and
# held-out bags (in its classes), e.g. the pretraining figures' model:
#   PHOTO_CKPT=runs/pretrain_figures/train400_random/best.pt \
#   PHOTO_CALIB=runs/pretrain_figures/bags/train400 PHOTO_VAL=runs/pretrain_figures/bags/test
# (PHOTO=0 skips them). A weak model's AP says little: `export --int8-calibrate` also prints how
# int8's detections agree with fp32's (IoU, score change). YOLOS_SITE=<folder with
# transformers> (python -m pip install --target DIR transformers) times YOLOS-S in the same
# bench run; THREADS=N sets bench's threads. Smaller runs: ITERS=5 DURATION=5 SIZES=320x240
# S16=0 (S16_ALL=0: no second static vit_s16_detr with --int8-attention all) PHOTO=0 NODE=0.
set -euo pipefail
OUT=${OUT:-runs/cpu_figures}
DEMO=${DEMO:-runs/demo}
ITERS=${ITERS:-30}
DURATION=${DURATION:-30}
SIZES=${SIZES:-"640x480 320x240"}
S16=${S16:-1}
ATTN=${INT8_ATTENTION:-scores}  # static int8's attention products: scores, all or float
TARGS=${THREADS:+--threads $THREADS}  # bench threads (unset: bench's default, physical cores)
mkdir -p "$OUT"
grep -m1 "model name" /proc/cpuinfo

bench() {  # bench (or bench_yolos.py when transformers is there) with the same arguments
  if [ -n "${YOLOS_SITE:-}" ]; then python scripts/bench_yolos.py --side "$YOLOS_SITE" $TARGS "$@"
  else vit-perception bench $TARGS "$@"; fi
}

accuracy() {  # NAME CKPT CALIB_BAG VAL_BAG SIZE: AP50/AP of fp32, static and dynamic int8
  local name=$1 ckpt=$2 calib=$3 val=$4 size=$5
  local onnx="$OUT/$name-$size.onnx" dyn="$OUT/dynamic/$name-$size.onnx"
  echo; echo "== $name $size: export, static int8 calibrated on $calib, AP on $val"
  vit-perception export --model "$ckpt" --size "$size" --out "$onnx" --verify 1 \
      --int8-calibrate "$calib" --calib-frames 100 --val "$val" --int8-attention "$ATTN"
  mkdir -p "$OUT/dynamic" && cp "$onnx" "$dyn"   # no calibrated copy beside it: dynamic int8
  for spec in "$onnx fp32" "$dyn int8"; do
    set -- $spec
    echo "-- eval onnxruntime $2 ($( [ "$2" = int8 ] && echo dynamic || echo fp32 ))"
    vit-perception eval --bag "$val" --model "$1" --backend onnxruntime --precision "$2" \
        --out-bag none --json "$OUT/eval-$name-$size-$(basename "$(dirname "$1")")-$2.json" \
        | grep -E "^(AP |AP50)"
  done
  echo "== $name $size: bench torch fp32, onnxruntime fp32, dynamic and static int8"
  bench --model "$ckpt" --onnx "$onnx" --size "$size" --iters "$ITERS" \
      --backend torch onnxruntime onnxruntime:int8-dynamic onnxruntime:int8-static \
      --json "$OUT/bench-$name-$size.json"
}

for size in $SIZES; do
  accuracy demo "$DEMO/run/best.pt" "$DEMO/lab_train" "$DEMO/lab_heldout" "$size"
done
if [ "${PHOTO:-1}" = 1 ]; then  # a harder bag: marks that differ only in shape, on photographs
  if [ -z "${PHOTO_CKPT:-}" ]; then  # the tiny model trained on them as the demo trains on lab
    PHOTO_CALIB="$OUT/photo_train" PHOTO_VAL="$OUT/photo_heldout" PHOTO_CKPT="$OUT/photo_run/best.pt"
    [ -d "$PHOTO_CALIB" ] || vit-perception synth "$PHOTO_CALIB" --style photo --frames 400 --size 320x240 --seed 21
    [ -d "$PHOTO_VAL" ] || vit-perception synth "$PHOTO_VAL" --style photo --frames 100 --size 320x240 --seed 22
    [ -f "$PHOTO_CKPT" ] || vit-perception train --config vit_tiny_detr --train "$PHOTO_CALIB" \
        --val "$PHOTO_VAL" --out "$OUT/photo_run" --time-budget "${PHOTO_MINUTES:-6.5}" \
        --no-progress --set "classes=[$(paste -sd, "$PHOTO_CALIB/classes.txt")]"
  fi
  : "${PHOTO_CALIB:?PHOTO_CKPT needs PHOTO_CALIB, its calibration bag}"
  : "${PHOTO_VAL:?PHOTO_CKPT needs PHOTO_VAL, its held-out bag}"
  for size in $SIZES; do
    accuracy photo "$PHOTO_CKPT" "$PHOTO_CALIB" "$PHOTO_VAL" "$size"
  done
fi

if [ "$S16" = 1 ]; then  # the default model's speed (random weights; calibrated on lab frames)
  echo; echo "== vit_s16_detr 640x480 (random weights): speed of every backend"
  vit-perception export --model vit_s16_detr --size 640x480 --out "$OUT/s16-640x480.onnx" \
      --verify 0 --int8-calibrate "$DEMO/lab_train" --calib-frames 8 --val "$DEMO/lab_heldout" \
      --int8-attention "$ATTN"
  bench --config vit_s16_detr --onnx "$OUT/s16-640x480.onnx" --size 640x480 --iters 10 \
      --backend torch onnxruntime onnxruntime:int8-dynamic onnxruntime:int8-static \
      --json "$OUT/bench-s16-640x480.json"
  if [ "${S16_ALL:-1}" = 1 ] && [ "$ATTN" != all ]; then  # softmax.v in int8 as well
    echo; echo "== vit_s16_detr 640x480, static int8 with --int8-attention all"
    vit-perception export --model vit_s16_detr --size 640x480 --out "$OUT/s16all-640x480.onnx" \
        --verify 0 --int8-calibrate "$DEMO/lab_train" --calib-frames 8 --val "$DEMO/lab_heldout" \
        --int8-attention all
    bench --config vit_s16_detr --onnx "$OUT/s16all-640x480.onnx" --size 640x480 --iters 10 \
        --backend onnxruntime:int8-static --json "$OUT/bench-s16all-640x480.json"
  fi
fi

[ "${NODE:-1}" = 1 ] || exit 0
echo; echo "== bench-node, tiny model, 640x480 at 30 Hz, beside 0/1/2 busy processes"
for backend in torch onnxruntime; do
  for busy in 0 1 2; do
    vit-perception bench-node --backend "$backend" --busy "$busy" --duration "$DURATION" \
        --no-transport --json "$OUT/node-$backend-busy$busy.json" > "$OUT/node-$backend-busy$busy.log"
  done
done
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print(f"{'backend':<12}{'busy':>5}{'latency med':>13}{'p90':>9}{'drops':>8}{'Hz':>7}")
for f in sorted(out.glob("node-*-busy*.json")):
    d = json.loads(f.read_text())
    backend = f.stem.split("-")[1]
    lat = d["latency_ms"]
    print(f"{backend:<12}{d['busy']['processes']:>5}{lat['median']:>13.1f}{lat['p90']:>9.1f}"
          f"{d['drop_rate']:>8.2f}{d['processed_rate_hz']:>7.1f}")
print(f"cpu {d['cpu']}, threads {d['threads']}, OMP_WAIT_POLICY {d['omp_wait_policy']}")
PY
