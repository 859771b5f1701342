#!/usr/bin/env bash
# The figures of issue 12 (DINO pretraining), run on a quiet machine:
#   - feature quality: `probe` (k-NN accuracy, linear accuracy, attention in box) of the tiny
#     config after 5, 15 and 30 min of `pretrain` on 2,000 unlabelled --style photo frames,
#     against the same backbone with random weights. The probe bag has one frame per scene
#     (`--scene-length 1`): ~730 marks, each a new one on a new background. With the default
#     5-20-frame scenes its 300 frames hold only ~25 distinct marks per half, several classes
#     are missing from one half, and the figures swing by 5-10 points with the draw;
#   - few labels: `train` with 40 and with 400 labelled frames for TRAIN_MIN minutes (40 labels:
#     TRAIN40_MIN) from random weights and from the last (30-minute) backbone; AP50 / AP on a
#     held-out bag, and validation AP50 / loss curves (few_labels.png);
#   - with CONV_MIN set: the conv stem (model.backbone.stem=conv) pretrained CONV_MIN minutes,
#     probed against its random weights, and trained on the 400 labelled frames (TRAIN_MIN) from
#     both;
#   - pretrain throughput (images/s, from pretrain's summary).
# Usage (from the repository root, after `source env.sh`):
#   scripts/pretrain_figures.sh [OUT]           # OUT defaults to runs/pretrain_figures
# Environment: CONFIG (vit_tiny_detr), MINUTES ("5 15 30"), TRAIN_MIN (15), TRAIN40_MIN
# (TRAIN_MIN), CONV_MIN (unset: no conv stem runs), UNLABELLED (2000), DEVICE (auto),
# EXTRA_PRETRAIN (more pretrain flags, e.g. "--set pretrain.ibot_weight=0").
# Steps whose output exists are skipped, so a stopped run continues. Takes about
# max(MINUTES) + 2 * (TRAIN_MIN + TRAIN40_MIN) + ~15 minutes (bags, probes, evals): ~1 h 45 min
# with the defaults; CONV_MIN adds CONV_MIN + 2 * TRAIN_MIN.
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
TRAIN40_MIN="${TRAIN40_MIN:-$TRAIN_MIN}"
CONV_MIN="${CONV_MIN:-}"
CONV=(--set model.backbone.stem=conv)
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

few() {  # few NAME LABELLED MINUTES [train flags]: train, then AP50 / AP on the test bag
  local run="$OUT/$1" n=$2 min=$3
  if [[ ! -f "$run/best.pt" ]]; then
    log "train $CONFIG on $n labelled frames ($1), $min min"
    vit-perception train --config "$CONFIG" --train "$B/train$n" --val "$B/val" --out "$run" \
      --time-budget "$min" --no-progress "${DEV[@]}" "${@:4}" > /dev/null
  fi
  # best.pt: the best validation epoch (near-zero validation AP makes that mostly chance);
  # last.pt: the end of the budget
  [[ -f "$OUT/json/eval_$1.json" ]] || vit-perception eval --bag "$B/test" \
    --model "$run/best.pt" --json "$OUT/json/eval_$1.json" --out-bag none "${DEV[@]}" | tail -n 4
  [[ -f "$OUT/json/eval_$1_last.json" ]] || vit-perception eval --bag "$B/test" \
    --model "$run/last.pt" --json "$OUT/json/eval_$1_last.json" --out-bag none "${DEV[@]}" \
    | tail -n 4
}
for n in 40 400; do
  min=$TRAIN_MIN
  [[ $n == 40 ]] && min=$TRAIN40_MIN
  few "train${n}_random" "$n" "$min"
  few "train${n}_pretrained" "$n" "$min" --init "$LAST"
done
python scripts/few_label_curves.py "$OUT/few_labels.png" \
  "400 labels, random init=$OUT/train400_random" \
  "400 labels, pretrained=$OUT/train400_pretrained" \
  "40 labels, random init=$OUT/train40_random" "40 labels, pretrained=$OUT/train40_pretrained"

if [[ -n "$CONV_MIN" ]]; then
  run="$OUT/pretrain_conv_${CONV_MIN}min"
  if [[ ! -f "$run/backbone.pt" ]]; then
    log "pretrain $CONFIG with the conv stem, $CONV_MIN min"
    vit-perception pretrain --config "$CONFIG" "${CONV[@]}" --bags "$B/unlabelled" --out "$run" \
      --time-budget "$CONV_MIN" --no-progress "${DEV[@]}" "${EXTRA[@]}" \
      > "$OUT/json/pretrain_conv_${CONV_MIN}min.json"
  fi
  probe conv_random "$run/config.yaml"  # a run's config.yaml: its random weights
  probe "conv_${CONV_MIN}min" "$run/backbone.pt"
  few train400_conv_random 400 "$TRAIN_MIN" "${CONV[@]}"
  few train400_conv_pretrained 400 "$TRAIN_MIN" "${CONV[@]}" --init "$run/backbone.pt"
fi

python - "$OUT" "$MINUTES" "$TRAIN_MIN" "$CONFIG" "$TRAIN40_MIN" "$CONV_MIN" <<'PY'
import json, sys
from pathlib import Path
out, minutes, train_min, config = Path(sys.argv[1]), sys.argv[2].split(), sys.argv[3], sys.argv[4]
train40_min, conv_min = sys.argv[5], sys.argv[6]
j = lambda name: json.loads((out / "json" / f"{name}.json").read_text())
print(f"\nfeature quality of {config} on the probe bag (photo style, 10 shape classes, "
      "one frame a scene; chance 0.10)")
print(f"{'backbone':30s} {'k-NN acc':>9s} {'linear':>7s} {'attn in box':>12s} {'images/s':>9s}")
rows = [("random weights", j("probe_random"), None)]
rows += [(f"pretrain {m} min", j(f"probe_{m}min"), j(f"pretrain_{m}min")) for m in minutes]
base = rows[0][1]["knn_accuracy"]
for name, p, pre in rows:
    rate = f"{pre['images_per_s']:9.1f}" if pre else f"{'':9s}"
    print(f"{name:30s} {p['knn_accuracy']:9.3f} {p['linear_accuracy']:7.3f} "
          f"{p['attention_in_box']:12.3f} {rate}   k-NN {100 * (p['knn_accuracy'] - base):+.1f} pts")
if conv_min:
    rows += [("conv stem, random", j("probe_conv_random"), None),
             (f"conv stem, pretrain {conv_min} min", j(f"probe_conv_{conv_min}min"),
              j(f"pretrain_conv_{conv_min}min"))]
    for name, p, pre in rows[-2:]:
        rate = f"{pre['images_per_s']:9.1f}" if pre else f"{'':9s}"
        print(f"{name:30s} {p['knn_accuracy']:9.3f} {p['linear_accuracy']:7.3f} "
              f"{p['attention_in_box']:12.3f} {rate}")
print(f"\nfew labels: train {train_min} min ({train40_min} min with 40 labels), AP50 / AP on "
      "the held-out bag (200 frames)")
print(f"{'labelled frames':24s} {'random init':>16s} {'pretrained':>16s} {'AP50 gain':>10s}")
pairs = [(f"{n}", f"train{n}_random", f"train{n}_pretrained") for n in (40, 400)]
if conv_min:
    pairs.append(("400, conv stem", "train400_conv_random", "train400_conv_pretrained"))
for label, ra, pb in pairs:
    for ck, suffix in (("best.pt", ""), ("last.pt", "_last")):
        a, b = j(f"eval_{ra}{suffix}"), j(f"eval_{pb}{suffix}")
        print(f"{label + ', ' + ck:24s} {a['AP50']:7.3f} / {a['AP']:6.3f} {b['AP50']:7.3f} / "
              f"{b['AP']:6.3f} {b['AP50'] - a['AP50']:+10.3f}")
PY
