"""Topographic `Dense`, `EinsumDense` and attention layers: maps on transformer layers.

Each is the Keras layer itself (a subclass, named as it so that weights files interchange) whose
output channels sit on a map, as `keras_topo.TopographicConv2D`'s filters do (`TopographicMixin`:
same `topography`, `topographic_weight`, `positions`, `filters`, configs and losses). Tokens are
the samples: an output `(B, ..., C)` is read as `N = B * ...` samples of `C` channels, so

- "activation" (the paper's loss): `S_ij` is the cosine of channels `i` and `j` over the N
  samples (one `(C, C)` Gram per batch), against `T_ij = 1 / (d_ij + 1)`;
- "spatial" (TDANN, TopoLM): the Pearson correlation over the N samples, all pairs or TopoLM's
  sampled neighbourhoods (`Topography(neighbourhoods=K, radius=r)`);
- "weights" (TopoLoss): the kernel with the output channels last: `Dense` `(in, C)`,
  `EinsumDense` its output-channel axis moved last, `MultiHeadAttention` its output projection
  `(heads, head_dim, C)`.

An attention layer's map (`MultiHeadAttention`, `GroupQueryAttention`, keras-hub's
`CachedMultiHeadAttention`) is its output projection's channels (the residual width `C`); its
query/key/value projections carry none. A layer's activation is applied after the loss (the
loss reads the pre-activation output).
"""

import sys

import keras
import numpy as np
from keras import ops

from keras_topo import objectives, topographic_loss
from keras_topo.topographic_conv import TopographicMixin


class TokenTopographyMixin(TopographicMixin):
    """`TopographicMixin` with every leading position of the output as one sample."""

    data_format = "channels_last"

    def add_topographic_loss(self, outputs, kernel, data_format="channels_last"):
        samples = ops.reshape(outputs, (1, -1, outputs.shape[-1]))  # (1, N, C)
        super().add_topographic_loss(samples, self.channel_last_kernel(kernel))

    def channel_last_kernel(self, kernel):
        """The kernel with the map's channels on its last axis `(..., filters)`."""
        return kernel

    def narrowed_config(self, kept):
        """This layer's config with only the output channels `kept` (their positions stay)."""
        kept = np.asarray(kept, dtype="int64")
        config = self.get_config()
        config.update(self.channels_config(int(kept.size)))
        config["topography"] = self.topography.replace(scheme=self.positions[kept]).get_config()
        return config

    def channels_config(self, channels):
        """The config entries that give the layer `channels` output channels."""
        raise NotImplementedError


@keras.saving.register_keras_serializable(package="keras_topo", name="TopographicDense")
class Dense(TokenTopographyMixin, keras.layers.Dense):
    """`keras.layers.Dense` with a topographic loss on its `units` output channels. Input
    `(B, ..., C_in)`, output `(B, ..., units)`; keyword arguments as `TopographicMixin`'s."""

    @property
    def filters(self):
        """The channels on the map: `units` (the name every topographic layer shares)."""
        return self.units

    def call(self, inputs):
        if not self._loss_from_inputs(inputs):
            return super().call(inputs)
        self.add_weighted_loss(self._input_side_loss(inputs))
        return keras.layers.Dense.call(self, inputs)

    def _loss_from_inputs(self, inputs):
        """Whether the loss is computed from the inputs' Gram (fewer input features than
        units, "activation" or "spatial", sampled neighbourhoods included): `y = x W + b` gives
        the outputs' `(C, C)` Gram as `W^T (X^T X) W` plus bias terms, exactly, in
        `N E^2 + E C^2` multiply-adds instead of `N C^2` (a ViT's MLP hidden layer: `E = C / 4`,
        16 x fewer), and TopoLM's neighbourhoods read their blocks of it (no gather of samples)."""
        return (
            inputs.shape[-1] is not None
            and inputs.shape[-1] < self.units
            and self.units >= 3
            and self.topography.objective in ("activation", "spatial")
        )

    def _input_side_loss(self, inputs):
        """The token loss of `y = x W + b` from `x` `(B, ..., E)`, all tokens as samples. The
        `(E, E)` Gram is differentiated with one matmul (`symmetric_gram`: both losses have a
        symmetric gradient in it)."""
        x = ops.reshape(ops.cast(inputs, "float32"), (-1, inputs.shape[-1]))  # (N, E)
        kernel = ops.cast(self.kernel, "float32")
        if self.topography.objective == "spatial":  # the bias cancels in centred products
            centred = x - ops.mean(x, axis=0, keepdims=True)
            cov = _sandwich(kernel, topographic_loss.symmetric_gram("ne,nf->ef", centred))
            neighbourhoods = self._neighbourhoods()
            if neighbourhoods is not None:
                return objectives.neighbourhood_covariance_loss(cov, self._target, neighbourhoods)
            return objectives.covariance_loss(cov, self._target)
        gram = _sandwich(kernel, topographic_loss.symmetric_gram("ne,nf->ef", x))
        if self.use_bias:
            bias = ops.cast(self.bias, "float32")
            cross = ops.matmul(ops.sum(x, axis=0, keepdims=True), kernel)[0][:, None] * bias
            count = ops.cast(ops.shape(x)[0], "float32")
            gram = gram + cross + ops.transpose(cross) + count * bias[:, None] * bias[None, :]
        return topographic_loss.gram_topographic_loss(gram, self._target)

    def channels_config(self, channels):
        return {"units": channels}


@keras.saving.register_keras_serializable(package="keras_topo", name="TopographicEinsumDense")
class EinsumDense(TokenTopographyMixin, keras.layers.EinsumDense):
    """`keras.layers.EinsumDense` with a topographic loss on its output's last axis, which must
    be one of the kernel's (e.g. `"btd,de->bte"`); keyword arguments as `TopographicMixin`'s."""

    @property
    def filters(self):
        """The channels on the map: the size of the output's last axis."""
        return map_channels(self)

    def channel_last_kernel(self, kernel):
        return ops.moveaxis(kernel, _output_kernel_axis(self.equation), -1)

    def channels_config(self, channels):
        shape = list(self.partial_output_shape)
        shape[-1] = channels
        return {"output_shape": shape}


class AttentionTopographyMixin(TokenTopographyMixin):
    """An attention layer whose map is its output projection's channels (`_output_dense`'s
    kernel `(heads, head_dim, C)`), the loss on its first output `(B, T, C)`."""

    def call(
        self,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        return_attention_scores=False,
        training=None,
        use_causal_mask=False,
    ):
        """Keras' `MultiHeadAttention` / `GroupQueryAttention` call, then the loss."""
        return self.with_topographic_loss(
            PLAIN_TOKEN_CLASSES[type(self)].call(
                self,
                query,
                value,
                key=key,
                query_mask=query_mask,
                value_mask=value_mask,
                key_mask=key_mask,
                attention_mask=attention_mask,
                return_attention_scores=return_attention_scores,
                training=training,
                use_causal_mask=use_causal_mask,
            )
        )

    def with_topographic_loss(self, result):
        """`result` (the output, or a tuple whose first item is it) after adding the loss."""
        outputs = result[0] if isinstance(result, (tuple, list)) else result
        self.add_topographic_loss(outputs, self._output_dense.kernel)
        return result


@keras.saving.register_keras_serializable(
    package="keras_topo", name="TopographicMultiHeadAttention"
)
class MultiHeadAttention(AttentionTopographyMixin, keras.layers.MultiHeadAttention):
    """`keras.layers.MultiHeadAttention` with a topographic loss on its output projection's
    channels; `output_shape` (the channels, an int or a 1-tuple) is required. Query `(B, T, E)`,
    output `(B, T, C)`; keyword arguments as `TopographicMixin`'s."""

    @property
    def filters(self):
        """The channels on the map: the output projection's `output_shape[-1]`."""
        if not self._output_shape:
            raise ValueError(
                f"TopographicMultiHeadAttention {self.name!r} needs output_shape=C, the channels "
                "of its map (the query's last dimension for a residual block)."
            )
        return self._output_shape[-1]

    def channels_config(self, channels):
        return {"output_shape": (*self._output_shape[:-1], channels)}


@keras.saving.register_keras_serializable(
    package="keras_topo", name="TopographicGroupedQueryAttention"
)
class GroupedQueryAttention(AttentionTopographyMixin, keras.layers.GroupQueryAttention):
    """`keras.layers.GroupQueryAttention` with a topographic loss on its output projection's
    channels, which are the query's last dimension `C`: `feature_dim=C` is required (the plain
    layer reads it from the query at build). Query `(B, T, C)`, output `(B, T, C)`; keyword
    arguments as `TopographicMixin`'s."""

    def __init__(self, *args, feature_dim=None, **kwargs):
        self._map_width = feature_dim
        super().__init__(*args, **kwargs)

    @property
    def filters(self):
        """The channels on the map: `feature_dim`, the output projection's channels."""
        if not self._map_width:
            raise ValueError(
                f"TopographicGroupedQueryAttention {self.name!r} needs feature_dim=C, the "
                "channels of its map (the query's last dimension)."
            )
        return self._map_width

    def build(self, query_shape, value_shape, key_shape=None):
        if query_shape[-1] != self._map_width:
            raise ValueError(
                f"TopographicGroupedQueryAttention {self.name!r} has feature_dim="
                f"{self._map_width} but its query has {query_shape[-1]} features: the output "
                "projection maps back to the query's width. Pass feature_dim=query.shape[-1]."
            )
        super().build(query_shape, value_shape, key_shape)

    def channels_config(self, channels):
        return {"feature_dim": channels}

    def plain_config(self):
        config = super().plain_config()
        config.pop("feature_dim")
        return config

    def get_config(self):
        return {**super().get_config(), "feature_dim": self._map_width}


# The plain Keras class of each topographic token class (`topographic_conv.PLAIN_CLASSES`' twin
# registry; `keras_topo.layer_selection` merges both). keras-hub's attention joins it once
# keras_hub is imported (`register_keras_hub_layers`).
PLAIN_TOKEN_CLASSES = {
    Dense: keras.layers.Dense,
    EinsumDense: keras.layers.EinsumDense,
    MultiHeadAttention: keras.layers.MultiHeadAttention,
    GroupedQueryAttention: keras.layers.GroupQueryAttention,
}
TOKEN_TOPOGRAPHIC_CLASSES = {plain: topo for topo, plain in PLAIN_TOKEN_CLASSES.items()}
TopographicDense, TopographicEinsumDense, TopographicMultiHeadAttention = (
    Dense,
    EinsumDense,
    MultiHeadAttention,
)
TopographicGroupedQueryAttention = GroupedQueryAttention


def register_keras_hub_layers():
    """Adds keras-hub's `CachedMultiHeadAttention` (GPT-2, OPT...) to the registries, as a
    `MultiHeadAttention` (its map: the output projection's channels), once `keras_hub` has
    been imported (keras-topo does not import it). `make_topographic` calls this; call it
    before loading a saved model that holds one."""
    if "keras_hub" not in sys.modules:
        return
    from keras_hub.layers import CachedMultiHeadAttention as plain

    if plain in TOKEN_TOPOGRAPHIC_CLASSES:
        return

    @keras.saving.register_keras_serializable(
        package="keras_topo", name="TopographicCachedMultiHeadAttention"
    )
    class CachedMultiHeadAttention(MultiHeadAttention, plain):
        """keras-hub's `CachedMultiHeadAttention` (key/value cache for generation) with a
        topographic loss on its output projection's channels, as `MultiHeadAttention`."""

        def call(
            self,
            query,
            value,
            key=None,
            attention_mask=None,
            cache=None,
            cache_update_index=None,
            return_attention_scores=False,
            training=None,
        ):
            return self.with_topographic_loss(
                plain.call(
                    self,
                    query,
                    value,
                    key=key,
                    attention_mask=attention_mask,
                    cache=cache,
                    cache_update_index=cache_update_index,
                    return_attention_scores=return_attention_scores,
                    training=training,
                )
            )

    PLAIN_TOKEN_CLASSES[CachedMultiHeadAttention] = plain
    TOKEN_TOPOGRAPHIC_CLASSES[plain] = CachedMultiHeadAttention


def _sandwich(kernel, inner):
    """`W^T A W`, `(C, C)`, from the kernel `W` `(E, C)` and `A` `(E, E)`."""
    return ops.matmul(ops.transpose(kernel), ops.matmul(inner, kernel))


def map_channels(layer):
    """The output channels a `Dense`, `EinsumDense` or `MultiHeadAttention` puts on a map
    (its output's last axis), or None when it has none.

    None for an `EinsumDense` whose output's last axis is not one of its kernel's, or whose
    size is unknown, and for a `MultiHeadAttention` neither built nor given `output_shape`.
    """
    if isinstance(layer, keras.layers.Dense):
        return layer.units
    if isinstance(layer, keras.layers.EinsumDense):
        if _output_kernel_axis(layer.equation) is None:
            return None
        return layer.partial_output_shape[-1]
    if isinstance(layer, keras.layers.GroupQueryAttention):
        return getattr(layer, "feature_dim", None)
    if isinstance(layer, keras.layers.MultiHeadAttention):
        if layer._output_shape:
            return layer._output_shape[-1]
        if getattr(layer, "_output_dense", None) is not None:
            return layer._output_dense.kernel.shape[-1]
    return None


def explicit_config(layer):
    """`layer.get_config()` with what its topographic class needs made explicit: a built
    `MultiHeadAttention`'s `output_shape`, a built `GroupQueryAttention`'s `feature_dim` (the
    output projection's channels)."""
    config = layer.get_config()
    if isinstance(layer, keras.layers.GroupQueryAttention):
        config["feature_dim"] = getattr(layer, "feature_dim", None)
    if isinstance(layer, keras.layers.MultiHeadAttention) and not config.get("output_shape"):
        config["output_shape"] = tuple(layer._output_dense.kernel.shape[2:])
    return config


def _output_kernel_axis(equation):
    """The kernel axis of an einsum `"in,kernel->out"`'s last output letter, or None."""
    operands, output = equation.split("->")
    kernel = operands.split(",")[1]
    letter = output[-1]
    return kernel.index(letter) if letter in kernel else None
