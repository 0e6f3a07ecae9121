"""Copy a model with some layers replaced, through nested models and traced custom layers.

`copy_model(model, replacement)` rebuilds a functional or Sequential model: each layer for
which `replacement(layer)` returns a factory becomes `factory()` with the layer's weights; every
other layer is *carried over*: a new instance with the same weights. Nested models are copied
as nested models. A custom layer (`keras_topo.tracing`) holding a layer to replace is replaced
by its traced view, copied the same way (a functional graph in its place: its class is gone);
a custom layer with nothing to replace inside keeps its class.

Carrying over never depends on a config round trip: a layer is rebuilt from its config when
that works (`from_config`, then its weights), else from a repaired config checked to compute the
same, else deep-copied with its variables. The copy saves as it computes, or saving says why not
(`keras_topo.layer_saving`: keras-hub 0.32's `ViTPatchingAndEmbedding`, whose `get_config()` its
constructor rejects; `DINOV2Embedding`, whose variable saving loses trained state).
"""

import copy
import sys
import warnings

import keras
from keras.src.models.functional import Functional
from keras.src.utils.tracking import DotNotTrackScope

from keras_topo import layer_saving, tracing
from keras_topo.layer_copy import layer_config, rebuilt
from keras_topo.layer_selection import walk_layers


def copy_model(model, replacement, opaque_consequence=None):
    """A copy of `model` with the layers chosen by `replacement` replaced.

    Args:
        model: a built functional or Sequential model.
        replacement: `fn(layer) -> None | factory`; `factory()` returns the new layer, whose
            weights (same list as the layer's) are copied from the layer once it is built.
        opaque_consequence: when given, one warning names the untraceable custom layers that
            hold a layer `replacement` would replace, followed by this text.

    Returns:
        `(copy, copies)`: `copies` maps `id(original layer)` to its layer in the copy, for
        every layer carried over or replaced, including those inside custom layers.
    """
    copier = _Copier(replacement)
    new = copier.model(model)
    if copier.opaque and opaque_consequence:
        warnings.warn(tracing.opaque_warning(copier.opaque, opaque_consequence), stacklevel=3)
    return new, copier.copies


def changes(model_or_layer, replacement):
    """Whether `replacement` would replace any layer of `model_or_layer` (nested models and
    traced custom layers included)."""
    if replacement(model_or_layer) is not None:
        return True
    inner = _inner_model(model_or_layer)
    return inner is not None and any(replacement(layer) is not None for layer in walk_layers(inner))


def _inner_model(layer):
    if isinstance(layer, (Functional, keras.Sequential)):
        return layer
    return tracing.layer_view(layer).model


class _Copier:
    def __init__(self, replacement):
        self.replacement = replacement
        self.copies = {}  # id(original layer) -> its layer in the copy
        self.models = {}  # id(original nested model or traced view) -> its copy
        self.opaque = {}  # name -> (class name, reason): custom layers hiding a replacement

    def model(self, model):
        if id(model) in self.models:
            return self.models[id(model)]
        functional = model._functional if isinstance(model, keras.Sequential) else model
        inputs = keras.tree.flatten(functional.inputs)
        new_inputs = [
            keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t._keras_history.operation.name)
            for t in inputs
        ]
        tensors = {id(t): n for t, n in zip(inputs, new_inputs, strict=True)}
        for depth in sorted(functional._nodes_by_depth, reverse=True):
            for node in functional._nodes_by_depth[depth]:
                if node.operation is None or node.is_input:
                    continue
                if any(id(t) not in tensors for t in node.arguments.keras_tensors):
                    continue  # not connected to the inputs (as Functional skips it)
                args, kwargs = node.arguments.convert(
                    lambda x: tensors[id(x)] if isinstance(x, keras.KerasTensor) else x
                )
                outputs = keras.tree.flatten(self.call(node, args, kwargs))
                for old, new in zip(node.outputs, outputs, strict=True):
                    tensors[id(old)] = new
        new = keras.Model(
            keras.tree.pack_sequence_as(functional._inputs_struct, new_inputs),
            keras.tree.pack_sequence_as(
                functional._outputs_struct,
                [tensors[id(t)] for t in keras.tree.flatten(functional.outputs)],
            ),
            name=model.name,
        )
        if isinstance(model, keras.Sequential):
            new = keras.Sequential(new.layers, name=model.name)
        if not model.trainable:
            new.trainable = False
        self.models[id(model)] = new
        self.copies[id(model)] = new
        return new

    def call(self, node, args, kwargs):
        """The outputs of the copy of `node`'s operation on the new `args`, `kwargs`."""
        op = node.operation
        if not isinstance(op, keras.layers.Layer):  # a raw keras.ops operation: stateless
            return op(*args, **kwargs)
        if isinstance(op, (Functional, keras.Sequential)):
            return self.model(op)(*args, **kwargs)
        if id(op) in self.copies:  # a shared layer: one copy for all its calls
            return self.copies[id(op)](*args, **kwargs)
        factory = self.replacement(op)
        if factory is not None:
            new = factory()
            outputs = new(*args, **kwargs)
            new.set_weights(op.get_weights())
            self.copies[id(op)] = new
            return outputs
        if tracing.is_custom(op) and op._layers:
            view = tracing.traced_view(op, node.arguments)
            if view and changes(view.model, self.replacement):
                tensors = [a for a in keras.tree.flatten((args, kwargs)) if _is_tensor(a)]
                return self.model(view.model)(tensors[0] if len(tensors) == 1 else tensors)
            if not view and _hides_replacement(op, self.replacement):
                self.opaque[op.name] = (type(op).__name__, view.reason)
        new, outputs = carry_over(op, args, kwargs)
        self.copies[id(op)] = new
        for old, inner in zip(
            op._flatten_layers(include_self=False),
            new._flatten_layers(include_self=False),
            strict=True,
        ):
            self.copies.setdefault(id(old), inner)
        return outputs


def _is_tensor(value):
    return isinstance(value, keras.KerasTensor)


def _hides_replacement(layer, replacement):
    return any(replacement(sub) is not None for sub in layer._flatten_layers(include_self=False))


def carry_over(layer, args, kwargs, name=None):
    """A new instance of `layer` with its weights, called on `args`, `kwargs`, that saves as it
    computes (`keras_topo.layer_saving`).

    From its config when `from_config` accepts it (keeping a repaired config the layer answers
    with); else from a repaired config that is checked to compute the same; else a deep copy
    (variables copied, never shared; `_deep_copy`) whose saving raises a clear error. A class
    with its own variable saving gets it checked at save time.

    Args:
        name: the new layer's name (default: `layer`'s).

    Returns:
        `(new layer, outputs)`.
    """
    name = name or layer.name
    try:
        new, outputs = rebuilt(layer, dict(layer_config(layer), name=name), args, kwargs)
        if layer_saving.dropped_keys(layer):  # a copy of a copy: keep the repaired config
            layer_saving.keep_config_without(new, layer_saving.dropped_keys(layer))
    except Exception as error:  # any config that does not round-trip: user and library code
        repaired = layer_saving.repaired_copy(layer, name, args, kwargs)
        if repaired is None:
            new = _deep_copy(layer)
            new.name = name
            layer_saving.refuse_saving(new, f"{type(error).__name__}: {_first_line(error)}")
            repaired = new, new(*args, **kwargs)
        new, outputs = repaired
    layer_saving.check_saved_variables(new)
    return new, outputs


def _first_line(error):
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else ""


def _deep_copy(layer):
    """A deep copy of a built layer and its sublayers, variables included, without its graph
    connections. (`copy.deepcopy` of a Keras layer goes through its config, hence this.)"""
    memo = {id(module): module for module in list(sys.modules.values())}
    layers = list(layer._flatten_layers(include_self=True))
    for each in layers:
        memo[id(each._inbound_nodes)] = []
        memo[id(each._outbound_nodes)] = []
    with DotNotTrackScope():  # the copied trackers' stores already hold the copies
        for each in reversed(layers):  # sublayers first: their parents find them in `memo`
            new = object.__new__(type(each))
            memo[id(each)] = new
            new.__dict__.update(copy.deepcopy(each.__dict__, memo))
            tracker = new.__dict__.get("_tracker")
            if tracker is not None:
                tracker.stored_ids = {
                    name: {id(value) for value in store}
                    for name, (_, store) in tracker.config.items()
                }
    return memo[id(layer)]
