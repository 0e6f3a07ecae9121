"""`PositionEmbedding`: a learned vector per token position, added to the tokens (ViT).

Registered with the pruner as a per-channel layer (`Follower` on its table's last axis), so
pruning the residual width of a ViT narrows the table with the tokens.
"""

import keras

from keras_topo.pruning.handlers import Follower, register_handler


@keras.saving.register_keras_serializable(package="keras_topo")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned `(tokens, channels)` table to inputs `(B, tokens, channels)`.

    Args:
        initializer: of the table; default truncated normal with stddev 0.02 (ViT's).

    Input and output `(B, T, E)` with static `T` and `E`.
    """

    def __init__(self, initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.initializer = keras.initializers.get(
            initializer or keras.initializers.TruncatedNormal(stddev=0.02)
        )

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[1] is None or input_shape[2] is None:
            raise ValueError(
                f"PositionEmbedding needs inputs (batch, tokens, channels) with static tokens "
                f"and channels, got {input_shape}."
            )
        self.embedding = self.add_weight(
            shape=tuple(input_shape[1:]), initializer=self.initializer, name="embedding"
        )

    def call(self, inputs):
        return inputs + keras.ops.cast(self.embedding, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["initializer"] = keras.initializers.serialize(self.initializer)
        return config


register_handler(PositionEmbedding, Follower(weights=("embedding",)))
