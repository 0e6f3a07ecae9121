"""Scores of one layer's map from its channels' statistics and positions (numpy only).

Every score is oriented so that higher = more map-like and a random arrangement of the same
channels on the sheet scores about 0:

- `distance_correlation`: minus Spearman's rank correlation between the channels' pairwise
  response similarity and their cortical distance, over pairs `i < j`.
- `smoothness`: after TDANN's comparison of near and far pairs on the similarity-vs-distance
  curve (Margalit et al. 2024), `(s_near - s_all) / (1 - s_all)`, `s_near` the mean similarity
  in the first distance bin and `s_all` over all pairs (what any arrangement averages): the
  share of the similarity left above the average that neighbours gain (1: neighbours respond
  identically; 0: distance does not matter). The average, not the farthest bin, is the
  reference because the farthest bin holds few pairs (a sheet's corners).
- `selectivity_morans_i`: Moran's I of the channels' class-selectivity profiles on the sheet
  (inverse-distance weights), averaged over classes, plus `1 / (C - 1)` so that its expectation
  under a random arrangement, `-1 / (C - 1)`, becomes 0; `selectivity_p_value` is its one-sided
  permutation p-value (positions shuffled).
- `selectivity_adjacent_morans_i`: the same profiles' Moran's I as TopoLM reports it, each unit
  weighed against its adjacent units only (`sheet_morans_i`), not offset.
"""

import numpy as np
from scipy import stats


def upper_pairs(matrix):
    """The entries `i < j` of a square `(C, C)` matrix, `(C (C - 1) / 2,)`."""
    rows, cols = np.triu_indices(len(matrix), 1)
    return matrix[rows, cols]


def distance_correlation(similarity, distances):
    """Minus the rank correlation of pairwise similarity `(C, C)` and distance `(C, C)`."""
    return float(-stats.spearmanr(upper_pairs(similarity), upper_pairs(distances)).statistic)


def similarity_curve(similarity, distances, bins=10):
    """Mean pairwise similarity per distance bin (equal-width bins from the smallest to the
    largest distance between two channels).

    Returns:
        `(centres, means, counts)`, each `(bins,)`; a bin without pairs has mean NaN.
    """
    sim, dist = upper_pairs(similarity), upper_pairs(distances)
    edges = np.linspace(dist.min(), dist.max(), bins + 1)
    index = np.clip(np.digitize(dist, edges[1:-1], right=True), 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    sums = np.bincount(index, weights=sim, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / counts, np.nan)
    return (edges[:-1] + edges[1:]) / 2, means, counts


def smoothness(similarity, distances, bins=10):
    """`(s_near - s_all) / (1 - s_all)`: first non-empty curve bin against all pairs."""
    _, means, counts = similarity_curve(similarity, distances, bins)
    near = means[counts > 0][0]
    average = upper_pairs(similarity).mean()
    return float((near - average) / max(1.0 - average, 1e-12))


def shuffled_curve_band(similarity, distances, bins=10, shuffles=100, quantiles=(5, 95), seed=0):
    """Percentiles `(low, high)` per bin of the curve over random permutations of the positions.

    Distance bins stay those of the real arrangement (the same set of distances is permuted).
    """
    rng = np.random.default_rng(seed)
    curves = []
    for _ in range(shuffles):
        order = rng.permutation(len(distances))
        curves.append(similarity_curve(similarity[np.ix_(order, order)], distances, bins)[1])
    curves = np.asarray(curves)
    filled = ~np.isnan(curves[0])  # the same distances fill the same bins in every shuffle
    band = np.full((2, bins), np.nan)
    band[:, filled] = np.percentile(curves[:, filled], quantiles, axis=0)
    return band[0], band[1]


def inverse_distance_weights(distances):
    """`w_ij = 1 / d_ij` off the diagonal, 0 on it; a ValueError for two channels at one place."""
    off_diagonal = ~np.eye(len(distances), dtype=bool)
    if np.any(distances[off_diagonal] <= 0):
        i, j = np.argwhere((distances <= 0) & off_diagonal)[0]
        raise ValueError(
            f"Channels {i} and {j} share a position: Moran's I needs distinct positions."
        )
    weights = np.zeros_like(distances, dtype="float64")
    weights[off_diagonal] = 1.0 / distances[off_diagonal]
    return weights


def adjacency_weights(distances, tolerance=1e-6):
    """Row-standardised adjacency `(C, C)`: `w_ij = 1 / n_i` for the `n_i` units adjacent to
    `i` (at the smallest distance between two units, up to `tolerance` relative: a grid's 4
    neighbours, rook contiguity), 0 elsewhere; a unit without a neighbour gets a zero row.

    The weights of TopoLM's Moran's I (Rathi et al. 2025): libpysal's lattice contiguity with
    esda's default row standardisation.
    """
    off_diagonal = ~np.eye(len(distances), dtype=bool)
    nearest = distances[off_diagonal].min()
    adjacent = off_diagonal & (distances <= nearest * (1.0 + tolerance))
    counts = adjacent.sum(axis=1, keepdims=True)
    return np.where(adjacent, 1.0 / np.maximum(counts, 1), 0.0)


def sheet_morans_i(values, distances):
    """Moran's I of a channel-wise statistic `(C,)` (or `(C, K)`: the columns' mean) on the
    map, as TopoLM reports it: `adjacency_weights`, so `I = sum_ij w_ij z_i z_j / sum_i z_i^2`
    (`z` the centred values). 1: neighbours equal; about `-1 / (C - 1)`: no order."""
    return morans_i(values, adjacency_weights(np.asarray(distances, dtype="float64")))


def morans_i(values, weights):
    """Moran's I of `values` `(C,)` or `(C, K)` (one map per column) under `weights` `(C, C)`.

    `I = (C / sum w) * sum_ij w_ij z_i z_j / sum_i z_i^2`, `z` the centred values; the columns'
    mean (constant columns skipped). About `-1 / (C - 1)` for a random arrangement.
    """
    z = np.asarray(values, dtype="float64").reshape(len(weights), -1)
    z = z - z.mean(axis=0)
    variance = np.sum(z * z, axis=0)
    keep = variance > 1e-12 * max(variance.max(), 1e-300)
    z, variance = z[:, keep], variance[keep]
    if z.shape[1] == 0:
        return float("nan")
    per_column = len(weights) / weights.sum() * np.einsum("ik,ij,jk->k", z, weights, z) / variance
    return float(per_column.mean())


def morans_i_test(values, distances, permutations=999, seed=0):
    """Moran's I of `values` `(C, K)` and its one-sided permutation p-value (positions shuffled).

    Returns:
        `(I, p)` with `p = (1 + #{I_perm >= I}) / (1 + permutations)`.
    """
    weights = inverse_distance_weights(distances)
    observed = morans_i(values, weights)
    rng = np.random.default_rng(seed)
    values = np.asarray(values).reshape(len(weights), -1)
    null = np.array(
        [morans_i(values[rng.permutation(len(weights))], weights) for _ in range(permutations)]
    )
    return observed, float((1 + np.sum(null >= observed)) / (1 + permutations))


def class_selectivity(class_means):
    """Each channel's class profile `(K, C)` standardised over classes: `(C, K)`.

    A channel that responds alike to every class gets zeros (no preference).
    """
    centred = class_means - class_means.mean(axis=0, keepdims=True)
    spread = centred.std(axis=0, keepdims=True)
    return np.where(spread > 0, centred / np.where(spread > 0, spread, 1.0), 0.0).T
