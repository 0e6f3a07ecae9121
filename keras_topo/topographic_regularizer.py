"""`TopographicRegularizer`: the topographic loss on any layer, as a Keras regularizer."""

import keras
from keras import ops

from keras_topo import objectives
from keras_topo.topography import Topography


@keras.saving.register_keras_serializable(package="keras_topo")
class TopographicRegularizer(keras.regularizers.Regularizer):
    """The topographic loss of a layer's output channels, for `activity_regularizer=`.

    On any layer whose output is `(batch, ..., channels)` (Dense, convolutions, depthwise
    convs, attention blocks...), `activity_regularizer=TopographicRegularizer(...)` adds the
    same loss as a topographic layer would on that output. Keras divides activity losses by
    the batch size (`Layer.__call__`); the regularizer multiplies by it first, so the value
    does not depend on the batch size. A `(batch, channels)` output has one position per input:
    its similarities are taken over the batch's inputs. For token outputs `(batch, tokens,
    channels)` (the similarities over every token of the batch) and the weights objective on
    `Dense` / `EinsumDense` / `MultiHeadAttention`, use `make_topographic`'s topographic classes
    (`keras_topo.token_topography`). With `objective="weights"` it is a
    `kernel_regularizer=` instead (the kernel `(..., C_in, channels)` is the input).

    Args:
        topography: a `keras_topo.Topography`, a scheme name or explicit positions; None:
            `Topography()`.
        weight: the factor on the loss; None: `topography.weight`.
        **changes: `dimension`, `distance`, `nested_factor`, `objective`, `shrink_factor`:
            shortcuts that replace the corresponding fields of `topography`.
    """

    def __init__(self, topography=None, weight=None, **changes):
        self.topography = Topography.coerce(topography, **changes)
        self.weight = self.topography.replace(
            weight=self.topography.weight if weight is None else weight
        ).weight
        self._targets = {}  # channels -> (positions, target)

    def __call__(self, x):
        channels = x.shape[-1]
        if channels is None or channels < 2:
            raise ValueError(
                f"TopographicRegularizer needs a known channel axis of size >= 2 last, got "
                f"shape {x.shape}."
            )
        target = self._target(channels)
        if self.topography.objective == "weights":
            loss = objectives.objective_loss(
                "weights",
                None,
                kernel=x,
                target=target,
                shrink_factor=self.topography.shrink_factor,
            )
            return self.weight * loss
        samples = x
        if len(x.shape) == 2:  # one position per input: the batch's inputs are the samples
            samples = ops.reshape(x, (1, -1, channels))
        loss = objectives.objective_loss(
            self.topography.objective, samples, kernel=None, target=target
        )
        # Cancels Keras' division of activity-regularizer losses by the batch size.
        batch = ops.cast(ops.shape(x)[0], "float32")
        return self.weight * loss * batch

    def positions(self, channels):
        """Float32 `(channels, dimension)` positions of a layer with `channels` outputs."""
        return self.topography.positions(channels)

    def _target(self, channels):
        if channels not in self._targets:
            if self.topography.objective == "weights":
                objectives.validate_shrink_factor(self.topography.shrink_factor, channels)
            self._targets[channels] = self.topography.target(channels)
        return self._targets[channels]

    def get_config(self):
        return {"topography": self.topography.get_config(), "weight": self.weight}
