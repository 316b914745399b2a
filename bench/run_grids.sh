#!/bin/sh
# The strong-attacks grids (issue: the field's strongest attacks under its protocol), in rounds so
# that both grow together (each round adds trials to every cell of both, and writes their
# results.json), each resumable: rerun this script after an interruption and every grid continues
# where it stopped. Run it in the background under nice, e.g.
#   POISONLAB_DATA_DIR=... setsid nohup nice -n 19 sh bench/run_grids.sh > grids.log 2>&1 &
set -e
cd "$(dirname "$0")/.."
for trials in 4 8 15 25 50 100; do
  for grid in newclasses_cifar10 benchmark_cifar10; do
    python -m core experiment --config "bench/configs/$grid.json" --out "checkpoints/experiments/$grid" \
      --trials "$trials" "$@"
  done
done
