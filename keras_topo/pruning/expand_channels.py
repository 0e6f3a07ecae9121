"""`ExpandChannels`: puts known constant channels back between the channels of a tensor."""

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="keras_topo")
class ExpandChannels(keras.layers.Layer):
    """Widens the last axis: `out[..., k] = x[..., index[k]]`, or `values[k]` where `index[k] < 0`.

    The rebuilt pruned model uses it where a removed channel cannot disappear: to give a
    residual `Add` back the constant that a pruned channel still carries, to materialise the
    full tensor before a layer the pruner does not rewrite, and to append the all-ones channel
    that folds constant channels into a zero-padded conv (`index = [0, ..., k-1, -1]`,
    `values[k] = 1`). Written by hand: Keras has no scatter-into-constants layer.

    Args:
        index: list of `n_out` ints, an input channel or -1 for a constant channel.
        values: list of `n_out` floats, the constant of each channel (ignored where
            `index[k] >= 0`).

    Input `(..., n_in)`, output `(..., n_out)`; the constant channels are uniform over the
    other axes.
    """

    def __init__(self, index, values, **kwargs):
        super().__init__(**kwargs)
        if len(index) != len(values):
            raise ValueError(
                f"index and values must have the same length, got {len(index)} and {len(values)}."
            )
        self.index = [int(i) for i in index]
        self.values = [float(v) for v in values]
        self._constant = np.asarray(self.index) < 0
        self._constants = np.asarray(self.values, dtype="float32")[self._constant]

    def build(self, input_shape):
        # Gather positions in concat([x, constants]): the constants follow the n_in inputs.
        rank = int(input_shape[-1]) + np.cumsum(self._constant) - 1
        perm = np.where(self._constant, rank, self.index)
        self._perm = None if np.array_equal(perm, np.arange(perm.size)) else perm.astype("int32")

    def call(self, inputs):
        parts = [inputs]
        if self._constants.size:
            ones = ops.ones_like(inputs[..., :1])
            parts.append(ones * ops.cast(self._constants, inputs.dtype))
        outputs = ops.concatenate(parts, axis=-1) if len(parts) > 1 else inputs
        if self._perm is None:
            return outputs
        return ops.take(outputs, self._perm, axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], len(self.index))

    def get_config(self):
        config = super().get_config()
        config.update({"index": self.index, "values": self.values})
        return config
