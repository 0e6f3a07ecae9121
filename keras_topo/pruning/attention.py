"""Attention layers in the pruner: whole heads as one channel group.

`keras.layers.MultiHeadAttention(num_heads=H, key_dim=D, value_dim=Dv)` on a query `(B, T, E)`
holds per head `h` the slices `[:, h]` of its query/key/value kernels `(E, H, D)` (and `gate`'s,
with `use_gate=True`), the rows `[h]` of their biases `(H, D)` and the rows `[h]` of its output
kernel `(H, Dv, E_out)`. Its handler gives the layer an *inner* channel space of its `H` heads
(`ChannelGraph.inner_space`: it indexes these slices, no tensor carries it), so the heads prune as
one group of their own, with `num_heads` in the narrowed config. The layer also reads the
channels of its query, key and value (the kernels' axis 0, coupled with the residual stream) and
produces `E_out` output channels (the output kernel's last axis and its bias), like a `Dense`.

`keras.layers.GroupQueryAttention(num_query_heads=Hq, num_key_value_heads=Hkv)` shares key/value
head `g` among query heads `g * G ... g * G + G - 1` (`G = Hq / Hkv`, as its `ops.repeat`): its
inner space holds the `Hkv` key/value groups, each a block of `G` query heads, so a pruned group
takes its key/value head and its `G` query heads together and `Hq / Hkv` stays whole.

Removing heads equals masking them (zeroed query, key and value slices give a head that adds
zero), so `mode="remove"` and `mode="mask"` agree on heads.
"""

import inspect
import itertools
import weakref

import keras
import numpy as np

from keras_topo.call_graph import TensorKey
from keras_topo.pruning.graph import ChannelGraph
from keras_topo.pruning.handlers import (
    Block,
    Producer,
    get_handler,
    layer_weights,
    register_handler,
)

ROLES = ("query", "value", "key")
# op -> {role: position of that tensor among its call's inputs}, set when the op is traced.
_ROLE_POSITIONS = weakref.WeakKeyDictionary()


class AttentionHeads(Producer):
    """`MultiHeadAttention` / `GroupQueryAttention`: heads as an inner channel space.

    Args:
        heads_key: config entry holding the number of heads of the inner space.
        query_heads_key: for grouped-query attention, the config entry of the query heads
            (`heads_key` then counts key/value heads, each with `G` query heads).
    """

    def __init__(self, heads_key, query_heads_key=None):
        super().__init__(heads_key)
        self.heads_key = heads_key
        self.query_heads_key = query_heads_key

    def trace(self, op, inputs, outputs, graph):
        positions = _role_positions(op, graph.call)
        if _ROLE_POSITIONS.get(op, positions) != positions:
            reason = f"{op.name!r} is called with its query, key and value in different places"
            graph.block(graph.inner_layouts(op), reason)
            return self.untraceable(op, inputs, outputs, graph, reason)
        _ROLE_POSITIONS[op] = positions
        others = [lay for i, (_, lay) in enumerate(inputs) if i not in positions.values()]
        graph.block(others, f"{op.name!r}: its masks' last axis counts tokens, not channels")
        graph.inner_space(op, getattr(op, self.heads_key))
        # The attention scores `(B, H, T, S)` (return_attention_scores=True) end on tokens.
        return [graph.output_space(op, outputs[0].shape[-1])] + [None] * (len(outputs) - 1)

    def weight_axes(self, op, in_layouts, out_layouts):
        """`in_layouts`: the call's inputs; `out_layouts`: its outputs, then the heads."""
        positions = _ROLE_POSITIONS[op]
        inputs = {role: in_layouts[i] for role, i in positions.items()}
        heads = out_layouts[-1]
        query_heads = tuple(Block(b.space, b.inner * self._group_size(op)) for b in heads)
        projections = {
            "query": (inputs["query"], query_heads),
            "key": (inputs["key"], heads),
            "value": (inputs["value"], heads),
        }
        if op.get_config()["use_gate"]:
            projections["gate"] = (inputs["query"], query_heads)
        axes = {}
        for name, (channels, projection_heads) in projections.items():
            axes[f"{name}/kernel"] = [(0, channels), (1, projection_heads)]
            if op.use_bias:
                axes[f"{name}/bias"] = [(0, projection_heads)]
        axes["attention_output/kernel"] = [(0, query_heads), (-1, out_layouts[0])]
        if op.use_bias:
            axes["attention_output/bias"] = [(-1, out_layouts[0])]
        return axes

    def config(self, op, in_kept, out_kept):
        """`out_kept`: kept output channels, then (last) the kept heads."""
        config = op.get_config()
        heads = int(out_kept[-1].size)
        config[self.heads_key] = heads
        if self.query_heads_key:
            config[self.query_heads_key] = heads * self._group_size(op)
        output_shape = config.get("output_shape")
        if output_shape is not None:  # None: the query's width, narrowed with it
            width = int(out_kept[0].size)
            shape = output_shape if isinstance(output_shape, (list, tuple)) else (output_shape,)
            config["output_shape"] = (*shape[:-1], width) if len(shape) > 1 else width
        return config

    def _group_size(self, op):
        if not self.query_heads_key:
            return 1
        return getattr(op, self.query_heads_key) // getattr(op, self.heads_key)


def head_layers(model):
    """The layers whose selection in `prune_channels(model, layers=...)` prunes attention
    heads, in model order: every `MultiHeadAttention`, `GroupQueryAttention` and keras-hub
    `CachedMultiHeadAttention`, and, for attention written in raw ops (keras-hub's MiT: a
    reshape splits a `Dense`'s channels into heads, `keras_topo.pruning.head_axis`), the first
    layer that produces each group of coupled heads (its query, key or value projection)."""
    graph = ChannelGraph(model)
    heads, found, seen = graph.head_roots(), {}, set()
    for call in graph.calls:
        op = call.op
        if graph.inner_layouts(op):
            found.setdefault(id(op), op)
            continue
        roots = {graph.find(b.space) for b in graph.op_spaces.get((id(op), 0), ())}
        if roots and roots <= heads and not roots & seen:
            found.setdefault(id(op), op)
            seen |= roots
    return list(found.values())


def check_heads_left(graph, layers, fraction):
    """Raises a ValueError when `fraction` (scope "layer") would prune every head of one of
    `layers` (the pruner otherwise keeps one channel with a warning): a model without any
    head of a layer is no transformer, so this is refused, not rounded."""
    for layer in layers:
        inner = graph.inner_layouts(layer)
        if inner:
            count = f"{get_handler(layer).heads_key}="
        else:  # heads split off its channels by a reshape
            count = "heads split by a reshape: "
            heads = graph.selected_layout(layer)
            inner = [heads] if heads and graph.is_heads(heads) else []
        for block in (inner or [()])[0]:
            size = graph.sizes[graph.find(block.space)]
            if round(fraction * size) >= size:
                raise ValueError(
                    f"fraction {fraction} would prune all {size} heads of layer {layer.name!r} "
                    f"({count}{size}, round({fraction} * {size}) = "
                    f"{round(fraction * size)}); at least one must stay. Use a fraction below "
                    f'{(size - 0.5) / size:.3f}, scope="global", or leave the layer out of '
                    "`layers`."
                )


def attention_macs(layer, arguments):
    """Multiply-accumulates of one example through an attention layer called with `arguments`
    (a node's `SymbolicArguments`): each projection's kernel size times its input's positions
    (the query's `T` for query, gate and output; the key's or value's `S` for theirs) plus the
    attention itself, `T S Hq (D + Dv)` (the scores and their weighted sum of values)."""
    bound = inspect.signature(layer.call).bind(*arguments.args, **arguments.kwargs).arguments
    shapes = {role: bound[role].shape for role in ROLES if bound.get(role) is not None}
    shapes.setdefault("key", shapes["value"])
    if any(d is None for shape in shapes.values() for d in shape[1:]):
        raise ValueError(
            f"count_macs needs static shapes; attention layer {layer.name!r} sees {shapes}. "
            "Build the model with a fixed sequence length."
        )
    positions = {role: int(np.prod(shape[1:-1])) for role, shape in shapes.items()}
    weights, total = layer_weights(layer), 0
    for name, variable in weights.items():
        projection, _, kind = name.partition("/")
        if kind == "kernel":
            total += positions.get(projection, positions["query"]) * int(np.prod(variable.shape))
    _, heads, depth = weights["query/kernel"].shape  # (E, Hq, D)
    value_depth = weights["value/kernel"].shape[-1]
    return total + positions["query"] * positions["value"] * heads * (depth + value_depth)


def _role_positions(op, call):
    """`{"query": i, "value": j, "key": k}`: positions among the call's tensor inputs (its
    `keras.tree.flatten((args, kwargs))` order); `key` defaults to `value`, as in Keras."""
    structure = (call.args, call.kwargs)
    counter = itertools.count()
    numbered = [
        next(counter) if isinstance(a, TensorKey) else None for a in keras.tree.flatten(structure)
    ]
    args, kwargs = keras.tree.pack_sequence_as(structure, numbered)
    bound = inspect.signature(op.call).bind(*args, **kwargs).arguments
    positions = {role: bound.get(role) for role in ROLES}
    if positions["key"] is None:
        positions["key"] = positions["value"]
    return positions


register_handler(keras.layers.MultiHeadAttention, AttentionHeads("num_heads"))
register_handler(
    keras.layers.GroupQueryAttention,
    AttentionHeads("num_key_value_heads", query_heads_key="num_query_heads"),
)
