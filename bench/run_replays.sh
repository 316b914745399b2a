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
    --victims "$CONTROLS" --defences none --attacks fc --trials 25
done
for exp in cifar10 fashion_mnist default; do
  python -m core replay --experiment "checkpoints/experiments/$exp" --out "checkpoints/replays/${exp}_paper_rules" \
    --victims '{"lab": {"head": "warm"}}' --trials 25
done
# What augmentation changes (item 1): the benchmark's crop + flip through the frozen extractor
# against the same head without it, on the new-classes grid's BP and FC poisons (paired)
python -m core replay --experiment checkpoints/experiments/newclasses_cifar10 \
  --out checkpoints/replays/newclasses_cifar10_augment --attacks bp fc --trials 20 --defences none \
  --victims '{"linear-aug": {"head": "linear", "augment": true}, "linear": {"head": "linear"}}'
