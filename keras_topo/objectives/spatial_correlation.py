"""TDANN's relative spatial loss (Margalit et al., Neuron 2024) on one layer's channels.

`r_ij` is the Pearson correlation of channels `i` and `j` over every batch and spatial position
of the pre-activation output; the loss is `1 - Pearson(r_ij, T_ij)` over the pairs `i < j`, with
`T_ij = 1 / (d_ij + 1)` of the channel positions. TDANN correlates units within random
neighbourhoods of its sheet; a conv layer has few enough channels to use all pairs.

Finite and exact for any finite float32 output, with no branch on device values: each channel
is divided by a power of two before its moments (`channel_scale.rescale_channels`;
correlations do not depend on it).
"""

import numpy as np
from keras import ops

from keras_topo import channel_scale, tensor_constants

EPS = 1e-8


def spatial_correlation_loss(outputs, target, data_format="channels_last"):
    """Relative spatial loss, a float32 scalar in `[0, 2]`.

    Args:
        outputs: pre-activation output, any rank, `(B, ..., C)` or `(B, C, ...)`.
        target: `(C, C)` numpy `1 / (d + 1)`.
        data_format: "channels_last" or "channels_first".
    """
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
    centred = samples - ops.mean(samples, axis=0, keepdims=True)
    cov = ops.matmul(ops.transpose(centred), centred)  # (C, C)
    std = ops.sqrt(ops.maximum(ops.diagonal(cov), floor_sq[0]))
    corr = cov / (std[:, None] * std[None, :])
    rows, cols = np.triu_indices(channels, 1)
    upper = ops.reshape(corr, (-1,))
    upper = ops.take(upper, tensor_constants.constant(rows * channels + cols, "int32"))
    inverse_distance = target[rows, cols].astype("float64")
    inverse_distance = inverse_distance - inverse_distance.mean()
    spread = np.linalg.norm(inverse_distance)
    # Under TorchDynamo the numpy above is traced into graph tensors, which no Python branch
    # may read; the model's first (eager or symbolic) call has run this check.
    if not tensor_constants.traced_by_dynamo() and spread < 1e-12:
        raise ValueError(
            'objective="spatial" needs channel pairs at different distances; all pairs of '
            "these positions are equally far apart. Use another topography."
        )
    inverse_distance /= spread
    upper = upper - ops.mean(upper)
    alignment = ops.sum(upper * tensor_constants.constant(inverse_distance, "float32")) / ops.sqrt(
        ops.maximum(ops.sum(ops.square(upper)), EPS)
    )
    return 1.0 - alignment
