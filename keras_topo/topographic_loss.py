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

Numerics: the loss is finite and exact for any finite float32 input (up to ~3.4e38), for
float16/bfloat16 outputs (accumulated in float32), and for all-zero channels, with no branch on
device values (no host sync): each channel is divided by a power of two near its largest
magnitude before any product (`channel_scale.rescale_channels`; cosines do not depend on it),
which leaves ordinary float32 results bit for bit as they were unscaled.

Speed: each Gram matrix is differentiated with one matmul instead of two (`symmetric_gram`), which cut
the loss's forward + backward time by 17-21 % at ResNet-18's five layers
(`benchmarks/bench_topographic_loss.py`).
"""

import numpy as np
from keras import ops

from keras_topo import channel_scale, tensor_constants
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
    target_t = tensor_constants.constant(target, "float32")
    if pixels is None or channels <= pixels:
        # Normalising the (B, C, C) Gram is cheaper than normalising the (B, HW, C) input.
        total = _direct_sum(y, target_t)
    else:
        total = _identity_sum(y, target_t, target)
    batch = ops.cast(ops.shape(y)[0], "float32")
    return total / (batch * channels * (channels - 1) / 2)


# Norms are clamped at sqrt(eps): the same as the eps on the norms' product whenever both exceed
# 1e-4, and an all-zero channel gets S_ij = 0. The clamp sits inside the sqrt so that a zero
# channel's gradient is finite, not 0 * inf. Both forms work on the rescaled channels, where
# the squared clamp is `floor_sq`, `(B, 1, C)`.


def symmetric_gram(equation, a):
    """`einsum(equation, a, a)` with one matmul in the backward pass instead of two.

    The first operand's gradient is counted twice (`2g - stop_gradient(g)` has the value of
    the product `g`, applied to the Gram matrix, smaller than `a`) and the second not at all.
    That equals the full gradient whenever the loss's gradient with respect to the Gram matrix
    is symmetric, as for every use here.
    """
    gram = ops.einsum(equation, a, ops.stop_gradient(a))
    return 2.0 * gram - ops.stop_gradient(gram)


def _direct_sum(y, target):
    """Sum over samples and pairs i < j of `(S - T)_ij^2` from the `(B, C, C)` Gram, taken as
    half the sum over i != j so that its gradient is symmetric."""
    y, floor_sq = channel_scale.rescale_channels(y, axis=1, floor_sq=EPS)
    gram = symmetric_gram("bpi,bpj->bij", y)
    squares = ops.diagonal(gram, axis1=1, axis2=2)  # (B, C)
    norms = ops.sqrt(ops.maximum(squares, floor_sq[:, 0]))
    sim = gram / (norms[:, :, None] * norms[:, None, :])
    channels = target.shape[0]
    off_diagonal = 1.0 - ops.eye(channels, dtype="float32")
    return 0.5 * ops.sum(off_diagonal * ops.square(sim - target))


def gram_topographic_loss(gram, target):
    """The loss of one set of samples from its channels' Gram matrix `Y^T Y`, `(C, C)` float32:
    the mean over pairs `i < j` of `(S_ij - T_ij)^2`, `S = gram / (|y_i| |y_j|)`, norms clamped
    at `sqrt(eps)` as above (`target` `(C, C)` numpy)."""
    norms = ops.sqrt(ops.maximum(ops.diagonal(gram), EPS))
    sim = gram / (norms[:, None] * norms[None, :])
    channels = target.shape[0]
    off_diagonal = 1.0 - ops.eye(channels, dtype="float32")
    pairs = ops.sum(off_diagonal * ops.square(sim - tensor_constants.constant(target, "float32")))
    return 0.5 * pairs / (channels * (channels - 1) / 2)


def _identity_sum(y, target, target_np):
    """The same sum from the `(B, HW, HW)` Gram identities (no `(B, C, C)` tensor)."""
    y, floor_sq = channel_scale.rescale_channels(y, axis=1, floor_sq=EPS)
    squares = ops.sum(ops.square(y), axis=1, keepdims=True)
    y_hat = y / ops.sqrt(ops.maximum(squares, floor_sq))  # unit-norm channels
    gram = symmetric_gram("bpc,bqc->bpq", y_hat)  # (B, HW, HW)
    sim_sq = ops.sum(ops.square(gram))
    flat = ops.reshape(y_hat, (-1, target.shape[0]))
    sim_dot_target = ops.sum(symmetric_gram("nc,nd->cd", flat) * target)
    diag = ops.sum(ops.square(ops.sum(ops.square(y_hat), axis=1) - 1.0))
    target_sq = float(np.sum(np.square(target_np, dtype="float64")))
    batch = ops.cast(ops.shape(y)[0], "float32")
    return (sim_sq - 2.0 * sim_dot_target + batch * target_sq - diag) / 2.0
