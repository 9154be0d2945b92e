#!/usr/bin/env bash
# Regenerates every number of docs/RESULTS.md on CPU. Each step is resumable: rerun the same
# command after an interruption and finished work is skipped.
#
#   bash experiments/cifar10/run.sh data        # carve the fixed final-test split (once)
#   bash experiments/cifar10/run.sh shrink      # K=2 pipelines with none / accuracy / diversity shrinking
#   bash experiments/cifar10/run.sh rank        # Kendall tau of the three supernets on 30 ensembles
#   bash experiments/cifar10/run.sh ablate      # homo/hetero, sharing, K = 2, 3, 5, evolution vs random
#   bash experiments/cifar10/run.sh tables      # docs/results/*.json and *.png from the runs
#
# The groups `shrink` and `rank` can run side by side (rank waits for the first supernet).
# Every process uses one thread: two of them keep both cores of a 2-core machine busy.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
HERE=experiments/cifar10
RUNS=${RUNS:-runs/cifar10-cpu}
DATA=data/cifar10-carved

run() {  # neas run, resuming when the run directory exists
  local name=$1
  if [ -f "$RUNS/$name/summary.json" ]; then echo "$name: done"; return; fi
  local resume=(); [ -d "$RUNS/$name" ] && resume=(--resume)
  neas run --config "$HERE/$name.yaml" --out "$RUNS/$name" "${resume[@]}"
}

case "${1:-}" in
  data)
    [ -d "$DATA/test" ] || neas carve-test ../shared/data/cifar10 --out "$DATA" --test-fraction 0.2 ;;
  shrink)
    run k2_diversity; run k2_none; run k2_accuracy ;;
  rank)
    until [ -f "$RUNS/k2_diversity/supernet/supernet.safetensors" ]; do sleep 30; done
    neas rank --supernet "$RUNS"/k2_{diversity,none,accuracy}/supernet --num-archs 30 --from-space full \
      --scratch-epochs 3 --scratch-batch-size 128 --seed 0 --out "$RUNS/rank" ;;
  ablate)
    arch="$RUNS/k2_diversity/search/arch.json"
    neas ablate homo-hetero --arch "$arch" --data cifar10 --data-dir "$DATA" --recipe small --epochs 8 --batch-size 128 --out "$RUNS/homo_hetero"
    neas ablate split --arch "$arch" --data cifar10 --data-dir "$DATA" --recipe small --epochs 8 --batch-size 128 --out "$RUNS/split"
    neas ablate paths --config "$HERE/k2_diversity.yaml" --paths 3 5 --reuse 2="$RUNS/k2_diversity" --out "$RUNS/paths"
    neas ablate search --run "$RUNS"/k2_{diversity,none,accuracy} --out "$RUNS/search" ;;
  *)
    sed -n '2,13p' "$0"; exit 2 ;;
esac
