"""Test accuracy against the fraction of pruned channels (the paper's Fig. 3)."""

from matplotlib.figure import Figure


def plot_pruning_curves(path, sweeps, title=None):
    """Writes a PNG with one curve per pruning sweep (the dicts `prune_sweep` returns).

    Baseline and topographic runs share the axes, so that they read side by side.
    """
    figure = Figure(figsize=(6.5, 4.5), layout="constrained")
    axes = figure.add_subplot()
    for sweep in sweeps:
        fractions = [100 * point["fraction"] for point in sweep["points"]]
        accuracy = [100 * point["accuracy"] for point in sweep["points"]]
        style = "--" if sweep["organisation"] == "baseline" else "-"
        label = f"{sweep['organisation']} ({sweep['run'].rstrip('/').split('/')[-1]})"
        axes.plot(fractions, accuracy, style, marker="o", markersize=3, label=label)
    axes.set_xlabel("channels pruned per layer (%)")
    axes.set_ylabel("test accuracy (%)")
    criteria = sorted({f"{s['criterion']}, {s['mode']}" for s in sweeps})
    axes.set_title(title or f"Pruning without retraining ({'; '.join(criteria)})")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.savefig(path, dpi=110)
    return path
