"""Test accuracy against the fraction of pruned channels (the paper's Fig. 3)."""

from collections import defaultdict

import numpy as np
from matplotlib.figure import Figure


def plot_pruning_curves(path, sweeps, title=None, label=None):
    """Writes a PNG with one curve per organisation from pruning sweeps (`prune_sweep` dicts).

    Runs of the same organisation (seeds) are averaged at the fractions they share: the line
    is the mean and the band +- one standard deviation, as in the paper's figure. Baseline
    (dashed) and topographic curves share the axes. `label(sweep) -> str` groups the sweeps
    otherwise (default: `sweep["organisation"]`).
    """
    figure = Figure(figsize=(6.5, 4.5), layout="constrained")
    axes = figure.add_subplot()
    _draw(axes, sweeps, label)
    criteria = sorted({f"{s['criterion']}, {s['mode']}" for s in sweeps})
    axes.set_title(title or f"Pruning without retraining ({'; '.join(criteria)})")
    figure.savefig(path, dpi=110)
    return path


def plot_pruning_panels(path, panels, label, suptitle=None):
    """Writes a PNG with one panel per entry of `panels` (`{title: [sweep, ...]}`, e.g. one per
    pruning method), each drawn as `plot_pruning_curves` with `label(sweep)` as the line."""
    figure = Figure(figsize=(4.2 * len(panels), 4.2), layout="constrained")
    axes = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, (title, sweeps) in zip(axes, panels.items(), strict=True):
        _draw(ax, sweeps, label)
        ax.set_title(title)
    for ax in axes[1:]:
        ax.set_ylabel("")
    if suptitle:
        figure.suptitle(suptitle)
    figure.savefig(path, dpi=110)
    return path


def _draw(axes, sweeps, label):
    """Mean curve (and +- one std band over runs) per `label(sweep)` on `axes`."""
    label = label or (lambda sweep: sweep["organisation"])
    groups = defaultdict(list)
    for sweep in sweeps:
        groups[label(sweep)].append(
            {point["fraction"]: 100 * point["accuracy"] for point in sweep["points"]}
        )
    for name, runs in groups.items():
        fractions = sorted(set.intersection(*(set(run) for run in runs)))
        accuracy = np.array([[run[f] for f in fractions] for run in runs])
        mean = accuracy.mean(axis=0)
        x = 100 * np.asarray(fractions)
        style = "--" if name == "baseline" else "-"
        text = f"{name} ({len(runs)} run{'s' if len(runs) > 1 else ''})"
        (line,) = axes.plot(x, mean, style, marker="o", markersize=3, label=text)
        if len(runs) > 1:
            std = accuracy.std(axis=0, ddof=1)
            axes.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    axes.set_xlabel("channels pruned per layer (%)")
    axes.set_ylabel("test accuracy (%)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
