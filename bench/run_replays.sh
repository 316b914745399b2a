#!/bin/sh
# Head controls (the strong-attacks issue, item 3) and the paper-rule filters (item 5) on the
# poisons the shipped experiments already crafted: no crafting, resumable. Background, under nice:
#   POISONLAB_DATA_DIR=... setsid nohup nice -n 19 sh bench/run_replays.sh > replays.log 2>&1 &
set -e
cd "$(dirname "$0")/.."
CONTROLS='{"lab": {"head": "warm"}, "wd-0.01": {"head": "warm", "weight_decay": 0.01},
  "wd-0.1": {"head": "warm", "weight_decay": 0.1}, "benchmark": {"head": "linear"},
  "ncm": {"head": "ncm"}, "gaussian": {"head": "gaussian"}}'
for exp in cifar10 fashion_mnist default; do
  python -m core replay --experiment "checkpoints/experiments/$exp" --out "checkpoints/replays/${exp}_controls" \
    --victims "$CONTROLS" --defences none --attacks fc
done
for exp in cifar10 fashion_mnist default; do
  python -m core replay --experiment "checkpoints/experiments/$exp" --out "checkpoints/replays/${exp}_paper_rules" \
    --victims '{"lab": {"head": "warm"}}'
done
