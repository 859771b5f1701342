#!/usr/bin/env bash
# The figures of issue 12 (DINO pretraining), run on a quiet machine:
#   - feature quality: `probe` (k-NN accuracy, linear accuracy, attention in box) of the tiny
#     config after 5, 15 and 30 min of `pretrain` on 2,000 unlabelled --style photo frames,
#     against the same backbone with random weights. The probe bag has one frame per scene
#     (`--scene-length 1`): ~730 marks, each a new one on a new background. With the default
#     5-20-frame scenes its 300 frames hold only ~25 distinct marks per half, several classes
#     are missing from one half, and the figures swing by 5-10 points with the draw;
#   - few labels: `train` with 40 and with 400 labelled frames for TRAIN_MIN minutes from random
#     weights and from the 30-minute backbone; AP50 / AP on a held-out bag;
#   - pretrain throughput (images/s, from pretrain's summary).
# Usage (from the repository root, after `source env.sh`):
#   scripts/pretrain_figures.sh [OUT]           # OUT defaults to runs/pretrain_figures
# Environment: CONFIG (vit_tiny_detr), MINUTES ("5 15 30"), TRAIN_MIN (15), UNLABELLED (2000),
# DEVICE (auto), EXTRA_PRETRAIN (more pretrain flags, e.g. "--set pretrain.ibot_weight=0").
# Steps whose output exists are skipped, so a stopped run continues. Takes about
# max(MINUTES) + 4 * TRAIN_MIN + ~15 minutes (bags, probes, evals): ~1 h 45 min with the
# defaults.
# GPU throughput only:  CONFIG=vit_s16_detr MINUTES=3 DEVICE=cuda scripts/pretrain_figures.sh
#   --throughput-only   (prints images/s of a 3-minute pretrain and stops)
set -euo pipefail
OUT="${1:-runs/pretrain_figures}"
THROUGHPUT_ONLY=0
if [[ "${2:-}" == "--throughput-only" || "${1:-}" == "--throughput-only" ]]; then
  THROUGHPUT_ONLY=1
  [[ "${1:-}" == "--throughput-only" ]] && OUT=runs/pretrain_figures
fi
CONFIG="${CONFIG:-vit_tiny_detr}"
MINUTES="${MINUTES:-5 15 30}"
TRAIN_MIN="${TRAIN_MIN:-15}"
UNLABELLED="${UNLABELLED:-2000}"
DEV=()
[[ -n "${DEVICE:-}" ]] && DEV=(--device "$DEVICE")
# shellcheck disable=SC2206
EXTRA=(${EXTRA_PRETRAIN:-})
SYNTH=(--style photo --classes 10 --size 320x240)
B="$OUT/bags"
mkdir -p "$OUT/json"
t0=$SECONDS
log() { printf '[pretrain_figures %5ds] %s\n' "$((SECONDS - t0))" "$*"; }
bag() {  # bag NAME FRAMES SEED [more synth flags]
  [[ -d "$B/$1" ]] || vit-perception synth "$B/$1" --frames "$2" --seed "$3" "${SYNTH[@]}" \
    "${@:4}"
}

log "bags: unlabelled $UNLABELLED, probe 300 (one frame a scene), train 400, 40, val 100, test 200"
bag unlabelled "$UNLABELLED" 121
LAST=""
for m in $MINUTES; do
  run="$OUT/pretrain_${m}min"
  if [[ ! -f "$run/backbone.pt" ]]; then
    # one run continued: the m-minute backbone is the previous one trained on (--resume; the
    # time budget counts every segment), so 5/15/30 cost 30 minutes, not 50
    AGAIN=()
    if [[ -n "$LAST" ]]; then
      rm -rf "$run" && cp -r "$(dirname "$LAST")" "$run" && AGAIN=(--resume)
    fi
    log "pretrain $CONFIG up to $m min on the unlabelled bag (labels ignored)"
    vit-perception pretrain --config "$CONFIG" --bags "$B/unlabelled" --out "$run" \
      --time-budget "$m" --no-progress "${AGAIN[@]}" "${DEV[@]}" "${EXTRA[@]}" \
      > "$OUT/json/pretrain_${m}min.json"
  fi
  python -c "import json,sys; d=json.load(open(sys.argv[1])); print(f\"pretrain {sys.argv[2]} min: \
{d['steps']} steps, {d['images_per_s']} images/s ({d['crops_per_s']} crops/s), teacher entropy \
{d.get('teacher_entropy')}, KL {d.get('kl')}\")" "$OUT/json/pretrain_${m}min.json" "$m"
  LAST="$run/backbone.pt"
done
[[ "$THROUGHPUT_ONLY" == 1 ]] && exit 0

bag probe1 300 122 --scene-length 1-1
bag train400 400 123
bag train40 40 124
bag val 100 125
bag test 200 126
probe() {  # probe NAME BACKBONE
  [[ -f "$OUT/json/probe_$1.json" ]] || vit-perception probe --backbone "$2" --bag "$B/probe1" \
    --json "$OUT/json/probe_$1.json" --no-progress "${DEV[@]}" | tail -n 5
}
log "probe: random weights and each pretrained backbone"
probe random "$CONFIG"
for m in $MINUTES; do probe "${m}min" "$OUT/pretrain_${m}min/backbone.pt"; done

for n in 40 400; do
  for init in random pretrained; do
    run="$OUT/train${n}_$init"
    INIT=()
    [[ "$init" == pretrained ]] && INIT=(--init "$LAST")
    if [[ ! -f "$run/best.pt" ]]; then
      log "train $CONFIG on $n labelled frames from $init weights, $TRAIN_MIN min"
      vit-perception train --config "$CONFIG" --train "$B/train$n" --val "$B/val" --out "$run" \
        --time-budget "$TRAIN_MIN" --no-progress "${DEV[@]}" "${INIT[@]}" > /dev/null
    fi
    [[ -f "$OUT/json/eval_train${n}_$init.json" ]] || vit-perception eval --bag "$B/test" \
      --model "$run/best.pt" --json "$OUT/json/eval_train${n}_$init.json" \
      --out-bag none "${DEV[@]}" | tail -n 4
  done
done

python - "$OUT" "$MINUTES" "$TRAIN_MIN" "$CONFIG" <<'PY'
import json, sys
from pathlib import Path
out, minutes, train_min, config = Path(sys.argv[1]), sys.argv[2].split(), sys.argv[3], sys.argv[4]
j = lambda name: json.loads((out / "json" / f"{name}.json").read_text())
print(f"\nfeature quality of {config} on the probe bag (photo style, 10 shape classes, "
      "one frame a scene; chance 0.10)")
print(f"{'backbone':24s} {'k-NN acc':>9s} {'linear':>7s} {'attn in box':>12s} {'images/s':>9s}")
rows = [("random weights", j("probe_random"), None)]
rows += [(f"pretrain {m} min", j(f"probe_{m}min"), j(f"pretrain_{m}min")) for m in minutes]
base = rows[0][1]["knn_accuracy"]
for name, p, pre in rows:
    rate = f"{pre['images_per_s']:9.1f}" if pre else f"{'':9s}"
    print(f"{name:24s} {p['knn_accuracy']:9.3f} {p['linear_accuracy']:7.3f} "
          f"{p['attention_in_box']:12.3f} {rate}   k-NN {100 * (p['knn_accuracy'] - base):+.1f} pts")
print(f"\nfew labels: train {train_min} min, AP50 / AP on the held-out bag (200 frames)")
print(f"{'labelled frames':16s} {'random init':>16s} {'pretrained':>16s} {'AP50 gain':>10s}")
for n in (40, 400):
    a, b = j(f"eval_train{n}_random"), j(f"eval_train{n}_pretrained")
    print(f"{n:<16d} {a['AP50']:7.3f} / {a['AP']:6.3f} {b['AP50']:7.3f} / {b['AP']:6.3f} "
          f"{b['AP50'] - a['AP50']:+10.3f}")
PY
