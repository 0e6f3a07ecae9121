"""coupling="group": rebuild the inlined graph with each pruned group's channels gone (or zeroed).

`mode="remove"` narrows every layer that touches a pruned group (its config from its handler,
its weights sliced on the axes its handler names); `mode="mask"` keeps every shape and sets the
trainable weight entries that "remove" would delete to zero (producers' filters and biases, batch
norm gamma and beta, depthwise kernels, consumers' input rows), so both compute the same
function wherever no operation normalises across the channel axis. Every layer is copied with
its weights (the input model is never modified); one copy serves all calls of a shared layer.
Nested models are inlined: the result is one flat functional model. Each copy keeps its
layer's name where no other layer of the inlined graph has it, else gets its path
(`InlinedGraph.unique_names`: "vit_encoder_transformer_block_1_mlp_dense_1").
"""

import keras
import numpy as np

from keras_topo import layer_saving
from keras_topo.call_graph import TensorKey
from keras_topo.layer_copy import (
    UniqueNames,
    from_config_zero_init,
    layer_config,
    restore_initializers,
)
from keras_topo.model_copy import carry_over
from keras_topo.pruning.handlers import get_handler, layer_weights


def rebuild_groups(graph, kept_by_space, mode):
    """A new functional model from `graph` (a `ChannelGraph`).

    Args:
        graph: the model's `ChannelGraph`.
        kept_by_space: dict root space -> sorted kept channel indices of that group.
        mode: "remove" or "mask".
    """
    return _GroupRebuilder(graph, kept_by_space, mode).run()


class _GroupRebuilder:
    def __init__(self, graph, kept_by_space, mode):
        self.graph = graph
        self.kept_by_space = {k: np.asarray(v, dtype="int64") for k, v in kept_by_space.items()}
        self.narrow = mode == "remove"
        self.copies = {}  # id(original layer) -> (copy, kept indices of its weights)
        self.unique = UniqueNames(graph.unique_names())

    def run(self):
        return self.graph.replay(self.call, self.unique)[0]

    def call(self, call, args, kwargs):
        op = call.op
        handler = get_handler(op)
        in_layouts = [self.graph.layouts[k] for k in call.inputs]
        out_layouts = [self.graph.layouts[k] for k in call.outputs]
        if not isinstance(op, keras.layers.Layer):  # a raw keras.ops operation: stateless
            if self.narrow:
                in_kept = [self.graph.kept(lay, self.kept_by_space) for lay in in_layouts]
                out_kept = [self.graph.kept(lay, self.kept_by_space) for lay in out_layouts]
                inputs = [self.graph.shapes[k] for k in call.inputs]
                op, args, kwargs = handler.narrowed_call(
                    op, args, kwargs, inputs, in_kept, out_kept
                )
            return op(*args, **kwargs)
        out_layouts += self.graph.inner_layouts(op)  # attention heads, after the outputs
        axes = handler.weight_axes(op, in_layouts, out_layouts)
        slices = {
            name: [(axis, self.graph.kept(layout, self.kept_by_space)) for axis, layout in entries]
            for name, entries in axes.items()
        }
        if id(op) not in self.copies:
            in_kept = [self.graph.kept(lay, self.kept_by_space) for lay in in_layouts]
            out_kept = [self.graph.kept(lay, self.kept_by_space) for lay in out_layouts]
            config = handler.config(op, in_kept, out_kept) if self.narrow else layer_config(op)
            layer, outputs = self.copy(call, config, slices, args, kwargs)
            self.copies[id(op)] = (layer, slices)
            return outputs
        layer, first = self.copies[id(op)]
        if not _same_slices(first, slices):
            raise ValueError(
                f"Layer {op.name!r} is called more than once on tensors whose channels are "
                "pruned differently; it cannot stay one shared layer. Prune its inputs' groups "
                "together or leave them out of `layers`."
            )
        return layer(*args, **kwargs)

    def copy(self, call, config, slices, args, kwargs):
        """`(copy of call.op, its outputs on args)`. A layer whose weights no pruned channel
        touches is carried over (`keras_topo.model_copy.carry_over`: no config round trip
        needed); any other is built from `config`, repaired as `carry_over` repairs where its
        class rejects it (`keras_topo.layer_saving.config_repair`), weights sliced or masked."""
        op = call.op
        weights = layer_weights(op)
        untouched = all(
            len(kept) == weights[name].shape[axis]
            for name, entries in slices.items()
            for axis, kept in entries
        )
        if untouched and _same_config(config, layer_config(op)):
            return carry_over(op, args, kwargs, name=self.unique.of(op))
        config = dict(config, name=self.unique.of(op))
        repair = layer_saving.ConfigRepair(layer_saving.dropped_keys(op), {})  # a repaired copy
        try:
            layer, outputs = _built(op, config, args, kwargs)
        except Exception as error:  # any config that does not round-trip: user and library code
            original = keras.tree.map_structure(  # the layer's own inputs (before narrowing)
                lambda x: self.graph.shapes[x] if isinstance(x, TensorKey) else x,
                (call.args, call.kwargs),
            )
            repair = layer_saving.config_repair(op, *original)
            if repair is None:
                raise ValueError(
                    f"Layer {op.name!r} ({type(op).__name__}) loses channels, but its config "
                    f"does not build it again ({type(error).__name__}, above) and "
                    f"{layer_saving.NO_REPAIR}, or leave its channels out of `layers`."
                ) from error
            config = repair.apply(config)
            layer, outputs = _built(op, config, args, kwargs)
        repair.install(layer)
        for (name, old), new in zip(weights.items(), layer.weights, strict=True):
            value = keras.ops.convert_to_numpy(old)
            for axis, kept in slices.get(name, []):
                value = _narrow(value, axis, kept) if self.narrow else _mask(value, axis, kept, old)
            new.assign(value.astype(new.dtype))
        return layer, outputs


def _built(op, config, args, kwargs):
    """`(layer of op's class from config, its outputs on args)`, original initialisers back."""
    layer = from_config_zero_init(op.__class__, config)
    outputs = layer(*args, **kwargs)
    restore_initializers(layer, config)
    return layer, outputs


def _same_config(a, b):
    try:
        return bool(a == b)
    except ValueError:  # numpy arrays in a config (e.g. positions): compared as changed
        return False


def _narrow(value, axis, kept):
    return np.take(value, kept, axis=axis)


def _mask(value, axis, kept, variable):
    if not variable.trainable:
        return value  # batch-norm statistics stay: zeroed gamma and beta silence the channel
    keep = np.zeros(value.shape[axis], bool)
    keep[kept] = True
    shape = [1] * value.ndim
    shape[axis] = -1
    return np.where(keep.reshape(shape), value, 0).astype(value.dtype)


def _same_slices(a, b):
    return a.keys() == b.keys() and all(
        len(a[k]) == len(b[k])
        and all(x == y and np.array_equal(p, q) for (x, p), (y, q) in zip(a[k], b[k], strict=True))
        for k in a
    )
