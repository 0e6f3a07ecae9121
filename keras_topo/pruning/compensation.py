"""compensate=True: hand each removed channel's contribution to the kept channels of its group.

At every consumer (a conv or dense layer reading the group), the removed channels' responses
at the consumer's input are regressed on the kept ones over the calibration data,
`X_removed ~ X_kept @ B + a` (ridge least squares), and the consumer's weights become
`W_kept + B @ W_removed` (per kernel tap: a conv is channel-linear at each pixel), its bias
`b + a @ sum_taps(W_removed)`, `W_removed = 0`. Exact when a removed channel is a linear
combination of kept ones (the intercept is exact away from a conv's zero padding). A consumer
without a bias gets the regression without intercept (uncentred moments) instead.
"""

import warnings

import keras
import numpy as np

from keras_topo.pruning.redundancy import RIDGE, ridge_strength


def least_squares_map(moments, columns, kept, removed, intercept, ridge=RIDGE):
    """`(B, a)`: `B` `(len(kept), len(removed))`, `a` `(len(removed),)` of the ridge fit
    `x[removed] ~ x[kept] @ B + a` of the group's channels at `columns` of a tensor
    (`moments`: its `Moments`); `a = 0` without `intercept`."""
    matrix = moments.covariance() if intercept else moments.second_moment()
    matrix = matrix[np.ix_(columns, columns)]
    gram = matrix[np.ix_(kept, kept)]
    gram = gram + ridge_strength(gram, ridge) * np.eye(len(kept))
    coefficients = np.linalg.solve(gram, matrix[np.ix_(kept, removed)])
    if not intercept:
        return coefficients, np.zeros(len(removed))
    mean = moments.mean[columns]
    return coefficients, mean[removed] - mean[kept] @ coefficients


def weight_changes(layer, columns, kept, removed, coefficients, offset):
    """`(kernel change, bias change)` in the layer's original shapes: the kept input
    rows `columns[kept]` gain `coefficients @ W_removed`, the removed rows go to zero, the bias
    gains `offset @ W_removed` summed over the kernel taps."""
    kernel = keras.ops.convert_to_numpy(layer.kernel).astype("float64")
    lost = kernel[..., columns[removed], :]  # (..., removed, out)
    change = np.zeros_like(kernel)
    change[..., columns[kept], :] = coefficients @ lost
    change[..., columns[removed], :] = -lost
    bias = np.einsum("r,...ro->...o", offset, lost).reshape(-1, lost.shape[-1]).sum(axis=0)
    return change, bias


def compensate(graph, pruned, plans, moments, kept_channels, narrow):
    """Applies the weight changes of every consumer of the pruned groups to `pruned` (the
    pruned model, whose layers are named as `graph.name_of` names them).

    Args:
        graph: the original model's `ChannelGraph`.
        pruned: the pruned model (modified in place).
        plans: list of `(reads, kept, removed)`: a group's `ConsumerRead`s and its kept and
            removed channel indices.
        moments: `{tensor key: Moments}` of the calibration responses.
        kept_channels: `fn(call) -> (input rows kept, output columns kept)` of a consumer in
            the pruned model (original indices).
        narrow: True when pruned layers lost their pruned rows ("remove"), False when they
            were zeroed ("mask").

    Returns:
        Names of the compensated consumer layers.
    """
    calls = {}
    for reads, _, _ in plans:
        for read in reads:
            calls.setdefault(id(read.call.op), set()).add(id(read.call))
    changes = {}
    for reads, kept, removed in plans:
        for read in reads:
            op = read.call.op
            if len(calls[id(op)]) > 1:
                warnings.warn(
                    f"Layer {op.name!r} is called more than once: not compensated.", stacklevel=3
                )
                continue
            fit = least_squares_map(moments[read.key], read.columns, kept, removed, op.use_bias)
            kernel, bias = weight_changes(op, read.columns, kept, removed, *fit)
            call, total_kernel, total_bias = changes.get(id(op), (read.call, 0.0, 0.0))
            changes[id(op)] = (call, total_kernel + kernel, total_bias + bias)
    for call, kernel, bias in changes.values():
        rows, outputs = kept_channels(call)
        layer = pruned.get_layer(graph.name_of(call.op))  # paths where names collide
        _add(layer.kernel, kernel, [(-2, rows), (-1, outputs)], narrow)
        if call.op.use_bias:
            _add(layer.bias, bias, [(-1, outputs)], narrow)
    return sorted(call.op.name for call, _, _ in changes.values())


def _add(variable, change, slices, narrow):
    """Adds `change` (original shape) to `variable`, sliced ("remove") or masked ("mask") by
    `slices` (`(axis, kept indices)`) as the pruner did."""
    for axis, kept in slices:
        if narrow:
            change = np.take(change, kept, axis=axis)
        else:
            keep = np.zeros(change.shape[axis], bool)
            keep[kept] = True
            shape = [1] * change.ndim
            shape[axis] = -1
            change = np.where(keep.reshape(shape), change, 0.0)
    value = keras.ops.convert_to_numpy(variable).astype("float64") + change
    if not np.all(np.isfinite(value)):
        raise ValueError(f"Compensation made {variable.path!r} non-finite.")
    variable.assign(value.astype(variable.dtype))
