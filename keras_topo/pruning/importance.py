"""Which output channels of a conv layer to prune: scores and the rounding rule."""

import keras
import numpy as np

from keras_topo.pruning.handlers import layer_weights

CRITERIA = ("l2", "l1", "random")
CALIBRATED_CRITERIA = ("redundancy",)  # need calibration_data (keras_topo.pruning.redundancy)


def channel_scores(kernel, criterion, rng):
    """Importance of each output channel of a conv kernel `(kh, kw, C_in, C_out)` -> `(C_out,)`.

    "l2" / "l1": the norm of the channel's filter (all of its kernel weights, bias excluded),
    as `torch.nn.utils.prune.LnStructured(n=2 or 1, dim=0)` in the paper's reference code.
    "random": uniform scores from `rng` (the paper's control).
    """
    flat = np.asarray(kernel, dtype="float64").reshape(-1, kernel.shape[-1])
    if criterion == "l2":
        return np.sqrt((flat**2).sum(axis=0))
    if criterion == "l1":
        return np.abs(flat).sum(axis=0)
    if criterion == "random":
        return rng.random(flat.shape[1])
    raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}.")


def pruned_count(channels, fraction):
    """How many of `channels` to prune: `round(fraction * channels)`, at most `channels - 1`.

    Python's `round` (half to even) is what `torch.nn.utils.prune` applies to a float
    `amount`, so counts equal the reference code's; one channel always stays.
    """
    return min(round(fraction * channels), channels - 1)


def kept_channels(scores, fraction):
    """Sorted indices of the channels that stay: all but the `pruned_count` lowest scores.

    Ties are broken by index (the lower index is pruned first), so results are deterministic.
    """
    scores = np.asarray(scores)
    order = np.argsort(scores, kind="stable")
    return np.sort(order[pruned_count(scores.size, fraction) :])


GROUP_CRITERIA = ("l2", "l1", "random", "bn_scale")
NOT_SCORED = ("bias", "beta")  # shifts, not magnitudes (as Torch-Pruning's group importance)


def group_scores(graph, group, criterion, rng):
    """Importance of each channel of a `ChannelGroup` -> `(group.size,)`.

    "l2" / "l1": the sum over the group's weight slices (every producer's filters, every
    consumer's input rows, batch-norm gamma, depthwise kernels...; biases and betas excluded) of
    that slice's per-channel norm divided by its mean over the channels, so that members of
    different scales weigh alike. "bn_scale": the same sum over the batch norms' `|gamma|`.
    "random": uniform scores from `rng`. A callable gets the group and returns `(size,)` scores.
    """
    if callable(criterion):
        scores = np.asarray(criterion(group), dtype="float64")
        if scores.shape != (group.size,) or not np.all(np.isfinite(scores)):
            raise ValueError(
                f"criterion must return {group.size} finite scores for {group!r}, got shape "
                f"{scores.shape}."
            )
        return scores
    if criterion == "random":
        return rng.random(group.size)
    root = graph.root(group)
    total = np.zeros(group.size)
    for layer, name, axis, layout in group.entries:
        variable = layer_weights(layer)[name]
        if criterion == "bn_scale":
            if not (isinstance(layer, keras.layers.BatchNormalization) and name == "gamma"):
                continue
        elif not variable.trainable or name.split("/")[-1] in NOT_SCORED:  # "query/bias"
            continue
        value = np.moveaxis(keras.ops.convert_to_numpy(variable).astype("float64"), axis, 0)
        offset = 0
        for block in layout:
            width = graph.sizes[graph.find(block.space)] * block.inner
            if graph.find(block.space) == root:
                rows = value[offset : offset + width].reshape(group.size, -1)
                norm = _norms(rows, "l1" if criterion == "bn_scale" else criterion)
                total += norm / norm.mean() if norm.mean() > 0 else norm
            offset += width
    if criterion == "bn_scale" and not total.any():
        raise ValueError(f'criterion="bn_scale" needs a batch norm in {group!r}.')
    return total


def _norms(rows, criterion):
    if criterion == "l2":
        return np.sqrt((rows**2).sum(axis=1))
    if criterion == "l1":
        return np.abs(rows).sum(axis=1)
    raise ValueError(f"criterion must be one of {GROUP_CRITERIA} or a callable, got {criterion!r}.")


def rounded_kept(channels, pruned, round_to):
    """Channels kept when `pruned` of `channels` go: rounded to a multiple of `round_to`
    (the nearest, at least `round_to`, at most `channels`)."""
    kept = channels - pruned
    if round_to > 1:
        kept = int(round(kept / round_to)) * round_to
        kept = min(max(kept, round_to), channels)
    return kept


def top_channels(scores, kept):
    """Sorted indices of the `kept` highest scores (ties: the lower index goes first)."""
    order = np.argsort(np.asarray(scores), kind="stable")
    return np.sort(order[order.size - kept :])
