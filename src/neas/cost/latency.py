"""Measured latency: a per-(layer, op) table timed on the machine in use (docs/DESIGN.md §5).

Each piece (stem + L0, every layer's every op, one head) is timed alone on an input of the
shape it sees in the network, as the median of repeated runs after warm-up. An ensemble's
latency is the sum of its pieces, counting shared layers once; the K paths are summed
(``sequential``, one device running them in turn) or max-ed (``parallel``).
"""

from __future__ import annotations

import json
import logging
import platform
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from neas.config import option, validate_fields
from neas.cost.table import walk_pieces
from neas.errors import NeasError, suggest
from neas.io import save_figure
from neas.nn import make_classifier, make_conv_head, make_last_block, pool_classify
from neas.options import DEVICE_HELP
from neas.space import EnsembleArch, SearchSpace

__all__ = ["LatencyTable", "measure_latency_table", "validate_table", "validation_report", "fit_overhead", "time_forward_ms", "LatencyTableCommand"]


class _Head(nn.Module):
    def __init__(self, space: SearchSpace, num_classes: int):
        super().__init__()
        self.last_block, self.conv_head = make_last_block(space), make_conv_head(space)
        self.classifier, self.dropout = make_classifier(space, num_classes), space.dropout

    def forward(self, x):
        return pool_classify(self.last_block(x), self.conv_head, self.classifier, self.dropout, False)[0]


def time_forward_ms(module, x: torch.Tensor, repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time (ms) of ``repeats`` timed calls of ``module(x)`` without gradients, after
    ``warmup`` calls (``torch.utils.benchmark.Timer``: it synchronises CUDA around each)."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # importing the Timer warns about CUDA_HOME on CPU builds
    from torch.utils.benchmark import Timer

    timer = Timer("module(x)", globals={"module": module, "x": x}, num_threads=torch.get_num_threads())
    with torch.no_grad():
        timer.timeit(warmup)
        return statistics.median(timer.timeit(1).median for _ in range(repeats)) * 1e3


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu:{platform.processor() or platform.machine()}:{torch.get_num_threads()}threads"


@dataclass
class LatencyTable:
    """Latency in milliseconds of each piece of a space on one device and batch size."""

    space_name: str
    device: str
    batch_size: int
    input_size: int
    fixed_ms: float
    layers_ms: list[dict[str, float]]  # [layer][op name]
    head_ms: float
    runtime: str = "torch"  # what the pieces ran in: torch | onnxruntime
    overhead_ms: float = 0.0  # fitted: a constant per ensemble ...
    per_block_ms: float = 0.0  # ... a term per block run (what timing pieces alone misses) ...
    scale: float = 1.0  # ... and a factor on the pieces (a runtime that fuses across them runs the whole faster)
    fit: "dict | None" = None  # how the two were fitted (networks timed end to end, residuals)

    def pieces_ms(self, arch: EnsembleArch, mode: str = "sequential") -> tuple[float, int]:
        """The sum of the ensemble's piece timings (shared layers once) and how many blocks run."""
        shared = self.fixed_ms + sum(self.layers_ms[i][str(op)] for i, op in enumerate(arch.shared))
        blocks = 1 + sum(not op.is_skip for op in arch.shared)
        paths = [sum(self.layers_ms[arch.split + j][str(op)] for j, op in enumerate(arch.private(k))) + self.head_ms
                 for k in range(arch.num_paths)]
        path_blocks = [sum(not op.is_skip for op in arch.private(k)) + 1 for k in range(arch.num_paths)]
        if mode == "sequential":
            return shared + sum(paths), blocks + sum(path_blocks)
        slowest = max(range(arch.num_paths), key=lambda k: paths[k])
        return shared + paths[slowest], blocks + path_blocks[slowest]

    def latency_ms(self, arch: EnsembleArch, mode: str = "sequential") -> float:
        """The predicted latency: the pieces, plus the fitted per-ensemble and per-block overhead."""
        ms, blocks = self.pieces_ms(arch, mode)
        return self.scale * ms + self.overhead_ms + self.per_block_ms * blocks

    def bounds(self, shrunk, mode: str = "sequential") -> tuple[float, float]:
        """Bounds on the latency of the ensembles of a shrunk space: exact for ``sequential`` paths
        (latency adds up layer by layer); for ``parallel`` ones, the slowest path is at least the
        mean of the paths and at most their sum."""
        space, k = shrunk.space, shrunk.space.num_paths
        lows, highs = [], []
        for s in space.split_points:
            shared_lo = shared_hi = private_lo = private_hi = 0.0
            for spec in space.layers:
                entry = self.layers_ms[spec.index - 1]
                if spec.index <= s:
                    times = [entry[str(op)] for op in shrunk.shared_ops(spec.index)]
                    shared_lo, shared_hi = shared_lo + min(times), shared_hi + max(times)
                else:
                    times = [sum(entry[str(op)] for op in combo) for combo in shrunk.layer_combinations(spec.index)]
                    private_lo, private_hi = private_lo + min(times), private_hi + max(times)
            base = self.fixed_ms
            if mode == "sequential":
                lows.append(base + shared_lo + private_lo + k * self.head_ms)
                highs.append(base + shared_hi + private_hi + k * self.head_ms)
            else:
                lows.append(base + shared_lo + private_lo / k + self.head_ms)
                highs.append(base + shared_hi + private_hi + self.head_ms)
        # the fitted overhead: from 1 block + K heads (every layer skipped) to every layer run by every path
        few, many = 1 + (k if mode == "sequential" else 1), 1 + (space.num_layers + 1) * (k if mode == "sequential" else 1)
        lo_extra = self.overhead_ms + min(self.per_block_ms * few, self.per_block_ms * many)
        hi_extra = self.overhead_ms + max(self.per_block_ms * few, self.per_block_ms * many)
        return self.scale * min(lows) + lo_extra, self.scale * max(highs) + hi_extra

    def fastest(self, shrunk) -> EnsembleArch:
        """The ensemble of the shrunk space with the smallest summed piece latency (exact for
        ``sequential`` paths without per-block overhead; a fast one otherwise)."""
        space = shrunk.space
        best = None
        for s in space.split_points:
            columns = []
            for spec in space.layers:
                entry = self.layers_ms[spec.index - 1]
                if spec.index <= s:
                    op = min(shrunk.shared_ops(spec.index), key=lambda o: (entry[str(o)], str(o)))
                    columns.append((op,) * space.num_paths)
                else:
                    columns.append(min(shrunk.layer_combinations(spec.index), key=lambda c: (sum(entry[str(o)] for o in c), list(map(str, c)))))
            arch = EnsembleArch(s, tuple(tuple(col[k] for col in columns) for k in range(space.num_paths)))
            if best is None or self.latency_ms(arch) < self.latency_ms(best):
                best = arch
        return best

    def to_json(self) -> dict:
        return dict(self.__dict__)

    def save(self, path: "str | Path") -> None:
        from neas.io import write_json

        write_json(path, self.to_json())

    @staticmethod
    def load(path: "str | Path") -> "LatencyTable":
        try:
            return LatencyTable(**json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError, TypeError) as exc:
            raise NeasError(f"{path}: not a latency table ({exc})") from None


def _inputs(space: SearchSpace, batch_size: int, device) -> torch.Tensor:
    size = space.input_size
    return torch.randn(batch_size, space.in_channels, size, size, device=device).contiguous(memory_format=torch.channels_last)


def _prep(module: nn.Module, device) -> nn.Module:
    return module.to(device, memory_format=torch.channels_last).eval()


def _random_archs(space: SearchSpace, n: int, seed: "int | str", exclude=frozenset()) -> list[EnsembleArch]:
    """Up to ``n`` distinct random ensembles, none of them in ``exclude`` (fewer in a tiny space)."""
    import random

    rng, out = random.Random(seed), []
    for _ in range(100 * n):
        if len(out) == n:
            break
        arch = EnsembleArch.sample(space, rng)
        if arch not in out and arch not in exclude:
            out.append(arch)
    return out


def _ensemble_runs(space: SearchSpace, archs: "list[EnsembleArch]", num_classes: int, x: torch.Tensor, runtime: str) -> dict:
    """One runner per ensemble (built as a plain network), keyed ``net<i>``."""
    from neas.cost.runtime import runner
    from neas.ensemble.model import build_ensemble

    return {f"net{i}": runner(_prep(build_ensemble(space, arch, num_classes), x.device), x, runtime) for i, arch in enumerate(archs)}


def time_ensembles(space: SearchSpace, archs: "list[EnsembleArch]", num_classes: int, device, batch_size: int, repeats: int,
                   runtime: str, progress=None) -> list[float]:
    """End-to-end milliseconds of each ensemble (built as a plain network), timed interleaved."""
    from neas.cost.runtime import interleaved_ms

    ms = interleaved_ms(_ensemble_runs(space, archs, num_classes, _inputs(space, batch_size, device), runtime), repeats, warmup=2,
                        progress=progress)
    return [ms[f"net{i}"] for i in range(len(archs))]


def fit_overhead(pieces_ms: "list[float]", blocks: "list[int]", measured_ms: "list[float]") -> tuple[float, float, float, dict]:
    """Non-negative least squares ``measured = scale * pieces + overhead + per_block * blocks``;
    returns the three terms and the fit's record (with the residuals' spread). Every term is kept
    at or above zero, so no prediction falls below zero (a negative intercept from noisy timings
    once made an impossible budget look feasible). With fewer than 4 networks the scale stays 1."""
    import numpy as np
    from scipy.optimize import nnls

    pieces, measured = np.asarray(pieces_ms, float), np.asarray(measured_ms, float)
    columns = [np.ones(len(pieces)), np.asarray(blocks, float)] + ([pieces] if len(pieces) >= 4 else [])
    target = measured if len(columns) == 3 else measured - pieces
    coef, _ = nnls(np.stack(columns, 1), target)
    overhead, per_block, scale = float(coef[0]), float(coef[1]), float(coef[2]) if len(coef) == 3 else 1.0
    if scale <= 0:  # pieces and block counts correlate: an ill-posed fit keeps the pieces as measured
        coef, _ = nnls(np.stack(columns[:2], 1), measured - pieces)
        overhead, per_block, scale = float(coef[0]), float(coef[1]), 1.0
    residual = measured - (scale * pieces + overhead + per_block * np.asarray(blocks, float))
    gap = measured - pieces
    return scale, overhead, per_block, {"networks": len(pieces), "residual_ms_sd": float(residual.std()),
                                        "mean_gap_ms": float(gap.mean()), "mean_gap_pct": float(100 * (gap / measured).mean())}


def measure_latency_table(
    space: SearchSpace,
    num_classes: int = 1000,
    device: "str | torch.device" = "cpu",
    batch_size: int = 1,
    repeats: int = 20,
    warmup: int = 3,
    progress=None,
    runtime: str = "torch",
    fit_networks: int = 20,
    seed: int = 0,
) -> LatencyTable:
    """Times every piece of ``space`` in ``runtime`` on ``device`` and ``fit_networks`` random
    ensembles end to end, all interleaved in the same rounds, and fits the overhead the pieces miss."""
    from neas.cost.runtime import interleaved_ms, runner

    device = torch.device(device)
    x = _inputs(space, batch_size, device)
    modules = {}

    def build(pieces, x):  # walk the space once, keeping each piece and its input
        module = _prep(nn.Sequential(*pieces), device)
        with torch.no_grad():
            out = module(x)
        modules[len(modules)] = (module, x)
        return len(modules) - 1, out

    fixed_id, layer_ids, x_head = walk_pieces(space, x, build, None)
    head_id = len(modules)
    modules[head_id] = (_prep(_Head(space, num_classes), device), x_head)
    runs = {str(i): runner(module, inp, runtime) for i, (module, inp) in modules.items()}
    # the fit networks run in the same rounds as the pieces: one state of the machine calibrates both
    archs = _random_archs(space, fit_networks, seed=f"{seed}:fit") if fit_networks >= 2 else []
    runs.update(_ensemble_runs(space, archs, num_classes, x, runtime))
    ms = interleaved_ms(runs, repeats, warmup, progress=progress)
    layers = [{str(op): (0.0 if i is None else ms[str(i)]) for op, i in entry.items()} for entry in layer_ids]
    table = LatencyTable(space.name, device_name(device), batch_size, space.input_size, ms[str(fixed_id)], layers, ms[str(head_id)],
                         runtime=runtime)
    if archs:
        pieces = [table.pieces_ms(a) for a in archs]
        table.scale, table.overhead_ms, table.per_block_ms, table.fit = fit_overhead(
            [p for p, _ in pieces], [b for _, b in pieces], [ms[f"net{i}"] for i in range(len(archs))])
        table.fit["archs"] = [a.to_json() for a in archs]  # so that validation holds them out
    return table


def validate_table(table: LatencyTable, space: SearchSpace, num_classes: int, device, n: int, repeats: int = 15,
                   seed: int = 1, progress=None) -> dict:
    """Times ``n`` random ensembles end to end twice (two interleaved passes, test and retest) and
    compares the table's predictions with them. MAPE and bias are taken against the mean of the
    passes, beside the passes' own disagreement (``test_retest_*``): a machine whose speed drifts
    between two passes a minute apart moves a single pass by as much as the prediction can miss.
    Kendall tau is taken against the first pass, beside tau between the passes, which bounds how
    well any prediction can rank them. Every number against each single pass is kept too. The
    ensembles the table's overhead was fitted on are held out."""
    fitted = frozenset(EnsembleArch.from_json(a) for a in (table.fit or {}).get("archs", []))
    archs = _random_archs(space, n, seed=f"{seed}:validate", exclude=fitted)
    if len(archs) < 2:
        raise NeasError(f"validate: {space.name!r} has fewer than 2 ensembles besides the {len(fitted)} the table was fitted on; "
                        "validate on a larger space or fit on fewer networks")
    first = time_ensembles(space, archs, num_classes, device, table.batch_size, repeats, table.runtime, progress)
    second = time_ensembles(space, archs, num_classes, device, table.batch_size, repeats, table.runtime, progress)
    return validation_report(table, archs, first, second)


def validation_report(table: LatencyTable, archs: "list[EnsembleArch]", first: "list[float]", second: "list[float]") -> dict:
    """The numbers of :func:`validate_table` from the two passes' timings of ``archs``."""
    import numpy as np
    from scipy.stats import kendalltau

    if not len(archs) == len(first) == len(second) >= 2:
        raise ValueError(f"validation needs the two passes' timings of at least 2 ensembles, got {len(archs)}, {len(first)}, {len(second)}")
    predicted, test, retest = np.array([table.latency_ms(a) for a in archs]), np.asarray(first), np.asarray(second)

    def errors(guess, truth) -> dict:
        return {"mape_pct": float(100 * np.mean(np.abs(guess - truth) / truth)), "bias_pct": float(100 * (np.mean(guess / truth) - 1))}

    mean = errors(predicted, (test + retest) / 2)
    drift = errors(retest, test)
    return {"runtime": table.runtime, "device": table.device, "batch_size": table.batch_size, "ensembles": len(archs), **mean,
            "held_out_fit_networks": len((table.fit or {}).get("archs", [])),
            "kendall_tau": float(kendalltau(predicted, test)[0]),
            "test_retest_tau": float(kendalltau(test, retest)[0]),
            "test_retest_mape_pct": drift["mape_pct"], "test_retest_bias_pct": drift["bias_pct"],
            "against_each_pass": [{**errors(predicted, t), "kendall_tau": float(kendalltau(predicted, t)[0])} for t in (test, retest)],
            "records": [{"arch": a.to_json(), "predicted_ms": float(p), "measured_ms": m, "retest_ms": r}
                        for a, p, m, r in zip(archs, predicted, first, second)]}


def plot_validation(report: dict, path: "str | Path") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred = [r["predicted_ms"] for r in report["records"]]
    meas = [(r["measured_ms"] + r["retest_ms"]) / 2 for r in report["records"]]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(meas, pred, s=16)
    lo, hi = min(pred + meas), max(pred + meas)
    ax.plot([lo, hi], [lo, hi], color="grey", ls=":")
    ax.set(xlabel="measured end to end, mean of two passes (ms)", ylabel="predicted by the table (ms)",
           title=f"{report['runtime']}, batch {report['batch_size']}: MAPE {report['mape_pct']:.1f}%, bias {report['bias_pct']:+.1f}%\n"
                 f"Kendall tau {report['kendall_tau']:.2f} (test-retest {report['test_retest_tau']:.2f})\n"
                 f"the two passes differ by {report['test_retest_mape_pct']:.1f}% (bias {report['test_retest_bias_pct']:+.1f}%)")
    ax.title.set_fontsize(9)
    fig.tight_layout()
    return save_figure(fig, path)


def check_table(table: LatencyTable, space: SearchSpace) -> LatencyTable:
    if len(table.layers_ms) != space.num_layers or any(
        set(entry) != {str(op) for op in spec.ops} for entry, spec in zip(table.layers_ms, space.layers)
    ):
        raise NeasError(f"latency table of space {table.space_name!r} does not fit space {space.name!r}")
    return table


@dataclass
class LatencyTableCommand:
    """measure the per-(layer, op) latency table of a space on this machine"""

    space: str = option(None, "search space preset or YAML file", required=True)
    out: str = option(None, "JSON file to write", required=True)
    num_classes: int = option(1000, "classifier outputs", valid=">= 1")
    batch_size: int = option(1, "images per timed forward", valid=">= 1")
    repeats: int = option(20, "timed runs per piece (the median is kept)", valid=">= 1")
    device: str = option("auto", DEVICE_HELP)
    runtime: str = option("torch", "what the pieces and networks run in: torch | onnxruntime (CPU execution provider)")
    fit_networks: int = option(20, "random ensembles timed end to end, in the same rounds as the pieces, to fit the "
                                  "per-ensemble and per-block overhead (0: no fit; else at least 2)", valid=">= 0")
    validate: int = option(0, "also time this many other random ensembles end to end, twice, against the table's "
                              "predictions (OUT.validation.json and .png; 0: none, else at least 2)", valid=">= 0")
    force: bool = option(False, "overwrite an existing --out")

    def __post_init__(self):
        validate_fields(self)
        from neas.cost.runtime import RUNTIMES

        for name in ("fit_networks", "validate"):
            if getattr(self, name) == 1:
                raise NeasError(f"{name}: 1 network is too few to {'fit' if name == 'fit_networks' else 'rank'}; give 0 (none) or at least 2")
        if self.runtime not in RUNTIMES:
            raise NeasError(f"runtime: unknown {self.runtime!r}{suggest(self.runtime, RUNTIMES)}; choose {' or '.join(RUNTIMES)}")

    def __call__(self) -> str:
        from tqdm import tqdm

        from neas.dist import local_device
        from neas.space import SearchSpace
        from neas.io import check_output

        check_output(self.out, (self.space,), self.force)
        space = SearchSpace.resolve(self.space)
        device = local_device(self.device)
        with tqdm(total=self.repeats, desc=f"latency table ({self.runtime})", disable=None) as bar:
            table = measure_latency_table(space, self.num_classes, device, self.batch_size, self.repeats, progress=bar,
                                          runtime=self.runtime, fit_networks=self.fit_networks)
        table.save(self.out)
        text = f"latency table of {space.name!r} on {table.device} in {table.runtime}: {self.out}"
        if table.fit:
            text += (f"\nfitted on {table.fit['networks']} networks: {table.scale:.3f} x pieces + {table.overhead_ms:.3f} ms per ensemble + "
                     f"{table.per_block_ms:.4f} ms per block (whole minus pieces: {table.fit['mean_gap_pct']:+.1f}% of the whole)")
        if self.validate:
            with tqdm(total=2 * 15, desc=f"validate on {self.validate} ensembles", disable=None) as bar:
                report = validate_table(table, space, self.num_classes, device, self.validate, progress=bar)
            stem = str(self.out)[:-5] if str(self.out).endswith(".json") else str(self.out)
            from neas.io import write_json

            write_json(f"{stem}.validation.json", report)
            plot_validation(report, f"{stem}.validation.png")
            text += (f"\nvalidation on {self.validate} other ensembles: MAPE {report['mape_pct']:.1f}%, bias {report['bias_pct']:+.1f}%, "
                     f"Kendall tau {report['kendall_tau']:.2f}; the measurements' own test-retest: "
                     f"MAPE {report['test_retest_mape_pct']:.1f}%, bias {report['test_retest_bias_pct']:+.1f}%, tau {report['test_retest_tau']:.2f}: "
                     f"{stem}.validation.json")
        return text
