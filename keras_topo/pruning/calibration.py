"""Pruning with calibration data: redundancy scores and compensation for one `prune_channels` call.

Each pruned group (or, with `coupling="expand"`, each pruned layer's group) is measured at the
inputs of its consumers (`keras_topo.pruning.responses`); `criterion="redundancy"` ranks its
channels there (`keras_topo.pruning.redundancy`) and `compensate=True` refits those consumers
(`keras_topo.pruning.compensation`).
"""

import warnings

import numpy as np

from keras_topo.layer_selection import is_topographic
from keras_topo.pruning.compensation import compensate
from keras_topo.pruning.redundancy import map_check, neighbour_scores, redundancy_scores
from keras_topo.pruning.responses import (
    check_calibration_data,
    group_reads,
    one_blas_thread,
    response_moments,
)

MAP_CHECK_NEIGHBOURS = 8  # neighbours compared with random channels when `neighbours` is None


def check_settings(model, criterion, calibration_data, compensate_, neighbours):
    """A `Calibration`, or None when neither `criterion="redundancy"` nor `compensate`;
    ValueError for missing or malformed calibration data and settings."""
    if not isinstance(compensate_, bool):
        raise ValueError(f"compensate must be True or False, got {compensate_!r}.")
    if neighbours is not None:
        if not (
            isinstance(neighbours, int) and not isinstance(neighbours, bool) and neighbours > 0
        ):
            raise ValueError(f"neighbours must be None or an int >= 1, got {neighbours!r}.")
        if criterion != "redundancy":
            raise ValueError('neighbours applies to criterion="redundancy" only.')
    if criterion != "redundancy" and not compensate_:
        if calibration_data is not None:
            raise ValueError(
                'calibration_data is used by criterion="redundancy" and compensate=True only.'
            )
        return None
    if calibration_data is None:
        need = 'criterion="redundancy"' if criterion == "redundancy" else "compensate=True"
        raise ValueError(
            f"{need} needs calibration_data: inputs of the model (an array (N, ...) or a list, "
            "one per input), e.g. a few thousand training images."
        )
    arrays = check_calibration_data(model, calibration_data)
    return Calibration(arrays, criterion == "redundancy", compensate_, neighbours)


class Calibration:
    """Calibration responses of the pruned groups, their scores and the consumers' refit.

    Attributes:
        rank: True for criterion="redundancy" (its groups need a consumer to measure).
        details: `{root space: dict}` for the report: "map" (`redundancy.map_check` on a
            topographic group), "compensated" and "not compensated" consumer names.
    """

    def __init__(self, arrays, rank, compensate_, neighbours):
        self.arrays, self.rank = arrays, rank
        self.compensate, self.neighbours = compensate_, neighbours
        self.reads, self.moments, self.details = {}, {}, {}

    def measure(self, graph, labels):
        """Response moments of the groups `labels` (`{root space: name}`) at their consumers."""
        for root, label in labels.items():
            reads, others = group_reads(graph, root)
            if not reads and self.rank:
                raise ValueError(
                    f"{label} has no conv or dense consumer reading its channels, so there is "
                    "no response to measure: use another criterion and compensate=False."
                )
            if self.compensate and others:
                warnings.warn(
                    f"{label}: {others} read its channels but are not Conv1D/2D/3D or Dense "
                    "layers (groups=1, unflattened input): they are not compensated.",
                    stacklevel=4,
                )
            self.reads[root] = reads
            self.details[root] = {"not compensated": others} if self.compensate else {}
        keys = [read.key for reads in self.reads.values() for read in reads]
        self.moments = response_moments(graph, keys, self.arrays)

    def scores(self, graph, root, rng):
        """Redundancy scores `(size,)` of the group of `root` (lowest: pruned first)."""
        keys = {read.key: read.columns for read in self.reads[root]}
        counts = [self.moments[key].count for key in keys]
        covariance = sum(
            self.moments[key].covariance()[np.ix_(columns, columns)] * count
            for (key, columns), count in zip(keys.items(), counts, strict=True)
        ) / sum(counts)
        positions = _positions(graph, root, covariance.shape[0])
        if self.neighbours is not None and positions is None:
            raise ValueError(
                f"neighbours={self.neighbours} needs topographic positions, but no topographic "
                "layer produces the channels of this group: pass neighbours=None."
            )
        with one_blas_thread():
            if positions is not None:
                k = min(self.neighbours or MAP_CHECK_NEIGHBOURS, covariance.shape[0] - 1)
                self.details[root]["map"] = map_check(covariance, positions, k, rng)
            if self.neighbours is None:
                return redundancy_scores(covariance)
            return neighbour_scores(covariance, positions, self.neighbours)

    def refit(self, graph, pruned, kept, kept_channels, narrow):
        """Compensates the consumers of every measured group in `pruned` (in place); `kept`:
        `{root space: kept channel indices}`; see `compensation.compensate`."""
        plans = []
        for root, reads in self.reads.items():
            removed = np.setdiff1d(np.arange(graph.sizes[root]), kept[root])
            if removed.size:
                plans.append((reads, np.asarray(kept[root]), removed))
        with one_blas_thread():
            names = compensate(graph, pruned, plans, self.moments, kept_channels, narrow)
        for root, reads in self.reads.items():
            self.details[root]["compensated"] = sorted(
                {read.call.op.name for read in reads} & set(names)
            )


def _positions(graph, root, size):
    """Map positions `(size, dim)` of a group's channels from its first topographic producer."""
    for call in graph.calls:
        layout = graph.op_spaces.get((id(call.op), 0), ())
        if (
            is_topographic(call.op)
            and len(layout) == 1
            and graph.find(layout[0].space) == root
            and len(call.op.positions) == size
        ):
            return np.asarray(call.op.positions, dtype="float64")
    return None
