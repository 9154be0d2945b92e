"""neas benchmarks: ``python -m benchmarks [--size cpu|imagenet] [--json FILE] [--only N ...]``."""
