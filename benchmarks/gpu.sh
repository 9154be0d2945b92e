#!/usr/bin/env bash
# The prepared GPU check of issue 16 (docs/PERFORMANCE.md, "GPU"): benchmark 1 (supernet vs plain
# step, both spaces) and 6 (against timm) at --size imagenet, plus benchmark 9 (compiled blocks),
# in under 8 minutes on one card. Writes $OUT/gpu.json (or ./gpu.json).
#   bash benchmarks/gpu.sh
set -euo pipefail
OUT=${OUT:-.}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python - <<'PY'
import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")
PY
timeout 420 python -m benchmarks --size imagenet --device cuda --only 1 6 9 --json "$OUT/gpu.json"
