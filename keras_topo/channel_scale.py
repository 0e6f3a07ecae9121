"""Per-channel power-of-two rescaling: scale-free losses finite and exact for any float32 input.

Cosine similarities and correlations do not depend on a positive factor per channel, but their
sums of squares overflow float32 once a channel exceeds ~1e19. Dividing each channel by the
power of two at or below its largest magnitude keeps every product in range, without a branch
on device values (no host sync on any backend, one graph under `torch.compile` and XLA), and
changes nothing for ordinary inputs: a power of two moves only the exponent, so every product,
sum, square root and quotient computed from the rescaled values equals the unscaled one times
the same power of two, bit for bit, barring underflow to subnormals (values ~1e-38 below their
channel's maximum, negligible in any sum of squares).
"""

from keras import ops

# Scales are kept in [2^-50, 2^100]: the reciprocal and its square stay normal floats (XLA
# flushes subnormals to zero) and a rescaled channel stays below 2^28 in magnitude.
_SMALLEST_SCALE = 2.0**-50
_LARGEST_SCALE = 2.0**100
_EXPONENT_BITS = 0x7F800000  # float32's exponent field: masking the mantissa rounds down to 2^k


def rescale_channels(x, axis, floor_sq):
    """`(x * r, floor_sq * r^2)`: `x` with each channel divided by a power of two.

    `r` is held constant for the gradient: the losses it serves do not depend on it, so their
    gradient with respect to `x` is the rescaled one times `r`, exactly.

    Args:
        x: float32 tensor.
        axis: the axis (or axes) of one channel's values, reduced for its largest magnitude;
            `r` has `x`'s rank (reduced axes of size 1).
        floor_sq: a float, the clamp on a channel's sum of squares in `x`'s units; returned
            in the rescaled units, shaped as `r`.
    """
    # The largest magnitude without an `abs` copy of `x`; `amax`, not `max`, whose torch form
    # TorchDynamo cannot trace.
    x_value = ops.stop_gradient(x)
    peak = ops.maximum(
        ops.amax(x_value, axis=axis, keepdims=True), -ops.amin(x_value, axis=axis, keepdims=True)
    )
    power = ops.view(ops.bitwise_and(ops.view(peak, "int32"), _EXPONENT_BITS), "float32")
    inverse = 1.0 / ops.clip(power, _SMALLEST_SCALE, _LARGEST_SCALE)
    return x * inverse, floor_sq * ops.square(inverse)
