"""What the paper's loss sees against what the map scores read, per topographic layer.

The paper's loss compares, image by image, the cosine of two channels' RAW responses
`S_ij = <y_i, y_j> / (|y_i| |y_j|)` (`y_i` the channel's `(HW,)` map, its mean included) with
`T_ij = 1 / (d_ij + 1)`. The map scores read the Pearson correlation of the channels over all
images and positions (each channel's mean removed). A loss can lower `(S - T)^2` through the
channel means alone, without ordering anything by distance: this module measures both
similarities, how each is ordered by map distance, and how much of `S` the means carry.

With `mu_i` the channel's mean over the image's positions and `e_i = y_i - mu_i` (P positions),
`S_ij = M_ij + R_ij` exactly, where `M_ij = P mu_i mu_j / (|y_i| |y_j|)` is the cosine of the two
channels' mean maps (constant `mu_i`) weighted by the share of each norm they carry, and
`R_ij = <e_i, e_j> / (|y_i| |y_j|)` the centred rest. Every sum over images is one `(C, C)`
product of normalised responses (no `(B, C, C)` tensor), accumulated in float64.
"""

import numpy as np

from keras_topo import layer_selection, positions
from keras_topo.metrics.channel_statistics import ChannelStatistics
from keras_topo.metrics.layer_responses import accumulate_statistics, plain_graph
from keras_topo.metrics.map_scores import distance_correlation, similarity_curve, upper_pairs

_TINY = 1e-12


class CosineStatistics:
    """Streams, over images, the per-image similarities of a layer's `(B, ..., C)` responses.

    Sums over images of: the raw cosine `S`, its channel-mean part `M`, and the per-image
    Pearson correlation (cosine of the centred maps); plus the pooled Pearson correlation of the
    map scores (`ChannelStatistics`). A channel that is zero (or constant, for the centred
    similarities) on an image has similarity 0 with every other on that image.
    """

    def __init__(self, channels):
        self.channels = channels
        self.images = 0
        self.raw_cosine = np.zeros((channels, channels))
        self.mean_part = np.zeros((channels, channels))
        self.image_pearson = np.zeros((channels, channels))
        self.pooled = ChannelStatistics(channels)

    def update(self, responses, labels=None):
        """Adds one batch `(B, ..., C)` (channels_last); `labels` are ignored."""
        y = np.asarray(responses, dtype="float64").reshape(len(responses), -1, self.channels)
        self.pooled.update(responses)
        pixels = y.shape[1]
        norm = np.sqrt((y**2).sum(axis=1, keepdims=True))  # (B, 1, C)
        safe = np.where(norm > _TINY, norm, np.inf)
        mean = y.mean(axis=1, keepdims=True)
        centred = y - mean
        centred_norm = np.sqrt((centred**2).sum(axis=1, keepdims=True))
        unit = (y / safe).reshape(-1, self.channels)
        unit_mean = (np.sqrt(pixels) * mean / safe).reshape(-1, self.channels)
        unit_centred = (
            centred / np.where(centred_norm > _TINY * norm, centred_norm, np.inf)
        ).reshape(-1, self.channels)
        self.raw_cosine += unit.T @ unit
        self.mean_part += unit_mean.T @ unit_mean
        self.image_pearson += unit_centred.T @ unit_centred
        self.images += len(y)


def summarise(stats, layer_positions, distance="euclidean", bins=10):
    """The per-layer numbers from a `CosineStatistics` and the channels' positions `(C, dim)`.

    Returns a dict of floats (means over pairs `i < j`): `raw_cosine` (the loss's similarity,
    averaged over images), `pearson` (the map scores'), `image_pearson` (per image, centred),
    `mean_part` and `mean_share = mean_part / raw_cosine` (the part of the raw cosine the
    channel means carry), `target` (mean `1 / (d + 1)`, what the loss pulls the raw cosine
    towards); for `raw_cosine` and `pearson`, `<name>_distance_correlation` (minus Spearman's
    correlation with distance: > 0 when near channels are more alike) and `<name>_curve` (mean
    per distance bin, NaN as None); `distance_bins` (bin centres) and `images`.
    """
    if stats.images == 0:
        raise ValueError("similarity statistics hold no image: give at least one input.")
    distances = positions.pairwise_distances(layer_positions, distance)
    matrices = {
        "raw_cosine": stats.raw_cosine / stats.images,
        "pearson": stats.pooled.correlation(),
        "image_pearson": stats.image_pearson / stats.images,
        "mean_part": stats.mean_part / stats.images,
    }
    summary = {name: float(upper_pairs(matrix).mean()) for name, matrix in matrices.items()}
    summary["mean_share"] = summary["mean_part"] / summary["raw_cosine"]
    summary["target"] = float(upper_pairs(1.0 / (distances + 1.0)).mean())
    for name in ("raw_cosine", "pearson"):
        centres, means, _ = similarity_curve(matrices[name], distances, bins)
        summary[f"{name}_distance_correlation"] = distance_correlation(matrices[name], distances)
        summary[f"{name}_curve"] = [None if np.isnan(m) else float(m) for m in means]
    summary["distance_bins"] = centres.tolist()
    summary["images"] = stats.images
    return summary


def measure_similarity_ordering(model, x, layers=None, batch_size=256, bins=10):
    """Raw cosine (the paper's loss) against Pearson (the map scores) of each topographic layer.

    Args:
        model: a built Keras model with topographic layers (a baseline: convert it with
            `make_topographic` first, same weights, as `keras_topo.experiments.run` does).
        x: inputs `(N, ...)` or an iterable of batches (`inputs` or `(inputs, labels)`), as
            `keras_topo.metrics.measure_topography`; the pre-activation outputs are read.
        layers: which topographic layers (`keras_topo.layer_selection` rules); None: all.
        batch_size: images per forward pass when `x` is an array.
        bins: equal-width distance bins of the curves.

    Returns:
        `{key: summarise(...)}` in model order, keyed as `measure_topography`'s results.
    """
    chosen = layer_selection.select_layers(
        model, layers, layer_selection.is_topographic, "topographic"
    )
    for layer in chosen:
        if layer.filters < 2:
            raise ValueError(f"Layer {layer.name!r} has 1 channel: pairs need at least 2.")
    graph, probes, keys = plain_graph(model, chosen)
    statistics = accumulate_statistics(
        graph, chosen, probes, x, None, batch_size, make_statistics=CosineStatistics
    )
    return {
        key: summarise(
            stats,
            layer.positions,
            getattr(getattr(layer, "topography", None), "distance", "euclidean"),
            bins,
        )
        for layer, key, stats in zip(chosen, keys, statistics, strict=True)
    }
