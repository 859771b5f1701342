#!/usr/bin/env bash
# One 20-minute student of issue 13's seed comparison (docs/RESULTS.md, sixth measurement):
# vit_nano_detr at 224x160 without the DETR encoder layer, one thread pinned to one core, then
# AP50/AP of its best.pt and last.pt on the held-out bag.
# Usage (from the repository root, after `source env.sh`):
#   scripts/distill_student.sh CORE NAME SEED train|distill|distill-labels [--set KEY=VALUE ...]
# Environment: OUT (runs/d2: bags in OUT/bags as `synth` wrote them, the run in OUT/NAME, the
# evals in OUT/eval), STUDENT (the student's config: vit_nano_detr), MIN (20), TEACHER
# (OUT/teacherA/best.pt), TEST (test600), UNLABELLED (the unlabelled bags' names under OUT/bags,
# space-separated; default: unlabelled), DEVICE (passed as
# --device to every command; unset: train and distill pick CUDA when present, eval the CPU).
# CORE `-` runs unpinned, with torch's own thread count (on a GPU machine).
# `distill` is the cached mode with teacher targets on the unlabelled bag only
# (teacher_cache=true, kd_labelled=false, no feature distillation); `distill-labels` has no
# unlabelled bag and distils on the labelled frames (kd_labelled=true) beside their ground truth;
# extra --set items follow.
set -euo pipefail
core=$1 name=$2 seed=$3 kind=$4
shift 4
OUT="${OUT:-runs/d2}"
B="$OUT/bags"
mkdir -p "$OUT/eval"
S=(--set input.width=224 --set input.height=160 --set model.head.enc_layers=0
   --set train.epochs=100000 --set train.eval_every=0 --set train.eval_every_s=60
   --set train.threads=1 --set "train.seed=$seed" --train "$B/train" --val "$B/val"
   --time-budget "${MIN:-20}" --no-progress --out "$OUT/$name" --overwrite)
pin=(env OMP_NUM_THREADS=1 taskset -c "$core")
[[ "$core" == - ]] && pin=(env)
[[ -n "${DEVICE:-}" ]] && S+=(--device "$DEVICE")
KD=(--teacher "${TEACHER:-$OUT/teacherA/best.pt}" --student-config "${STUDENT:-vit_nano_detr}"
    --set distill.teacher_cache=true --set distill.loss_feat_cos=0 --set distill.loss_feat_l1=0)
case $kind in
  train) "${pin[@]}" vit-perception train --config "${STUDENT:-vit_nano_detr}" "${S[@]}" "$@" ;;
  distill-labels) "${pin[@]}" vit-perception distill "${KD[@]}" "${S[@]}" \
      --set distill.kd_labelled=true "$@" ;;
  *) read -ra U <<< "${UNLABELLED:-unlabelled}"
     "${pin[@]}" vit-perception distill "${KD[@]}" --unlabelled "${U[@]/#/$B/}" "${S[@]}" \
      --set distill.kd_labelled=false "$@" ;;
esac
for ck in best last; do
  "${pin[@]}" vit-perception eval --bag "$B/${TEST:-test600}" --model "$OUT/$name/$ck.pt" \
    ${DEVICE:+--device "$DEVICE"} --json "$OUT/eval/${name}_$ck.json" \
    | grep -E "^(AP|AP50) " | tr '\n' ' '
  echo " $name $ck"
done
