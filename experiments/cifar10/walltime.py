"""Wall time of each experiment directory: from its first to its last written file.

python experiments/cifar10/walltime.py runs/cifar10-cpu
"""

import sys
from pathlib import Path


def span(path: Path) -> float:
    times = [p.stat().st_mtime for p in path.rglob("*") if p.is_file()]
    return max(times) - min(times) if times else 0.0


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/cifar10-cpu")
    for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "logs"):
        parts = [d, *sorted(p for p in d.iterdir() if p.is_dir())]
        print(
            f"{d.name}: {span(d) / 60:.1f} min  (" + ", ".join(f"{p.name} {span(p) / 60:.1f}" for p in parts[1:]) + ")"
        )
