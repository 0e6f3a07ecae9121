"""Which layers of a model a function acts on: one rule for `make_topographic` and pruning.

`layers=` everywhere in keras-topo takes the same values: None (the caller's default set),
a layer name, a layer object, a list of names and/or layers, or a predicate
`fn(layer) -> bool`. Layers are found through nested models at any depth.
"""

import collections
import warnings

import keras
from keras.src.ops import nn as nn_ops

from keras_topo.call_graph import CallGraph
from keras_topo.token_topography import (
    PLAIN_TOKEN_CLASSES,
    TOKEN_TOPOGRAPHIC_CLASSES,
    map_channels,
    register_keras_hub_layers,
)
from keras_topo.topographic_conv import PLAIN_CLASSES, TOPOGRAPHIC_CLASSES, TopographicMixin
from keras_topo.tracing import layer_view


def walk_layers(model):
    """Every layer of `model` once, in order, descending into nested models and traced custom
    layers (`keras_topo.tracing`; the layers their `call` calls), at any depth."""
    seen = set()

    def walk(container):
        for layer in container.layers:
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            yield layer
            inner = layer if isinstance(layer, keras.Model) else layer_view(layer).model
            if inner is not None and hasattr(inner, "layers"):
                yield from walk(inner)

    yield from walk(model)


MIN_MAP_CHANNELS = 3  # fewer channels carry no map: map scores need 3 (one pair of distances)


def carries_a_map(layer):
    """Whether a conv layer's channels can form a map: the default rule of `make_topographic`.

    Left out: layers with fewer than `MIN_MAP_CHANNELS` filters, and squeeze-and-excitation
    convs, i.e. convs whose every call reads a spatially 1 x ... x 1 input (a globally pooled
    vector such as `GlobalAveragePooling2D(keepdims=True)` or `ops.mean(x, (1, 2),
    keepdims=True)`): they gate the channels of another layer and have no spatial response.
    """
    if getattr(layer, "filters", 0) < MIN_MAP_CHANNELS:
        return False
    shapes = [node.arguments.keras_tensors[0].shape for node in layer._inbound_nodes]
    spatial = getattr(layer, "data_format", "channels_last") == "channels_last"
    pooled = [all(d == 1 for d in (s[1:-1] if spatial else s[2:])) for s in shapes]
    return not (pooled and all(pooled))


def topographic_class(layer):
    """The topographic class `make_topographic` turns `layer` into, or None: the one registry
    of the layers that can carry a map.

    - `Conv1D / 2D / 3D` (and `keras_topo.fast_layers`' twins): their filters
      (`keras_topo.topographic_conv`);
    - `Dense`, `EinsumDense` whose output's last axis is a kernel axis, `MultiHeadAttention`,
      `GroupQueryAttention`, keras-hub's `CachedMultiHeadAttention`: their output channels,
      tokens as samples (`keras_topo.token_topography`).
    """
    register_keras_hub_layers()
    if type(layer) in TOPOGRAPHIC_CLASSES:
        return TOPOGRAPHIC_CLASSES[type(layer)]
    if type(layer) in TOKEN_TOPOGRAPHIC_CLASSES and map_channels(layer):
        return TOKEN_TOPOGRAPHIC_CLASSES[type(layer)]
    return None


def plain_class(layer):
    """The plain Keras class of a topographic layer (for `strip_topography`)."""
    return {**PLAIN_CLASSES, **PLAIN_TOKEN_CLASSES}[type(layer)]


def default_map_layers(model):
    """`make_topographic`'s default rule for `model`, a predicate `layer -> bool`.

    A transformer (a model with an attention layer, or whose convolutions only cut the input
    into patches: kernel size = strides, as the patch embeddings of ViT and Swin) or a model
    without a convolution that can carry a map (an MLP): the MLP hidden layers
    (`mlp_hidden_layers`), where TopoNets and TopoLM put their maps. Any other model: its
    convolutions that can carry a map (`carries_a_map`).
    """

    def conv(layer):
        return type(layer) in TOPOGRAPHIC_CLASSES and carries_a_map(layer)

    layers = list(walk_layers(model))
    attention = any(isinstance(layer, _ATTENTION) for layer in layers)
    convs = [layer for layer in layers if conv(layer)]
    if not attention and not all(_patchify(layer) for layer in convs):
        return conv
    hidden = mlp_hidden_layers(model)
    return lambda layer: id(layer) in hidden


_ATTENTION = (keras.layers.MultiHeadAttention, keras.layers.GroupQueryAttention)
# What an MLP block's hidden activations pass through unchanged in width: layers, raw ops.
_PASS_THROUGH = (keras.layers.Activation, keras.layers.Dropout, keras.layers.ReLU)
_RAW_ACTIVATIONS = (nn_ops.Relu, nn_ops.Relu6, nn_ops.Gelu, nn_ops.Silu, nn_ops.Sigmoid)


def _patchify(conv):
    """Whether `conv` cuts its input into non-overlapping patches (kernel size = strides > 1)."""
    return tuple(conv.kernel_size) == tuple(conv.strides) and max(conv.strides) > 1


def mlp_hidden_layers(model):
    """`{id(layer)}` of the hidden layers of `model`'s MLP blocks, Dense -> activation -> Dense.

    A `Dense` / `EinsumDense` with at least `MIN_MAP_CHANNELS` outputs and a non-linear
    activation, its own or after it (an `Activation` / `ReLU` layer, a raw `keras.ops` ReLU,
    GELU, SiLU or sigmoid), whose every consumer (through those and `Dropout`) is a `Dense` /
    `EinsumDense`: in a transformer block the first Dense of the feed-forward part (width
    `mlp_dim`). Left out: patch embeddings, attention projections, classifier heads (no Dense
    reads them). Read on the model's call graph (`keras_topo.call_graph`), so that an MLP
    split across custom layers (keras-hub DeiT's `mlp` and `output_layer`) is found.
    """
    with warnings.catch_warnings():  # the copy that follows names the layers left opaque
        warnings.simplefilter("ignore")
        graph = CallGraph(model)
    readers = collections.defaultdict(list)
    for call in graph.calls:
        for key in call.inputs:
            readers[key].append(call)
    dense = (keras.layers.Dense, keras.layers.EinsumDense)
    hidden = set()
    for call in graph.calls:
        layer = call.op
        if not isinstance(layer, dense) or (map_channels(layer) or 0) < MIN_MAP_CHANNELS:
            continue
        activated = _non_linear(layer)
        frontier, consumers = list(call.outputs), []
        while frontier:
            for after in readers[frontier.pop()]:
                if isinstance(after.op, (*_PASS_THROUGH, *_RAW_ACTIVATIONS)):
                    activated = activated or _non_linear(after.op)
                    frontier.extend(after.outputs)
                else:
                    consumers.append(after.op)
        if activated and consumers and all(isinstance(c, dense) for c in consumers):
            hidden.add(id(layer))
    return hidden


def _non_linear(op):
    if isinstance(op, (keras.layers.ReLU, *_RAW_ACTIVATIONS)):
        return True
    return getattr(getattr(op, "activation", None), "__name__", "linear") != "linear"


def is_topographic(layer):
    """True for keras-topo's topographic layers (they carry `positions` and `topography`)."""
    return isinstance(layer, TopographicMixin)


def select_layers(model, layers, candidate, kind, default=None):
    """The layers of `model` chosen by `layers`, among those where `candidate(layer)` holds.

    Args:
        model: a built keras model (nested models are searched).
        layers: None (the `default` predicate, or every candidate), a name, a layer, a list
            of names/layers, or a predicate `fn(layer) -> bool`.
        candidate: predicate of the layers that can be chosen at all.
        kind: how the candidates are called in error messages (e.g. "Conv2D").
        default: predicate applied when `layers` is None (None: every candidate).

    Returns:
        The chosen layers, in model order, each once.

    Raises:
        ValueError: a name or layer that is not a candidate of the model, or an empty selection.
    """
    candidates = [layer for layer in walk_layers(model) if candidate(layer)]
    names = [layer.name for layer in candidates]
    if not candidates:
        raise ValueError(f"Model {model.name!r} has no {kind} layer.")
    if layers is None:
        chosen = [layer for layer in candidates if default is None or default(layer)]
    elif callable(layers) and not isinstance(layers, keras.layers.Layer):
        chosen = [layer for layer in candidates if layers(layer)]
    else:
        if isinstance(layers, (str, keras.layers.Layer)):
            layers = [layers]
        wanted = []
        for item in layers:
            if isinstance(item, keras.layers.Layer):
                match = [layer for layer in candidates if layer is item]
            else:
                match = [layer for layer in candidates if layer.name == item]
            if not match:
                label = item.name if isinstance(item, keras.layers.Layer) else item
                raise ValueError(
                    f"layers: {label!r} is not a {kind} layer of model {model.name!r}. Its "
                    f"{kind} layers are {names}."
                )
            wanted.extend(match)
        chosen = [layer for layer in candidates if any(layer is w for w in wanted)]
    if not chosen:
        raise ValueError(
            f"layers selected no {kind} layer of model {model.name!r}. Its {kind} layers: {names}."
        )
    return chosen
