"""``neas report RUN_DIR``: ``report/index.html`` with the PNG figures of a ``neas run``
directory (``supernet/``, ``search/``, ``search_random/``, ``retrain/``); missing stages are
skipped."""

from __future__ import annotations

import html
import json
from pathlib import Path

from neas.data.datasets import rgb_array
from neas.detection.data import load_coco
from neas.errors import NeasError
from neas.io import read_json, write_text
from neas.records import COSTS, ArchRecord, EvalRecord, read_arch, read_eval
from neas.report import compare, explain, plots
from neas.report.mistakes import mistakes_section
from neas.rundir import run_kind
from neas.runfiles import (
    ARCH,
    COMPARE,
    DETECTOR,
    EVAL,
    PREDICTIONS,
    REPORT,
    REPORT_PAGE,
    RETRAIN_STAGE,
    SHRINK_ROUNDS,
    PipelineLayout,
    figure,
)
from neas.space import EnsembleArch, SearchSpace

__all__ = ["build_compare_report", "build_detection_report", "build_report"]


def _figure(name: str, caption: str) -> str:
    text = html.escape(caption)
    return f'<figure><img src="{name}" alt="{text}"><figcaption>{text}</figcaption></figure>'


def _summary(chosen: ArchRecord | None, result: EvalRecord | None) -> list[str]:
    """The result section: the chosen ensemble, its costs and scores, and its retrained quality."""
    summary = []
    if chosen:
        budget, cost = chosen.get("constraints", {}), chosen.costs
        summary.append(
            f"<li>chosen ensemble: <code>{html.escape(str(EnsembleArch.from_json(chosen.arch)))}</code></li>"
        )
        summary.append(
            f"<li>cost: {cost['macs'] / 1e6:.3f}M MACs, {cost['paper_flops'] / 1e6:.3f}M paper FLOPs, "
            f"{cost['params'] / 1e6:.3f}M params; constraints: {html.escape(json.dumps(budget))}</li>"
        )
        summary.append(
            f"<li>held-out top-1 with supernet weights: {100 * chosen.supernet_acc:.2f}% "
            f"({chosen.get('evaluations')} candidates evaluated, {chosen.get('strategy')})</li>"
        )
    if result:
        paths = ", ".join(
            f"path {j}: {100 * top1:.2f}%"
            for j, top1 in enumerate(result.path_top1[: len(chosen.paths) if chosen else 0])
        )
        summary.append(f"<li>after retraining: test top-1 <b>{100 * result.top1:.2f}%</b> (ensemble); {paths}</li>")
        e = result.ensemble
        if "nll" in e:
            calibrated = e.get("calibrated")
            after = (
                (
                    f"; with temperature {result.get('temperature')['temperature']:.3f}: NLL {calibrated['nll']:.4f}, "
                    f"ECE {100 * calibrated['ece']:.2f}%"
                )
                if calibrated
                else ""
            )
            summary.append(
                f"<li>ensemble NLL {e['nll']:.4f}, ECE {100 * e['ece']:.2f}%, Brier {e['brier']:.4f}{after}</li>"
            )
    return ["<h2>Result</h2><ul>" + "".join(summary) + "</ul>"] if summary else []


def _training(run: Path, out: Path) -> list[str]:
    """The training curves, and one figure per search-space shrinking round."""
    parts = []
    if plots.plot_training(run, out / figure("training")):
        caption = (
            "Supernet loss (sum over K paths; dotted: shrinking rounds), retraining loss (label-smoothed), "
            "each on its own axis; accuracy of sampled ensembles on training batches and of the retrained "
            "ensemble on test"
        )
        parts.append("<h2>Training</h2>" + _figure(figure("training"), caption))
    rounds = sorted((PipelineLayout(run).supernet / SHRINK_ROUNDS).glob("round_*.json"))
    if rounds:
        parts.append(
            "<h2>Search-space shrinking</h2><p>Per layer: similarity S of the ops "
            "(mean exp(−β·feature distance) between paths), quality r, and every surviving combination's "
            "score; a red × marks each combination dropped in the round.</p>"
        )
        records = [read_json(p, "shrinking round") for p in rounds]
        parts.append(_similarity_note(records))
        for record in records:
            name = figure(f"shrink_round_{record['round']:02d}")
            plots.plot_shrink_round(record, out / name)
            parts.append(
                _figure(
                    name,
                    f"Round {record['round']}: {record['combinations_before']} → "
                    f"{record['combinations_after']} combinations",
                )
            )
    return parts


def _similarity_note(records: list[dict]) -> str:
    """A line when the similarity S varies little across every round and layer: the diversity part of the
    score then barely reorders the combinations (the new-user review: S within [0.985, 1] everywhere)."""
    values = [x for r in records for layer in r["layers"] for row in layer["S"] for x in row]
    if not values or max(values) - min(values) >= 0.05:
        return ""
    return (
        f"<p class='note'>S lies within [{min(values):.3f}, {max(values):.3f}] in every layer and round: the ops' "
        "features barely differ, so the diversity part of the score does little here and the quality r "
        "decides what is dropped.</p>"
    )


def _search(run: Path, out: Path) -> list[str]:
    """The search's progress, its Pareto front, and the table of the retrained budgets."""
    parts = []
    layout = PipelineLayout(run)
    if plots.plot_evolution(layout.search, out / figure("evolution"), layout.search_random):
        caption = "Evolution progress, and the best candidate found vs candidates evaluated"
        parts.append("<h2>Search</h2>" + _figure(figure("evolution"), caption))
    if plots.plot_front(run, out / figure("front")):
        parts.append(
            _figure(
                figure("front"),
                "The Pareto front of the search and of random search at equal evaluations, "
                "and the member picked for each budget",
            )
        )
        parts += _budgets(run)
    return parts


def _budgets(run: Path) -> list[str]:
    """The table of the budgets retrained by ``neas run`` (none when there are none)."""
    rows = []
    for folder in sorted(PipelineLayout(run).budgets.glob(f"*/{RETRAIN_STAGE}/{EVAL}")):
        ev = read_eval(folder)
        rows.append(
            f"<tr><td>{html.escape(folder.parent.parent.name)}</td><td>{100 * ev.top1:.2f}</td>"
            f"<td>{ev.ensemble['nll']:.4f}</td><td>{ev.costs['macs'] / 1e6:.3f}</td>"
            f"<td>{ev.costs['params'] / 1e6:.3f}</td></tr>"
        )
    if not rows:
        return []
    header = "<tr><th>budget</th><th>test top-1 (%)</th><th>NLL</th><th>MACs (M)</th><th>params (M)</th></tr>"
    return ["<table>" + header + "".join(rows) + "</table>"]


def _chosen(run: Path, out: Path, chosen: ArchRecord) -> list[str]:
    """Every candidate's accuracy vs cost with the budget, and the chosen ensemble's layout."""
    budget = chosen.get("constraints", {})
    # a bound on the cascade's mean MACs is what the search was held to: the candidates are drawn on it
    metric = next((m for m in ("mean_macs", *COSTS) if f"max_{m}" in budget), "macs")
    plots.plot_pareto(
        PipelineLayout(run).search, out / figure("pareto"), budget.get(f"max_{metric}"), metric, chosen.raw
    )
    caption = "Accuracy vs cost of every evaluated candidate, with the Pareto front and the budget"
    parts = [_figure(figure("pareto"), caption)]
    space = SearchSpace.from_dict(chosen.get("space"))
    plots.plot_arch(EnsembleArch.from_json(chosen.arch), space, out / figure("arch"))
    caption = "Shared trunk, split point and each path's blocks"
    parts.append("<h2>The chosen ensemble</h2>" + _figure(figure("arch"), caption))
    return parts


def _quality(out: Path, result: EvalRecord) -> list[str]:
    """The retrained ensemble's calibration, anytime inference and robustness figures that apply."""
    figures = [
        (
            plots.plot_confusion,
            figure("confusion"),
            "Confusion matrix of the ensemble on the test split (counts; colour: fraction of the true class), "
            "and per-class top-1 with Wilson 95 % CIs over each class's n images; dashed: chance",
        ),
        (
            plots.plot_reliability,
            figure("reliability"),
            "Reliability diagram: accuracy vs confidence, ensemble and each path; "
            "n= labels the ensemble's images per bin",
        ),
        (
            plots.plot_anytime,
            figure("anytime"),
            "Anytime inference: the sub-ensemble of the first j paths, accuracy (Wilson 95 % CI over n test "
            "images, dashed: chance) and NLL vs MACs",
        ),
        (
            plots.plot_corruptions,
            figure("corruptions"),
            "Robustness: accuracy (Wilson 95 % CI over n images, dashed: chance) and NLL vs corruption "
            "severity, ensemble vs paths",
        ),
        (
            plots.plot_risk_coverage,
            figure("risk_coverage"),
            "Selective prediction: error among the images accepted, most confident first, ensemble and each path",
        ),
        (
            plots.plot_ood,
            figure("ood"),
            "Out-of-distribution detection: the ensemble's scores on in- and out-of-distribution images",
        ),
        (
            plots.plot_cascade,
            figure("cascade"),
            "Early exit: the confidence-gated cascade vs the fixed sub-ensembles of anytime inference",
        ),
    ]
    shown = [_figure(name, caption) for plot, name, caption in figures if plot(result.raw, out / name)]
    grid = mistakes_section(out, result.raw)
    if grid:
        shown.insert(min(1, len(shown)), grid)  # after the confusion matrix
    return ["<h2>Ensemble quality</h2>" + _per_class_table(result) + "".join(shown)] if shown else []


def _per_class_table(result: EvalRecord) -> str:
    """Per class: test images, the ensemble's top-1 and its Wilson 95 % CI (empty when eval.json has none)."""
    per_class = result.get("per_class") or {}
    rows = []
    for name, n, top1 in zip(per_class.get("classes", []), per_class.get("images", []), per_class.get("top1", [])):
        if top1 is None:
            rows.append(f"<tr><td>{html.escape(str(name))}</td><td>{n}</td><td>n/a</td><td></td></tr>")
            continue
        low, high = explain.wilson_ci(top1 * n, n)
        rows.append(
            f"<tr><td>{html.escape(str(name))}</td><td>{n}</td><td>{100 * top1:.1f}</td>"
            f"<td>{100 * low:.1f} – {100 * high:.1f}</td></tr>"
        )
    if not rows:
        return ""
    header = "<tr><th>class</th><th>test images</th><th>top-1 (%)</th><th>95 % CI (Wilson)</th></tr>"
    return "<h3>Per class (ensemble, test split)</h3><table class='per-class'>" + header + "".join(rows) + "</table>"


def _page(run: Path, parts: list[str]) -> str:
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>NEAS report: {html.escape(run.name)}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}} figure{{margin:1em 0}}
img{{max-width:100%;border:1px solid #ddd}} figcaption{{color:#555;font-size:90%}}
code{{background:#f4f4f4}} div.table{{overflow-x:auto;margin:0.5em 0}}
table{{border-collapse:collapse;font-size:90%}} th,td{{border:1px solid #ddd;padding:2px 8px;text-align:left}}
th{{background:#f4f4f4}} .flag{{color:#8a4b00}}</style></head>
<body><h1>NEAS report: {html.escape(str(run))}</h1>
{"".join(parts)}
</body></html>
"""


def _html_table(table: compare.Table) -> str:
    """A table of compare's page as HTML (scrolling sideways inside the page when wider)."""
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in table.header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in table.rows)
    note = f"<p class='note'>{html.escape(table.note)}</p>" if table.note else ""
    return f"{note}<div class='table'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def build_compare_report(run: Path) -> Path:
    """A `neas compare` directory's page: the answer in words and what to read it with, every seed of every
    row with its mean and CI, then per budget a legend and compare.md's tables as HTML tables."""
    record = read_json(run / COMPARE, "neas compare results", ("rows",))
    out = run / REPORT
    out.mkdir(exist_ok=True)
    shown = compare.page(record)
    parts = ["<h2>Is the ensemble worth it?</h2>"]
    parts += [f"<p class='answer'><b>{html.escape(line)}</b></p>" for line in shown["answer"]]
    if shown["warnings"]:
        items = "".join(f"<li class='flag'>⚠ {html.escape(line)}</li>" for line in shown["warnings"])
        parts.append(f"<ul class='flags'>{items}</ul>")
    if plots.plot_compare(record, out / figure("compare")):
        caption = "Each seed of each row (dots); mean and t 95 % CI, clipped to the quantity's bounds (squares)"
        parts.append(_figure(figure("compare"), caption))
    parts.append(f"<h2>{html.escape(shown['title'])}</h2>")
    for heading, legend, tables in shown["sections"]:
        parts += [f"<h3>{html.escape(heading)}</h3>"] if heading else []
        parts.append("<ul class='legend'>" + "".join(f"<li>{html.escape(line)}</li>" for line in legend) + "</ul>")
        parts += [_html_table(table) for table in tables]
    write_text(out / REPORT_PAGE, _page(run, parts))
    return out / REPORT_PAGE


def build_report(run: str | Path) -> Path:
    """Renders every figure the run's artefacts allow; returns the path of index.html."""
    run = Path(run)
    if run.exists() and not run.is_dir():
        raise NeasError(f"{run} is a file, not a run directory (give the directory that holds {ARCH} or search/)")
    if not run.is_dir():
        raise NeasError(f"run directory {run} does not exist")
    by_kind = {"compare": build_compare_report, "detect": build_detection_report}.get(run_kind(run))
    if by_kind is not None:
        return by_kind(run)
    out = run / REPORT
    out.mkdir(exist_ok=True)
    layout = PipelineLayout(run)
    arch_file = layout.search / ARCH
    chosen = read_arch(arch_file) if arch_file.is_file() else None
    eval_file = layout.retrain / EVAL
    result = read_eval(eval_file) if eval_file.is_file() else None
    parts = _summary(chosen, result) + _training(run, out) + _search(run, out)
    if chosen:
        parts += _chosen(run, out, chosen)
    if result:
        parts += _quality(out, result)
    if not parts:
        raise NeasError(f"{run} holds nothing to report (expected supernet/, search/ or retrain/ from `neas run`)")
    write_text(out / REPORT_PAGE, _page(run, explain.header(run, chosen, result) + parts))
    return out / REPORT_PAGE


def _ap_table(result: dict) -> str:
    """The COCO AP table of a detection ``eval.json``, then its per-class AP."""

    def cell(value) -> str:
        return "<td>n/a</td>" if value is None else f"<td>{100 * value:.1f}</td>"

    names = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    header = "<tr>" + "".join(f"<th>{n}</th>" for n in names) + "</tr>"
    values = "<tr>" + "".join(cell(result[n]) for n in names) + "</tr>"
    per_class = result.get("per_class") or {}
    classes = "".join(f"<tr><td>{html.escape(str(k))}</td>{cell(v)}</tr>" for k, v in per_class.items())
    table = f"<table>{header}{values}</table>"
    if classes:
        table += f"<h3>Per class</h3><table><tr><th>class</th><th>AP</th></tr>{classes}</table>"
    return table


def _detection_grid(run: Path, out: Path, record: dict, count: int = 8) -> list[str]:
    """The first ``count`` val images with their true and predicted boxes (none when the data is gone)."""
    from PIL import Image

    data = record["data"]
    try:
        split = load_coco(data["data_dir"], data["val_split"], categories=record["categories"])
    except NeasError as exc:
        return [f"<p>(no example images: {html.escape(str(exc))})</p>"]
    names = {c["id"]: c["name"] for c in record["categories"]}
    detections = json.loads((run / PREDICTIONS).read_text()) if (run / PREDICTIONS).is_file() else []
    chosen = split.images[:count]
    found = {img["id"]: [] for img in chosen}
    for d in detections:
        if d["image_id"] in found:
            found[d["image_id"]].append((names[d["category_id"]], d["score"], d["bbox"]))
    truth = {img["id"]: [] for img in chosen}
    for a in split.ground_truth["annotations"]:
        if a["image_id"] in truth:
            truth[a["image_id"]].append((names[a["category_id"]], a["bbox"]))
    images = []
    for img in chosen:
        with Image.open(split.image_path(img)) as image:
            images.append((rgb_array(image), truth[img["id"]], found[img["id"]]))  # as training decodes it
    if not plots.plot_detections(images, out / figure("detections")):
        return []
    caption = "Validation images: true boxes (dashed white) and detections scoring over 0.5"
    return ["<h2>Examples</h2>" + _figure(figure("detections"), caption)]


def build_detection_report(run: str | Path) -> Path:
    """A `neas detect` run's page: the AP table, the training curves and example detections."""
    run = Path(run)
    record = read_json(run / DETECTOR, "detector record", ("data", "categories"))
    out = run / REPORT
    out.mkdir(exist_ok=True)
    parts = []
    if (run / EVAL).is_file():
        result = read_json(run / EVAL, "detection evaluation", ("AP", "split", "images"))
        what = f"{result.get('backbone')} {result.get('arch') or ''}".strip()
        parts.append(
            f"<h2>COCO box AP (%)</h2><p>{html.escape(what)} backbone, {result['images']} images of "
            f"{html.escape(result['split'])}, after {result.get('epochs')} epochs</p>" + _ap_table(result)
        )
    if plots.plot_detection_training(run, out / figure("training")):
        parts.append("<h2>Training</h2>" + _figure(figure("training"), "Training losses, learning rate (and val AP50)"))
    parts += _detection_grid(run, out, record)
    write_text(out / REPORT_PAGE, _page(run, parts))
    return out / REPORT_PAGE
