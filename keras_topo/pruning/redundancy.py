"""criterion="redundancy": prune the channels that the kept channels of their group predict best.

The greedy rule: while channels are left, remove the one with the smallest residual variance
when (ridge-)regressed on the others still kept. With `P = (Sigma_S + lam I)^-1` over the kept
set `S`, that residual variance is `1 / P_ii`; removing `i` updates `P` by its Schur
complement (`P_SS - P_Si P_iS / P_ii`), so the whole order costs `O(C^3)`. The ridge
`lam = ridge * mean(diag Sigma)` keeps dead and duplicated channels from making it singular.

On a topographic layer, `neighbours=k` regresses each channel on its `k` nearest kept map
neighbours only (their first candidates, cheap on wide layers); `map_check` says whether the
map justifies it: how much of each channel's variance its `k` neighbours explain, against `k`
random channels and against all the others.
"""

import numpy as np
from scipy.linalg import blas

from keras_topo.positions import pairwise_distances

RIDGE = 1e-6  # relative to the mean channel variance


def ridge_strength(covariance, ridge):
    """`lam = ridge * mean(diag covariance)` (`ridge` itself for an all-zero diagonal)."""
    scale = float(np.mean(np.diag(covariance)))
    return ridge * (scale if scale > 0 else 1.0)


def redundancy_scores(covariance, ridge=RIDGE):
    """Scores `(C,)` of the channels of a `(C, C)` response covariance: the greedy removal
    step at which each channel goes (0: first); the highest score is the last one left.

    The Schur complement is a rank-1 update in place (BLAS `dger`) on the rows still kept,
    and the matrix is compacted each time half of its rows have gone."""
    size = covariance.shape[0]
    lam = ridge_strength(covariance, ridge)
    precision = np.asfortranarray(np.linalg.inv(covariance + lam * np.eye(size)))
    channels = np.arange(size)  # the channel of each row of `precision`
    kept = np.ones(size, bool)
    scores = np.zeros(size)
    for step in range(size):
        if 2 * (size - step) <= channels.size:
            precision = np.asfortranarray(precision[np.ix_(kept, kept)])
            channels, kept = channels[kept], np.ones(size - step, bool)
        i = int(np.argmax(np.where(kept, np.diag(precision), -np.inf)))  # min 1 / P_ii
        scores[channels[i]] = step
        kept[i] = False
        column = precision[:, i] * kept
        precision = blas.dger(-1 / precision[i, i], column, column, a=precision, overwrite_a=True)
    return scores


def neighbour_scores(covariance, positions, neighbours, ridge=RIDGE):
    """As `redundancy_scores`, each channel regressed on its `neighbours` nearest kept
    channels on the map (`positions` `(C, dim)`) instead of all kept channels."""
    size = covariance.shape[0]
    lam = ridge_strength(covariance, ridge)
    distances = pairwise_distances(positions).astype("float64")
    np.fill_diagonal(distances, np.inf)
    order = np.argsort(distances, axis=1, kind="stable")[:, :-1]  # itself (inf) last: out
    left = np.ones(size, bool)
    residual = np.full(size, np.inf)
    used = np.full((size, neighbours), -1)
    stale = np.ones(size, bool)
    scores = np.zeros(size)
    for step in range(size):
        for i in np.flatnonzero(stale):
            near = order[i][left[order[i]]][:neighbours]
            used[i, : near.size] = near
            used[i, near.size :] = -1
            residual[i] = _residual(covariance, i, near, lam)
        i = int(np.argmin(residual))
        scores[i] = step
        left[i] = False
        residual[i] = np.inf
        stale = left & (used == i).any(axis=1)
    return scores


def _residual(covariance, i, others, lam):
    """Ridge residual variance of channel `i` regressed on the channels `others`."""
    if others.size == 0:
        return covariance[i, i] + lam
    block = covariance[np.ix_(others, others)] + lam * np.eye(others.size)
    cross = covariance[others, i]
    return covariance[i, i] + lam - cross @ np.linalg.solve(block, cross)


def map_check(covariance, positions, neighbours, rng, ridge=RIDGE):
    """Mean share of each channel's variance explained (R^2, channels with variance only) by
    its `neighbours` nearest map neighbours ("neighbours"), by as many random other channels
    ("random"), and by all the other channels ("all")."""
    size = covariance.shape[0]
    lam = ridge_strength(covariance, ridge)
    order = np.argsort(pairwise_distances(positions), axis=1, kind="stable")
    variance = np.diag(covariance)
    live = np.flatnonzero(variance > lam)
    if live.size == 0:
        return {"neighbours": float("nan"), "random": float("nan"), "all": float("nan")}
    precision = np.linalg.inv(covariance + lam * np.eye(size))
    shares = {"neighbours": [], "random": [], "all": 1 - 1 / (np.diag(precision) * variance)[live]}
    for i in live:
        others = np.delete(np.arange(size), i)
        near = order[i][order[i] != i][:neighbours]
        chosen = rng.choice(others, size=min(neighbours, others.size), replace=False)
        shares["neighbours"].append(1 - _residual(covariance, i, near, lam) / variance[i])
        shares["random"].append(1 - _residual(covariance, i, chosen, lam) / variance[i])
    return {name: float(np.mean(values)) for name, values in shares.items()}
