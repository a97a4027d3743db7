#!/usr/bin/env bash
# Runs the training half of train.sh on a lent GPU machine (optional; the recipe is the same as
# on CPU). Expects training/.gpu/{examlink-sim,fonts/} carried from the dev machine; returns
# best.pt, last.pt and log.jsonl through $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
export EXAMLINK_FONT_DIR=$PWD/training/.gpu/fonts PYTHONUNBUFFERED=1
nvidia-smi -L || true
DEVICE=cuda SIM=$PWD/training/.gpu/examlink-sim STOP_AFTER_TRAIN=1 bash training/train.sh 2>&1 | tee "$OUT/train.log"
cp training/runs/main/best.pt training/runs/main/last.pt training/runs/main/log.jsonl "$OUT/"
