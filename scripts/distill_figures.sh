#!/usr/bin/env bash
# The figures of issue 13 (distillation), run on a quiet machine:
#   teacher vit_s16_detr trained on 320x240 bags; the tiny student trained under one time budget
#   on labels alone, distilled with labels, distilled with labels + an unlabelled bag 4x larger;
#   AP50/AP of all four on a held-out bag; bench latency of teacher and student.
# Usage (from the repository root, after `source env.sh`):
#   scripts/distill_figures.sh [OUT]       # OUT defaults to runs/distill_figures
# Environment: FRAMES (labelled frames, 300), TEACHER_MIN (60), STUDENT_MIN (20), STYLE (synth
# style: photo (default) or lab), EXTRA_SYNTH (more synth flags), VAL_FRAMES
# (100), TEST_FRAMES (200), BENCH_ITERS (50), TEACHER_CONFIG (vit_s16_detr), TEACHER_SIZE
# (320x240), STUDENT_SIZE (WxH; the student config's own when empty), TEACHER_CKPT (a trained
# teacher checkpoint: skips the teacher's training), STUDENT_CONFIG (vit_tiny_detr; vit_nano_detr
# is the small student config), TEACHER_FRAMES (0: the teacher trains on the students' labelled
# bag; N: on a separate N-frame labelled bag, as a team's workstation model trained on its
# larger data set), STUDENT_SET (--set KEY=VALUE items for every student, e.g.
# "model.head.enc_layers=0"), DISTILL_SET (--set items for the two distilled students only, e.g.
# "distill.teacher_cache=true").
# Steps whose output exists are skipped, so a stopped run continues.
set -euo pipefail
OUT="${1:-runs/distill_figures}"
FRAMES="${FRAMES:-300}"
TEACHER_MIN="${TEACHER_MIN:-60}"
STUDENT_MIN="${STUDENT_MIN:-20}"
VAL_FRAMES="${VAL_FRAMES:-100}"
TEST_FRAMES="${TEST_FRAMES:-200}"
BENCH_ITERS="${BENCH_ITERS:-50}"
TEACHER_CONFIG="${TEACHER_CONFIG:-vit_s16_detr}"
TEACHER_SIZE="${TEACHER_SIZE:-320x240}"
STUDENT_CONFIG="${STUDENT_CONFIG:-vit_tiny_detr}"
TEACHER_FRAMES="${TEACHER_FRAMES:-0}"
STUDENT_SIZE="${STUDENT_SIZE:-}"  # WxH; empty: the student config's own input size
TSIZE=(--set "input.width=${TEACHER_SIZE%x*}" --set "input.height=${TEACHER_SIZE#*x}")
SSIZE=()
[[ -n "$STUDENT_SIZE" ]] && SSIZE=(--set "input.width=${STUDENT_SIZE%x*}" \
  --set "input.height=${STUDENT_SIZE#*x}")
for item in ${STUDENT_SET:-}; do SSIZE+=(--set "$item"); done
DSET=()
for item in ${DISTILL_SET:-}; do DSET+=(--set "$item"); done
SYNTH=(--size 320x240)
if vit-perception synth --help | grep -q -- "--style"; then
  STYLE="${STYLE:-photo}"
  SYNTH+=(--style "$STYLE")
else
  STYLE=lab  # the only style before `synth --style photo`
fi
# shellcheck disable=SC2206
SYNTH+=(${EXTRA_SYNTH:-})
B="$OUT/bags"
mkdir -p "$OUT/eval"
t0=$SECONDS
log() { printf '[distill_figures %5ds] %s\n' "$((SECONDS - t0))" "$*"; }

bag() {  # bag NAME FRAMES SEED
  [[ -d "$B/$1" ]] || vit-perception synth "$B/$1" --frames "$2" --seed "$3" "${SYNTH[@]}"
}
log "bags ($STYLE style, 320x240): train $FRAMES, unlabelled $((4 * FRAMES)), val $VAL_FRAMES, \
test $TEST_FRAMES frames"
bag train "$FRAMES" 131
bag unlabelled "$((4 * FRAMES))" 132
bag val "$VAL_FRAMES" 133
bag test "$TEST_FRAMES" 134
TEACHER_TRAIN="$B/train"
if [[ "$TEACHER_FRAMES" -gt 0 ]]; then
  bag teacher_train "$TEACHER_FRAMES" 135
  TEACHER_TRAIN="$B/teacher_train"
fi

run() {  # run NAME COMMAND ARGS...: trains into $OUT/NAME once; an interrupted run continues
  local dir="$OUT/$1" again=()
  shift
  [[ -f "$dir/.finished" ]] && return 0
  if [[ -f "$dir/last.pt" ]]; then again=(--resume); elif [[ -e "$dir" ]]; then again=(--overwrite); fi
  "$@" --out "$dir" "${again[@]}" --no-progress
  touch "$dir/.finished"
}
if [[ -n "${TEACHER_CKPT:-}" && ! -f "$OUT/teacher/best.pt" ]]; then  # a teacher trained elsewhere
  mkdir -p "$OUT/teacher" && cp "$TEACHER_CKPT" "$OUT/teacher/best.pt" && touch "$OUT/teacher/.finished"
fi
log "teacher: $TEACHER_CONFIG at $TEACHER_SIZE, $TEACHER_MIN min (or TEACHER_CKPT)"
run teacher vit-perception train --config "$TEACHER_CONFIG" "${TSIZE[@]}" \
  --train "$TEACHER_TRAIN" --val "$B/val" --time-budget "$TEACHER_MIN"
log "student on labels alone: $STUDENT_CONFIG, $STUDENT_MIN min"
run labels_only vit-perception train --config "$STUDENT_CONFIG" "${SSIZE[@]}" --train "$B/train" --val "$B/val" \
  --time-budget "$STUDENT_MIN"
log "student distilled with labels: $STUDENT_MIN min"
run distilled vit-perception distill --teacher "$OUT/teacher/best.pt" \
  --student-config "$STUDENT_CONFIG" "${SSIZE[@]}" "${DSET[@]}" --train "$B/train" --val "$B/val" \
  --time-budget "$STUDENT_MIN"
log "student distilled with labels + the unlabelled bag: $STUDENT_MIN min"
run distilled_unlabelled vit-perception distill --teacher "$OUT/teacher/best.pt" \
  --student-config "$STUDENT_CONFIG" "${SSIZE[@]}" "${DSET[@]}" --train "$B/train" \
  --unlabelled "$B/unlabelled" \
  --val "$B/val" --time-budget "$STUDENT_MIN"
for run in teacher labels_only distilled distilled_unlabelled; do
  log "eval $run on the held-out bag"
  vit-perception eval --bag "$B/test" --model "$OUT/$run/best.pt" --json "$OUT/eval/$run.json" \
    | grep -E "^(AP|AP50|latency ms) "
done
log "bench: teacher and student in one run, torch (eager and compiled) and onnxruntime, one thread per physical core"
vit-perception bench --model "$OUT/teacher/best.pt" "$OUT/distilled_unlabelled/best.pt" \
  --backend torch onnxruntime --iters "$BENCH_ITERS" --json "$OUT/eval/bench.json"
vit-perception bench --model "$OUT/teacher/best.pt" "$OUT/distilled_unlabelled/best.pt" \
  --backend torch --compile --iters "$BENCH_ITERS" --json "$OUT/eval/bench_compile.json"
python - "$OUT" "$STYLE" "$STUDENT_MIN" "$TEST_FRAMES" <<'PY'
import json, sys
from pathlib import Path
out, style, minutes, frames = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ev = {r: json.loads((out / "eval" / f"{r}.json").read_text())
      for r in ("teacher", "labels_only", "distilled", "distilled_unlabelled")}
bench = {**json.loads((out / "eval" / "bench.json").read_text()),
         **json.loads((out / "eval" / "bench_compile.json").read_text())}
def ms(model, backend):  # end to end per frame (preprocess + infer + postprocess), batch 1
    label = f"{model}/best.pt {backend}"
    return 1000.0 / bench[label]["fps"] if label in bench else None
print(f"\nheld-out bag ({style} style, {frames} frames); students: {minutes} min each")
print(f"{'model':36s} {'AP50':>6s} {'AP':>6s}")
names = {"teacher": "teacher", "labels_only": "student, labels alone",
         "distilled": "student distilled, labels",
         "distilled_unlabelled": "student distilled, labels + 4x unl."}
for r, m in ev.items():
    print(f"{names[r]:36s} {m['AP50']:6.3f} {m['AP']:6.3f}")
for backend in ("torch", "torch+compile", "onnxruntime"):
    t, s = ms("teacher", backend), ms("distilled_unlabelled", backend)
    if t and s:
        print(f"latency {backend}: teacher {t:.1f} ms, student {s:.1f} ms, {t / s:.1f}x faster")
PY
