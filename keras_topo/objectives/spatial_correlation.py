"""TDANN's relative spatial loss (Margalit et al., Neuron 2024) on one layer's channels.

`r_ij` is the Pearson correlation of channels `i` and `j` over every batch and spatial position
of the pre-activation output; the loss is `1 - Pearson(r_ij, T_ij)` over the pairs `i < j`, with
`T_ij = 1 / (d_ij + 1)` of the channel positions. TDANN correlates units within random
neighbourhoods of its sheet, and TopoLM samples K neighbourhoods of radius r per step on wide
layers (`neighbourhood_spatial_loss`); a conv layer has few enough channels to use all pairs.

Finite and exact for any finite float32 output, with no branch on device values: each channel
is divided by a power of two before its moments (`channel_scale.rescale_channels`;
correlations do not depend on it).
"""

import keras
import numpy as np
from keras import ops

from keras_topo import channel_scale, tensor_constants
from keras_topo import positions as positions_lib
from keras_topo.topographic_loss import symmetric_gram

EPS = 1e-8


def spatial_correlation_loss(outputs, target, data_format="channels_last"):
    """Relative spatial loss, a float32 scalar in `[0, 2]`.

    Args:
        outputs: pre-activation output, any rank, `(B, ..., C)` or `(B, C, ...)`.
        target: `(C, C)` numpy `1 / (d + 1)`.
        data_format: "channels_last" or "channels_first".
    """
    samples, floor_sq, target = _samples(outputs, target, data_format)
    centred = samples - ops.mean(samples, axis=0, keepdims=True)
    return covariance_loss(symmetric_gram("nc,nd->cd", centred), target, floor_sq[0])


def covariance_loss(cov, target, floor_sq=EPS):
    """The relative spatial loss from the channels' centred sums of products `cov` `(C, C)`
    (`target` `(C, C)` numpy; `floor_sq` `(C,)` or a float clamps each channel's sum of squares).

    The Pearson correlation over the pairs `i < j` is taken over every off-diagonal entry
    (each pair twice: the same value), so that its gradient with respect to `cov` is symmetric
    and `cov` may come from `symmetric_gram`.
    """
    channels = target.shape[0]
    std = ops.sqrt(ops.maximum(ops.diagonal(cov), floor_sq))
    corr = cov / (std[:, None] * std[None, :])
    off_diagonal = 1.0 - np.eye(channels)
    inverse_distance = target.astype("float64")
    pairs = channels * (channels - 1)
    inverse_distance = (inverse_distance - np.sum(inverse_distance * off_diagonal) / pairs) * (
        off_diagonal
    )
    spread = np.sqrt(np.sum(np.square(inverse_distance)) / 2)  # over the pairs i < j
    # Under TorchDynamo the numpy above is traced into graph tensors, which no Python branch
    # may read; the model's first (eager or symbolic) call has run this check.
    if not tensor_constants.traced_by_dynamo() and spread < 1e-12:
        raise ValueError(
            'objective="spatial" needs channel pairs at different distances; all pairs of '
            "these positions are equally far apart. Use another topography."
        )
    off_diagonal_t = tensor_constants.constant(off_diagonal, "float32")
    centred = (corr - ops.sum(corr * off_diagonal_t) / pairs) * off_diagonal_t
    inverse_distance = tensor_constants.constant(inverse_distance / spread, "float32")
    alignment = (ops.sum(centred * inverse_distance) / 2) / ops.sqrt(
        ops.maximum(ops.sum(ops.square(centred)) / 2, EPS)
    )
    return 1.0 - alignment


def _samples(outputs, target, data_format):
    """`(samples, floor_sq, target)`: every position of every input as one sample `(N, C)`,
    each channel rescaled (`channel_scale`), its squared-norm floor `(1, C)`, numpy target."""
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(f"Unknown data_format {data_format!r}.")
    outputs = ops.cast(outputs, "float32")
    if data_format == "channels_first":
        outputs = ops.moveaxis(outputs, 1, -1)
    channels = outputs.shape[-1]
    target = np.asarray(target)
    if target.shape != (channels, channels):
        raise ValueError(f"target describes {target.shape[0]} channels, the output has {channels}.")
    if channels < 3:
        raise ValueError(
            f'objective="spatial" correlates pairwise similarities, which needs at least 3 '
            f"channels; the layer has {channels}."
        )
    samples, floor_sq = channel_scale.rescale_channels(
        ops.reshape(outputs, (-1, channels)), axis=0, floor_sq=EPS
    )
    return samples, floor_sq, target


def neighbour_table(positions, radius, distance="euclidean"):
    """TopoLM's neighbourhoods: for each unit, the units within `radius` of it (itself included).

    Args:
        positions: `(C, dim)` unit positions.
        radius: the neighbourhood radius, in the positions' units.
        distance: "euclidean" or "l1".

    Returns:
        `(indices, valid)`, numpy `(C, M)` int32 and float32: row `c` lists the units within
        `radius` of unit `c` in ascending order, padded to the largest count `M` (valid 0).

    Raises:
        ValueError: a radius whose neighbourhoods hold fewer than 3 units (no pair of distances).
    """
    within = positions_lib.pairwise_distances(positions, distance) <= radius
    counts = within.sum(axis=1)
    if counts.max() < 3:
        raise ValueError(
            f"radius={radius!r} leaves every neighbourhood with at most {counts.max()} units; "
            "the spatial objective needs 3 (pairs at different distances). Use a larger radius."
        )
    width = int(counts.max())
    order = np.argsort(~within, axis=1, kind="stable")[:, :width]  # the units within, ascending
    valid = np.take_along_axis(within, order, axis=1)
    indices = np.where(valid, order, np.arange(len(within))[:, None])
    return indices.astype("int32"), valid.astype("float32")


def sample_neighbourhoods(table, count, seed):
    """`count` neighbourhoods drawn uniformly (with replacement) from `neighbour_table`'s rows.

    Args:
        table: `(indices, valid)` of `neighbour_table`, numpy `(C, M)`.
        count: K, the neighbourhoods per step.
        seed: a `keras.random.SeedGenerator` (a new draw per call) or an int.

    Returns:
        `(indices, valid)` tensors `(K, M)`, int32 and float32.
    """
    indices, valid = table
    centres = keras.random.randint((count,), 0, len(indices), seed=seed)
    return (
        ops.take(tensor_constants.constant(indices, "int32"), centres, axis=0),
        ops.take(tensor_constants.constant(valid, "float32"), centres, axis=0),
    )


def neighbourhood_spatial_loss(outputs, target, neighbourhoods, data_format="channels_last"):
    """TopoLM's spatial loss: `1 - Pearson(r_ij, T_ij)` over the pairs of each sampled
    neighbourhood, averaged over the neighbourhoods; a neighbourhood holding every unit gives
    `spatial_correlation_loss` exactly. Cost `N K M^2` instead of `N C^2`.

    Args:
        outputs: pre-activation output `(B, ..., C)` (or channels_first).
        target: `(C, C)` numpy `1 / (d + 1)`.
        neighbourhoods: `(indices, valid)` `(K, M)` of `sample_neighbourhoods`.
        data_format: "channels_last" or "channels_first".
    """
    samples, floor_sq, target = _samples(outputs, target, data_format)
    indices = ops.cast(neighbourhoods[0], "int32")
    count, width = indices.shape
    flat = ops.reshape(indices, (-1,))
    units = ops.reshape(ops.take(samples, flat, axis=1), (-1, count, width))  # (N, K, M)
    units = units - ops.mean(units, axis=0, keepdims=True)
    cov = ops.einsum("nki,nkj->kij", units, units)  # (K, M, M)
    floor = ops.reshape(ops.take(floor_sq[0], flat), (count, width))
    return _neighbourhood_loss(cov, floor, target, neighbourhoods)


def neighbourhood_covariance_loss(cov, target, neighbourhoods, floor_sq=EPS):
    """`neighbourhood_spatial_loss` from all channels' centred sums of products `cov` `(C, C)`
    (as `covariance_loss`'s): each neighbourhood's `(M, M)` block is read from it, so a layer
    that has `cov` cheaply (`TopographicDense` from its inputs) samples at no extra cost.

    Args:
        cov: `(C, C)` centred sums of products of the channels.
        target: `(C, C)` numpy `1 / (d + 1)`.
        neighbourhoods: `(indices, valid)` `(K, M)` of `sample_neighbourhoods`.
        floor_sq: a float, the clamp on a channel's sum of squares.
    """
    channels = target.shape[0]
    indices = ops.cast(neighbourhoods[0], "int32")
    count, width = indices.shape
    pairs = ops.reshape(indices[:, :, None] * channels + indices[:, None, :], (-1,))
    blocks = ops.reshape(ops.take(ops.reshape(cov, (-1,)), pairs), (count, width, width))
    return _neighbourhood_loss(blocks, floor_sq, target, neighbourhoods)


def _neighbourhood_loss(cov, floor_sq, target, neighbourhoods):
    """The loss from each neighbourhood's centred sums of products `cov` `(K, M, M)`, the
    clamp `floor_sq` (`(K, M)` or a float), numpy `target` `(C, C)` and `(indices, valid)`.
    Pairs are counted both ways, as in `covariance_loss` (a symmetric gradient)."""
    channels = target.shape[0]
    indices, valid = ops.cast(neighbourhoods[0], "int32"), ops.cast(neighbourhoods[1], "float32")
    count, width = indices.shape
    std = ops.sqrt(ops.maximum(ops.diagonal(cov, axis1=1, axis2=2), floor_sq))
    corr = cov / (std[:, :, None] * std[:, None, :])
    pairs = ops.reshape(indices[:, :, None] * channels + indices[:, None, :], (-1,))
    inverse_distance = ops.reshape(
        ops.take(tensor_constants.constant(target.reshape(-1), "float32"), pairs),
        (count, width, width),
    )
    off_diagonal = tensor_constants.constant(1.0 - np.eye(width), "float32")
    mask = valid[:, :, None] * valid[:, None, :] * off_diagonal  # (K, M, M): pairs i != j within
    alignment = _masked_pearson(corr, inverse_distance, mask)  # (K,)
    return 1.0 - ops.mean(alignment)


def _masked_pearson(a, b, mask):
    """Pearson correlation of `a` and `b` over the entries where `mask` is 1, per leading index."""
    axes = (1, 2)
    count = ops.maximum(ops.sum(mask, axis=axes, keepdims=True), 1.0)
    a = (a - ops.sum(a * mask, axis=axes, keepdims=True) / count) * mask
    b = (b - ops.sum(b * mask, axis=axes, keepdims=True) / count) * mask
    spread = ops.sum(ops.square(a), axis=axes) * ops.sum(ops.square(b), axis=axes)
    return ops.sum(a * b, axis=axes) / ops.sqrt(ops.maximum(spread, EPS))
