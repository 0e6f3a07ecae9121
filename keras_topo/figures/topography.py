"""Is a trained layer topographic? Similarity against distance, and preferred classes on the map.

`layer_statistics` runs a model on a dataset and keeps, for one conv layer's output (before
any activation, as the loss sees it), the cosine similarity of its channels averaged over the
inputs `(C, C)` and each channel's spatially averaged response per class `(K, C)`.
"""

import keras
import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from keras_topo import positions as positions_lib

# Dividing by max(|y_i|, 1e-4) matches the loss's eps on the norms' product (1e-8).
_MIN_NORM = 1e-4


def layer_statistics(model, layer_name, dataset, num_classes, max_batches=None):
    """Mean channel cosine similarity `(C, C)` and mean response per class `(K, C)`.

    Args:
        model: a functional model.
        layer_name: the conv layer whose output `(B, H, W, C)` is analysed.
        dataset: iterable of `(inputs, int labels)` batches (e.g. a `tf.data.Dataset`).
        num_classes: `K`.
        max_batches: stop after this many batches (None: all).
    """
    probe = keras.Model(model.input, model.get_layer(layer_name).output)
    batches = dataset.as_numpy_iterator() if hasattr(dataset, "as_numpy_iterator") else dataset
    similarity, count = 0.0, 0
    class_sums, class_counts = 0.0, np.zeros(num_classes)
    for index, (inputs, labels) in enumerate(batches):
        if max_batches is not None and index >= max_batches:
            break
        outputs = keras.ops.convert_to_numpy(probe.predict_on_batch(inputs)).astype("float64")
        flat = outputs.reshape(len(outputs), -1, outputs.shape[-1])  # (B, HW, C)
        unit = flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), _MIN_NORM)
        similarity = similarity + np.einsum("bpi,bpj->ij", unit, unit)
        count += len(outputs)
        labels = np.asarray(labels).astype(int)
        one_hot = np.eye(num_classes)[labels]  # (B, K)
        class_sums = class_sums + one_hot.T @ flat.mean(axis=1)
        class_counts += one_hot.sum(axis=0)
    if count == 0:
        raise ValueError("layer_statistics: the dataset yielded no batch.")
    return similarity / count, class_sums / np.maximum(class_counts, 1)[:, None]


def similarity_by_distance(similarity, positions, bins=12, distance="euclidean"):
    """Mean similarity of the channel pairs `i < j` in equal-width distance bins.

    Returns `(centres, means)`, both `(bins,)`; a bin without pairs has mean NaN.
    """
    distances = positions_lib.pairwise_distances(positions, distance)
    upper = np.triu_indices(len(positions), k=1)
    d, s = distances[upper], np.asarray(similarity)[upper]
    edges = np.linspace(0.0, d.max(), bins + 1)
    which = np.clip(np.digitize(d, edges) - 1, 0, bins - 1)
    sums = np.bincount(which, weights=s, minlength=bins)
    counts = np.bincount(which, minlength=bins)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return (edges[:-1] + edges[1:]) / 2, means


def plot_topography(path, panels, layer_name, class_names=None):
    """Writes a PNG: similarity vs distance for every panel, then each panel's class map.

    Args:
        panels: list of dicts with `label`, `similarity` `(C, C)`, `class_means` `(K, C)` and
            `positions` `(C, dim)` (a baseline is drawn at its architecture's default positions);
            `map=False` draws a panel's curve without its class map.
        layer_name: for the title.
        class_names: optional names of the `K` classes, for the legend.
    """
    mapped = [panel for panel in panels if panel.get("map", True)]
    figure = Figure(figsize=(4.5 * (len(mapped) + 1), 4.2), layout="constrained")
    curve = figure.add_subplot(1, len(mapped) + 1, 1)
    for panel in panels:
        centres, means = similarity_by_distance(panel["similarity"], panel["positions"])
        curve.plot(centres, means, marker="o", markersize=3, label=panel["label"])
    grid = np.linspace(0, curve.get_xlim()[1], 50)
    curve.plot(grid, 1 / (grid + 1), ":", color="gray", label="target 1/(d+1)")
    curve.set_xlabel("distance between channels")
    curve.set_ylabel("mean cosine similarity")
    curve.set_title(f"{layer_name}: similarity vs distance")
    curve.legend(fontsize=8)
    for index, panel in enumerate(mapped, start=2):
        points = np.asarray(panel["positions"])
        if points.shape[1] == 1:
            points = np.c_[points, np.zeros(len(points))]
        preferred = np.argmax(panel["class_means"], axis=0)
        colours = colormaps["tab10" if len(panel["class_means"]) <= 10 else "tab20"]
        three_d = points.shape[1] == 3
        axes = figure.add_subplot(1, len(mapped) + 1, index, projection="3d" if three_d else None)
        for c in np.unique(preferred):
            name = class_names[c] if class_names else str(c)
            chosen = points[preferred == c]
            axes.scatter(
                *chosen.T,
                color=colours(c % colours.N),
                s=30,
                label=name,
                marker="o" if three_d else "s",
            )
        if not three_d:
            axes.set_aspect("equal")
        axes.set_title(f"{panel['label']}: preferred class")
        axes.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.savefig(path, dpi=110)
    return path
