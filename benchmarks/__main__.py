"""Runs the benchmark suite and prints one line per benchmark with both sides and their ratio.

python -m benchmarks                      # about a minute per benchmark on 2 CPU cores
python -m benchmarks --size imagenet      # GPU-scale inputs and batches
python -m benchmarks --json bench.json --only 1 3
"""

from __future__ import annotations

import argparse
import platform

import torch

from benchmarks.bench_compile import compiled_blocks
from benchmarks.bench_data import data_feed
from benchmarks.bench_ddp import ddp_reduction
from benchmarks.bench_eval import candidate_evaluation
from benchmarks.bench_retrain import compiled_retrain
from benchmarks.bench_step import shared_once, supernet_vs_plain
from benchmarks.bench_timm import versus_timm
from benchmarks.cascade_onnx import cascade_onnx
from benchmarks.common import SIZES, dump


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--only", nargs="*", type=int, help="benchmark numbers to run (default all)")
    args = parser.parse_args(argv)
    size = SIZES[args.size]
    suite = {
        1: [
            lambda: supernet_vs_plain("cifar", size, args.device),
            lambda: supernet_vs_plain("imagenet", size, args.device),
        ],
        2: [lambda: shared_once("cifar", size, args.device), lambda: shared_once("imagenet", size, args.device)],
        3: [
            lambda: candidate_evaluation(size, args.device),
            lambda: candidate_evaluation(size, args.device, kind="evolution"),
        ],
        4: [lambda: data_feed(size, args.device)],
        5: [lambda: compiled_retrain(size, args.device)],
        6: [lambda: versus_timm(size, args.device)],
        8: [lambda: ddp_reduction(size, "cifar"), lambda: ddp_reduction(size, "imagenet")],
        9: [lambda: compiled_blocks("cifar", size, args.device)],
        10: [lambda: cascade_onnx(size), lambda: cascade_onnx(size, arch="neas-m")],  # onnxruntime on the CPU
    }
    meta = {
        "size": args.size,
        "device": args.device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    print(
        f"neas benchmarks: size {args.size}, device {args.device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    results = []
    for number in sorted(args.only or suite):
        for bench in suite[number]:
            outcome = bench()
            if outcome is None:
                print(f"{number}. skipped (data not found)")
                continue
            for result in outcome if isinstance(outcome, list) else [outcome]:
                print(result.line(), flush=True)
                results.append(result)
    if args.json:
        dump(results, args.json, meta)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
