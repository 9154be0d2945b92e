#!/usr/bin/env bash
# The single-seed study (one seed per experiment) and the one-GPU configuration of docs/RESULTS.md;
# the seeded CPU study of docs/RESULTS.md is experiments/cifar10/study.py. Each step is resumable:
# rerun the same command after an interruption and finished work is skipped.
#
#   bash experiments/cifar10/run.sh data        # carve the fixed final-test split (once)
#   bash experiments/cifar10/run.sh shrink      # K=2 pipelines with none / accuracy / diversity shrinking
#   bash experiments/cifar10/run.sh rank        # Kendall tau of the three supernets on 30 ensembles
#   bash experiments/cifar10/run.sh ablate      # homo/hetero and layer sharing on the diversity run's ensemble
#   bash experiments/cifar10/run.sh paths       # K = 2, 3, 5 under one budget
#   bash experiments/cifar10/run.sh search      # evolution vs random at equal evaluations
#   bash experiments/cifar10/run.sh collect     # copy every result into docs/results/<runs folder name>/
#
# Two groups can run side by side, e.g. `shrink` then `ablate` beside `paths` then `rank`
# (`rank` waits for the three supernets of `shrink`).
# Every process uses one thread: two of them keep both cores of a 2-core machine busy.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
HERE=${EXP:-experiments/cifar10}           # experiments/cifar10-gpu: the one-GPU configuration
RUNS=${RUNS:-runs/cifar10-cpu}
SCRATCH_EPOCHS=${SCRATCH_EPOCHS:-3}          # from-scratch epochs of the ranking study
RETRAIN_EPOCHS=${RETRAIN_EPOCHS:-8}          # epochs of the ablations' retrains (as the configs' retrain)
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
    for m in diversity none accuracy; do
      until [ -f "$RUNS/k2_$m/supernet/supernet.safetensors" ]; do sleep 30; done
    done
    neas rank --supernet "$RUNS"/k2_{diversity,none,accuracy}/supernet --num-archs 30 --from-space full \
      --scratch-epochs "$SCRATCH_EPOCHS" --scratch-batch-size 128 --seed 0 --out "$RUNS/rank" ;;
  ablate)
    arch="$RUNS/k2_diversity/search/arch.json"
    hh="$arch"
    if ! python -c "import json, sys; a = json.load(open('$arch')); sys.exit(a['split'] == len(a['paths'][0]))"; then
      # the searched ensemble shares every layer (its paths differ only in their heads): mirror the
      # best ensemble with private layers that the same search finds under the same budget instead
      hh="$RUNS/search_private/arch.json"
      resume=(); [ -f "$RUNS/search_private/state.json" ] && resume=(--resume)
      [ -f "$hh" ] || neas search --config "$RUNS/k2_diversity/search/config.yaml" --split 0 3 --out "$RUNS/search_private" "${resume[@]}"
    fi
    neas ablate homo-hetero --arch "$hh" --data cifar10 --data-dir "$DATA" --recipe small --epochs "$RETRAIN_EPOCHS" --batch-size 128 --out "$RUNS/homo_hetero"
    neas ablate split --arch "$arch" --data cifar10 --data-dir "$DATA" --recipe small --epochs "$RETRAIN_EPOCHS" --batch-size 128 --out "$RUNS/split"    ;;
  paths)
    until [ -f "$RUNS/k2_diversity/summary.json" ]; do sleep 30; done
    neas ablate paths --config "$HERE/k2_diversity.yaml" --paths 3 5 --reuse 2="$RUNS/k2_diversity" --out "$RUNS/paths" ;;
  search)
    neas ablate search --run "$RUNS"/k2_{diversity,none,accuracy} --out "$RUNS/search" ;;
  collect)  # into docs/results/<runs folder name>/ (e.g. cifar10-gpu): never over another study's files
    OUT=docs/results/$(basename "$RUNS")
    mkdir -p "$OUT"
    cp "$RUNS"/rank/rank.json "$RUNS"/rank/rank.md "$OUT"/
    cp "$RUNS"/rank/rank_k2_*_supernet.png "$OUT"/
    for r in k2_diversity k2_none k2_accuracy; do cp "$RUNS/$r/summary.json" "$OUT/summary_$r.json"; done
    for a in homo_hetero split paths search; do
      cp "$RUNS/$a/ablate.json" "$OUT/$a.json"; cp "$RUNS/$a/ablate.md" "$OUT/$a.md"
    done
    cp "$RUNS/search/search_curve.png" "$OUT"/ ;;
  *)
    sed -n '2,18p' "$0"; exit 2 ;;
esac
