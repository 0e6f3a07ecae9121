"""mode="remove": rebuild a functional model with the pruned filters really gone.

The graph is walked once (`keras.models.clone_model` with a `call_function`). Every rebuilt
tensor carries a `ChannelState`: which channels of the masked model's tensor it still holds
and the (uniform) constant every removed channel has in the masked model. What each layer
becomes, for an input with removed channels:

- a pruned `Conv2D` / `TopographicConv2D`: only the kept filters (and bias entries); a
  topographic layer keeps its surviving channels' positions (`topography=<array>`). A removed
  filter outputs `activation(0)`, a constant channel;
- `Conv2D` / `Dense` reading removed channels: their kernel rows are dropped and the constants
  folded exactly (`channel_fold`: into the bias, or an all-ones input channel for a
  zero-padded conv);
- per-channel layers (batch norm, activations, dropout, pooling, adaptive pooling,
  up-sampling, cropping, zero padding, depthwise conv): applied to the kept channels with their weights sliced; the
  constants go through the original layer. A layer that would turn a constant into a
  non-constant (a "same" depthwise conv of a non-zero constant: the border differs) instead
  gets the full tensor back (see below). Zero padding of a non-zero constant is kept narrow
  only when a max pool follows that makes it uniform again (every window holds a real pixel
  and the constant is >= 0, as after ReLU in ResNet's and DenseNet's stems); any other reader
  of the padded tensor gets the full tensor, padded;
- `Concatenate` (channel axis): kept channels with per-input offsets;
- `Add` and the other element-wise merges: a channel kept by any input is kept, and the inputs
  that lack it get their constant back (`ExpandChannels`), so a pruned branch of a residual
  sum stays exact; channels removed from every input stay removed;
- `Flatten`: kept (position, channel) entries, in Keras' order;
- any other layer, and the model outputs: the full tensor is rebuilt with `ExpandChannels`
  (kept channels scattered back, removed ones set to their constants), so the layer is
  unchanged and the function stays exact.
"""

import keras
import numpy as np
from keras import ops

from keras_topo.layer_selection import is_topographic
from keras_topo.pruning.channel_fold import bias_fold_is_exact, fold_removed_inputs
from keras_topo.pruning.expand_channels import ExpandChannels
from keras_topo.pruning.layer_copy import UniqueNames, from_config_zero_init, restore_initializers

CHANNELWISE = (
    keras.layers.BatchNormalization,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.Dropout,
    keras.layers.SpatialDropout2D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.Identity,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.UpSampling2D,
    keras.layers.Cropping2D,
    keras.layers.ZeroPadding2D,
    keras.layers.DepthwiseConv2D,
)
ELEMENTWISE_MERGES = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
)
# Per-channel layers of keras_topo known by their registered names (no import cycle).
CHANNELWISE_NAMES = ("keras_topo>AdaptiveAveragePooling2D",)
NOT_ELEMENTWISE = ("softmax", "log_softmax")
PROBE_SIDE = 16  # spatial size of the constant probes where the model's is not static


class ChannelState:
    """A rebuilt tensor `(..., kept.size)` standing for a masked tensor `(..., constants.size)`.

    `tensor[..., i]` equals the masked tensor's channel `kept[i]` (`kept` ascending); every
    other channel `j` of the masked tensor is the uniform constant `constants[j]`.
    """

    def __init__(self, tensor, kept, constants):
        self.tensor = tensor
        self.kept = np.asarray(kept, dtype="int64")
        self.constants = np.asarray(constants, dtype="float64")

    @property
    def size(self):
        return self.constants.size


def rebuild(model, kept_by_layer):
    """A new functional model with the listed conv layers' filters removed.

    Args:
        model: a functional `keras.Model` (not modified).
        kept_by_layer: dict conv layer name -> sorted indices of its filters that stay.

    Returns:
        A new `keras.Model` whose outputs equal those of the model masked with the same
        channels (inference mode).
    """
    return _Rebuilder(kept_by_layer).run(model)


class _Rebuilder:
    def __init__(self, kept_by_layer):
        self.kept_by_layer = {k: np.asarray(v, dtype="int64") for k, v in kept_by_layer.items()}
        self.states = {}  # id(rebuilt tensor) -> ChannelState, only for narrowed tensors
        self.copies = {}  # id(original layer) -> (copy, config, weights), shared by its calls
        self.expanded = {}  # (id(tensor), index) -> ExpandChannels output
        self.padded = {}  # id(narrowed ZeroPadding2D output) -> (input state, layer, kwargs)
        self.unique = UniqueNames()

    def run(self, model):
        clone = keras.models.clone_model(
            model, clone_function=lambda layer: layer, call_function=self
        )
        outputs = keras.tree.map_structure(self.materialize, clone.output)
        return keras.Model(clone.input, outputs, name=model.name)

    def __call__(self, layer, *args, **kwargs):
        """`clone_model`'s call_function: the rebuilt call of the original `layer`."""
        if isinstance(layer, keras.layers.MaxPooling2D) and id(args[0]) in self.padded:
            outputs = self.padded_pool(layer, args[0], kwargs)
            if outputs is not None:
                return outputs
        args, kwargs = keras.tree.map_structure(self.unpad, (args, kwargs))
        tensors = [
            t for t in keras.tree.flatten((args, kwargs)) if isinstance(t, keras.KerasTensor)
        ]
        if layer.name in self.kept_by_layer or any(id(t) in self.states for t in tensors):
            outputs = self.rewrite(layer, args, kwargs)
            if outputs is not None:
                return outputs
        return self.unchanged(layer, *keras.tree.map_structure(self.materialize, (args, kwargs)))

    def unchanged(self, layer, args, kwargs):
        """`layer` copied with its weights on full inputs."""
        return self.apply(layer, layer.get_config(), args, kwargs)[1]

    def rewrite(self, layer, args, kwargs):
        """Outputs of the narrowed `layer`, or None when it must see its full inputs."""
        if _is_linear(layer):
            return self.linear(layer, args[0], kwargs)
        if _is_channelwise(layer) and _is_channels_last(layer, args[0]):
            return self.channelwise(layer, args[0], kwargs)
        if isinstance(layer, keras.layers.Concatenate):
            return self.concatenate(layer, args[0], kwargs)
        if isinstance(layer, ELEMENTWISE_MERGES):
            return self.merge(layer, args[0], kwargs)
        if isinstance(layer, keras.layers.Flatten) and layer.data_format == "channels_last":
            return self.flatten(layer, args[0], kwargs)
        return None

    # --- layers -----------------------------------------------------------------------------

    def linear(self, layer, x, kwargs):
        """Conv2D / Dense: drop removed input rows (folding their constants), prune filters."""
        state = self.state_of(x)
        weights = _numpy_weights(layer)
        kernel = weights["kernel"]
        bias = weights.get("bias", np.zeros(kernel.shape[-1], kernel.dtype))
        kernel, bias, ones_kernel = fold_removed_inputs(
            kernel, bias, state.kept, state.constants, bias_fold_is_exact(layer)
        )
        config = layer.get_config()
        kept_out = self.kept_by_layer.get(layer.name)
        if kept_out is not None:
            kernel, bias = kernel[..., kept_out], bias[kept_out]
            ones_kernel = None if ones_kernel is None else ones_kernel[..., kept_out]
            config["filters"] = int(kept_out.size)
            if is_topographic(layer):
                config = layer.narrowed_config(kept_out)
        inputs = state.tensor
        if ones_kernel is not None:
            inputs = self.with_ones(state.tensor)
            kernel = np.concatenate([kernel, ones_kernel], axis=-2)
        config["use_bias"] = bool(layer.use_bias or np.any(bias != 0))
        weights = dict(weights, kernel=kernel, bias=bias)
        _, outputs = self.apply(layer, config, (inputs,), kwargs, weights)
        if kept_out is not None and kept_out.size < layer.filters:
            constant = ops.convert_to_numpy(layer.activation(ops.zeros((1,))))[0]
            self.register(outputs, kept_out, np.full(layer.filters, constant))
        return outputs

    def channelwise(self, layer, x, kwargs):
        """Per-channel layers: kept channels through a sliced copy, constants through `layer`."""
        state = self.state_of(x)
        multiplier = getattr(layer, "depth_multiplier", 1)
        kept_out = (state.kept[:, None] * multiplier + np.arange(multiplier)).ravel()
        constants = self.propagate([layer], [state], [x], kept_out)
        if constants is None and isinstance(layer, keras.layers.ZeroPadding2D):
            _, outputs = self.apply(layer, layer.get_config(), (state.tensor,), kwargs)
            self.padded[id(outputs)] = (state, x, layer, kwargs)
            return outputs
        if constants is None:
            return None
        weights = _numpy_weights(layer)
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            weights["kernel"] = weights["kernel"][:, :, state.kept]
            if "bias" in weights:
                weights["bias"] = weights["bias"][kept_out]
        else:  # batch norm: gamma, beta, moving mean and variance, one entry per channel
            weights = {name: value[state.kept] for name, value in weights.items()}
        _, outputs = self.apply(layer, layer.get_config(), (state.tensor,), kwargs, weights)
        self.register(outputs, kept_out, constants)
        return outputs

    def concatenate(self, layer, tensors, kwargs):
        """Channel concatenation: kept channels of each input, shifted by its offset."""
        if layer.axis not in (-1, len(tensors[0].shape) - 1):
            return None
        states = [self.state_of(t) for t in tensors]
        offsets = np.cumsum([0] + [s.size for s in states[:-1]])
        kept = np.concatenate([s.kept + o for s, o in zip(states, offsets, strict=True)])
        constants = np.concatenate([s.constants for s in states])
        inputs = [s.tensor for s in states]
        _, outputs = self.apply(layer, layer.get_config(), (inputs,), kwargs)
        self.register(outputs, kept, constants)
        return outputs

    def merge(self, layer, tensors, kwargs):
        """Add & co: keep the union of kept channels; give each input its missing constants."""
        states = [self.state_of(t) for t in tensors]
        if len({s.size for s in states}) != 1:
            return None  # broadcasting over channels: leave it to the full tensors
        kept = np.unique(np.concatenate([s.kept for s in states]))
        constants = self.propagate([layer], states, tensors, kept)
        if constants is None:
            return None
        aligned = [self.expand(s, kept, layer.name) for s in states]
        _, outputs = self.apply(layer, layer.get_config(), (aligned,), kwargs)
        self.register(outputs, kept, constants)
        return outputs

    def padded_pool(self, layer, x, kwargs):
        """Max pool of zero-padded constants: uniform again when every window sees one real
        pixel and the constant is >= 0 (ReLU outputs: ResNet's and DenseNet's stems)."""
        state, unpadded, pad, _ = self.padded[id(x)]
        constants = self.propagate([pad, layer], [state], [unpadded], state.kept)
        if constants is None:
            return None
        _, outputs = self.apply(layer, layer.get_config(), (x,), kwargs)
        self.register(outputs, state.kept, constants)
        return outputs

    def unpad(self, tensor):
        """The full zero-padded tensor for a consumer that cannot read the narrowed one."""
        if not isinstance(tensor, keras.KerasTensor) or id(tensor) not in self.padded:
            return tensor
        state, unpadded, pad, kwargs = self.padded[id(tensor)]
        key = ("unpad", id(tensor))
        if key not in self.expanded:
            self.expanded[key] = self.unchanged(pad, (self.materialize(unpadded),), kwargs)
        return self.expanded[key]

    def flatten(self, layer, x, kwargs):
        """Flatten `(B, ..., C)`: entry `p * C + c` for position `p`, kept channel `c`."""
        if any(d is None for d in x.shape[1:-1]):
            return None
        state = self.state_of(x)
        positions = int(np.prod(x.shape[1:-1]))
        kept = (np.arange(positions)[:, None] * state.size + state.kept).ravel()
        _, outputs = self.apply(layer, layer.get_config(), (state.tensor,), kwargs)
        self.register(outputs, kept, np.tile(state.constants, positions))
        return outputs

    # --- helpers ----------------------------------------------------------------------------

    def propagate(self, layers, states, tensors, kept_out):
        """Constants of the removed outputs of `layers` (applied in turn) on constant probes.

        Returns None where a removed output is not uniform over space (e.g. zero padding of a
        non-zero constant), i.e. where the channel cannot stay removed.
        """
        probes = [_probe(s, t.shape) for s, t in zip(states, tensors, strict=True)]
        outputs = probes if len(probes) > 1 else probes[0]
        for layer in layers:
            outputs = layer(outputs, training=False)
        outputs = ops.convert_to_numpy(outputs).astype("float64")
        outputs = outputs.reshape(-1, outputs.shape[-1])
        removed = np.setdiff1d(np.arange(outputs.shape[1]), kept_out)
        values = outputs[:, removed]
        if not np.allclose(values, values[:1], rtol=1e-6, atol=1e-6):
            return None
        return outputs[0]

    def state_of(self, tensor):
        if id(tensor) in self.states:
            return self.states[id(tensor)]
        size = tensor.shape[-1]
        return ChannelState(tensor, np.arange(size), np.zeros(size))

    def register(self, tensor, kept, constants):
        if len(kept) < len(constants):
            self.states[id(tensor)] = ChannelState(tensor, kept, constants)

    def materialize(self, tensor):
        """The full masked-model tensor: kept channels scattered back between the constants."""
        tensor = self.unpad(tensor)
        if not isinstance(tensor, keras.KerasTensor) or id(tensor) not in self.states:
            return tensor
        state = self.states[id(tensor)]
        return self.expand(state, np.arange(state.size), "full")

    def expand(self, state, target, prefix):
        """`state`'s tensor widened to the channels `target` (a superset of `state.kept`)."""
        if np.array_equal(state.kept, target):
            return state.tensor
        position = {int(c): i for i, c in enumerate(state.kept)}
        index = [position.get(int(c), -1) for c in target]
        values = [
            0.0 if i >= 0 else float(state.constants[c]) for i, c in zip(index, target, strict=True)
        ]
        return self.expand_tensor(state.tensor, index, values, f"{prefix}_expand")

    def with_ones(self, tensor):
        """`tensor` with one all-ones channel appended (the zero-padded conv fold)."""
        width = tensor.shape[-1]
        return self.expand_tensor(
            tensor, list(range(width)) + [-1], [0.0] * width + [1.0], "append_ones"
        )

    def expand_tensor(self, tensor, index, values, name):
        key = (id(tensor), tuple(index), tuple(values))
        if key not in self.expanded:
            layer = ExpandChannels(index, values, name=self.unique(name))
            self.expanded[key] = layer(tensor)
        return self.expanded[key]

    def apply(self, layer, config, args, kwargs, weights=None):
        """A new layer of `layer`'s class from `config` (under a name unique in the model),
        called on `args`, with `weights` (dict by variable name; default: `layer`'s).

        One copy serves all calls of a shared layer; calls that would need different copies
        (their inputs lost different channels) raise a ValueError.

        Returns `(new layer, outputs)`.
        """
        if weights is None:
            weights = _numpy_weights(layer)
        if id(layer) in self.copies:
            new, first_config, first_weights = self.copies[id(layer)]
            if config != first_config or not _same_weights(weights, first_weights):
                raise ValueError(
                    f"Layer {layer.name!r} is called more than once, on inputs pruned "
                    'differently; coupling="expand" cannot keep it one shared layer. Use '
                    'coupling="group" (all its calls are pruned alike).'
                )
            return new, new(*args, **kwargs)
        new = from_config_zero_init(layer.__class__, dict(config, name=self.unique(layer.name)))
        outputs = new(*args, **kwargs)
        restore_initializers(new, config)
        for variable in new.weights:
            variable.assign(weights[variable.name].astype(variable.dtype))
        self.copies[id(layer)] = (new, config, weights)
        return new, outputs


def _is_linear(layer):
    if isinstance(layer, keras.layers.Dense):
        return _is_elementwise(layer.activation)
    return (
        isinstance(layer, keras.layers.Conv2D)
        and layer.groups == 1
        and layer.data_format == "channels_last"
        and _is_elementwise(layer.activation)
    )


def _is_channelwise(layer):
    name = keras.saving.get_registered_name(type(layer))
    return isinstance(layer, CHANNELWISE) or name in CHANNELWISE_NAMES


def _is_elementwise(activation):
    return getattr(activation, "__name__", "") not in NOT_ELEMENTWISE


def _is_channels_last(layer, x):
    if isinstance(layer, keras.layers.BatchNormalization):
        return layer.axis in (-1, len(x.shape) - 1)
    if isinstance(layer, keras.layers.Activation):
        return _is_elementwise(layer.activation)
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _probe(state, shape):
    """A batch of one constant input: removed channels at their constants, kept ones at 0."""
    spatial = [PROBE_SIDE if d is None else d for d in shape[1:-1]]
    values = np.where(np.isin(np.arange(state.size), state.kept), 0.0, state.constants)
    return np.broadcast_to(values.astype("float32"), (1, *spatial, state.size)).copy()


def _same_weights(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _numpy_weights(layer):
    return {v.name: ops.convert_to_numpy(v) for v in layer.weights}
