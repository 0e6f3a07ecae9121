"""The topographic loss of one layer (paper eq. 1), computed with `keras.ops` only.

For one sample, `y` flattened to `(C, HW)` gives `S_ij = <y_i, y_j> / max(|y_i| |y_j|, eps)`
and the loss is the mean over pairs `i < j` of `(S_ij - T_ij)^2` with `T_ij = 1 / (d_ij + 1)`;
the layer loss is its mean over the batch.

Two exact evaluations, picked from the static shape so that the largest intermediate is the
smaller Gram matrix:
- `C <= HW`: the `(B, C, C)` similarities directly, summed over the upper triangle.
- `C > HW`: no `(B, C, C)` tensor at all. With `Yh_b` the `(C, HW)` channel-normalised output,
  `sum_{i<j} (S - T)_ij^2 = (|S|_F^2 - 2 <S, T> + |T|_F^2 - sum_i (S_ii - 1)^2) / 2`, where
  `|S_b|_F = |Yh_b^T Yh_b|_F` uses the `(HW, HW)` Gram and `sum_b <S_b, T> = <Z^T Z, T>` is one
  `(C, C)` product over the whole batch (`Z` = all samples' `Yh_b^T` stacked, `(B*HW, C)`).

Numerics: each channel is first divided by its largest magnitude (a constant for the gradient;
the cosine does not depend on it), so that no product or sum of squares overflows: the loss is
finite and exact for any finite float32 input (up to ~3.4e38), for float16/bfloat16 outputs
(accumulated in float32), and 0-similar for all-zero channels.
"""

import numpy as np
from keras import ops

from keras_topo import positions as positions_lib

EPS = 1e-8


def topographic_loss(
    y, positions=None, target=None, distance="euclidean", data_format="channels_last"
):
    """Topographic loss of a conv output, a float32 scalar.

    Args:
        y: conv output before activation, `(B, H, W, C)` (or `(B, C, H, W)` with
            `data_format="channels_first"`); any float dtype, accumulated in float32.
        positions: channel positions `(C, dim)`; or give `target` instead.
        target: precomputed `T = 1 / (d + 1)`, `(C, C)`.
        distance: "euclidean" or "l1" (with `positions`).
        data_format: "channels_last" or "channels_first".
    """
    if (positions is None) == (target is None):
        raise ValueError("topographic_loss: give exactly one of `positions` or `target`.")
    if target is None:
        target = positions_lib.target_similarity(positions, distance)
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(f"Unknown data_format {data_format!r}.")
    y = ops.cast(y, "float32")
    if data_format == "channels_first":
        y = ops.moveaxis(y, 1, -1)
    channels = y.shape[-1]
    if target.shape != (channels, channels):
        raise ValueError(
            f"target/positions describe {target.shape[0]} channels but the output has {channels}."
        )
    y = ops.reshape(y, (ops.shape(y)[0], -1, channels))  # (B, HW, C)
    pixels = y.shape[1]
    # Norms are clamped at sqrt(eps): the same as the eps on the norms' product whenever both
    # exceed 1e-4, and an all-zero channel gets S_ij = 0. With `m` a channel's largest
    # magnitude, `y / max(|y|, 1e-4) = (y / m) / max(|y / m|, 1e-4 / m)`: the right-hand side
    # squares no value above 2^56. `m` is held constant for the gradient (exact: the identity
    # holds for any m > 0) and kept in [1e-15, 2^100]: the clamp's square stays finite, and
    # `1 / m` stays a normal float (XLA flushes subnormals to zero). The clamp sits inside the
    # sqrt so that a zero channel's gradient is finite, not 0 * inf.
    scale = ops.stop_gradient(ops.clip(ops.max(ops.abs(y), axis=1, keepdims=True), 1e-15, 2.0**100))
    y = y / scale  # (B, HW, C), values in [-2^28, 2^28], mostly [-1, 1]
    floor_sq = EPS / ops.square(scale)  # (B, 1, C): the squared clamp in the scaled units
    target_t = ops.convert_to_tensor(target, "float32")
    pairs = channels * (channels - 1) / 2
    batch = ops.cast(ops.shape(y)[0], "float32")
    if pixels is None or channels <= pixels:
        # Normalising the (B, C, C) Gram is cheaper than normalising the (B, HW, C) input.
        gram = ops.einsum("bpi,bpj->bij", y, y)
        norms = ops.sqrt(ops.maximum(ops.diagonal(gram, axis1=1, axis2=2), floor_sq[:, 0]))
        sim = gram / (norms[:, :, None] * norms[:, None, :])
        upper = ops.convert_to_tensor(np.triu(np.ones((channels, channels)), 1), "float32")
        total = ops.sum(upper * ops.square(sim - target_t))
    else:
        norms = ops.sqrt(ops.maximum(ops.sum(ops.square(y), axis=1, keepdims=True), floor_sq))
        y_hat = y / norms  # (B, HW, C), unit-norm channels
        gram = ops.einsum("bpc,bqc->bpq", y_hat, y_hat)  # (B, HW, HW)
        sim_sq = ops.sum(ops.square(gram))
        flat = ops.reshape(y_hat, (-1, channels))
        sim_dot_target = ops.sum(ops.matmul(ops.transpose(flat), flat) * target_t)
        diag = ops.sum(ops.square(ops.sum(ops.square(y_hat), axis=1) - 1.0))
        target_sq = float(np.sum(np.square(target, dtype="float64")))
        total = (sim_sq - 2.0 * sim_dot_target + batch * target_sq - diag) / 2.0
    return total / (batch * pairs)
