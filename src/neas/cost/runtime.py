"""Timing modules in the runtime a model is deployed on: PyTorch eager (channels_last, no grad)
or ONNX Runtime (CPU execution provider, each module exported to ONNX first). Many modules are
timed *interleaved* — round after round, each once per round, in alternating order — so that a
slow period of the machine spreads over all of them instead of biasing one; each gets the median.
One module alone is timed by :func:`time_forward_ms`.
"""

from __future__ import annotations

import io
import logging
import platform
import statistics
import time
import warnings
from collections.abc import Callable

import torch

from neas.cost.settings import RUNTIMES
from neas.errors import NeasError, suggest

# importing the Timer warns about CUDA_HOME on CPU builds
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
from torch.utils.benchmark import Timer  # noqa: E402

__all__ = ["RUNTIMES", "device_name", "interleaved_ms", "runner", "time_forward_ms"]


def runner(module: torch.nn.Module, x: torch.Tensor, runtime: str = "torch") -> Callable[[], None]:
    """A zero-argument callable that runs ``module`` on ``x`` once in ``runtime``."""
    if runtime not in RUNTIMES:
        raise NeasError(f"runtime: unknown {runtime!r}{suggest(runtime, RUNTIMES)}; choose {' or '.join(RUNTIMES)}")
    module = module.eval()
    if runtime == "torch":

        def run():
            with torch.no_grad():
                module(x)
            if x.device.type == "cuda":
                torch.cuda.synchronize()

        return run
    if x.device.type != "cpu":
        raise NeasError("runtime onnxruntime times on the CPU execution provider: use --device cpu")
    import onnxruntime as ort

    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), buffer, input_names=["x"], opset_version=17, dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    # many sessions are timed in turn: idle ones must not keep their threads spinning on the cores
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
    feed = {"x": x.contiguous().numpy()}
    return lambda: session.run(None, feed)


def interleaved_ms(
    runs: dict[str, Callable[[], None]], repeats: int = 20, warmup: int = 3, progress=None
) -> dict[str, float]:
    """Median milliseconds of each callable, timed interleaved (see the module docstring)."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    names = list(runs)
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            start = time.perf_counter()
            runs[name]()
            times[name].append((time.perf_counter() - start) * 1e3)
        if progress is not None:
            progress.update(1)
    return {name: statistics.median(t) for name, t in times.items()}


def time_forward_ms(module, x: torch.Tensor, repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time (ms) of ``repeats`` timed calls of ``module(x)`` without gradients, after
    ``warmup`` calls (``torch.utils.benchmark.Timer``: it synchronises CUDA around each)."""
    timer = Timer("module(x)", globals={"module": module, "x": x}, num_threads=torch.get_num_threads())
    with torch.no_grad():
        timer.timeit(warmup)
        return statistics.median(timer.timeit(1).median for _ in range(repeats)) * 1e3


def device_name(device: torch.device) -> str:
    """What a latency was measured on: the GPU's name, or the CPU and its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu:{platform.processor() or platform.machine()}:{torch.get_num_threads()}threads"
