"""How each operation moves channels, and how its weights follow: the pruner's handler registry.

A handler tells the dependency graph (`keras_topo.pruning.graph`) three things about one
operation class, for the channels (last axis, channels_last) of its tensors:

- `trace(op, inputs, outputs, graph)`: the `Layout` of each output from the layouts of the
  inputs (a new channel space for a producer such as a conv; the input's for batch norm; the
  coupled inputs' for an `Add`), or None for an output whose channels are not traceable;
- `weight_axes(op, in_layouts, out_layouts)`: `{variable name: [(axis, layout), ...]}`, which
  axes of which variables are indexed by which channels (a conv kernel: input channels on
  axis -2, output channels on axis -1);
- `config(op, in_kept, out_kept)`: the config of the narrowed copy of a layer, given the kept
  indices of each input and output (e.g. `filters=len(out_kept[0])`);
- `narrowed_call(op, args, kwargs, inputs, in_kept, out_kept)`: for a raw `keras.ops`
  operation (no config, no weights), the operation and arguments of its call on the narrowed
  inputs `args` (a split at new indices, a channel slice with new bounds, a per-channel
  constant sliced); `inputs` are the original input tensors (their shapes);
- `fold_inputs(op, config, weights, kept, constants)` (`coupling="expand"` only): a channel
  mixer reading removed channels, each a known constant, gets their contribution folded into
  its weights (a conv's or dense layer's bias, see `channel_fold`); None where it cannot (the
  pruner then gives it its full input back);
- `head_axes(op, inputs, outputs, axes, graph)`: where the attention heads axis of its inputs
  (heads split off the channels by a reshape, `keras_topo.pruning.head_axis`) lies in each
  output; None when the operation does not keep the heads apart (the default).

`config`, `weight_axes` and `narrowed_call` serve both couplings: with `coupling="expand"` the
kept indices are those of each call's own tensors (`keras_topo.pruning.expand_rebuild`).

Raw ops appear in a functional graph as `keras.ops` `Operation`s (`keras.ops.pad(x, ...)` on a
`KerasTensor` records a `keras.src.ops.numpy.Pad`); they are registered below like layers.

Users teach the pruner their own layers with `register_handler(LayerClass, handler)`; a class
without a handler is "unknown": the groups of all its inputs and outputs are left unpruned, with a
warning naming it when a selected layer's group is affected.
"""

import dataclasses
import itertools
import weakref

import keras
import numpy as np
from keras.src.applications.convnext import LayerScale, StochasticDepth
from keras.src.applications.inception_resnet_v2 import CustomScaleLayer
from keras.src.ops import nn as nn_ops
from keras.src.ops import numpy as np_ops

from keras_topo.layer_copy import layer_config
from keras_topo.layer_selection import is_topographic
from keras_topo.pruning import head_axis
from keras_topo.pruning.channel_fold import bias_fold_is_exact, fold_removed_inputs
from keras_topo.tracing import is_custom


@dataclasses.dataclass(frozen=True)
class Block:
    """`size(space) * inner` consecutive channels: channel `c * inner + k` of the block belongs
    to channel `c` of channel space `space` (`inner > 1` after a depthwise conv with
    `depth_multiplier=inner`)."""

    space: int
    inner: int = 1


class ChannelHandler:
    """Base class of the handlers: by default an operation the pruner does not understand.

    Attributes:
        shared_state: True when all calls of one (shared) layer must keep the same channels
            (layers with per-channel weights or channel counts in their config).
        independent_channels: False when a kept output channel also depends on the values of
            removed ones (layer normalisation's statistics): `coupling="expand"` then gives
            the op its full inputs.
    """

    shared_state = True
    independent_channels = True

    def trace(self, op, inputs, outputs, graph):
        """Layouts of `outputs` (KerasTensors) from `inputs` (list of `(tensor, layout)`);
        None entries are untraceable (their groups are not pruned). `graph` offers
        `output_space(op, size)`, `merge(layouts, name)`, `block(layouts, reason)`,
        `channel_range(layout, start, stop)`, `arguments` (the call's non-tensor arguments,
        e.g. the `3.0` of `x + 3.0`) and `call` (the `Call`, arguments in place)."""
        return self.untraceable(op, inputs, outputs, graph, f"unknown operation {op.name!r}")

    def untraceable(self, op, inputs, outputs, graph, reason):
        """Blocks the groups of all inputs (outputs get new blocked spaces): returns Nones."""
        graph.block([layout for _, layout in inputs], reason)
        return [None] * len(outputs)

    def weight_axes(self, op, in_layouts, out_layouts):
        return {}

    def config(self, op, in_kept, out_kept):
        return layer_config(op)

    def narrowed_call(self, op, args, kwargs, inputs, in_kept, out_kept):
        return op, args, kwargs

    def fold_inputs(self, op, config, weights, kept, constants):
        """`(config, weights, append_ones)` of `op` reading only its input channels `kept`,
        the others being the uniform `constants` `(C_in,)`; `weights`: `{name: numpy array}`
        (outputs already narrowed). `append_ones`: the kernel reads one more, all-ones input
        channel. None: the constants cannot be folded into `op`."""
        return None

    def head_axes(self, op, inputs, outputs, axes, graph):
        """The attention heads axis of each output (None: it has none), given the heads axis
        of each input in `axes` (None for an input without heads; at least one has them);
        None when `op` does not keep the heads apart, which blocks them."""
        return None


class Follower(ChannelHandler):
    """Per-channel operations: output channel `j` is computed from input channel `j` only.

    Args:
        weights: the variables with one entry per channel on their last axis, by attribute
            or variable name (batch norm's `gamma`, `beta`, `moving_mean`, `moving_variance`).
        config_key: config entry holding the channel count (e.g. LayerScale's `projection_dim`).
        shared_state: see `ChannelHandler` (False for weightless layers).
        pointwise: each output entry comes from its own input entry (an activation, dropout,
            a norm over the channels): every other axis, attention heads included, stays.
    """

    def __init__(self, weights=(), config_key=None, shared_state=None, pointwise=False):
        self.weights = tuple(weights)
        self.config_key = config_key
        self.shared_state = bool(weights or config_key) if shared_state is None else shared_state
        self.pointwise = pointwise

    def trace(self, op, inputs, outputs, graph):
        if not self.channels_last(op, inputs[0][0]):
            reason = f"{op.name!r} mixes channels or does not act on the last axis"
            return self.untraceable(op, inputs, outputs, graph, reason)
        return [inputs[0][1]] * len(outputs)

    def channels_last(self, op, tensor):
        """Whether `op` acts on each channel of the last axis separately."""
        return getattr(op, "data_format", "channels_last") == "channels_last"

    def head_axes(self, op, inputs, outputs, axes, graph):
        if not self.pointwise or len(inputs) != 1:
            return None
        return [axes[0]] * len(outputs)

    def weight_axes(self, op, in_layouts, out_layouts):
        axes, names = {}, {v.name for v in getattr(op, "weights", ())}  # raw ops have none
        for name in self.weights:  # an attribute holding the variable, or the variable's name
            attribute = getattr(op, name, None)
            name = attribute.name if isinstance(attribute, keras.Variable) else name
            if name in names:  # e.g. no beta in BatchNormalization(center=False)
                axes[name] = [(-1, out_layouts[0])]
        return axes

    def config(self, op, in_kept, out_kept):
        config = layer_config(op)
        if self.config_key:
            config[self.config_key] = int(out_kept[0].size)
        return config


class NormalizationFollower(Follower):
    """Batch / layer normalisation over the last axis only (other axes: unknown).

    Layer normalisation over channels is not a function-preserving mask: its mean and variance
    span the channels, so a removed channel changes the kept ones (`mask` != `remove`; pass
    `independent_channels=False`). Layer normalisation is `pointwise` on the other axes
    (attention heads stay apart); batch normalisation is not (in training its statistics span
    every other axis)."""

    def __init__(self, weights=(), independent_channels=True, pointwise=False):
        super().__init__(weights=weights, pointwise=pointwise)
        self.independent_channels = independent_channels

    def channels_last(self, op, tensor):
        axis = op.axis if isinstance(op.axis, (list, tuple)) else [op.axis]
        rank = len(tensor.shape)
        return [a % rank for a in axis] == [rank - 1]


class ChannelVectorLayer(NormalizationFollower):
    """A custom leaf layer (no sublayers, no registered handler) whose every weight is one
    vector `(C,)` over the channels of its one input `(..., C)`, whose output has the input's
    shape and whose config names `C` in exactly one entry (e.g. `dim`): keras-hub's
    `RmsNorm2d` and other per-channel scales and norms declared with their width. Its vectors
    are sliced with the channels and that entry set to the kept count. Its call may take
    statistics over the channels (an RMS norm), so it counts as channel-normalising: remove !=
    mask, as for `LayerNormalization`. Any other custom layer with weights (no config entry or
    several equal to `C`, another weight shape) stays an unknown operation: teach it with
    `register_handler`.
    """

    def __init__(self):
        super().__init__(independent_channels=False)

    @staticmethod
    def applies(op):
        weights = getattr(op, "weights", [])
        return (
            is_custom(op)
            and not op._layers
            and bool(weights)
            and all(len(w.shape) == 1 and w.shape == weights[0].shape for w in weights)
            and len(ChannelVectorLayer._width_keys(op, weights[0].shape[0])) == 1
        )

    def channels_last(self, op, tensor):
        return Follower.channels_last(self, op, tensor)

    def trace(self, op, inputs, outputs, graph):
        width = op.weights[0].shape[0]
        shapes = [tuple(t.shape) for t, _ in inputs] + [tuple(t.shape) for t in outputs]
        if len(inputs) != 1 or len(set(shapes)) != 1 or shapes[0][-1] != width:
            reason = f"{op.name!r}: its channel vectors do not match one input and output"
            return self.untraceable(op, inputs, outputs, graph, reason)
        return super().trace(op, inputs, outputs, graph)

    def weight_axes(self, op, in_layouts, out_layouts):
        return {name: [(-1, out_layouts[0])] for name in layer_weights(op)}

    def config(self, op, in_kept, out_kept):
        (key,) = self._width_keys(op, op.weights[0].shape[0])
        return {**layer_config(op), key: int(out_kept[0].size)}

    @staticmethod
    def _width_keys(op, width):
        try:
            config = layer_config(op)
        except NotImplementedError:
            return []
        return [k for k, v in config.items() if type(v) is int and v == width]


class ElementwiseActivation(Follower):
    """`Activation` layers: per-channel unless the function mixes channels (softmax)."""

    def channels_last(self, op, tensor):
        return _is_elementwise(op.activation)


class PReLUFollower(Follower):
    """PReLU: `alpha` has one entry per channel unless the channel axis is shared."""

    def weight_axes(self, op, in_layouts, out_layouts):
        if op.alpha.shape[-1] == 1:
            return {}
        return {"alpha": [(-1, out_layouts[0])]}


class ScalarRescaling(Follower):
    """`Rescaling` by scalars (per-channel scales and offsets are unknown)."""

    def channels_last(self, op, tensor):
        return np.ndim(op.scale) == 0 and np.ndim(op.offset) == 0


class Reshape(Follower):
    """`Reshape` layer or `keras.ops.reshape` that keeps the channel axis last and unchanged
    (e.g. `(C,) -> (1, 1, C)` in squeeze-and-excitation blocks): in row-major order entry `f`
    stays on channel `f % C`. Two more reshapes are attention's (`keras_topo.pruning.head_axis`):
    `(..., H * D) -> (..., H, D)` splits heads off the channels (its input's spaces are
    coarsened into heads; the new last axis, within a head, is never pruned) and
    `(..., H, D) -> (..., H * D)` merges them back. Any other reshape is unknown."""

    def trace(self, op, inputs, outputs, graph):
        tensor, layout = inputs[0]
        in_shape, out_shape = tensor.shape, outputs[0].shape
        heads = graph.heads.get(graph.call.inputs[0])
        if heads is not None and head_axis.head_merge(in_shape, out_shape, heads[0]):
            graph.block([layout], f"channels within an attention head, merged by {op.name!r}")
            return [tuple(Block(b.space, b.inner * in_shape[-1]) for b in heads[1])]
        depth = head_axis.head_split(in_shape, out_shape)
        if depth is not None:
            split = graph.split_heads(layout, depth)
            if split is None:
                reason = f"{op.name!r} splits heads across channel groups"
                return ChannelHandler.untraceable(self, op, inputs, outputs, graph, reason)
            graph.heads[graph.call.outputs[0]] = (len(out_shape) - 2, split)
            graph.untraced.add(id(graph.call))  # coupling="expand" gives it its full input
            _HEAD_SPLITS[op] = True
            within = graph.new_space(depth)
            graph.block([within], "channels within an attention head (heads prune whole)")
            return [within]
        if _target_shape(op)[-1] != tensor.shape[-1]:
            return ChannelHandler.trace(self, op, inputs, outputs, graph)
        return [layout]

    def head_axes(self, op, inputs, outputs, axes, graph):
        """Only a merge of the heads into the channels takes heads (they leave the axis)."""
        in_shape, out_shape = inputs[0][0].shape, outputs[0].shape
        return [None] if head_axis.head_merge(in_shape, out_shape, axes[0]) else None

    def config(self, op, in_kept, out_kept):
        config = layer_config(op)
        config["target_shape"] = self._narrowed(op, config["target_shape"], in_kept, out_kept)
        return config

    def narrowed_call(self, op, args, kwargs, inputs, in_kept, out_kept):
        return np_ops.Reshape(self._narrowed(op, op.newshape, in_kept, out_kept)), args, kwargs

    @staticmethod
    def _narrowed(op, shape, in_kept, out_kept):
        """The target `shape` with the kept channels: `(..., H', D)` for a heads split
        (`H' * D` input channels kept), else `(..., kept output channels)`."""
        if _HEAD_SPLITS.get(op):
            return (*shape[:-2], int(in_kept[0].size) // shape[-1], shape[-1])
        return (*shape[:-1], int(out_kept[0].size))


class AxisFollower(Follower):
    """Raw ops on other axes than the channels: reductions (`mean(x, axis=(1, 2))`),
    `expand_dims`, `squeeze`, `transpose` keeping the last axis last. Unknown when the op's
    axes include the channel axis (or are None: all axes)."""

    def __init__(self, new_axes=False):
        super().__init__(shared_state=False)
        self.new_axes = new_axes  # `expand_dims`: the axes index the output

    def channels_last(self, op, tensor):
        if isinstance(op, np_ops.Transpose):
            rank = len(tensor.shape)
            return op.axes is not None and op.axes[-1] % rank == rank - 1
        if op.axis is None:
            return False
        axes = op.axis if isinstance(op.axis, (list, tuple)) else (op.axis,)
        rank = len(tensor.shape) + (len(axes) if self.new_axes else 0)
        return all(a % rank != rank - 1 for a in axes)

    def head_axes(self, op, inputs, outputs, axes, graph):
        """The heads move with a transpose, shift past inserted or removed axes, and block a
        reduction or squeeze over them."""
        axis, rank = axes[0], len(inputs[0][0].shape)
        if isinstance(op, np_ops.Transpose):
            order = list(range(rank))[::-1] if op.axes is None else [a % rank for a in op.axes]
            moved = order.index(axis)
        elif self.new_axes:
            moved = head_axis.expanded_axis(axis, len(outputs[0].shape), op.axis)
        else:
            moved = head_axis.reduced_axis(axis, rank, op.axis, getattr(op, "keepdims", False))
        return None if moved is None else [moved]


class Split(ChannelHandler):
    """`keras.ops.split`: along the channels, each part is a channel range of the input (the
    groups are cut at the split points, as `Concatenate` joins them); along another axis every
    part keeps the input's channels."""

    shared_state = False

    def trace(self, op, inputs, outputs, graph):
        tensor, layout = inputs[0]
        if not _on_last_axis(op.axis, tensor):
            return [layout] * len(outputs)
        bounds = _split_bounds(op.indices_or_sections, tensor.shape[-1])
        parts = [graph.channel_range(layout, a, b) for a, b in itertools.pairwise(bounds)]
        if any(part is None for part in parts):
            reason = f"{op.name!r} splits inside the channels of a depthwise conv's input"
            return self.untraceable(op, inputs, outputs, graph, reason)
        return parts

    def narrowed_call(self, op, args, kwargs, inputs, in_kept, out_kept):
        if not _on_last_axis(op.axis, inputs[0]):
            return op, args, kwargs
        indices = np.cumsum([kept.size for kept in out_kept])[:-1]
        return np_ops.Split([int(i) for i in indices], axis=op.axis), args, kwargs


class GetItem(ChannelHandler):
    """`x[key]` (`keras.ops` `GetItem`): a key that leaves the channel axis alone follows its
    input; a step-1 slice of the channel axis is a channel range (its bounds are moved to the
    kept channels). Integer, array or `None` indices on the channels are unknown."""

    shared_state = False

    def trace(self, op, inputs, outputs, graph):
        tensor, layout = inputs[0]
        found = _channel_index(_getitem_key(graph.call.args, graph.call.kwargs), tensor)
        if found is None:
            reason = f"{op.name!r} indexes the channel axis other than by a step-1 slice"
            return self.untraceable(op, inputs, outputs, graph, reason)
        position, start, stop = found
        if position is None:
            return [layout]
        part = graph.channel_range(layout, start, stop)
        if part is None:
            reason = f"{op.name!r} slices inside the channels of a depthwise conv's input"
            return self.untraceable(op, inputs, outputs, graph, reason)
        return [part]

    def narrowed_call(self, op, args, kwargs, inputs, in_kept, out_kept):
        key = _getitem_key(args, kwargs)
        position, start, stop = _channel_index(key, inputs[0])
        if position is None:
            return op, args, kwargs
        kept = in_kept[0]
        key = list(key)
        key[position] = slice(*(int(i) for i in np.searchsorted(kept, [start, stop])))
        return op, (args[0], tuple(key)), {}


class Flatten(ChannelHandler):
    """`Flatten` of `(B, ..., C)` with static positions: entry `p * C + c`."""

    shared_state = False

    def trace(self, op, inputs, outputs, graph):
        tensor, layout = inputs[0]
        spatial = tensor.shape[1:-1]
        if op.data_format != "channels_last" or any(d is None for d in spatial):
            return super().trace(op, inputs, outputs, graph)
        return [layout * int(np.prod(spatial))]


class Producer(ChannelHandler):
    """Layers that make a new channel space from all their input channels: `Dense`, `Conv*`
    (groups=1), `Conv*Transpose`. Kernels hold inputs on axis `in_axis`, outputs on
    `out_axis`; the bias follows the outputs. A non-elementwise activation (softmax) makes the
    output space unprunable."""

    def __init__(self, count_key, in_axis=-2, out_axis=-1):
        self.count_key = count_key
        self.in_axis = in_axis
        self.out_axis = out_axis

    def trace(self, op, inputs, outputs, graph):
        if getattr(op, "data_format", "channels_last") != "channels_last":
            return super().trace(op, inputs, outputs, graph)
        layout = graph.output_space(op, outputs[0].shape[-1])
        if not _is_elementwise(getattr(op, "activation", None)):
            graph.block([layout], f"{op.name!r} has a channel-mixing activation")
        return [layout]

    def weight_axes(self, op, in_layouts, out_layouts):
        axes = {"kernel": [(self.in_axis, in_layouts[0]), (self.out_axis, out_layouts[0])]}
        if getattr(op, "use_bias", False):
            axes["bias"] = [(-1, out_layouts[0])]
        return axes

    def config(self, op, in_kept, out_kept):
        if is_topographic(op):
            return op.narrowed_config(out_kept[0])
        config = layer_config(op)
        config[self.count_key] = int(out_kept[0].size)
        return config

    def fold_inputs(self, op, config, weights, kept, constants):
        """A `kernel` with inputs on axis -2 (`Dense`, `Conv*` with groups=1): removed rows
        folded into the bias, or into an appended all-ones input channel for a zero-padded
        conv (`channel_fold`)."""
        if (
            self.in_axis != -2
            or "kernel" not in weights
            or getattr(op, "groups", 1) != 1
            or not _is_elementwise(getattr(op, "activation", None))
        ):
            return None
        kernel = weights["kernel"]
        bias = weights.get("bias", np.zeros(kernel.shape[-1], kernel.dtype))
        with_bias = "bias" in weights or "use_bias" in config  # else: the all-ones channel
        kernel, bias, ones_kernel = fold_removed_inputs(
            kernel, bias, kept, constants, with_bias and bias_fold_is_exact(op)
        )
        if ones_kernel is not None:
            kernel = np.concatenate([kernel, ones_kernel], axis=-2)
        if "use_bias" in config:
            config = dict(config, use_bias=bool(config["use_bias"] or np.any(bias != 0)))
        return config, dict(weights, kernel=kernel, bias=bias), ones_kernel is not None


class Conv(Producer):
    """`Conv1D/2D/3D`: groups=1 is a producer; `groups == input channels` (depthwise as a
    grouped conv, ConvNeXt) follows its input like `DepthwiseConv`; other grouped convs are
    not pruned (their channel groups would have to shrink evenly)."""

    def __init__(self):
        super().__init__("filters")

    def trace(self, op, inputs, outputs, graph):
        tensor, layout = inputs[0]
        if op.groups == 1:
            return super().trace(op, inputs, outputs, graph)
        if not _is_depthwise(op) or op.data_format != "channels_last":
            graph.block([layout], f"grouped conv {op.name!r} (groups={op.groups})")
            return [None]
        multiplier = op.filters // tensor.shape[-1]
        return [tuple(Block(b.space, b.inner * multiplier) for b in layout)]

    def weight_axes(self, op, in_layouts, out_layouts):
        if op.groups == 1:
            return super().weight_axes(op, in_layouts, out_layouts)
        if not _is_depthwise(op):
            return {}
        axes = {"kernel": [(-1, out_layouts[0])]}
        if op.use_bias:
            axes["bias"] = [(-1, out_layouts[0])]
        return axes

    def config(self, op, in_kept, out_kept):
        config = super().config(op, in_kept, out_kept)
        if _is_depthwise(op):
            config["groups"] = int(in_kept[0].size)
        return config


class DepthwiseConv(ChannelHandler):
    """`DepthwiseConv1D/2D`: output channel `c * depth_multiplier + k` reads input channel `c`."""

    def trace(self, op, inputs, outputs, graph):
        if op.data_format != "channels_last":
            return super().trace(op, inputs, outputs, graph)
        m = op.depth_multiplier
        return [tuple(Block(b.space, b.inner * m) for b in inputs[0][1])]

    def weight_axes(self, op, in_layouts, out_layouts):
        axes = {"kernel": [(-2, in_layouts[0])]}
        if op.use_bias:
            axes["bias"] = [(-1, out_layouts[0])]
        return axes


class SeparableConv(Producer):
    """`SeparableConv1D/2D`: a depthwise part on the inputs, a pointwise producer after it."""

    def __init__(self):
        super().__init__("filters")

    def weight_axes(self, op, in_layouts, out_layouts):
        m = op.depth_multiplier
        expanded = tuple(Block(b.space, b.inner * m) for b in in_layouts[0])
        axes = {
            "depthwise_kernel": [(-2, in_layouts[0])],
            "pointwise_kernel": [(-2, expanded), (-1, out_layouts[0])],
        }
        if op.use_bias:
            axes["bias"] = [(-1, out_layouts[0])]
        return axes


class Elementwise(ChannelHandler):
    """Element-wise operations of one or more tensors (`Add`, `Multiply`, `x + 3.0`, ReLU ops):
    the full-width inputs share their channels, so their spaces become one group; inputs of
    width 1 broadcast (squeeze-and-excitation scales `(B, 1, 1, C) * (B, H, W, C)` are full
    width and couple). A constant argument with one entry per channel (`x * scale`, `scale`
    of shape `(..., C)`) follows the channels (sliced in a raw op's narrowed call); a constant
    of another width is unknown."""

    shared_state = False

    def trace(self, op, inputs, outputs, graph):
        width = outputs[0].shape[-1]
        full = [layout for tensor, layout in inputs if tensor.shape[-1] == width]
        constants = [a for a in graph.arguments if np.ndim(a) and np.shape(a)[-1] not in (1, width)]
        if constants or not full or width is None:
            return super().trace(op, inputs, outputs, graph)
        return [graph.merge(full, op.name)] * len(outputs)

    def head_axes(self, op, inputs, outputs, axes, graph):
        """The heads of all inputs line up under broadcasting (`attention * scale`); a
        constant argument must not vary along them."""
        shapes, axes = _operands(inputs, axes, graph)
        axis = head_axis.broadcast_axis(shapes, axes, len(outputs[0].shape))
        return None if axis is None else [axis] * len(outputs)

    def narrowed_call(self, op, args, kwargs, inputs, in_kept, out_kept):
        def narrow(value):
            if isinstance(value, keras.KerasTensor) or not np.ndim(value):
                return value
            return np.take(value, out_kept[0], axis=-1) if np.shape(value)[-1] > 1 else value

        return op, *keras.tree.map_structure(narrow, (args, kwargs))


class Matmul(ChannelHandler):
    """`keras.ops.matmul` (`q @ k`): channels unknown (the last axis of `a` is contracted with
    `b`'s rows), but attention heads on a batch axis of both inputs are coupled and stay
    (`keras_topo.pruning.head_axis`)."""

    shared_state = False

    def head_axes(self, op, inputs, outputs, axes, graph):
        """A constant operand (`x @ w`) must not vary along the heads either."""
        shapes, axes = _operands(inputs, axes, graph)
        axis = head_axis.broadcast_axis(shapes, axes, len(outputs[0].shape), batch_only=True)
        return None if axis is None else [axis]


class Softmax(Follower):
    """`Softmax` layer or `keras.ops.softmax` / `log_softmax`: normalises along its axis, so
    unknown on the channels when that is the last axis (it usually is: attention's keys) and a
    follower otherwise; attention heads stay unless it normalises over them."""

    def __init__(self):
        super().__init__(shared_state=False)

    def channels_last(self, op, tensor):
        return all(a % len(tensor.shape) != len(tensor.shape) - 1 for a in self._axes(op))

    def head_axes(self, op, inputs, outputs, axes, graph):
        rank = len(inputs[0][0].shape)
        return None if axes[0] in {a % rank for a in self._axes(op)} else [axes[0]]

    @staticmethod
    def _axes(op):
        return op.axis if isinstance(op.axis, (list, tuple)) else (op.axis,)


class Concatenate(ChannelHandler):
    """Concatenation on the channel axis: the inputs' layouts one after the other."""

    shared_state = False

    def trace(self, op, inputs, outputs, graph):
        rank = len(outputs[0].shape)
        if op.axis % rank != rank - 1:
            return super().trace(op, inputs, outputs, graph)
        return [sum((layout for _, layout in inputs), ())]


_REGISTRY = {}
_HEAD_SPLITS = weakref.WeakKeyDictionary()  # reshapes traced as heads splits -> True

# keras-hub's stochastic depth layers, by class path (keras-topo never imports keras-hub):
# their `call` branches on `training` in Python, so tracing leaves them opaque; each scales
# whole samples (identity at inference), so output channel j is input channel j.
KERAS_HUB_FOLLOWERS = frozenset(
    {
        "keras_hub.src.models.mit.mit_layers.DropPath",
        "keras_hub.src.models.swin_transformer.swin_transformer_layers.DropPath",
        "keras_hub.src.models.mobilenetv5.mobilenetv5_layers.DropPath",
        "keras_hub.src.models.dinov2.dinov2_layers.DINOV2DropPath",
        "keras_hub.src.models.dinov3.dinov3_layers.DINOV3DropPath",
    }
)
_WEIGHTLESS_FOLLOWER = Follower(pointwise=True)


def register_handler(cls, handler):
    """Teaches the pruner an operation class (exact class, subclasses included).

    Args:
        cls: a `keras.layers.Layer` (or `keras.Operation`) subclass.
        handler: a `ChannelHandler`, e.g. `Follower(weights=("scale",))` for a per-channel
            layer with a `scale` variable of shape `(C,)`, `Elementwise()` for a merge,
            `Producer("units")` for a dense-like layer with `kernel` `(C_in, units)`.
    """
    if not (isinstance(cls, type) and issubclass(cls, keras.Operation)):
        raise ValueError(f"cls must be a keras.Operation subclass, got {cls!r}.")
    if not isinstance(handler, ChannelHandler):
        raise ValueError(
            f"handler must be a keras_topo.pruning.ChannelHandler, got {type(handler).__name__}."
        )
    _REGISTRY[cls] = handler


def get_handler(op):
    """The handler of `op`'s class (nearest registered base class; keras-hub's stochastic
    depth layers, `KERAS_HUB_FOLLOWERS`), or the unknown handler."""
    for cls in type(op).__mro__:
        if cls in _REGISTRY:
            return _REGISTRY[cls]
    if f"{type(op).__module__}.{type(op).__qualname__}" in KERAS_HUB_FOLLOWERS:
        return _WEIGHTLESS_FOLLOWER
    if ChannelVectorLayer.applies(op):
        return _CHANNEL_VECTOR
    return ChannelHandler()


def _operands(inputs, axes, graph):
    """`(shapes, heads axes)` of a call's tensor inputs, then of its array constants (no
    heads), for `head_axis.broadcast_axis`."""
    shapes = [tuple(tensor.shape) for tensor, _ in inputs]
    constants = [np.shape(a) for a in graph.arguments if np.ndim(a)]
    return shapes + constants, list(axes) + [None] * len(constants)


def _target_shape(op):
    """The target shape of a `Reshape` layer (no batch axis) or `keras.ops` Reshape op."""
    return tuple(op.target_shape if isinstance(op, keras.layers.Layer) else op.newshape)


def _on_last_axis(axis, tensor):
    rank = len(tensor.shape)
    return axis % rank == rank - 1


def _split_bounds(indices_or_sections, width):
    """`[0, ..., width]`: the channel bounds of `split`'s parts."""
    if isinstance(indices_or_sections, int):
        step = width // indices_or_sections
        return [i * step for i in range(indices_or_sections + 1)]
    return [0, *indices_or_sections, width]


def _getitem_key(args, kwargs):
    return args[1] if len(args) > 1 else kwargs["key"]


def _channel_index(key, tensor):
    """Where `x[key]` indexes the channel axis of `tensor`: `(None, 0, C)` when it does not,
    `(position in the key tuple, start, stop)` for a step-1 slice, None for anything else."""
    key = tuple(key) if isinstance(key, (tuple, list)) else (key,)
    rank, width = len(tensor.shape), tensor.shape[-1]
    if any(k is None or not isinstance(k, (int, slice, type(Ellipsis))) for k in key):
        return None
    if Ellipsis in key:
        after = len(key) - 1 - key.index(Ellipsis)
        position = len(key) - 1 if after else None
    else:
        position = rank - 1 if len(key) == rank else None
    if position is None:
        return None, 0, width
    entry = key[position]
    if not isinstance(entry, slice) or entry.step not in (None, 1):
        return None
    start, stop, _ = entry.indices(width)
    return position, start, stop


def _is_depthwise(conv):
    """A grouped conv with one input channel per group."""
    return conv.groups > 1 and conv.kernel.shape[-2] == 1


def layer_weights(op):
    """`{name: variable}` of `op`'s weights, named as `weight_axes` names them: by the variable's
    name, or, when sublayers hold variables of the same name (attention's `query/kernel` and
    `key/kernel`), by the last two parts of its path."""
    weights = getattr(op, "weights", [])  # raw ops have none
    names = [v.name for v in weights]
    if len(set(names)) < len(names):
        names = ["/".join(v.path.split("/")[-2:]) for v in weights]
    return dict(zip(names, weights, strict=True))


def _is_elementwise(activation):
    return getattr(activation, "__name__", "") not in ("softmax", "log_softmax")


_L = keras.layers
_STATELESS = Follower(shared_state=False)
_POINTWISE = Follower(shared_state=False, pointwise=True)
_CHANNEL_VECTOR = ChannelVectorLayer()
for _cls in (
    _L.ReLU, _L.LeakyReLU, _L.ELU, _L.Dropout, _L.GaussianNoise, _L.GaussianDropout,
    _L.AlphaDropout, _L.Identity, _L.ActivityRegularization, StochasticDepth,
):  # fmt: skip
    register_handler(_cls, _POINTWISE)
for _cls in (
    _L.SpatialDropout1D, _L.SpatialDropout2D, _L.SpatialDropout3D, _L.MaxPooling1D,
    _L.MaxPooling2D, _L.MaxPooling3D, _L.AveragePooling1D, _L.AveragePooling2D,
    _L.AveragePooling3D, _L.GlobalAveragePooling1D, _L.GlobalAveragePooling2D,
    _L.GlobalAveragePooling3D, _L.GlobalMaxPooling1D, _L.GlobalMaxPooling2D,
    _L.GlobalMaxPooling3D, _L.UpSampling1D, _L.UpSampling2D, _L.UpSampling3D,
    _L.ZeroPadding1D, _L.ZeroPadding2D, _L.ZeroPadding3D, _L.Cropping1D, _L.Cropping2D,
    _L.Cropping3D, np_ops.Pad,
):  # fmt: skip
    register_handler(_cls, _STATELESS)
for _cls in (_L.Softmax, nn_ops.Softmax, nn_ops.LogSoftmax):
    register_handler(_cls, Softmax())
register_handler(np_ops.Matmul, Matmul())
register_handler(_L.Rescaling, ScalarRescaling(shared_state=False, pointwise=True))
register_handler(_L.Activation, ElementwiseActivation(shared_state=False, pointwise=True))
register_handler(_L.PReLU, PReLUFollower(weights=("alpha",)))
_BN_WEIGHTS = ("gamma", "beta", "moving_mean", "moving_variance")
register_handler(_L.BatchNormalization, NormalizationFollower(weights=_BN_WEIGHTS))
register_handler(
    _L.LayerNormalization,
    NormalizationFollower(weights=("gamma", "beta"), independent_channels=False, pointwise=True),
)
register_handler(LayerScale, Follower(weights=("gamma",), config_key="projection_dim"))
register_handler(_L.Reshape, Reshape(shared_state=True))
register_handler(np_ops.Reshape, Reshape(shared_state=False))
for _cls in (np_ops.Mean, np_ops.Max, np_ops.Min, np_ops.Sum, np_ops.Squeeze, np_ops.Transpose):
    register_handler(_cls, AxisFollower())
register_handler(np_ops.ExpandDims, AxisFollower(new_axes=True))
register_handler(np_ops.Split, Split())
register_handler(np_ops.GetItem, GetItem())
register_handler(_L.Flatten, Flatten())
register_handler(_L.Dense, Producer("units"))
for _cls in (_L.Conv1D, _L.Conv2D, _L.Conv3D):
    register_handler(_cls, Conv())
for _cls in (_L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose):
    register_handler(_cls, Producer("filters", in_axis=-1, out_axis=-2))
for _cls in (_L.DepthwiseConv1D, _L.DepthwiseConv2D):
    register_handler(_cls, DepthwiseConv())
for _cls in (_L.SeparableConv1D, _L.SeparableConv2D):
    register_handler(_cls, SeparableConv())
for _cls in (
    _L.Add, _L.Subtract, _L.Multiply, _L.Average, _L.Maximum, _L.Minimum, CustomScaleLayer,
    np_ops.Add, np_ops.Subtract, np_ops.Multiply, np_ops.Divide, np_ops.TrueDivide,
    np_ops.Maximum, np_ops.Minimum, np_ops.Negative, np_ops.Abs, np_ops.Square, np_ops.Sqrt,
    np_ops.Exp, np_ops.Tanh, np_ops.Clip, nn_ops.Relu, nn_ops.Relu6, nn_ops.Sigmoid,
    nn_ops.HardSigmoid, nn_ops.HardSilu, nn_ops.Silu, nn_ops.Gelu, nn_ops.Elu, nn_ops.Selu,
    nn_ops.LeakyRelu, nn_ops.Softplus,
):  # fmt: skip
    register_handler(_cls, Elementwise())
register_handler(_L.Concatenate, Concatenate())
register_handler(np_ops.Concatenate, Concatenate())
