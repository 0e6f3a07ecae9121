"""coupling="expand": rebuild the inlined graph with only the selected producers' filters gone.

The paper's per-layer pruning, on the `ChannelGraph` and handler registry of coupling="group".
A selected producer (conv, dense: a `Producer` handler) loses its pruned filters; in the masked
model a pruned filter outputs `activation(0)`, a constant channel. Every rebuilt tensor carries
a `ChannelState`: which channels of the masked model's tensor it still holds, and the uniform
constant of every removed one. Each call of the graph becomes:

- a producer reading removed channels: its kernel rows dropped and their constants folded
  exactly (`handler.fold_inputs`: into the bias, or an all-ones input channel for a zero-padded
  conv; see `channel_fold`); a producer that cannot fold them reads its full input;
- any other call the handlers trace (per-channel layers, merges, concatenations, flatten,
  reshapes, splits, slices, raw ops, custom layers with a handler, in 1D, 2D or 3D): narrowed
  as its handler narrows it for coupling="group", on the channels its inputs keep. A channel
  kept by any input is kept (`graph.layouts` say which channels an op couples); an input that
  lacks it gets its constant back (`ExpandChannels`), so a pruned branch of a residual sum stays
  exact. The removed outputs' constants come from the original layer applied to a constant
  probe. Where they are not uniform over space (zero padding or a "same" depthwise conv of a
  non-zero constant), a weightless call stays narrow as long as the calls after it make them
  uniform again (ResNet's stem: zero padding, then a max pool of ReLU constants >= 0);
  otherwise the call reads its full inputs;
- an untraced call (unknown layer, channels_first, attention), and the model outputs: the full
  tensor is rebuilt with `ExpandChannels` (kept channels scattered back, removed ones at their
  constants), so the layer is unchanged and the function stays exact.

So `mode="remove"` computes what `mode="mask"` does (the same graph replayed, every layer
copied, the selected producers' pruned output entries set to zero, as `torch.nn.utils.prune`
in the paper's code). A selected producer that cannot be narrowed (a channel-mixing
activation, an untraced call) is masked in both modes.
Copies keep their layers' names, or their paths where names collide (as coupling="group").
"""

import keras
import numpy as np
from keras import ops

from keras_topo.call_graph import TensorKey
from keras_topo.layer_copy import UniqueNames, from_config_zero_init, restore_initializers
from keras_topo.pruning.expand_channels import ExpandChannels
from keras_topo.pruning.handlers import Block, get_handler, layer_weights

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


class Pending:
    """A narrowed tensor whose removed channels are not uniform (yet): the state `start` went
    through `calls` (weightless, single input) to give it."""

    def __init__(self, start, calls, kept):
        self.start, self.calls, self.kept = start, calls, kept


def rebuild_expand(graph, kept_by_layer, mode):
    """A new functional model from `graph` (a `ChannelGraph`) with the listed producers pruned.

    Args:
        graph: the model's `ChannelGraph`.
        kept_by_layer: dict producer name (`graph.name_of`: its path where names collide) ->
            sorted indices of its filters that stay.
        mode: "remove" (filters gone, the function kept exactly) or "mask" (filters zeroed).

    Returns:
        A new flat `keras.Model`; "remove" and "mask" compute the same outputs (inference mode).
    """
    return _ExpandRebuilder(graph, kept_by_layer, mode).run()


def filter_kernel(op):
    """`op`'s kernel with its output channels (filters) on the last axis (the variable its
    handler indexes by both input and output channels: a conv's or dense layer's `kernel`, a
    separable conv's `pointwise_kernel`)."""
    inputs, outputs = (Block(0),), (Block(1),)
    axes = get_handler(op).weight_axes(op, [inputs], [outputs])
    for name, entries in axes.items():
        layouts = [layout for _, layout in entries]
        if inputs in layouts and outputs in layouts:
            axis = entries[layouts.index(outputs)][0]
            return np.moveaxis(ops.convert_to_numpy(layer_weights(op)[name]), axis, -1)
    raise ValueError(f"Layer {op.name!r} has no kernel indexed by its filters to score.")


class _ExpandRebuilder:
    def __init__(self, graph, kept_by_layer, mode):
        self.graph = graph
        self.kept_by_layer = {k: np.asarray(v, dtype="int64") for k, v in kept_by_layer.items()}
        self.narrow = mode == "remove"
        self.states = {}  # id(rebuilt tensor) -> ChannelState, only for narrowed tensors
        self.pending = {}  # id(rebuilt tensor) -> Pending
        self.copies = {}  # id(original layer) -> (copy, config, weights), shared by its calls
        self.expanded = {}  # cache of ExpandChannels outputs and materialised pending chains
        self.unique = UniqueNames(graph.unique_names())

    def run(self):
        model, _ = self.graph.replay(self.call, self.unique)
        outputs = keras.tree.map_structure(self.materialize, model.output)
        return keras.Model(model.input, outputs, name=model.name)

    def call(self, call, args, kwargs):
        """`InlinedGraph.replay`'s call_fn: the rebuilt call."""
        kept_out = None  # the kept filters of a selected producer
        name = self.graph.name_of(call.op)
        if name in self.kept_by_layer and (id(call.op), 0) in self.graph.op_spaces:
            kept_out = self.kept_by_layer[name]
        if not self.narrow:
            return self.masked(call, args, kwargs, kept_out)
        tensors = _tensors(args, kwargs)
        if any(id(t) in self.pending for t in tensors):
            outputs = self.extend_pending(call, args, kwargs, tensors)
            if outputs is not None:
                return outputs
            args, kwargs = self.materialize((args, kwargs), pending_only=True)
            tensors = _tensors(args, kwargs)
        if not self.traced(call):
            return self.masked(call, *self.materialize((args, kwargs)), kept_out)
        if (id(call.op), 0) in self.graph.op_spaces:
            return self.producer(call, args, kwargs, kept_out)
        if any(id(t) in self.states for t in tensors):
            outputs = self.follow(call, args, kwargs)
            if outputs is not None:
                return outputs
        return self.masked(call, *self.materialize((args, kwargs)), None)

    def traced(self, call):
        """Whether the handlers follow `call`'s channels one by one (attention heads and
        statistics over the channels, as layer normalisation's, do not count)."""
        return (
            id(call) not in self.graph.untraced
            and not self.graph.inner_layouts(call.op)
            and get_handler(call.op).independent_channels
        )

    # --- calls ------------------------------------------------------------------------------

    def masked(self, call, args, kwargs, kept_out):
        """`call`'s op copied with its weights on `args`; a selected producer's pruned output
        entries zeroed (mode="mask", or a producer that cannot be narrowed)."""
        op = call.op
        if not isinstance(op, keras.layers.Layer):
            return op(*args, **kwargs)
        weights = _numpy_weights(op)
        if kept_out is not None:
            widths = self.widths(call)
            slices = _weight_slices(op, [np.arange(w) for w in widths[0]], [kept_out], widths)
            weights = {
                name: _zero_outside(value, slices.get(name, ())) for name, value in weights.items()
            }
        return self.apply(op, op.get_config(), args, kwargs, weights)

    def producer(self, call, args, kwargs, kept_out):
        """A conv or dense layer: removed inputs folded, pruned filters dropped."""
        op, handler = call.op, get_handler(call.op)
        (x,) = _tensors(args, kwargs)
        widths = self.widths(call)
        activation = getattr(op, "activation", None)
        if kept_out is not None and not _is_elementwise(activation):
            return self.masked(call, *self.materialize((args, kwargs)), kept_out)
        out_kept = np.arange(widths[1][0]) if kept_out is None else kept_out
        in_kept = [np.arange(w) for w in widths[0]]
        config = op.get_config() if kept_out is None else handler.config(op, in_kept, [out_kept])
        slices = _weight_slices(op, in_kept, [out_kept], widths)
        weights = {n: _take(v, slices.get(n, ())) for n, v in _numpy_weights(op).items()}
        state = self.state_of(x)
        folded = None
        if state.kept.size < state.size:
            folded = handler.fold_inputs(op, config, weights, state.kept, state.constants)
        if folded is None:
            x = self.materialize(x)
        else:
            config, weights, append_ones = folded
            x = self.with_ones(state.tensor) if append_ones else state.tensor
        outputs = self.apply(op, config, *_replace(args, kwargs, [x]), weights)
        if out_kept.size < widths[1][0]:
            constant = 0.0 if activation is None else activation(ops.zeros((1,)))
            constant = float(ops.convert_to_numpy(constant).ravel()[0])
            self.register(keras.tree.flatten(outputs)[0], out_kept, np.full(widths[1][0], constant))
        return outputs

    def follow(self, call, args, kwargs):
        """A traced call that makes no channels, on narrowed inputs; None: give it full ones."""
        op, handler = call.op, get_handler(call.op)
        tensors = _tensors(args, kwargs)
        states = [self.state_of(t) for t in tensors]
        kept_by_space = {}
        for key, state in zip(call.inputs, states, strict=True):
            self.space_kept(self.graph.layouts[key], state.kept, kept_by_space)
        in_kept = [self.graph.kept(self.graph.layouts[k], kept_by_space) for k in call.inputs]
        out_kept = [self.graph.kept(self.graph.layouts[k], kept_by_space) for k in call.outputs]
        widths = self.widths(call)
        if all(k.size == w for k, w in zip(out_kept, widths[1], strict=True)):
            return None
        constants = self.probe([call], states, out_kept)
        if constants is None and not self.may_pend(call, states):
            return None
        aligned = [self.expand(s, k, op.name) for s, k in zip(states, in_kept, strict=True)]
        args, kwargs = _replace(args, kwargs, aligned)
        if isinstance(op, keras.layers.Layer):
            slices = _weight_slices(op, in_kept, out_kept, widths)
            weights = {
                name: _take(v, slices.get(name, ())) for name, v in _numpy_weights(op).items()
            }
            config = handler.config(op, in_kept, out_kept)
            outputs = self.apply(op, config, args, kwargs, weights)
        else:
            inputs = [self.graph.shapes[k] for k in call.inputs]
            new_op, args, kwargs = handler.narrowed_call(
                op, args, kwargs, inputs, in_kept, out_kept
            )
            outputs = new_op(*args, **kwargs)
        flat = keras.tree.flatten(outputs)
        if constants is None:
            self.pending[id(flat[0])] = Pending(states[0], [call], out_kept[0])
            return outputs
        for tensor, kept, values in zip(flat, out_kept, constants, strict=True):
            self.register(tensor, kept, values)
        return outputs

    def may_pend(self, call, states):
        """Whether `call` may stay narrow with non-uniform removed channels: weightless, one
        input and output, its config unchanged by narrowing (zero padding, pooling)."""
        op = call.op
        return (
            len(states) == 1
            and len(call.outputs) == 1
            and not getattr(op, "weights", ())
            and (
                not isinstance(op, keras.layers.Layer)
                or get_handler(op).config(op, [states[0].kept], [states[0].kept]) == op.get_config()
            )
        )

    def extend_pending(self, call, args, kwargs, tensors):
        """A call reading a pending tensor: narrowed again if it makes the removed channels
        uniform, or pending still; None: the call needs the full tensor."""
        if len(tensors) != 1 or not self.traced(call) or (id(call.op), 0) in self.graph.op_spaces:
            return None
        pending = self.pending[id(tensors[0])]
        widths = self.widths(call)
        if widths[0] != widths[1] or not self.may_pend(call, [pending.start]):
            return None
        calls = [*pending.calls, call]
        constants = self.probe(calls, [pending.start], [pending.kept])
        outputs = self.apply_call(call, args, kwargs)
        (tensor,) = keras.tree.flatten(outputs)
        if constants is None:
            self.pending[id(tensor)] = Pending(pending.start, calls, pending.kept)
        else:
            self.register(tensor, pending.kept, constants[0])
        return outputs

    def apply_call(self, call, args, kwargs):
        """A weightless call unchanged (a copy of its layer, or the raw op)."""
        if isinstance(call.op, keras.layers.Layer):
            return self.apply(call.op, call.op.get_config(), args, kwargs)
        return call.op(*args, **kwargs)

    # --- channel bookkeeping ----------------------------------------------------------------

    def space_kept(self, layout, kept, kept_by_space):
        """Adds the channels of each space of `layout` that a tensor keeping `kept` holds."""
        offset = 0
        for block in self.graph.resolve(layout):
            space = self.graph.find(block.space)
            width = self.graph.sizes[space] * block.inner
            inside = kept[(kept >= offset) & (kept < offset + width)]
            channels = (inside - offset) // block.inner
            previous = kept_by_space.get(space, np.zeros(0, "int64"))
            kept_by_space[space] = np.union1d(previous, channels).astype("int64")
            offset += width

    def widths(self, call):
        """`(input widths, output widths)` of `call` in the original model."""
        return tuple(
            [self.graph.shapes[k].shape[-1] for k in keys] for keys in (call.inputs, call.outputs)
        )

    def probe(self, calls, states, out_kept):
        """Per output of `calls[-1]` (applied in turn, single-input after the first), the
        masked model's constants, from a constant probe; None where a removed output is not
        uniform over space."""
        probes = [
            _probe(s, self.graph.shapes[k].shape)
            for s, k in zip(states, calls[0].inputs, strict=False)
        ]
        for call in calls:
            probes = keras.tree.flatten(_call_on(call, probes))
        constants = []
        for output, kept in zip(probes, out_kept, strict=True):
            output = ops.convert_to_numpy(output).astype("float64")
            output = output.reshape(-1, output.shape[-1])
            values = output[:, np.setdiff1d(np.arange(output.shape[1]), kept)]
            if not np.allclose(values, values[:1], rtol=1e-6, atol=1e-6):
                return None
            constants.append(output[0])
        return constants

    def state_of(self, tensor):
        if id(tensor) in self.states:
            return self.states[id(tensor)]
        size = tensor.shape[-1]
        return ChannelState(tensor, np.arange(size), np.zeros(size))

    def register(self, tensor, kept, constants):
        if len(kept) < len(constants):
            self.states[id(tensor)] = ChannelState(tensor, kept, constants)

    def materialize(self, structure, pending_only=False):
        """`structure` with every narrowed (unless `pending_only`) or pending tensor replaced by
        the full masked-model tensor (kept channels scattered back between the constants)."""

        def full(tensor):
            if not isinstance(tensor, keras.KerasTensor):
                return tensor
            if id(tensor) in self.pending:
                key = ("pending", id(tensor))
                if key not in self.expanded:
                    pending = self.pending[id(tensor)]
                    x = self.materialize(pending.start.tensor)
                    for call in pending.calls:
                        (x,) = keras.tree.flatten(
                            self.apply_call(call, *_replace(call.args, call.kwargs, [x]))
                        )
                    self.expanded[key] = x
                return self.expanded[key]
            if pending_only or id(tensor) not in self.states:
                return tensor
            state = self.states[id(tensor)]
            return self.expand(state, np.arange(state.size), "full")

        return keras.tree.map_structure(full, structure)

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
        """The outputs of a new layer of `layer`'s class from `config` (under a name unique in
        the model) called on `args`, with `weights` (`{name: array}`, `layer_weights` names;
        default: `layer`'s). One copy serves all calls of a shared layer; calls that would
        need different copies (inputs pruned differently) raise a ValueError."""
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
            return new(*args, **kwargs)
        new = from_config_zero_init(layer.__class__, dict(config, name=self.unique.of(layer)))
        outputs = new(*args, **kwargs)
        restore_initializers(new, config)
        for name, variable in layer_weights(new).items():
            variable.assign(weights[name].astype(variable.dtype))
        self.copies[id(layer)] = (new, config, weights)
        return outputs


def _tensors(args, kwargs):
    """The KerasTensors of a call's arguments, in `Call.inputs` order."""
    return [
        t
        for t in keras.tree.flatten((args, kwargs))
        if isinstance(t, (keras.KerasTensor, TensorKey))
    ]


def _replace(args, kwargs, tensors):
    """`(args, kwargs)` with their tensors (KerasTensors or TensorKeys) replaced in order."""
    flat = keras.tree.flatten((args, kwargs))
    values = iter(tensors)
    flat = [next(values) if isinstance(a, (keras.KerasTensor, TensorKey)) else a for a in flat]
    return keras.tree.pack_sequence_as((args, kwargs), flat)


def _call_on(call, tensors):
    """The original op of `call` run eagerly on `tensors` (inference mode)."""
    args, kwargs = _replace(call.args, call.kwargs, tensors)
    if isinstance(call.op, keras.layers.Layer):
        kwargs = dict(kwargs, training=False)
    return call.op(*args, **kwargs)


def _weight_slices(op, in_kept, out_kept, widths):
    """`{variable name: [(axis, kept indices)]}` from `op`'s handler's `weight_axes`, each
    tensor of the call standing for its own channels: input `i` keeps `in_kept[i]`, output `j`
    keeps `out_kept[j]` (`widths`: the call's input and output widths)."""
    kept_of, size_of = {}, {}
    for space, (kept, width) in enumerate(
        zip([*in_kept, *out_kept], [*widths[0], *widths[1]], strict=True)
    ):
        kept_of[space], size_of[space] = np.asarray(kept, "int64"), width
    layouts = [(Block(space),) for space in kept_of]
    n_in = len(in_kept)
    axes = get_handler(op).weight_axes(op, layouts[:n_in], layouts[n_in:])
    slices = {}
    for name, entries in axes.items():
        for axis, layout in entries:
            parts, offset = [], 0
            for block in layout:
                kept = kept_of[block.space]
                inner = np.arange(block.inner)
                parts.append(offset + (kept[:, None] * block.inner + inner).ravel())
                offset += size_of[block.space] * block.inner
            slices.setdefault(name, []).append((axis, np.concatenate(parts)))
    return slices


def _take(value, slices):
    """`value` narrowed to the kept indices of each `(axis, kept)` (sorted, unique)."""
    for axis, kept in slices:
        if kept.size < value.shape[axis]:
            value = np.take(value, kept, axis=axis)
    return value


def _zero_outside(value, slices):
    """`value` with the entries outside each `(axis, kept)` set to zero."""
    for axis, kept in slices:
        keep = np.zeros(value.shape[axis], bool)
        keep[kept] = True
        shape = [1] * value.ndim
        shape[axis] = -1
        value = np.where(keep.reshape(shape), value, 0).astype(value.dtype)
    return value


def _probe(state, shape):
    """A batch of one constant input: removed channels at their constants, kept ones at 0."""
    spatial = [PROBE_SIDE if d is None else d for d in shape[1:-1]]
    values = np.where(np.isin(np.arange(state.size), state.kept), 0.0, state.constants)
    return np.broadcast_to(values.astype("float32"), (1, *spatial, state.size)).copy()


def _is_elementwise(activation):
    return getattr(activation, "__name__", "") not in ("softmax", "log_softmax")


def _same_weights(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _numpy_weights(layer):
    return {name: ops.convert_to_numpy(v) for name, v in layer_weights(layer).items()}
