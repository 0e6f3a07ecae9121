"""Folding removed constant input channels into the layer that reads them.

A channel whose filter was pruned is, in the masked model, a spatially uniform constant `c_j`
once it has gone through the layers that follow (batch norm: `beta - gamma * mean /
sqrt(var + eps)`, then ReLU ...). A layer that mixes channels (`Conv2D`, `Dense`) receives
`sum_j c_j * K[..., j, :]` from those channels, and the rebuilt layer must add it back:

- into a `Dense`, a 1x1 conv or an unpadded ("valid") conv every output sees every tap, so
  the contribution is the constant `sum_taps sum_j c_j K[..., j, :]`: it folds exactly into
  the bias;
- into a zero-padded conv ("same", kernel > 1) border outputs see fewer taps, so a bias is not
  exact. The exact, input-size-agnostic fold is one extra all-ones input channel whose kernel
  is `sum_j c_j K[..., j, :]`: the conv pads it with zeros exactly like the channels it stands
  for.
"""

import numpy as np


def bias_fold_is_exact(layer):
    """True for a layer whose outputs all see every kernel tap of a uniform input."""
    padding = getattr(layer, "padding", "valid")
    kernel_size = getattr(layer, "kernel_size", (1,))
    return padding == "valid" or all(k == 1 for k in kernel_size)


def fold_removed_inputs(kernel, bias, kept, constants, exact_bias):
    """Narrows `kernel` `(..., C_in, C_out)` to the `kept` inputs and folds the others.

    Args:
        kernel: numpy kernel, input channels on axis -2.
        bias: numpy `(C_out,)`.
        kept: sorted indices of the input channels the rebuilt layer still receives.
        constants: `(C_in,)` value of each removed input channel (entries at `kept` unused).
        exact_bias: whether a bias fold is exact (see `bias_fold_is_exact`).

    Returns:
        `(kernel[..., kept, :], bias, ones_kernel)`: `ones_kernel` is None, or the
        `(..., 1, C_out)` kernel of the all-ones input channel to append.
    """
    removed = np.setdiff1d(np.arange(kernel.shape[-2]), kept)
    removed = removed[constants[removed] != 0]
    narrowed = kernel[..., kept, :]
    if removed.size == 0:
        return narrowed, bias, None
    weighted = np.tensordot(
        kernel[..., removed, :].astype("float64"), constants[removed], axes=([-2], [0])
    )
    if exact_bias:
        total = weighted.reshape(-1, weighted.shape[-1]).sum(axis=0)
        return narrowed, (bias + total).astype(bias.dtype), None
    return narrowed, bias, weighted[..., None, :].astype(kernel.dtype)
