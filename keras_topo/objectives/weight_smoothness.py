"""TopoLoss (TopoNets, Deb et al., ICLR 2025): smooth weights on a cortical sheet.

The `C` output channels are laid row-major on the `h x w` sheet of the `topoloss` package
(`h` the largest divisor of `C` not above `sqrt(C)`, `w = C / h`); channel `k` sits at row
`k // w`, column `k % w`, and its flattened filter `(kh * kw * C_in)` is its vector. The sheet is
down-scaled by `shrink_factor` and up-scaled back with bilinear interpolation (PyTorch's
`F.interpolate(mode="bilinear", align_corners=False)`, as `topoloss` 0.0.2 calls it); the loss
is `1 - mean_k cos(w_k, smoothed_k)`.

Both resizes are linear and act on rows and columns separately, so the smoothed sheet is
`A_h S A_w^T` per filter entry, `S` the `(h, w)` sheet and `A = up @ down` the `(side, side)`
matrix of one axis (`C (h + w)` multiply-adds per entry, not the `C^2` of one `(C, C)` matrix).
The matrices are built here in numpy because `keras.ops.image.resize` follows TensorFlow's
resize, which derives the sampling step from the sizes, while PyTorch uses the given scale
factor (they differ whenever `side / factor` is not an integer).
"""

import functools
import math
import numbers

import numpy as np
from keras import ops

from keras_topo import tensor_constants

DEFAULT_SHRINK_FACTOR = 3.0
EPS = 1e-8  # torch.nn.functional.cosine_similarity's default


def sheet_shape(channels):
    """TopoLoss' sheet `(h, w)` for `channels` units (`find_cortical_sheet_size`)."""
    height = int(math.sqrt(channels))
    while channels % height:
        height -= 1
    return height, channels // height


def sheet_positions(channels):
    """Positions `(channels, 2)` of the row-major sheet, `(column, row)`, scaled like the
    "grid" scheme: neighbours `1 / (max(h, w) - 1)` apart (a square sheet is the 2D grid)."""
    height, width = sheet_shape(channels)
    k = np.arange(channels)
    coords = np.stack([k % width, k // width], axis=1) / max(max(height, width) - 1, 1)
    return coords.astype("float32")


def validate_shrink_factor(shrink_factor, channels):
    """`(factor_h, factor_w)` as floats, or a ValueError when they do not fit the sheet.

    Args:
        shrink_factor: one number (both axes) or a pair `(h, w)`, each in `[1, side]`.
        channels: the layer's output channels (the sheet is `sheet_shape(channels)`).
    """
    height, width = sheet_shape(channels)
    # Python checks, not `np.ndim`: TorchDynamo cannot trace numpy on Python numbers.
    if isinstance(shrink_factor, numbers.Real):
        factors = (shrink_factor, shrink_factor)
    elif isinstance(shrink_factor, (tuple, list, np.ndarray)) and len(shrink_factor) == 2:
        factors = tuple(shrink_factor)
    else:
        raise ValueError(f"shrink_factor must be a number or a pair (h, w), got {shrink_factor!r}.")
    factors = tuple(float(f) for f in factors)
    for factor, side, axis in zip(factors, (height, width), ("height", "width"), strict=True):
        if not 1.0 <= factor <= side:
            raise ValueError(
                f"shrink_factor {shrink_factor!r} does not fit the {height}x{width} sheet of "
                f"{channels} channels: the {axis} factor must lie in [1, {side}] (1 = no "
                f"smoothing). Pass a smaller factor, or a pair (h, w) such as "
                f"({min(factors[0], height):g}, {min(factors[1], width):g})."
            )
    return factors


def _bilinear_matrix(in_size, out_size, scale=None):
    """`(out_size, in_size)` matrix of PyTorch's bilinear resize, `align_corners=False`.

    `scale` is the `scale_factor` given to `F.interpolate` (None: resized by `size`). Written
    by hand after `torch._decomp.decompositions._upsample_linear`: no library exposes the matrix.
    """
    if out_size == in_size:
        return np.eye(in_size)
    step = 1.0 / scale if scale is not None and scale > 0 else in_size / out_size
    source = np.maximum(step * (np.arange(out_size) + 0.5) - 0.5, 0.0)
    lower = source.astype("int64")
    upper = np.minimum(lower + 1, in_size - 1)
    frac = np.clip(source - lower, 0.0, 1.0)
    # One-hot sums, not `np.add.at`: TorchDynamo traces them (it traces into this function).
    columns = np.arange(in_size)
    lower_taps = (lower[:, None] == columns) * (1.0 - frac)[:, None]
    return lower_taps + (upper[:, None] == columns) * frac[:, None]


def _axis_smoothing(side, factor):
    scale = 1.0 / factor
    shrunk = math.floor(side * scale)
    down = _bilinear_matrix(side, shrunk, scale)
    up = _bilinear_matrix(shrunk, side)
    return up @ down


@functools.lru_cache(maxsize=64)
def smoothing_matrices(channels, factor_h, factor_w):
    """float32 `(A_h, A_w)`, `(h, h)` and `(w, w)`: down- then up-scaling along each axis."""
    height, width = sheet_shape(channels)
    return (
        _axis_smoothing(height, factor_h).astype("float32"),
        _axis_smoothing(width, factor_w).astype("float32"),
    )


def weight_smoothness_loss(kernel, shrink_factor=DEFAULT_SHRINK_FACTOR):
    """TopoLoss of a conv/dense kernel `(..., C_in, C_out)`, a float32 scalar in `[0, 2]`."""
    channels = kernel.shape[-1]
    factors = validate_shrink_factor(shrink_factor, channels)
    height, width = sheet_shape(channels)
    weights = ops.transpose(ops.reshape(ops.cast(kernel, "float32"), (-1, channels)))  # (C, E)
    rows, cols = (
        tensor_constants.constant(a, "float32") for a in smoothing_matrices(channels, *factors)
    )
    sheet = ops.reshape(weights, (height, width, -1))
    sheet = ops.einsum("ij,jwe->iwe", rows, sheet)
    smoothed = ops.reshape(ops.einsum("vw,iwe->ive", cols, sheet), (channels, -1))
    dot = ops.sum(weights * smoothed, axis=1)
    norms_sq = ops.sum(ops.square(weights), axis=1) * ops.sum(ops.square(smoothed), axis=1)
    cosine = dot / ops.sqrt(ops.maximum(norms_sq, EPS * EPS))
    return 1.0 - ops.mean(cosine)
