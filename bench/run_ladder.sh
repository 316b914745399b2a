#!/bin/sh
# The adaptive ladder on the new-classes CIFAR-10 pair (issue: where the filter matters), in
# rounds so that every rung grows together; resumable: rerun after an interruption. Its static
# rung is a class-mean shift experiment of the same config, so those trials are reused (copied in
# each round; run that experiment beside this script and it stays ahead).
#   sh bench/run_ladder.sh [LADDER_CONFIG OUT STATIC_EXPERIMENT] [ladder flags, e.g. --n-jobs 1]
# Background, under nice:
#   POISONLAB_DATA_DIR=... setsid nohup nice -n 19 sh bench/run_ladder.sh > ladder.log 2>&1 &
set -e
cd "$(dirname "$0")/.."
config=bench/configs/ladder_newclasses_cifar10.json
out=checkpoints/ladders/newclasses_cifar10
static=checkpoints/experiments/meanshift_newclasses_cifar10
case "$1" in *.json) config=$1; out=$2; static=$3; shift 3 ;; esac
mkdir -p "$out/static/trials"
for trials in 2 4 8 15 25 50; do
  for f in "$static"/trials/*.json; do
    case "$f" in *.tmp) continue ;; esac
    [ -e "$f" ] && [ -e "${f%.json}.npz" ] && [ ! -e "$out/static/trials/$(basename "$f")" ] \
      && cp "$f" "${f%.json}.npz" "$out/static/trials/"
  done
  python -m core ladder --config "$config" --out "$out" --trials "$trials" "$@"
done
