"""``neas latency-table``: measure the per-(layer, op) latency table of a space on this machine.

    neas latency-table --space cifar --out lat.json --runtime onnxruntime --validate 20

Writes the table (``neas.cost.latency.LatencyTable``, measured by ``neas.ensemble.latency``) and,
with ``--validate``, ``OUT.validation.json`` and ``OUT.validation.png``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm import tqdm

from neas.config import option, validate_fields
from neas.cost.latency import LatencyTable
from neas.cost.runtime import RUNTIMES
from neas.dist import local_device
from neas.ensemble.latency import measure_latency_table, validate_table
from neas.errors import NeasError, suggest
from neas.io import check_output, write_json
from neas.options import DEVICE_HELP
from neas.space import SearchSpace

__all__ = ["LatencyTableCommand"]

_VALIDATION_REPEATS = 15  # validate_table's default: the progress bar counts its rounds


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
    fit_networks: int = option(
        20,
        "random ensembles timed end to end, in the same rounds as the pieces, to fit the "
        "per-ensemble and per-block overhead (0: no fit; else at least 2)",
        valid=">= 0",
    )
    validate: int = option(
        0,
        "also time this many other random ensembles end to end, twice, against the table's "
        "predictions (OUT.validation.json and .png; 0: none, else at least 2)",
        valid=">= 0",
    )
    force: bool = option(False, "overwrite an existing --out")

    def __post_init__(self):
        validate_fields(self)
        for name in ("fit_networks", "validate"):
            if getattr(self, name) == 1:
                purpose = "fit" if name == "fit_networks" else "rank"
                raise NeasError(f"{name}: 1 network is too few to {purpose}; give 0 (none) or at least 2")
        if self.runtime not in RUNTIMES:
            raise NeasError(
                f"runtime: unknown {self.runtime!r}{suggest(self.runtime, RUNTIMES)}; choose {' or '.join(RUNTIMES)}"
            )

    def __call__(self) -> str:
        check_output(self.out, (self.space,), self.force)
        space = SearchSpace.resolve(self.space)
        device = local_device(self.device)
        with tqdm(total=self.repeats, desc=f"latency table ({self.runtime})", disable=None) as bar:
            table = measure_latency_table(
                space,
                self.num_classes,
                device,
                self.batch_size,
                self.repeats,
                progress=bar,
                runtime=self.runtime,
                fit_networks=self.fit_networks,
            )
        table.save(self.out)
        text = f"latency table of {space.name!r} on {table.device} in {table.runtime}: {self.out}"
        if table.fit:
            text += (
                f"\nfitted on {table.fit['networks']} networks: {table.scale:.3f} x pieces + "
                f"{table.overhead_ms:.3f} ms per ensemble + {table.per_block_ms:.4f} ms per block "
                f"(whole minus pieces: {table.fit['mean_gap_pct']:+.1f}% of the whole)"
            )
        if self.validate:
            text += "\n" + self._validate(table, space, device)
        return text

    def _validate(self, table: LatencyTable, space: SearchSpace, device: torch.device) -> str:
        """Times other ensembles against the table; writes the report and its plot beside ``out``."""
        from neas.report.plots import plot_latency_validation  # matplotlib

        with tqdm(total=2 * _VALIDATION_REPEATS, desc=f"validate on {self.validate} ensembles", disable=None) as bar:
            report = validate_table(
                table, space, self.num_classes, device, self.validate, _VALIDATION_REPEATS, progress=bar
            )
        stem = str(self.out)[:-5] if str(self.out).endswith(".json") else str(self.out)
        write_json(f"{stem}.validation.json", report)
        plot_latency_validation(report, f"{stem}.validation.png")
        return (
            f"validation on {self.validate} other ensembles: MAPE {report['mape_pct']:.1f}%, "
            f"bias {report['bias_pct']:+.1f}%, Kendall tau {report['kendall_tau']:.2f}; the measurements' own "
            f"test-retest: MAPE {report['test_retest_mape_pct']:.1f}%, "
            f"bias {report['test_retest_bias_pct']:+.1f}%, tau {report['test_retest_tau']:.2f}: "
            f"{stem}.validation.json"
        )
