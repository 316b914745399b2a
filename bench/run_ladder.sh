#!/bin/sh
# The adaptive ladder on the new-classes CIFAR-10 pair (issue: where the filter matters), in
# rounds so that every rung grows together; resumable: rerun after an interruption. Its static
# rung is the class-mean shift experiment (the same config), so those trials are reused.
# Background, under nice:
#   POISONLAB_DATA_DIR=... setsid nohup nice -n 19 sh bench/run_ladder.sh > ladder.log 2>&1 &
set -e
cd "$(dirname "$0")/.."
out=checkpoints/ladders/newclasses_cifar10
mkdir -p "$out/static/trials"
for trials in 2 4 8 15 25 50; do
  # the shared static rung: the class-mean shift experiment's finished trials (same config), each round
  for f in checkpoints/experiments/meanshift_newclasses_cifar10/trials/*.json; do
    [ -e "$f" ] && [ -e "${f%.json}.npz" ] && [ ! -e "$out/static/trials/$(basename "$f")" ] \
      && cp "$f" "${f%.json}.npz" "$out/static/trials/"
  done
  python -m core ladder --config bench/configs/ladder_newclasses_cifar10.json --out "$out" --trials "$trials" "$@"
done
