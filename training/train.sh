#!/usr/bin/env bash
# Reproduces models/ from scratch: simulator data -> training -> ONNX export -> int8 forms ->
# tract evaluation + speed -> calibration -> model card. Fixed seeds throughout.
#
#   training/train.sh            # CPU (the reference recipe; see MODEL_CARD.md for its duration)
#   DEVICE=cuda training/train.sh
#
# Knobs (env): DEVICE (cpu), THREADS (torch threads, 0 = torch's default), N_TRAIN, N_HARD,
# N_VAL, EPOCHS, SIM (a prebuilt examlink-sim; default: cargo run --release -p sim), SKIP_DATA=1
# (reuse training/data), SKIP_TRAIN=1 (reuse training/runs/main/best.pt), STOP_AFTER_TRAIN=1.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cpu}
THREADS=${THREADS:-0}
N_TRAIN=${N_TRAIN:-40000}
N_HARD=${N_HARD:-20000}
N_VAL=${N_VAL:-3000}
EPOCHS=${EPOCHS:-10}
DATA=training/data
RUN=training/runs/main
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}

sim() {
  if [[ -n "${SIM:-}" ]]; then "$SIM" "$@"; else cargo run --release -q -p sim -- "$@"; fi
}

start=$(date +%s)
if [[ -z "${SKIP_DATA:-}" ]]; then
  rm -rf "$DATA"
  # Training, hard training, and two held-out sets (val: model selection; calib: calibration
  # and the quantization study). Seeds are fixed and disjoint.
  sim crops --templates templates --out $DATA/train --count "$N_TRAIN" --seed 101
  sim crops --templates templates --out $DATA/hard --count "$N_HARD" --seed 202 --hard
  sim crops --templates templates --out $DATA/val --count "$N_VAL" --seed 303
  sim crops --templates templates --out $DATA/val_hard --count "$N_VAL" --seed 404 --hard
  sim crops --templates templates --out $DATA/calib --count "$N_VAL" --seed 505 --hard
fi
echo "data: $(( $(date +%s) - start )) s"

if [[ -z "${SKIP_TRAIN:-}" ]]; then
  python3 training/train.py --data $DATA/train $DATA/hard --val $DATA/val $DATA/val_hard \
    --out $RUN --epochs "$EPOCHS" --val-limit 100000 --device "$DEVICE" --threads "$THREADS" --seed 1234
fi
echo "train: $(( $(date +%s) - start )) s"
[[ -n "${STOP_AFTER_TRAIN:-}" ]] && exit 0

python3 training/export.py --ckpt $RUN/best.pt --out models
python3 training/quantize.py --float models --calib $DATA/calib --out $RUN/quant
python3 training/study.py --run $RUN --data $DATA
echo "total: $(( $(date +%s) - start )) s"
