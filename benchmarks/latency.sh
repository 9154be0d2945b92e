#!/usr/bin/env bash
# Issue 18's latency validation (docs/PERFORMANCE.md, "Latency predictions vs the deployed
# runtime"): a table of the `cifar` space in torch and in ONNX Runtime, at batch 1 and 32, each
# checked against 20 other random ensembles timed end to end twice. Run it on a quiet machine:
# the table and the validation are minutes apart, and a machine that changes speed in between
# shows up as bias. Writes $OUT/cifar_<runtime>_b<batch>$SUFFIX.json and .validation.json / .png.
#   OUT=docs/latency bash benchmarks/latency.sh [--force]
#   OUT=docs/latency SUFFIX=_repeat2 BATCHES=1 bash benchmarks/latency.sh     # a repeat, batch 1 only
set -euo pipefail
OUT=${OUT:-.}
SUFFIX=${SUFFIX:-}
for batch in ${BATCHES:-1 32}; do
  for runtime in torch onnxruntime; do
    neas latency-table --space cifar --num-classes 10 --runtime "$runtime" --batch-size "$batch" \
      --out "$OUT/cifar_${runtime}_b${batch}${SUFFIX}.json" --validate 20 "$@"
  done
done
