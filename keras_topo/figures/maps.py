"""Map figures from the scores runs record (`result.json`'s `map_scores`, `keras_topo.metrics`).

- `plot_selectivity_maps`: per layer, each channel at its position coloured by its preferred
  class (one row per run).
- `plot_similarity_curves`: per layer, response similarity against cortical distance, one line
  per run, with the band a random arrangement of the same channels gives (5-95 %).
- `draw_map_figures`: both for run folders (what `keras-topo figures` adds).
"""

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from keras_topo.experiments import results


def plot_selectivity_maps(path, runs, class_names=None):
    """Writes a grid of preferred-class maps: rows = runs, columns = layers.

    Args:
        path: PNG path.
        runs: `{label: map_scores}` (`measure_topography`'s output, with labels).
        class_names: names of the class indices (legend), optional.
    """
    layers = _layers(runs)
    figure = Figure(figsize=(2.4 * len(layers), 2.4 * len(runs) + 0.6), layout="constrained")
    grid = figure.subplots(len(runs), len(layers), squeeze=False)
    colours = colormaps["tab10"]
    classes = set()
    for row, (label, scores) in zip(grid, runs.items(), strict=True):
        for axes, layer in zip(row, layers, strict=True):
            axes.set_xticks([])
            axes.set_yticks([])
            layer_scores = scores.get(layer)
            if layer_scores is None or "preferred_class" not in layer_scores:
                axes.set_axis_off()
                continue
            xy = _plane(np.asarray(layer_scores["positions"]))
            preferred = np.asarray(layer_scores["preferred_class"])
            classes.update(preferred.tolist())
            axes.scatter(xy[:, 0], xy[:, 1], c=colours(preferred % 10), s=max(4, 900 / len(xy)))
            axes.set_title(
                f"{layer}\nI={layer_scores['selectivity_morans_i']:.2f} "
                f"p={layer_scores['selectivity_p_value']:.3f}",
                fontsize=7,
            )
        row[0].set_ylabel(label, fontsize=8)
    names = class_names or [str(k) for k in range(max(classes, default=-1) + 1)]
    handles = [
        grid[0, 0].scatter([], [], color=colours(k % 10), label=names[k]) for k in sorted(classes)
    ]
    figure.legend(handles=handles, loc="outside lower center", ncols=min(10, len(handles)))
    figure.suptitle("Preferred class of each channel at its position", fontsize=9)
    figure.savefig(path, dpi=110)
    return path


def plot_similarity_curves(path, runs):
    """Writes one panel per layer: similarity vs distance per run, shuffled-position bands.

    Args:
        path: PNG path.
        runs: `{label: map_scores}`.
    """
    layers = _layers(runs)
    figure = Figure(figsize=(3.2 * len(layers), 3.0), layout="constrained")
    panels = figure.subplots(1, len(layers), squeeze=False)[0]
    for axes, layer in zip(panels, layers, strict=True):
        for label, scores in runs.items():
            if layer not in scores:
                continue
            curve = scores[layer]["curve"]
            y = _floats(curve["similarity"])
            filled = ~np.isnan(y)  # bins holding no pair are left out
            x = np.asarray(curve["distance"])[filled]
            (line,) = axes.plot(x, y[filled], marker="o", markersize=3, label=label)
            low = _floats(curve["shuffled_low"])[filled]
            high = _floats(curve["shuffled_high"])[filled]
            axes.fill_between(x, low, high, color=line.get_color(), alpha=0.15, lw=0)
        axes.set_title(layer, fontsize=8)
        axes.set_xlabel("distance on the map")
        axes.grid(alpha=0.3)
    panels[0].set_ylabel("response correlation")
    panels[-1].legend(fontsize=7)
    figure.suptitle("Similarity vs distance (bands: shuffled positions, 5-95 %)", fontsize=9)
    figure.savefig(path, dpi=110)
    return path


def draw_map_figures(out_dir, run_dirs, class_names=None):
    """`maps-selectivity.png` and `maps-similarity.png` from the runs' `map_scores`.

    Runs without map scores (recorded before they existed) are skipped; returns the paths
    written (none if no run has scores).
    """
    runs = {}
    for run_dir in run_dirs:
        result = results.read(run_dir)
        if result and result.get("map_scores"):
            label = f"{result['organisation']} s{result['config'].get('seed', 0)}"
            runs[label] = result["map_scores"]
    if not runs:
        return []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [
        plot_selectivity_maps(out / "maps-selectivity.png", runs, class_names),
        plot_similarity_curves(out / "maps-similarity.png", runs),
    ]


def _layers(runs):
    """Layer names in first-seen order over the runs."""
    return list(dict.fromkeys(layer for scores in runs.values() for layer in scores))


def _plane(points):
    """2D coordinates to draw: 1D positions on a line, 3D ones by their first two axes."""
    if points.shape[1] == 1:
        return np.concatenate([points, np.zeros_like(points)], axis=1)
    return points[:, :2]


def _floats(values):
    return np.array([np.nan if v is None else v for v in values], dtype="float64")
