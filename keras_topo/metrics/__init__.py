"""Is there a map? Scores of the topographic layers of a trained model.

`measure_topography(model, x, y)` reads each topographic layer's pre-activation output on `x`
(one sub-model, batch by batch), accumulates its channels' statistics and scores the map; see
`keras_topo.metrics.map_scores` for the definitions. Higher = more map-like, about 0 for a
random arrangement of the same channels.
"""

import warnings

import numpy as np

from keras_topo import layer_selection, positions
from keras_topo.metrics import map_scores, similarity_ordering
from keras_topo.metrics.channel_statistics import ChannelStatistics
from keras_topo.metrics.layer_responses import accumulate_statistics, plain_graph
from keras_topo.metrics.map_scores import (
    class_selectivity,
    distance_correlation,
    morans_i,
    morans_i_test,
    sheet_morans_i,
    shuffled_curve_band,
    similarity_curve,
    smoothness,
)

SCORES = (
    "distance_correlation",
    "smoothness",
    "selectivity_morans_i",
    "selectivity_p_value",
    "selectivity_adjacent_morans_i",
)


def measure_topography(
    model,
    x,
    y=None,
    layers=None,
    batch_size=256,
    bins=10,
    permutations=999,
    shuffles=100,
    seed=0,
):
    """Map scores of each topographic layer of `model` on inputs `x` (and labels `y`).

    Token layers (`keras_topo.token_topography`: Dense, EinsumDense, MultiHeadAttention on
    `(B, T, C)`) are read as conv layers are: every token of every input is a sample of the
    channels' correlation, and class selectivity uses each input's tokens pooled (averaged).

    Args:
        model: a built functional or Sequential model with topographic layers (nested models
            are inlined: their layers are measured where they sit).
        x: inputs `(N, ...)` (array-like), or an iterable of batches (e.g. a `tf.data.Dataset`)
            yielding `inputs` or `(inputs, labels)`; labels from the batches take `y`'s role.
        y: class labels `(N,)` (ints) or one-hot `(N, K)`, or None (no selectivity scores).
        layers: which topographic layers (`keras_topo.layer_selection` rules); None: all.
        batch_size: images per forward pass when `x` is an array.
        bins: distance bins of the similarity-vs-distance curve (and of `smoothness`).
        permutations: position shuffles for the Moran's I p-value.
        shuffles: position shuffles for the curve's chance band.
        seed: seed of the shuffles.

    Returns:
        `{key: scores}` in model order. `key` is the layer's name, or, where another layer
        of the inlined model has the same name (keras-hub names the MLP's dense layer of every
        transformer block `dense_1`), its path: the names of the nested models and custom
        layers holding it and its own, "/"-joined (a keras-hub ViT classifier's:
        "vi_t_backbone/vit_encoder/transformer_block_1/mlp/dense_1"). The same model gives
        the same keys whatever `layers` chooses. `scores` holds the floats named in `SCORES`
        (the selectivity ones only with labels), `channels`, `positions` `(C, dim)` list,
        `curve` (`distance`, `similarity`, `pairs`, `shuffled_low`, `shuffled_high` lists,
        5th/95th percentiles) and, with labels, `preferred_class` per channel. A layer with
        fewer than 3 channels (`layer_selection.MIN_MAP_CHANNELS`) carries no map: it is
        skipped with a warning, its entry `{"channels": C, "skipped": reason}`.

    Raises:
        ValueError: no topographic layer, labels whose length differs from `x`, `y` given
            with a dataset that yields labels, a subclassed model, no input.
    """
    chosen = layer_selection.select_layers(
        model, layers, layer_selection.is_topographic, "topographic"
    )
    graph, probes, keys = plain_graph(model, chosen)
    skipped = {}
    for layer, key in zip(chosen, keys, strict=True):
        if layer.filters < layer_selection.MIN_MAP_CHANNELS:
            skipped[key] = {
                "channels": int(layer.filters),
                "skipped": f"{layer.filters} channels: map scores need at least "
                f"{layer_selection.MIN_MAP_CHANNELS}",
            }
            warnings.warn(
                f"measure_topography skips layer {key!r}: {skipped[key]['skipped']}.",
                stacklevel=2,
            )
    measured = [
        (layer, probe, key)
        for layer, probe, key in zip(chosen, probes, keys, strict=True)
        if key not in skipped
    ]
    statistics = (
        accumulate_statistics(
            graph,
            [layer for layer, _, _ in measured],
            [probe for _, probe, _ in measured],
            x,
            y,
            batch_size,
        )
        if measured
        else []
    )
    scores = {
        key: _scores(layer, stats, bins, permutations, shuffles, seed)
        for (layer, _, key), stats in zip(measured, statistics, strict=True)
    }
    return {key: skipped.get(key) or scores[key] for key in keys}


def _scores(layer, stats, bins, permutations, shuffles, seed):
    pos = np.asarray(layer.positions)  # TopoLoss' own sheet for objective="weights"
    distance = getattr(getattr(layer, "topography", None), "distance", "euclidean")
    distances = positions.pairwise_distances(pos, distance).astype("float64")
    similarity = stats.correlation()
    centres, means, counts = similarity_curve(similarity, distances, bins)
    low, high = shuffled_curve_band(similarity, distances, bins, shuffles, seed=seed)
    scores = {
        "distance_correlation": distance_correlation(similarity, distances),
        "smoothness": smoothness(similarity, distances, bins),
        "channels": int(layer.filters),
        "positions": np.asarray(pos).tolist(),
        "curve": {
            "distance": centres.tolist(),
            "similarity": _nan_to_none(means),
            "pairs": counts.tolist(),
            "shuffled_low": _nan_to_none(low),
            "shuffled_high": _nan_to_none(high),
        },
    }
    if stats.class_sums:
        labels, class_means = stats.class_means()
        selectivity = class_selectivity(class_means)  # (C, K)
        observed, scores["selectivity_p_value"] = morans_i_test(
            selectivity, distances, permutations, seed
        )
        scores["selectivity_morans_i"] = observed + 1.0 / (layer.filters - 1)
        scores["selectivity_adjacent_morans_i"] = sheet_morans_i(selectivity, distances)
        scores["preferred_class"] = [int(labels[k]) for k in np.argmax(selectivity, axis=1)]
    return scores


def _nan_to_none(values):
    return [None if np.isnan(v) else float(v) for v in values]


__all__ = [
    "SCORES",
    "ChannelStatistics",
    "class_selectivity",
    "distance_correlation",
    "map_scores",
    "measure_topography",
    "morans_i",
    "morans_i_test",
    "sheet_morans_i",
    "shuffled_curve_band",
    "similarity_curve",
    "similarity_ordering",
    "smoothness",
]
