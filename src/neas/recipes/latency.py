"""``neas latency-table``: measure the per-(layer, op) latency table of a space on this machine.

    neas latency-table --space cifar --out lat.json --runtime onnxruntime --validate 20

Writes the table (``neas.cost.latency.LatencyTable``, measured by ``neas.ensemble.latency``) and,
with ``--validate``, ``OUT.validation.json`` and ``OUT.validation.png``.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from neas.cost.latency import LatencyTable
from neas.dist import local_device
from neas.ensemble.latency import Timing, measure_latency_table, validate_table
from neas.io import check_output, write_json
from neas.schemas.commands import LatencyTableCommand
from neas.space import SearchSpace

__all__ = ["latency_table"]

_VALIDATION_REPEATS = 15  # validate_table's default: the progress bar counts its rounds


def latency_table(cfg: LatencyTableCommand) -> str:
    """Runs ``neas latency-table``; returns what it prints."""
    check_output(cfg.out, (cfg.space,), cfg.force)
    space = SearchSpace.resolve(cfg.space)
    device = local_device(cfg.device)
    with tqdm(total=cfg.repeats, desc=f"latency table ({cfg.runtime})", disable=None) as bar:
        timing = Timing(cfg.batch_size, cfg.repeats, runtime=cfg.runtime)
        table = measure_latency_table(
            space, cfg.num_classes, device, timing, progress=bar, fit_networks=cfg.fit_networks
        )
    table.save(cfg.out)
    text = f"latency table of {space.name!r} on {table.device} in {table.runtime}: {cfg.out}"
    if table.fit:
        text += (
            f"\nfitted on {table.fit['networks']} networks: {table.scale:.3f} x pieces + "
            f"{table.overhead_ms:.3f} ms per ensemble + {table.per_block_ms:.4f} ms per block "
            f"(whole minus pieces: {table.fit['mean_gap_pct']:+.1f}% of the whole)"
        )
    if cfg.validate:
        text += "\n" + _validate(cfg, table, space, device)
    return text


def _validate(cfg: LatencyTableCommand, table: LatencyTable, space: SearchSpace, device: torch.device) -> str:
    """Times other ensembles against the table; writes the report and its plot beside ``out``."""
    from neas.report.plots import plot_latency_validation  # matplotlib

    with tqdm(total=2 * _VALIDATION_REPEATS, desc=f"validate on {cfg.validate} ensembles", disable=None) as bar:
        report = validate_table(table, space, cfg.num_classes, device, cfg.validate, _VALIDATION_REPEATS, progress=bar)
    stem = str(cfg.out)[:-5] if str(cfg.out).endswith(".json") else str(cfg.out)
    write_json(f"{stem}.validation.json", report)
    plot_latency_validation(report, f"{stem}.validation.png")
    return (
        f"validation on {cfg.validate} other ensembles: MAPE {report['mape_pct']:.1f}%, "
        f"bias {report['bias_pct']:+.1f}%, Kendall tau {report['kendall_tau']:.2f}; the measurements' own "
        f"test-retest: MAPE {report['test_retest_mape_pct']:.1f}%, "
        f"bias {report['test_retest_bias_pct']:+.1f}%, tau {report['test_retest_tau']:.2f}: "
        f"{stem}.validation.json"
    )
