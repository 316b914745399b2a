#!/bin/sh
# The strong-attacks grids (issue: the field's strongest attacks under its protocol), one after
# another, each resumable: rerun this script after an interruption and every grid continues where
# it stopped. Run it in the background under nice, e.g.
#   POISONLAB_DATA_DIR=... setsid nohup nice -n 19 sh bench/run_grids.sh > grids.log 2>&1 &
set -e
cd "$(dirname "$0")/.."
for grid in newclasses_cifar10 benchmark_cifar10; do
  python -m core experiment --config "bench/configs/$grid.json" --out "checkpoints/experiments/$grid" "$@"
done
