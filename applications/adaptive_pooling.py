"""`AdaptiveAveragePooling2D` with torch's bins, correct on every backend.

Hand-written because `keras.layers.AdaptiveAveragePooling2D` (keras 3.15.1) returns NaN in the
last output row and column on the JAX backend. Torch's bin `i` of an axis of length `n` pooled
to `m` covers `[floor(i n / m), ceil((i + 1) n / m))`; the mean over a rectangle of bins is the
product of the per-axis means, so the layer is two small averaging matrices applied with one
einsum (exact, differentiable, and it also upsamples, e.g. VGG's 1x1 map to 7x7).
"""

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="keras_topo")
class AdaptiveAveragePooling2D(keras.layers.Layer):
    """Average pooling to a fixed `output_size`, as `torch.nn.AdaptiveAvgPool2d`.

    Args:
        output_size: int or `(height, width)`.

    Input `(B, H, W, C)` with static `H, W`; output `(B, out_h, out_w, C)` (channels_last).
    """

    def __init__(self, output_size, **kwargs):
        super().__init__(**kwargs)
        size = (output_size, output_size) if isinstance(output_size, int) else output_size
        if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
            raise ValueError(
                f"output_size must be a positive int or (height, width), got {output_size!r}."
            )
        self.output_size = tuple(size)

    def build(self, input_shape):
        if input_shape[1] is None or input_shape[2] is None:
            raise ValueError(
                f"AdaptiveAveragePooling2D needs a static height and width, got {input_shape}."
            )
        self._rows = _averaging_matrix(input_shape[1], self.output_size[0])
        self._cols = _averaging_matrix(input_shape[2], self.output_size[1])

    def call(self, inputs):
        rows = ops.convert_to_tensor(self._rows, inputs.dtype)
        cols = ops.convert_to_tensor(self._cols, inputs.dtype)
        return ops.einsum("oh,bhwc,pw->bopc", rows, inputs, cols)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.output_size, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "output_size": self.output_size}


def _averaging_matrix(size, out):
    """`(out, size)` matrix whose row `i` averages torch's bin `i`."""
    matrix = np.zeros((out, size), dtype="float32")
    for i in range(out):
        start, end = (i * size) // out, -((-(i + 1) * size) // out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix
