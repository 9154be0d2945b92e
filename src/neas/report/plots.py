"""The report's figures (matplotlib, Agg): training curves, shrinking heat maps, evolution
progress, accuracy-vs-cost with the Pareto front, a diagram of the chosen ensemble, and the
evaluation's reliability diagram, corruption-severity curves and anytime-K curve."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyBboxPatch, Rectangle

from neas.io import (
    read_json,
    save_figure,
)
from neas.log import MetricLogger
from neas.records import read_arch, read_generations
from neas.report.explain import wilson_ci
from neas.report.tables import METRICS, clip_interval
from neas.runfiles import ARCH, PARETO, PipelineLayout
from neas.search.pareto import front_indices
from neas.space import EnsembleArch

__all__ = [
    "plot_anytime",
    "plot_arch",
    "plot_cascade",
    "plot_compare",
    "plot_confusion",
    "plot_corruptions",
    "plot_detection_training",
    "plot_detections",
    "plot_evolution",
    "plot_front",
    "plot_latency_validation",
    "plot_mistakes",
    "plot_ood",
    "plot_pareto",
    "plot_rank",
    "plot_reliability",
    "plot_risk_coverage",
    "plot_search_curves",
    "plot_shrink_round",
    "plot_training",
]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    return save_figure(fig, path)


def _num_classes(result: dict) -> int | None:
    """The number of classes an ``eval.json`` records (its per-class block), None when it has none."""
    classes = (result.get("per_class") or {}).get("classes")
    return len(classes) if classes else None


def _chance(ax, result: dict) -> None:
    """A dashed line at chance, 1 / classes (percent), when the record says how many classes there are."""
    c = _num_classes(result)
    if c:
        ax.axhline(100 / c, color="grey", ls="--", lw=1, label=f"chance (1/{c})")


def _with_ci(ax, x, fractions, n: int, **style) -> None:
    """Top-1 values (fractions) in percent with Wilson 95 % error bars over ``n`` images."""
    lows, highs = zip(*(wilson_ci(a * n, n) for a in fractions))
    err = [[100 * (a - lo) for a, lo in zip(fractions, lows)], [100 * (hi - a) for a, hi in zip(fractions, highs)]]
    ax.errorbar(x, [100 * a for a in fractions], yerr=err, capsize=3, **style)


def _supernet_loss(ax, sn: list[dict]) -> None:
    ep = [m["epoch"] + 1 for m in sn]
    ax.plot(ep, [m["loss"] for m in sn], "o-", color="C0", label="supernet loss")
    shrinks = [
        m["epoch"] + 1 for a, m in zip([None, *sn[:-1]], sn) if a is not None and m["combinations"] < a["combinations"]
    ]
    for i, e in enumerate(shrinks):
        ax.axvline(e, color="grey", ls=":", lw=1, label="shrinking round" if i == 0 else None)
    ax.set(xlabel="epoch", ylabel="sum over K paths of cross-entropy", title="Supernet loss (sum of K paths)")
    ax.legend(fontsize=8)


def plot_training(run: Path, path: Path) -> Path | None:
    """Three panels, each quantity on its own axis: the supernet loss (a sum over K paths), the
    retraining loss (label-smoothed cross-entropy), and accuracy: the supernet's sampled ensembles
    on training batches, the retrained ensemble on the test split."""
    layout = PipelineLayout(run)
    sn, rt = MetricLogger.read(layout.supernet), MetricLogger.read(layout.retrain)
    if not sn and not rt:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    if sn:
        _supernet_loss(axes[0], sn)
    else:
        axes[0].axis("off")
    if rt:
        axes[1].plot([m["epoch"] + 1 for m in rt], [m["loss"] for m in rt], "s-", color="C1", label="retrain loss")
        axes[1].set(xlabel="epoch", ylabel="cross-entropy with label smoothing", title="Retraining loss")
        axes[1].legend(fontsize=8)
    else:
        axes[1].axis("off")
    ax = axes[2]
    if sn:
        ep = [m["epoch"] + 1 for m in sn]
        ax.plot(ep, [100 * m["ensemble_acc"] for m in sn], "o-", label="supernet: sampled ensembles (train batches)")
    tests = [m for m in rt if "test_top1" in m]
    if tests:
        ax.plot(
            [m["epoch"] + 1 for m in tests],
            [100 * m["test_top1"] for m in tests],
            "s-",
            label="retrained ensemble (test split, EMA)",
        )
    ax.set(xlabel="epoch", ylabel="top-1 (%)", title="Accuracy (train batches vs test: not comparable)", ylim=(0, 100))
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def _heat(ax, matrix, xlabels, ylabels, title, mask=None, vmin=None, vmax=None):
    im = ax.imshow(np.ma.masked_invalid(matrix), cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(xlabels)), xlabels, rotation=45, fontsize=7)
    ax.set_yticks(range(len(ylabels)), ylabels, fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.figure.colorbar(im, ax=ax, fraction=0.046)
    if mask is not None:
        for i, j in zip(*np.nonzero(mask)):
            ax.text(j, i, "×", ha="center", va="center", color="red", fontsize=12, fontweight="bold")


def plot_shrink_round(record: dict, path: Path) -> Path:
    """Per layer, heat maps of the similarity S, the quality r and every surviving
    combination's score (K = 2: an op x op matrix; otherwise one row), dropped ones marked with a red ×."""
    layers = record["layers"]
    fig, axes = plt.subplots(len(layers), 3, figsize=(13, 2.8 * len(layers)), squeeze=False)
    dropped = {(d["layer"], tuple(d["ops"])) for d in record["dropped"]}
    for row, layer in zip(axes, layers):
        ops, name = layer["ops"], layer["layer"]
        S = np.array(layer["S"])
        _heat(row[0], S, ops, ops, f"{name}: similarity S", vmin=S.min(), vmax=1.0)
        _heat(row[1], np.array([layer["r"]]), ops, ["r"], f"{name}: quality r = exp(γ·acc)")
        scores = layer["scores"]
        if not scores:  # a layer shared in every ensemble is not scored
            row[2].axis("off")
            row[2].text(0.5, 0.5, f"{name}: shared in every ensemble, not scored", ha="center", va="center", fontsize=9)
        elif len(scores[0]["ops"]) == 2:
            pos = {op: i for i, op in enumerate(ops)}
            matrix, mask = np.full((len(ops), len(ops)), np.nan), np.zeros((len(ops), len(ops)), bool)
            for c in scores:
                i, j = sorted(pos[o] for o in c["ops"])
                matrix[i, j] = c["score"]
                mask[i, j] = (name, tuple(c["ops"])) in dropped
            _heat(row[2], matrix, ops, ops, f"{name}: combination scores (red ×: dropped)", mask)
        else:
            labels = ["/".join(c["ops"]) for c in scores]
            mask = np.array([[(name, tuple(c["ops"])) in dropped for c in scores]])
            _heat(
                row[2],
                np.array([[c["score"] for c in scores]]),
                labels,
                ["score"],
                f"{name}: combination scores (red ×: dropped)",
                mask,
            )
    fig.suptitle(
        f"Shrinking round {record['round']} after epoch {record['epoch']} ({record['mode']}): "
        f"{record['combinations_before']} -> {record['combinations_after']} combinations",
        fontsize=11,
    )
    return _save(fig, path)


def _generations(search_dir: Path) -> list[dict]:
    return read_generations(search_dir)


def plot_evolution(search_dir: Path, path: Path, random_dir: Path | None = None) -> Path | None:
    """Best-so-far and population accuracy per generation; the best found vs evaluations for
    evolution and random search (like the paper's Figure 5)."""
    gens = _generations(search_dir)
    if not gens:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    g = [r["generation"] for r in gens]
    ax.plot(g, [100 * r["best"]["ensemble_acc"] for r in gens], "o-", label="best so far")
    ax.plot(g, [100 * np.mean([m["ensemble_acc"] for m in r["members"]]) for r in gens], "s--", label="population mean")
    ax.set(xlabel="generation", ylabel="held-out top-1 (%)", title="Evolution progress")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.legend()
    ax = axes[1]
    for name, folder in (("evolution", search_dir), ("random", random_dir)):
        if folder is None or not folder.is_dir():
            continue
        accs = [m["ensemble_acc"] for r in _generations(folder) for m in r["members"]]
        if accs:
            ax.plot(range(1, len(accs) + 1), 100 * np.maximum.accumulate(accs), label=name)
    ax.set(xlabel="candidates evaluated", ylabel="best held-out top-1 (%)", title="Evolution vs random search")
    ax.legend()
    return _save(fig, path)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (cost, accuracy) points no other beats on both, by increasing cost (the search's own
    front: :func:`neas.search.pareto.front_indices`)."""
    return [points[i] for i in front_indices([(-acc, cost) for cost, acc in points])]


def plot_pareto(
    search_dir: Path, path: Path, budget: float | None = None, metric: str = "macs", chosen: dict | None = None
) -> Path | None:
    members = [m for r in _generations(search_dir) for m in r["members"]]
    if not members:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {"random": "tab:grey", "mutation": "tab:blue", "crossover": "tab:orange"}
    for origin, color in colors.items():
        pts = [(m[metric] / 1e6, 100 * m["ensemble_acc"]) for m in members if m.get("origin") == origin]
        if pts:
            ax.scatter(*zip(*pts), s=14, alpha=0.6, color=color, label=origin)
    front = pareto_front([(m[metric] / 1e6, 100 * m["ensemble_acc"]) for m in members])
    ax.step(*zip(*front), where="post", color="black", lw=1.5, marker="o", ms=4, label="Pareto front")
    if budget is not None:
        ax.axvline(budget / 1e6, color="tab:red", ls="--", label=f"budget {budget / 1e6:g}M")
    if chosen is not None:
        ax.scatter(
            [chosen[metric] / 1e6],
            [100 * chosen["supernet_acc"]],
            marker="*",
            s=250,
            color="gold",
            edgecolor="black",
            zorder=5,
            label="chosen",
        )
    ax.set(xlabel=f"{metric} (M)", ylabel="held-out top-1 with supernet weights (%)", title="Every evaluated candidate")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_arch(arch: EnsembleArch, space, path: Path, title: str = "") -> Path:
    """The ensemble like the paper's Figure 3: the shared trunk, the split point, and each path's
    blocks drawn with width by kernel size and height by expansion ratio."""
    k = arch.num_paths
    n = space.num_layers
    fig, ax = plt.subplots(figsize=(max(8, 0.62 * (n + 4)), 1.2 + 1.1 * k))
    cmap = plt.get_cmap("tab10")
    kernels = sorted({o.kernel for o in space.ops if not o.is_skip})
    color_of = {kern: cmap(i) for i, kern in enumerate(kernels)}
    exps = sorted({o.expansion for o in space.ops if not o.is_skip})
    y_mid = (k - 1) / 2

    def block(x, y, op):
        if op.is_skip:
            ax.plot([x - 0.25, x + 0.25], [y, y], color="grey", ls=":", lw=1.5)
            return
        w = 0.25 + 0.07 * op.kernel
        h = 0.3 + 0.5 * (exps.index(op.expansion) + 1) / len(exps)
        ax.add_patch(
            FancyBboxPatch(
                (x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02", color=color_of[op.kernel], alpha=0.9
            )
        )
        ax.text(x, y, f"{op.kernel}\n{op.expansion}", ha="center", va="center", fontsize=6, color="white")

    ax.add_patch(Rectangle((-1.4, y_mid - 0.3), 0.6, 0.6, color="black"))
    ax.text(-1.1, y_mid - 0.55, "stem", ha="center", fontsize=7)
    ax.add_patch(Rectangle((-0.6, y_mid - 0.3), 0.6, 0.6, color="dimgrey"))
    ax.text(-0.3, y_mid - 0.55, "L0", ha="center", fontsize=7)
    for i in range(1, n + 1):
        spec = space.layer(i)
        if i <= arch.split:
            block(i, y_mid, arch.paths[0][i - 1])
        else:
            for j in range(k):
                block(i, j, arch.paths[j][i - 1])
        if spec.first_of_stage:
            ax.axvline(i - 0.5, color="lightgrey", lw=0.8, zorder=0)
    split_x = arch.split + 0.5
    ax.axvline(split_x, color="tab:red", ls="--", lw=1.2)
    ax.text(split_x, k - 0.35, f"split point {arch.split}", color="tab:red", fontsize=8, ha="center")
    _arch_frame(ax, n, k, [(f"kernel {kern}", color_of[kern]) for kern in kernels], title)
    return _save(fig, path)


def _arch_frame(ax, n: int, k: int, legend: list, title: str) -> None:
    """The heads, the legend (kernel sizes), the axes and the title of :func:`plot_arch`."""
    for j in range(k):
        ax.add_patch(Rectangle((n + 0.7, j - 0.3), 0.8, 0.6, color="tab:purple"))
        ax.text(n + 1.1, j, "head", ha="center", va="center", color="white", fontsize=7)
        ax.text(n + 1.8, j, f"path {j}", va="center", fontsize=8)
    handles = [Rectangle((0, 0), 1, 1, color=color) for _, color in legend]
    labels = [label for label, _ in legend]
    ax.legend(handles, labels, loc="upper left", fontsize=7, ncol=len(legend), bbox_to_anchor=(0, 1.18))
    ax.set_xlim(-1.6, n + 2.6)
    ax.set_ylim(-0.8, k - 0.1)
    ax.set_xticks(range(1, n + 1), [f"L{i}" for i in range(1, n + 1)], fontsize=7)
    ax.set_yticks([])
    ax.set_title(title or "Chosen ensemble (block labels: kernel / expansion; dotted: skip)", fontsize=10)
    for spine in ("left", "right", "top"):
        ax.spines[spine].set_visible(False)


def _members(result: dict) -> list[str]:
    return ["ensemble", *sorted(k for k in result if k.startswith("path") and k[4:].isdigit())]


def plot_reliability(result: dict, path: Path) -> Path | None:
    """Reliability diagram of ``eval.json``: accuracy vs confidence per bin, ensemble and paths."""
    rel = result.get("reliability")
    if not rel:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 100], [0, 100], color="grey", ls=":", lw=1, label="perfect calibration")
    for i, name in enumerate(_members(result)):
        r = rel[name]
        pts = [(c, a) for c, a, n in zip(r["confidence"], r["accuracy"], r["count"]) if n > 0]
        ece = result[name].get("ece", float("nan"))
        style = (
            dict(lw=2.5, color="black", marker="o")
            if name == "ensemble"
            else dict(lw=1, color=f"C{i}", marker=".", alpha=0.8)
        )
        ax.plot([100 * c for c, _ in pts], [100 * a for _, a in pts], label=f"{name} (ECE {100 * ece:.1f}%)", **style)
    r = rel["ensemble"]
    for c, a, n in zip(r["confidence"], r["accuracy"], r["count"]):
        if n > 0:  # the ensemble's images per bin: a bin of 3 images says little
            ax.annotate(f"n={n}", (100 * c, 100 * a), textcoords="offset points", xytext=(4, -12), fontsize=7)
    ax.set(
        xlabel="confidence (%)",
        ylabel="accuracy (%)",
        xlim=(0, 100),
        ylim=(0, 100),
        title=f"Reliability ({r['bins']} bins, {result.get('split', '')} split, n = {sum(r['count'])}; "
        "labels: ensemble images per bin)",
    )
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_corruptions(result: dict, path: Path) -> Path | None:
    """Accuracy and NLL vs corruption severity (averaged over corruptions), ensemble vs paths;
    severity 0 is the clean split."""
    block = result.get("corruptions")
    if not block:
        return None
    sev = [0, *list(block["severities"])]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, name in enumerate(_members(result)):
        style = dict(lw=2.5, color="black", marker="o") if name == "ensemble" else dict(lw=1, color=f"C{i}", marker=".")
        acc = [result[name]["top1"]] + [block["by_severity"][str(s)][name]["top1"] for s in block["severities"]]
        nll = [result[name]["nll"]] + [block["by_severity"][str(s)][name]["nll"] for s in block["severities"]]
        _with_ci(axes[0], sev, acc, block["images"], label=name, **style)
        axes[1].plot(sev, nll, label=name, **style)
    _chance(axes[0], result)
    axes[0].set(
        xlabel="severity (0: clean)",
        ylabel="top-1 (%), Wilson 95 % CI",
        title=f"Accuracy under {len(block['names'])} corruptions (n = {block['images']} images each)",
        ylim=(0, 100),
    )
    axes[1].set(xlabel="severity (0: clean)", ylabel="NLL", title="NLL under corruption")
    for ax in axes:
        ax.set_xticks(sev)
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_anytime(result: dict, path: Path) -> Path | None:
    """Top-1 and NLL vs MACs of the sub-ensembles of the first j paths, j = 1..K."""
    anytime = result.get("anytime")
    if not anytime or len(anytime) < 2:
        return None
    macs = [e["macs"] / 1e6 for e in anytime]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    n = int(result.get("images") or 0)
    _with_ci(axes[0], macs, [e["top1"] for e in anytime], n, fmt="o-", color="black", label="first j paths")
    _chance(axes[0], result)
    axes[0].legend(fontsize=8)
    axes[1].plot(macs, [e["nll"] for e in anytime], "o-", color="black")
    for e, x in zip(anytime, macs):
        axes[0].annotate(
            f"j={len(e['paths'])}", (x, 100 * e["top1"]), textcoords="offset points", xytext=(4, -10), fontsize=8
        )
        axes[1].annotate(f"j={len(e['paths'])}", (x, e["nll"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    by = result.get("anytime_order", {}).get("by", "path index")
    axes[0].set(
        xlabel="MACs (M)",
        ylabel="top-1 (%), Wilson 95 % CI",
        title=f"Anytime: the first j paths (by {by}), n = {n}",
        ylim=(0, 100),
    )
    axes[1].set(xlabel="MACs (M)", ylabel="NLL", title="Anytime: NLL")
    return _save(fig, path)


def _member_style(name: str, i: int) -> dict:
    return dict(lw=2.5, color="black") if name == "ensemble" else dict(lw=1, color=f"C{i}", alpha=0.85)


def plot_risk_coverage(result: dict, path: Path) -> Path | None:
    """Selective prediction: the risk (error among accepted images) vs the fraction accepted, by confidence."""
    if "selective" not in result.get("ensemble", {}):
        return None
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for i, name in enumerate(_members(result)):
        sel = result[name]["selective"]
        label = f"{name} (AURC {sel['aurc']:.4f})"
        ax.plot(
            sel["curve"]["coverage"], [100 * r for r in sel["curve"]["risk"]], label=label, **_member_style(name, i)
        )
    ax.set(xlabel="coverage (fraction of images accepted)", ylabel="risk (% of accepted wrong)", xlim=(0, 1))
    ax.set_title(f"Risk-coverage ({result.get('split', '')} split)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_ood(result: dict, path: Path) -> Path | None:
    """The ensemble's out-of-distribution scores: in- vs out-of-distribution histograms, with AUROC."""
    ood = result.get("ood")
    if not ood:
        return None
    scores = list(ood["histograms"])
    fig, axes = plt.subplots(1, len(scores), figsize=(3.6 * len(scores), 3.4), squeeze=False)
    for ax, score in zip(axes[0], scores):
        h = ood["histograms"][score]
        edges = np.asarray(h["edges"])
        for counts, label, color in ((h["in"], "in", "C0"), (h["out"], "out", "C3")):
            density = np.asarray(counts) / max(sum(counts), 1)
            ax.stairs(density, edges, fill=True, alpha=0.45, color=color, label=f"{label} ({sum(counts)})")
        ax.set(title=f"{score}: AUROC {ood['ensemble'][score]['auroc']:.3f}", xlabel="score (higher: more OOD)")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("fraction of images")
    fig.suptitle(f"Out-of-distribution: {ood['data']} vs the {result.get('split', '')} split (ensemble)")
    return _save(fig, path)


# what a fitted cascade's tolerance is counted in, by its exit rule (a record without one: the top-1 rule)
_KEPT = {"accuracy": "top-1", "risk": "coverage at 5 % risk"}


def plot_cascade(result: dict, path: Path) -> Path | None:
    """The cascade's accuracy vs mean MACs per image as its threshold moves, against anytime-K's fixed
    sub-ensembles, with the fitted cascade marked."""
    cascade = result.get("cascade")
    if not cascade:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    curve = cascade["curve"]
    ax.plot([p["mean_macs"] / 1e6 for p in curve], [100 * p["top1"] for p in curve], ".-", color="C0",
            label="cascade, one threshold for every step")  # fmt: skip
    anytime = result["anytime"]
    ax.plot([e["macs"] / 1e6 for e in anytime], [100 * e["top1"] for e in anytime], "s--", color="black",
            label="anytime: first j paths, every image")  # fmt: skip
    kept = _KEPT.get(cascade.get("exit"), "top-1")
    ax.plot(cascade["mean_macs"] / 1e6, 100 * cascade["top1"], "*", ms=16, color="C3",
            label=f"fitted (tolerance {cascade['tolerance_points']} points of {kept})")  # fmt: skip
    ax.set(xlabel="mean MACs per image (M)", ylabel="top-1 (%)", title="Confidence-gated cascade")
    ax.legend(fontsize=8)
    return _save(fig, path)


_COMPARED = {m: (METRICS[m].label, METRICS[m].scale) for m in ("top1", "nll", "ece")}


def plot_confusion(result: dict, path: Path) -> Path | None:
    """The ensemble's confusion matrix on the split (rows: true class, row-normalised colour, counts
    written) and its per-class top-1 with Wilson 95 % CIs and the chance line."""
    per_class, confusion = result.get("per_class"), result.get("confusion")
    if not per_class or not confusion:
        return None
    matrix, names = np.array(confusion["matrix"]), per_class["classes"]
    c = len(names)
    fig, axes = plt.subplots(1, 2, figsize=(min(6 + 0.5 * c, 20), min(3 + 0.4 * c, 14)))
    rows = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    im = axes[0].imshow(rows, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=axes[0], fraction=0.046, label="fraction of the true class")
    if c <= 20:
        for i, j in np.ndindex(matrix.shape):
            color = "white" if rows[i, j] > 0.5 else "black"
            axes[0].text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7, color=color)
    axes[0].set_xticks(range(c), names, rotation=45, fontsize=7)
    axes[0].set_yticks(range(c), names, fontsize=7)
    axes[0].set(xlabel="predicted class", ylabel="true class", title=f"Confusion (n = {int(matrix.sum())})")
    shown = [(i, a, n) for i, (a, n) in enumerate(zip(per_class["top1"], per_class["images"])) if a is not None]
    for i, a, n in shown:
        _with_ci(axes[1], [i], [a], n, fmt="o", color="black")
    _chance(axes[1], result)
    axes[1].set_xticks(range(c), [f"{name}\n(n={n})" for name, n in zip(names, per_class["images"])], fontsize=7)
    axes[1].set(ylabel="top-1 (%), Wilson 95 % CI", title="Per-class top-1 of the ensemble", ylim=(0, 100))
    axes[1].legend(fontsize=8)
    return _save(fig, path)


def plot_compare(record: dict, path: Path) -> Path | None:
    """``neas compare``: per row, every seed's top-1, NLL and ECE (dots) and their mean with its t 95 % CI."""
    rows = list(record.get("rows", {}))
    metrics = [m for m in _COMPARED if any(m in record["rows"][r] for r in rows)]
    if not rows or not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        label, scale = _COMPARED[metric]
        for i, row in enumerate(rows):
            stats = record["rows"][row].get(metric)
            if not stats:
                continue
            ax.plot(
                [i - 0.1] * len(stats["values"]), [scale * v for v in stats["values"]], "o", color=f"C{i}", alpha=0.6
            )
            if stats["lo"] is not None:  # within the quantity's bounds, as compare.md shows it
                lo, hi, _, _ = clip_interval(stats["lo"], stats["hi"], METRICS[metric].bounds)
                err = [[scale * (stats["mean"] - lo)], [scale * (hi - stats["mean"])]]
                ax.errorbar(i + 0.1, scale * stats["mean"], yerr=err, fmt="s", color="black", capsize=4)
        ax.set_xticks(range(len(rows)), rows)
        ax.set(title=label, xlim=(-0.5, len(rows) - 0.5))
    fig.suptitle(f"{record.get('seeds')} seed(s): each seed (dots), mean and t 95 % CI within bounds (squares)")
    return _save(fig, path)


def plot_rank(oneshot: list[float], scratch: list[float], corr: dict, path: Path, title: str) -> Path:
    """``neas rank``: each ensemble's top-1 with the supernet's inherited weights against its top-1
    trained from scratch, titled with their Kendall τ [bootstrap 95 % CI] and Spearman ρ (``corr``:
    :func:`neas.search.ranking.rank_correlation`'s dict)."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.scatter([100 * a for a in oneshot], [100 * a for a in scratch], s=18)
    lo, hi = corr["kendall_tau_ci95"]
    ax.set(
        xlabel="supernet top-1 (inherited weights, %)",
        ylabel="from-scratch top-1 (%)",
        title=f"{title}\nKendall τ {corr['kendall_tau']:.2f} [{lo:.2f}, {hi:.2f}], "
        f"Spearman ρ {corr['spearman_rho']:.2f}",
    )
    return _save(fig, path)


def plot_front(run: Path, path: Path) -> Path | None:
    """The Pareto front of one search (``search/pareto.json``), random search's front at equal
    evaluations, and the members picked for each budget (``budgets/*/arch.json``)."""
    layout = PipelineLayout(run)
    evo = layout.search / PARETO
    if not evo.is_file():
        return None
    pareto = read_json(evo, "Pareto front")
    metric = pareto["metric"]
    scale = 1.0 if metric == "latency_ms" else 1e-6
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for source, style, label in (
        (evo, "o-", "evolution (NSGA-II)"),
        (layout.search_random / PARETO, "s--", "random search"),
    ):
        if source.is_file():
            front = read_json(source, "Pareto front")
            ax.plot(
                [m[metric] * scale for m in front["front"]],
                [100 * m["ensemble_acc"] for m in front["front"]],
                style,
                label=f"{label}: {len(front['front'])} on the front, {front['evaluations']} evaluated",
                drawstyle="steps-post",
            )
    for folder in sorted(PipelineLayout(run).budgets.glob(f"*/{ARCH}")):
        picked = read_arch(folder).raw
        budget = next(iter(picked["budget"].values()))
        ax.axvline(budget * scale, color="grey", ls=":", lw=1)
        ax.scatter(
            [picked[metric] * scale],
            [100 * picked["supernet_acc"]],
            marker="*",
            s=220,
            color="gold",
            edgecolor="black",
            zorder=5,
        )
    unit = "ms" if metric == "latency_ms" else "M"
    ax.set(
        xlabel=f"{metric} ({unit})",
        ylabel="held-out top-1 with supernet weights (%)",
        title="Pareto front (stars: picked per budget; dotted: budgets)",
    )
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_latency_validation(report: dict, path: str | Path) -> Path:
    """The latency table's predictions against the ensembles timed end to end (``neas latency-table
    --validate``; ``report`` from ``neas.ensemble.latency.validate_table``)."""
    pred = [r["predicted_ms"] for r in report["records"]]
    meas = [(r["measured_ms"] + r["retest_ms"]) / 2 for r in report["records"]]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(meas, pred, s=16)
    lo, hi = min(pred + meas), max(pred + meas)
    ax.plot([lo, hi], [lo, hi], color="grey", ls=":")
    title = (
        f"{report['runtime']}, batch {report['batch_size']}: MAPE {report['mape_pct']:.1f}%, "
        f"bias {report['bias_pct']:+.1f}%\n"
        f"Kendall tau {report['kendall_tau']:.2f} (test-retest {report['test_retest_tau']:.2f})\n"
        f"the two passes differ by {report['test_retest_mape_pct']:.1f}% "
        f"(bias {report['test_retest_bias_pct']:+.1f}%)"
    )
    ax.set(xlabel="measured end to end, mean of two passes (ms)", ylabel="predicted by the table (ms)", title=title)
    ax.title.set_fontsize(9)
    return _save(fig, path)


def plot_detection_training(run: Path, path: Path) -> Path | None:
    """A detection run's losses (total, focal classification, box regression), learning rate and val AP."""
    metrics = MetricLogger.read(run)
    if not metrics:
        return None
    epochs = [m["epoch"] + 1 for m in metrics]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    for key, label in (("loss", "total"), ("classification", "focal classification"), ("bbox_regression", "box")):
        if all(key in m for m in metrics):
            ax.plot(epochs, [m[key] for m in metrics], "o-", ms=3, label=label)
    ax.set(xlabel="epoch", ylabel="training loss (per image)", title="Loss")
    ax.legend()
    ax = axes[1]
    ax.plot(epochs, [m["lr"] for m in metrics], "o-", ms=3, color="C3", label="lr (end of epoch)")
    ax.set_ylim(bottom=0)
    ax.set(xlabel="epoch", ylabel="learning rate", title="Learning rate and val AP")
    evaluated = [m for m in metrics if "val_AP50" in m]
    if evaluated:
        twin = ax.twinx()
        twin.plot([m["epoch"] + 1 for m in evaluated], [100 * m["val_AP50"] for m in evaluated], "s--", color="C2")
        twin.set_ylabel("val AP50 (%)", color="C2")
        twin.set_ylim(bottom=0)
    ax.legend(loc="lower left")
    return _save(fig, path)


def plot_detections(images: list, path: Path, threshold: float = 0.5) -> Path | None:
    """A grid of images with their true boxes (dashed white) and detections scoring over ``threshold``
    (coloured, labelled). ``images``: ``[(RGB array (H, W, 3), [(name, [x, y, w, h])], [(name, score,
    [x, y, w, h])])]``."""
    if not images:
        return None
    cols = min(4, len(images))
    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (pixels, truth, found) in zip(axes.flat, images):
        ax.imshow(pixels)
        for _, (x, y, w, h) in truth:
            ax.add_patch(Rectangle((x, y), w, h, fill=False, ec="white", ls="--", lw=1))
        shown = [d for d in found if d[1] > threshold]
        for i, (name, score, (x, y, w, h)) in enumerate(shown):
            color = f"C{i % 10}"
            ax.add_patch(Rectangle((x, y), w, h, fill=False, ec=color, lw=1.5))
            ax.text(x, y, f"{name} {score:.2f}", color="black", fontsize=6, va="bottom", backgroundcolor=color)
        ax.set_title(f"{len(truth)} true, {len(shown)} found", fontsize=8)
    return _save(fig, path)


def _vote(name: str, predicted: int, confidence: float, truth: int, classes: list[str]) -> str:
    mark = " ✓" if predicted == truth else ""
    return f"{name}: {classes[predicted]} {100 * confidence:.0f}%{mark}"


def plot_mistakes(images: list, entries: list[dict], classes: list[str], path: Path) -> Path | None:
    """A grid of misclassified images (``images``: (H, W, 3) uint8 each), titled with the true class, the
    ensemble's prediction and confidence, and each path's vote (✓: that path was right); ``entries``: the
    ``mistakes.images`` of ``eval.json``."""
    if not images:
        return None
    cols = min(4, len(images))
    rows = -(-len(images) // cols)
    k = len(entries[0]["paths"])
    fig, axes = plt.subplots(rows, cols, figsize=(2.5 * cols, (2.2 + 0.25 * k) * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, pixels, e in zip(axes.flat, images, entries):
        ax.imshow(pixels, interpolation="nearest")
        votes = [
            _vote(f"path{j}", p, c, e["label"], classes)
            for j, (p, c) in enumerate(zip(e["paths"], e["path_confidence"]))
        ]
        ensemble = _vote("ensemble", e["ensemble"], e["confidence"], e["label"], classes)
        ax.set_title("\n".join([f"true: {classes[e['label']]}", ensemble, *votes]), fontsize=7, loc="left")
    return _save(fig, path)


def plot_search_curves(results: dict, path: Path, top: int) -> Path:
    """``neas ablate search`` (Figure 5): per ``neas run`` (``results``: run -> ``{"evolution": curve,
    "random": curve}``, curves of :func:`neas.recipes.ablate.search_curve`), the best and the top-``top``
    mean supernet accuracy found after each evaluation, evolution (solid) against random search (dashed)."""
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, (run, r) in zip(axes[0], results.items()):
        for name, style, color in (("evolution", "-", "C0"), ("random", "--", "C1")):
            curve = r[name]
            x = range(1, curve["evaluations"] + 1)
            ax.plot(x, [100 * a for a in curve["top_mean"]], style, color=color, label=f"{name}: top-{top} mean")
            ax.plot(x, [100 * a for a in curve["best"]], style, color=color, alpha=0.4, label=f"{name}: best")
        ax.set(xlabel="ensembles evaluated", ylabel="supernet top-1 on search-val (%)", title=Path(run).name)
        ax.legend(fontsize=8)
    return _save(fig, path)
