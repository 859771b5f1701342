#!/usr/bin/env bash
# Issues 12 and 13 on a lent GPU, in one call of about 9 minutes (the device tool allows 10):
#   - issue 13: a photo-style teacher (vit_s16_detr at 320x240, the issue's teacher) trained for
#     minutes of the GPU, where a CPU core gave 0.011-0.034 AP50 in 40-65 minutes (RESULTS,
#     fourteenth measurement); then the three students of that measurement under one budget
#     (labels alone; distilled with labels; distilled with the 4x unlabelled bag), all run side
#     by side; AP50 / AP (and any class) on the 600-frame held-out bag; `bench` of teacher and
#     student on the GPU;
#   - issue 12: `pretrain` of the tiny config on 2,000 unlabelled photo frames (ten classes),
#     `probe` against its random weights, few-label `train` (40 and 400 labels) from random and
#     pretrained weights side by side, and vit_s16 pretrain throughput (images/s, run alone);
#     beside it the fourteenth look's recipe (grey views, Sinkhorn-Knopp centring, KoLeo 0.1),
#     probed and used for the 400-label run too.
# The bags are the CPU measurements' own (same `synth` flags and seeds), made on the machine.
#
#   scripts/gpu_learning.sh --download            # here, with PyPI: fill .whl/ (3.12 wheels)
#   scripts/gpu_learning.sh                       # there: every step on cuda, results in $OUT
#   scripts/gpu_learning.sh --device cpu --quick  # the dry run of the same steps on a CPU
#
# With the device tool: command `scripts/gpu_learning.sh`, carry [".whl"], timeout_s 600.
# It runs on the image's Python (torch + CUDA, torchvision, OpenCV, scikit-image, scipy,
# matplotlib, timm, tensorboard); rosbags and what it needs, and faster-coco-eval, come from
# .whl/ (7 MB); rclpy is not used. What comes back in $OUT (runs/gpu_learning where $OUT is
# unset): summary.txt (the tables it prints at the end) and learning.tar.gz (every eval, probe
# and pretrain JSON, the few-label curves, the probe figures, each run's config.yaml, metrics and
# log). It stops itself after DEADLINE_S seconds (575), keeping what finished. Environment:
# minutes TEACHER_MIN (4), STUDENT_MIN (1.5), PRETRAIN_MIN (3), FEW_MIN (1.5), THROUGHPUT_MIN
# (0.4); TEACHER_FLAGS ("--batch-size 32 --workers 4"), PRETRAIN_FLAGS ("--batch-size 64
# --workers 6", each of the two pretrain runs); PYTHON (python3); GPU_LEARNING_WORK (where runs
# and bags go; $TMPDIR/vit_perception_gpu_learning), GPU_LEARNING_SITE (where wheels go).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
whl="${GPU_LEARNING_WHEELS:-$repo/.whl}"
py="${PYTHON:-python3}"
# module:distribution that the image lacks (rosbags 0.11 and its needs; COCO evaluation)
carried=("rosbags:rosbags" "apsw:apsw" "backports.zstd:backports.zstd" "lz4:lz4"
         "ruamel.yaml:ruamel.yaml" "faster_coco_eval:faster-coco-eval")
GPU_WHEELS_NAME=gpu_learning
# shellcheck source=scripts/gpu_wheels.sh
source "$repo/scripts/gpu_wheels.sh"

device=cuda quick=0 out="${OUT:-$repo/runs/gpu_learning}"
while (($#)); do
    case $1 in
        --download) gpu_wheels_download "$whl" "${carried[@]}"; exit 0 ;;
        --device) device=$2; shift ;;
        --quick) quick=1 ;;
        -h|--help) sed -n '2,30p' "${BASH_SOURCE[0]}"; exit 0 ;;
        -*) gpu_wheels_die "unknown option $1 (--download, --device DEV, --quick, [OUT])" ;;
        *) out=$1 ;;
    esac
    shift
done
site="${GPU_LEARNING_SITE:-${TMPDIR:-/tmp}/vit_perception_gpu_learning_site}"
gpu_wheels_install "$py" "$site" "$whl" "${carried[@]}"
export PYTHONPATH="$repo:$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# the scripts call `vit-perception`; there is no colcon install on that machine
bin="$(mktemp -d)"
printf '#!/bin/sh\nexec "%s" -m vit_perception "$@"\n' "$(command -v "$py")" >"$bin/vit-perception"
chmod +x "$bin/vit-perception"
export PATH="$bin:$PATH"

W="${GPU_LEARNING_WORK:-${TMPDIR:-/tmp}/vit_perception_gpu_learning}"
[[ $quick == 1 ]] && W="${GPU_LEARNING_WORK:-$repo/runs/gpu_learning_dry}"
# a work folder of an earlier run is replaced; any other existing folder is left alone
if [[ -e "$W" && ! -f "$W/.gpu_learning" ]]; then
    gpu_wheels_die "$W exists and is not a work folder of this script (set GPU_LEARNING_WORK)"
fi
rm -rf "$W" && mkdir -p "$W/logs" "$W/json" "$W/ph/eval" "$out" && touch "$W/.gpu_learning"
t0=$SECONDS
log() { printf '[gpu_learning %4ds] %s\n' "$((SECONDS - t0))" "$*"; }
# frames and minutes; --quick: a few frames and seconds, to run every step once on a CPU
if [[ $quick == 1 ]]; then
    F_TEACH=48 F_TRAIN=16 F_VAL=8 F_TEST=16 F_UNL2K=32 F_PROBE=80 F_400=16 F_40=8 F_TEST2=16
    TEACHER_MIN=0.2 STUDENT_MIN=0.1 PRETRAIN_MIN=0.1 FEW_MIN=0.1 THROUGHPUT_MIN=0.1
    TEACHER_FLAGS="${TEACHER_FLAGS:---batch-size 4}" PRETRAIN_FLAGS="${PRETRAIN_FLAGS:---batch-size 4}"
else
    F_TEACH=3000 F_TRAIN=300 F_VAL=100 F_TEST=600 F_UNL2K=2000 F_PROBE=300 F_400=400 F_40=40
    F_TEST2=200
fi
TEACHER_MIN="${TEACHER_MIN:-4}" STUDENT_MIN="${STUDENT_MIN:-1.5}"
PRETRAIN_MIN="${PRETRAIN_MIN:-3}" FEW_MIN="${FEW_MIN:-1.5}" THROUGHPUT_MIN="${THROUGHPUT_MIN:-0.4}"
read -r -a TFLAGS <<<"${TEACHER_FLAGS:---batch-size 32 --workers 4}"
read -r -a PFLAGS <<<"${PRETRAIN_FLAGS:---batch-size 64 --workers 6}"
V2=(--set pretrain.augment.grayscale=1.0 --set pretrain.centering=sinkhorn
    --set pretrain.koleo_weight=0.1)
DEV=(--device "$device")

summary() {  # also on a failure or a timeout: what finished comes back
    trap - EXIT
    [[ -n "${watchdog:-}" ]] && kill "$watchdog" 2>/dev/null || true
    "$py" "$repo/scripts/gpu_learning_summary.py" "$W" | tee "$out/summary.txt" || true
    tar -czf "$out/learning.tar.gz" -C "$W" --exclude='*.pt' --exclude='*.mcap' \
        --exclude='*.db3' --exclude='cache' --exclude='bags' --exclude='events.out.*' \
        --exclude='worst_*.png' . \
        2>/dev/null || true
    log "done: $out/summary.txt, $out/learning.tar.gz ($(du -h "$out/learning.tar.gz" | cut -f1))"
}
trap summary EXIT
# the device tool's call ends at 600 s: stop the runs in time to keep what finished
stop_tree() {  # stop_tree PID: the process and everything it started, children first
    local child
    for child in $(pgrep -P "$1" || true); do stop_tree "$child"; done
    kill -TERM "$1" 2>/dev/null || true
}
trap 'log "DEADLINE_S reached: stopping"; for p in "${PIDS[@]}"; do stop_tree "$p"; done; exit 124' TERM
(sleep "${DEADLINE_S:-575}" && kill -TERM $$) 2>/dev/null &
watchdog=$!

PIDS=() NAMES=()
start() {  # start NAME COMMAND...: in the background, output to $W/logs/NAME.log
    local name=$1
    shift
    "$@" >"$W/logs/$name.log" 2>&1 &
    PIDS+=($!) NAMES+=("$name")
}
join() {  # wait for every started job; name each one that failed, with its log's end
    local i bad=0
    for i in "${!PIDS[@]}"; do
        if ! wait "${PIDS[$i]}"; then
            bad=1
            log "FAILED: ${NAMES[$i]} (log end below)"
            tail -n 15 "$W/logs/${NAMES[$i]}.log" | sed 's/^/    /'
        fi
    done
    PIDS=() NAMES=()
    return $bad
}

"$py" - "$device" <<'PY'
import sys, torch
dev = sys.argv[1]
if dev.startswith("cuda"):
    if not torch.cuda.is_available():
        raise SystemExit(f"gpu_learning: --device {dev}, but torch {torch.__version__} sees no GPU")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(dev)}, "
          f"{torch.cuda.get_device_properties(dev).total_memory / 2**30:.0f} GiB")
else:
    print(f"torch {torch.__version__} on {dev}")
PY

log "bags (photo style, 320x240), made side by side"
synth() {  # synth DIR FRAMES SEED [flags]
    start "synth_${1//\//_}" vit-perception synth "$W/$1" --frames "$2" --seed "$3" \
        --size 320x240 --style photo "${@:4}"
}
# issue 13: the fourteenth measurement's bags (four classes)
synth ph/bags/teacher_train "$F_TEACH" 135
synth ph/bags/train "$F_TRAIN" 131
synth ph/bags/unlabelled "$((4 * F_TRAIN))" 132
synth ph/bags/val "$F_VAL" 133
synth ph/bags/test "$F_TEST" 134
# issue 12: scripts/pretrain_figures.sh's bags (ten classes)
synth pf/bags/unlabelled "$F_UNL2K" 121 --classes 10
synth pf/bags/probe1 "$F_PROBE" 122 --classes 10 --scene-length 1-1
synth pf/bags/train400 "$F_400" 123 --classes 10
synth pf/bags/train40 "$F_40" 124 --classes 10
synth pf/bags/val "$F_VAL" 125 --classes 10
synth pf/bags/test "$F_TEST2" 126 --classes 10
join

log "teacher vit_s16_detr 320x240 ($TEACHER_MIN min, ${TFLAGS[*]}) beside pretrain of vit_tiny_detr \
($PRETRAIN_MIN min, ${PFLAGS[*]}) and the random-weight probe"
start teacher vit-perception train --config vit_s16_detr --set input.width=320 \
    --set input.height=240 --train "$W/ph/bags/teacher_train" --val "$W/ph/bags/val" \
    --time-budget "$TEACHER_MIN" --set train.epochs=100000 --set train.eval_every=0 \
    --set train.eval_every_s=45 --out "$W/ph/teacher" --no-progress "${TFLAGS[@]}" "${DEV[@]}"
start pretrain sh -c 'exec "$@" >"$0"' "$W/json/pretrain.json" vit-perception pretrain \
    --config vit_tiny_detr --bags "$W/pf/bags/unlabelled" --out "$W/pf/pretrain" \
    --time-budget "$PRETRAIN_MIN" --no-progress "${PFLAGS[@]}" "${DEV[@]}"
# the fourteenth look's recipe (RESULTS, issue 12): grey views, Sinkhorn-Knopp centring, KoLeo
start pretrain_v2 sh -c 'exec "$@" >"$0"' "$W/json/pretrain_v2.json" vit-perception pretrain \
    --config vit_tiny_detr --bags "$W/pf/bags/unlabelled" --out "$W/pf/pretrain_v2" \
    --time-budget "$PRETRAIN_MIN" --no-progress "${PFLAGS[@]}" "${DEV[@]}" "${V2[@]}"
start probe_random vit-perception probe --backbone vit_tiny_detr --bag "$W/pf/bags/probe1" \
    --json "$W/json/probe_random.json" --no-progress "${DEV[@]}"
join || true  # a failed run leaves its rows empty; the others go on

log "students ($STUDENT_MIN min each) beside the few-label runs ($FEW_MIN min each), the teacher's \
eval and the pretrained probe"
student() {  # student NAME KIND [--set ...]: scripts/distill_student.sh, unpinned
    start "$1" env OUT="$W/ph" TEST=test TEACHER="$W/ph/teacher/best.pt" MIN="$STUDENT_MIN" \
        DEVICE="$device" "$repo/scripts/distill_student.sh" - "$1" 1 "${@:2}"
}
student labels_only train
student distilled distill-labels
student distilled_unlabelled distill --set distill.pseudo_labels=true \
    --set distill.teacher_nms_iou=0.4 --set distill.teacher_threshold=0.8
for n in 40 400; do
    for init in random pretrained pretrained_v2; do
        [[ $init == pretrained_v2 && $n == 40 ]] && continue
        I=()
        [[ $init == pretrained ]] && I=(--init "$W/pf/pretrain/backbone.pt")
        [[ $init == pretrained_v2 ]] && I=(--init "$W/pf/pretrain_v2/backbone.pt")
        start "train${n}_$init" vit-perception train --config vit_tiny_detr \
            --train "$W/pf/bags/train$n" --val "$W/pf/bags/val" --out "$W/pf/train${n}_$init" \
            --time-budget "$FEW_MIN" --set train.epochs=100000 --set train.eval_every=0 \
            --set train.eval_every_s=20 --no-progress "${I[@]}" "${DEV[@]}"
    done
done
for ck in best last; do
    start "eval_teacher_$ck" vit-perception eval --bag "$W/ph/bags/test" \
        --model "$W/ph/teacher/$ck.pt" --json "$W/ph/eval/teacher_$ck.json" --out-bag none \
        "${DEV[@]}"
done
start probe_pretrained vit-perception probe --backbone "$W/pf/pretrain/backbone.pt" \
    --bag "$W/pf/bags/probe1" --json "$W/json/probe_pretrained.json" --no-progress "${DEV[@]}"
start probe_pretrained_v2 vit-perception probe --backbone "$W/pf/pretrain_v2/backbone.pt" \
    --bag "$W/pf/bags/probe1" --json "$W/json/probe_pretrained_v2.json" --no-progress "${DEV[@]}"
join || true  # a failed run leaves its row empty; the others still count

log "few-label evals, then vit_s16 pretrain throughput alone ($THROUGHPUT_MIN min)"
for n in 40 400; do
    for init in random pretrained pretrained_v2; do
        [[ $init == pretrained_v2 && $n == 40 ]] && continue
        for ck in best last; do
            start "eval_train${n}_${init}_$ck" vit-perception eval --bag "$W/pf/bags/test" \
                --model "$W/pf/train${n}_$init/$ck.pt" --out-bag none \
                --json "$W/json/eval_train${n}_${init}_$ck.json" "${DEV[@]}"
        done
    done
done
join || true
start throughput sh -c 'exec "$@" >"$0"' "$W/json/throughput_vit_s16.json" vit-perception \
    pretrain --config vit_s16_detr --bags "$W/pf/bags/unlabelled" --out "$W/pf/throughput" \
    --time-budget "$THROUGHPUT_MIN" --no-progress --batch-size 64 --workers 12 "${DEV[@]}"
join || true

log "bench: teacher and student in one run (torch on $device)"
start bench vit-perception bench --model "$W/ph/teacher/best.pt" \
    "$W/ph/distilled_unlabelled/best.pt" --backend torch "${DEV[@]}" --iters 50 \
    --json "$W/json/bench.json"
join || true
"$py" "$repo/scripts/few_label_curves.py" "$W/few_labels.png" \
    "400 labels, random init=$W/pf/train400_random" \
    "400 labels, pretrained=$W/pf/train400_pretrained" \
    "40 labels, random init=$W/pf/train40_random" \
    "40 labels, pretrained=$W/pf/train40_pretrained" \
    "400 labels, pretrained (grey, Sinkhorn, KoLeo)=$W/pf/train400_pretrained_v2" --x step \
    >/dev/null || true
