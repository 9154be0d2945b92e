"""Measuring a latency table, fitting its overhead and validating it (docs/DESIGN.md §5).

The table model is ``neas.cost.latency.LatencyTable``; timing is ``neas.cost.runtime``. This module
sits above both and above the plain ensemble because measuring and validating a table time whole
networks too: the fit networks, timed in the same interleaved rounds as the pieces, calibrate what
timing pieces alone misses (a constant per ensemble, a term per block, a factor on the pieces), and
validation compares the table's predictions with other networks timed end to end.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from scipy.optimize import nnls
from scipy.stats import kendalltau

from neas.cost.latency import LatencyTable
from neas.cost.runtime import device_name, interleaved_ms, runner
from neas.ensemble.model import build_ensemble
from neas.errors import NeasError
from neas.nn import measure_pieces
from neas.space import FIRST, HEAD, LAYER, STEM, EnsembleArch, Piece, SearchSpace

__all__ = ["Timing", "fit_overhead", "measure_latency_table", "time_ensembles", "validate_table", "validation_report"]


def _inputs(space: SearchSpace, batch_size: int, device) -> torch.Tensor:
    size = space.input_size
    x = torch.randn(batch_size, space.in_channels, size, size, device=device)
    return x.contiguous(memory_format=torch.channels_last)


def _prep(module: nn.Module, device) -> nn.Module:
    return module.to(device, memory_format=torch.channels_last).eval()


def _random_archs(space: SearchSpace, n: int, seed: int | str, exclude=frozenset()) -> list[EnsembleArch]:
    """Up to ``n`` distinct random ensembles, none of them in ``exclude`` (fewer in a tiny space)."""
    rng, out = random.Random(seed), []
    for _ in range(100 * n):
        if len(out) == n:
            break
        arch = EnsembleArch.sample(space, rng)
        if arch not in out and arch not in exclude:
            out.append(arch)
    return out


def _ensemble_runs(
    space: SearchSpace, archs: list[EnsembleArch], num_classes: int, x: torch.Tensor, runtime: str
) -> dict:
    """One runner per ensemble (built as a plain network), keyed ``net<i>``."""
    return {
        f"net{i}": runner(_prep(build_ensemble(space, arch, num_classes), x.device), x, runtime)
        for i, arch in enumerate(archs)
    }


def _piece_runs(space: SearchSpace, num_classes: int, x: torch.Tensor, runtime: str) -> dict:
    """One runner per piece of the space (one head), each on the input it sees, keyed ``str(piece)``."""

    def keep(piece: Piece, module: nn.Module, inputs: torch.Tensor):
        module = _prep(module, x.device)
        with torch.no_grad():
            out = module(inputs)
        return runner(module, inputs, runtime), out

    return {str(piece): run for piece, run in measure_pieces(space, x, keep, num_classes).items()}


def time_ensembles(
    space: SearchSpace,
    archs: list[EnsembleArch],
    num_classes: int,
    device,
    batch_size: int,
    repeats: int,
    runtime: str,
    progress=None,
) -> list[float]:
    """End-to-end milliseconds of each ensemble (built as a plain network), timed interleaved."""
    runs = _ensemble_runs(space, archs, num_classes, _inputs(space, batch_size, device), runtime)
    ms = interleaved_ms(runs, repeats, warmup=2, progress=progress)
    return [ms[f"net{i}"] for i in range(len(archs))]


def fit_overhead(
    pieces_ms: list[float], blocks: list[int], measured_ms: list[float]
) -> tuple[float, float, float, dict]:
    """Non-negative least squares ``measured = scale * pieces + overhead + per_block * blocks``;
    returns the three terms and the fit's record (with the residuals' spread). Every term is kept
    at or above zero, so no prediction falls below zero (a negative intercept from noisy timings
    once made an impossible budget look feasible). With fewer than 4 networks the scale stays 1."""
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
    record = {
        "networks": len(pieces),
        "residual_ms_sd": float(residual.std()),
        "mean_gap_ms": float(gap.mean()),
        "mean_gap_pct": float(100 * (gap / measured).mean()),
    }
    return scale, overhead, per_block, record


@dataclass(frozen=True)
class Timing:
    """How a latency table is timed: images per forward, timed and warm-up rounds, and the runtime
    (:data:`neas.cost.settings.RUNTIMES`)."""

    batch_size: int = 1
    repeats: int = 20
    warmup: int = 3
    runtime: str = "torch"


def measure_latency_table(
    space: SearchSpace,
    num_classes: int = 1000,
    device: str | torch.device = "cpu",
    timing: Timing = Timing(),
    progress=None,
    fit_networks: int = 20,
    seed: int = 0,
) -> LatencyTable:
    """Times every piece of ``space`` as ``timing`` says on ``device`` and ``fit_networks`` random
    ensembles end to end, all interleaved in the same rounds, and fits the overhead the pieces miss."""
    device, batch_size, runtime = torch.device(device), timing.batch_size, timing.runtime
    x = _inputs(space, batch_size, device)
    runs = _piece_runs(space, num_classes, x, runtime)
    # the fit networks run in the same rounds as the pieces: one state of the machine calibrates both
    archs = _random_archs(space, fit_networks, seed=f"{seed}:fit") if fit_networks >= 2 else []
    runs.update(_ensemble_runs(space, archs, num_classes, x, runtime))
    ms = interleaved_ms(runs, timing.repeats, timing.warmup, progress=progress)
    # a skip layer runs no piece: it takes no time
    layers = [
        {str(op): ms.get(str(Piece(LAYER, None, spec.index, op)), 0.0) for op in spec.ops} for spec in space.layers
    ]
    fixed = ms[str(Piece(STEM))] + ms[str(Piece(FIRST))]
    table = LatencyTable(
        space.name,
        device_name(device),
        batch_size,
        space.input_size,
        fixed,
        layers,
        ms[str(Piece(HEAD, 0))],
        runtime=runtime,
    )
    if archs:
        pieces = [table.pieces_ms(a) for a in archs]
        table.scale, table.overhead_ms, table.per_block_ms, table.fit = fit_overhead(
            [p for p, _ in pieces], [b for _, b in pieces], [ms[f"net{i}"] for i in range(len(archs))]
        )
        table.fit["archs"] = [a.to_json() for a in archs]  # so that validation holds them out
    return table


def validate_table(
    table: LatencyTable,
    space: SearchSpace,
    num_classes: int,
    device,
    n: int,
    repeats: int = 15,
    seed: int = 1,
    progress=None,
) -> dict:
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
        raise NeasError(
            f"validate: {space.name!r} has fewer than 2 ensembles besides the {len(fitted)} the table was "
            "fitted on; validate on a larger space or fit on fewer networks"
        )
    first = time_ensembles(space, archs, num_classes, device, table.batch_size, repeats, table.runtime, progress)
    second = time_ensembles(space, archs, num_classes, device, table.batch_size, repeats, table.runtime, progress)
    return validation_report(table, archs, first, second)


def _errors(guess: np.ndarray, truth: np.ndarray) -> dict:
    return {
        "mape_pct": float(100 * np.mean(np.abs(guess - truth) / truth)),
        "bias_pct": float(100 * (np.mean(guess / truth) - 1)),
    }


def validation_report(table: LatencyTable, archs: list[EnsembleArch], first: list[float], second: list[float]) -> dict:
    """The numbers of :func:`validate_table` from the two passes' timings of ``archs``."""
    if not len(archs) == len(first) == len(second) >= 2:
        raise ValueError(
            f"validation needs the two passes' timings of at least 2 ensembles, got {len(archs)}, "
            f"{len(first)}, {len(second)}"
        )
    predicted, test, retest = np.array([table.latency_ms(a) for a in archs]), np.asarray(first), np.asarray(second)
    drift = _errors(retest, test)
    return {
        "runtime": table.runtime,
        "device": table.device,
        "batch_size": table.batch_size,
        "ensembles": len(archs),
        **_errors(predicted, (test + retest) / 2),
        "held_out_fit_networks": len((table.fit or {}).get("archs", [])),
        "kendall_tau": float(kendalltau(predicted, test)[0]),
        "test_retest_tau": float(kendalltau(test, retest)[0]),
        "test_retest_mape_pct": drift["mape_pct"],
        "test_retest_bias_pct": drift["bias_pct"],
        "against_each_pass": [
            {**_errors(predicted, t), "kendall_tau": float(kendalltau(predicted, t)[0])} for t in (test, retest)
        ],
        "records": [
            {"arch": a.to_json(), "predicted_ms": float(p), "measured_ms": m, "retest_ms": r}
            for a, p, m, r in zip(archs, predicted, first, second)
        ],
    }
