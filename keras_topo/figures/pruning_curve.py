"""Test accuracy against the fraction of pruned channels (the paper's Fig. 3)."""

from collections import defaultdict

import numpy as np
from matplotlib.figure import Figure


def plot_pruning_curves(path, sweeps, title=None):
    """Writes a PNG with one curve per organisation from pruning sweeps (`prune_sweep` dicts).

    Runs of the same organisation (seeds) are averaged at the fractions they share: the line
    is the mean and the band +- one standard deviation, as in the paper's figure. Baseline
    (dashed) and topographic curves share the axes.
    """
    groups = defaultdict(list)
    for sweep in sweeps:
        groups[sweep["organisation"]].append(
            {point["fraction"]: 100 * point["accuracy"] for point in sweep["points"]}
        )
    figure = Figure(figsize=(6.5, 4.5), layout="constrained")
    axes = figure.add_subplot()
    for organisation, runs in groups.items():
        fractions = sorted(set.intersection(*(set(run) for run in runs)))
        accuracy = np.array([[run[f] for f in fractions] for run in runs])
        mean = accuracy.mean(axis=0)
        x = 100 * np.asarray(fractions)
        style = "--" if organisation == "baseline" else "-"
        label = f"{organisation} ({len(runs)} run{'s' if len(runs) > 1 else ''})"
        (line,) = axes.plot(x, mean, style, marker="o", markersize=3, label=label)
        if len(runs) > 1:
            std = accuracy.std(axis=0, ddof=1)
            axes.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    axes.set_xlabel("channels pruned per layer (%)")
    axes.set_ylabel("test accuracy (%)")
    criteria = sorted({f"{s['criterion']}, {s['mode']}" for s in sweeps})
    axes.set_title(title or f"Pruning without retraining ({'; '.join(criteria)})")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.savefig(path, dpi=110)
    return path
