"""`TopographicConv2D`: a `keras.layers.Conv2D` whose output channels sit on a map."""

import keras
import numpy as np
from keras import ops

from keras_topo import positions as positions_lib
from keras_topo.topographic_loss import topographic_loss


@keras.saving.register_keras_serializable(package="keras_topo")
class TopographicConv2D(keras.layers.Conv2D):
    """2D convolution with the paper's topographic loss on its output channels.

    A drop-in for `keras.layers.Conv2D`: same arguments, same outputs. Each call also adds
    `topographic_weight * topographic_loss(pre-activation output)` with `add_loss`, so the
    term is part of `model.fit`'s training loss and shows in `model.losses`.

    Args:
        filters, kernel_size, ...: as `keras.layers.Conv2D`.
        topography: a scheme name ("grid", "nested", "circle", "sphere", "line") or an array
            of positions `(filters, dimension)`.
        dimension: 2 or 3 for "grid"/"nested" (default: the scheme's natural dimension).
        distance: "euclidean" (default) or "l1".
        topographic_weight: non-negative factor on this layer's loss (lambda, or lambda / L
            for the paper's mean over layers).
        nested_factor: shrink factor between nested squares/cubes.

    Input `(B, H, W, C_in)`, output `(B, H', W', filters)` (channels_last). The last training
    batch's unweighted loss is kept in the non-trainable scalar `topographic_loss_value` so
    that callbacks can log it per layer.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        topography="grid",
        dimension=None,
        distance="euclidean",
        topographic_weight=1.0,
        nested_factor=0.5,
        **kwargs,
    ):
        super().__init__(filters, kernel_size, **kwargs)
        if topographic_weight is None or float(topographic_weight) < 0:
            raise ValueError(
                f"topographic_weight must be a non-negative number, got {topographic_weight}."
            )
        if isinstance(topography, str):
            self.topography = topography
        else:
            self.topography = np.asarray(topography, dtype="float32").tolist()
        self.positions = positions_lib.resolve(
            topography, filters, dimension, nested_factor=nested_factor
        )
        self.dimension = self.positions.shape[1]
        self.distance = distance
        self.topographic_weight = float(topographic_weight)
        self.nested_factor = nested_factor
        self._target = positions_lib.target_similarity(self.positions, distance)

    def build(self, input_shape):
        super().build(input_shape)
        # A logging scalar, so `autocast=False` (on torch, assigning an autocast variable
        # inside a mixed-precision call writes to a temporary cast copy and is lost) and
        # `synchronization="on_read"` (each replica of a tf.distribute strategy writes its own
        # copy with no cross-replica sync mid-forward; reading it gives the replicas' mean).
        # `add_weight` has no `synchronization` argument, hence `keras.Variable`.
        self.topographic_loss_value = keras.Variable(
            0.0,
            dtype="float32",
            trainable=False,
            autocast=False,
            aggregation="mean",
            synchronization="on_read",
            name="topographic_loss_value",
        )

    def call(self, inputs, training=None):
        outputs = self.convolution_op(inputs, self.kernel)
        if self.use_bias:
            channel_axis = -1 if self.data_format == "channels_last" else 1
            bias_shape = [1] * 4
            bias_shape[channel_axis] = self.filters
            outputs = ops.add(outputs, ops.reshape(self.bias, bias_shape))
        loss = topographic_loss(outputs, target=self._target, data_format=self.data_format)
        self.add_loss(self.topographic_weight * loss)
        if training:
            self.topographic_loss_value.assign(ops.stop_gradient(loss))
        if self.activation is not None:
            return self.activation(outputs)
        return outputs

    def save_own_variables(self, store):
        super().save_own_variables(store)  # "0": kernel, "1": bias
        store[str(len(self._conv_variables()))] = self.topographic_loss_value

    def load_own_variables(self, store):
        # Conv2D checks that the store holds exactly its variables; the logged loss is
        # training state, so weights saved without it (e.g. from a plain Conv2D) load too.
        conv_variables = self._conv_variables()
        for index, variable in enumerate(conv_variables):
            variable.assign(store[str(index)])
        extra = str(len(conv_variables))
        if extra in store.keys():
            self.topographic_loss_value.assign(store[extra])

    def _conv_variables(self):
        return [self._kernel, self.bias] if self.use_bias else [self._kernel]

    def narrowed_config(self, kept):
        """This layer's config with only the output channels `kept` (their positions stay)."""
        kept = np.asarray(kept, dtype="int64")
        config = self.get_config()
        config["filters"] = int(kept.size)
        config["topography"] = self.positions[kept].tolist()
        return config

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "topography": self.topography,
                "dimension": self.dimension,
                "distance": self.distance,
                "topographic_weight": self.topographic_weight,
                "nested_factor": self.nested_factor,
            }
        )
        return config
