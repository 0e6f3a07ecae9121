"""`make_topographic`, `strip_topography` and `use_fast_layers`: model copies, weights kept.

Each copy is made by `keras_topo.model_copy.copy_model`, which sees through nested models and
custom layers (`keras_topo.tracing`). What a copy holds: the user's layer classes wherever a
layer is unchanged (carried over with its weights, through its config or, when that does not
round-trip, a deep copy); nested models as nested models; and a functional graph in place of
each custom layer whose inside changed (e.g. a keras-hub `ConvBnActBlock` whose conv became
topographic: its sublayers, converted, called as its `call` calls them).
"""

import keras

from keras_topo.fast_layers import FAST_CLASSES, KERAS_CLASSES
from keras_topo.layer_selection import (
    default_map_layers,
    is_topographic,
    plain_class,
    select_layers,
    topographic_class,
)
from keras_topo.model_copy import changes, copy_model
from keras_topo.token_topography import explicit_config
from keras_topo.topographic_regularizer import TopographicRegularizer
from keras_topo.topography import Topography


def make_topographic(
    model, layers=None, topography=None, *, regularize_other_layers=False, **settings
):
    """A copy of a Sequential or functional model with chosen layers made topographic.

    `Conv1D` / `Conv2D` / `Conv3D` layers become `TopographicConv1D / 2D / 3D`; `Dense`,
    `EinsumDense` and `MultiHeadAttention` become `keras_topo.token_topography`'s topographic
    classes (tokens as samples; an attention layer's map is its output projection's channels);
    with `regularize_other_layers=True`, other chosen layers (DepthwiseConv2D, custom
    blocks...) get a `TopographicRegularizer` as `activity_regularizer`. Every other layer and
    every weight is kept; nested models are converted too; the copy is not compiled.

    Args:
        model: a built `keras.Sequential` or functional `keras.Model`.
        layers: None (every Conv1D/2D/3D that can carry a map: at least 3 filters, not a
            squeeze-and-excitation conv on a globally pooled 1 x 1 input, see
            `keras_topo.layer_selection.carries_a_map`; in a transformer (a model with a
            MultiHeadAttention, e.g. a ViT) or a model without such a conv, the MLP hidden
            layers: the first Dense of each Dense -> activation -> Dense block, see
            `keras_topo.layer_selection.default_map_layers`), names, layers, or a predicate
            `layer -> bool` (`keras_topo.layer_selection.select_layers`).
        topography: a `keras_topo.Topography`, a scheme name or explicit positions.
        regularize_other_layers: allow `layers` to choose non-convolution layers.
        **settings: fields of `Topography` replacing those of `topography`: `weight` (lambda),
            `reduction` ("mean": each of the `L` chosen layers weighs `weight / L`, the paper;
            "sum": each weighs `weight`, the reference code), `dimension`, `distance`,
            `nested_factor`, `objective`, `shrink_factor`.
    """
    topography = Topography.coerce(topography, **settings)
    _check_cloneable(model, "make_topographic")

    def candidate(layer):
        return _convertible(layer) or (regularize_other_layers and _regularizable(layer))

    kind = "Conv/Dense/EinsumDense/MultiHeadAttention" + (
        " or regularizable" if regularize_other_layers else ""
    )
    chosen = select_layers(model, layers, candidate, kind, default=default_map_layers(model))
    chosen_ids = {id(layer) for layer in chosen}
    per_layer = topography.layer_weight(len(chosen))

    def topographic(layer):
        if id(layer) not in chosen_ids:
            return None
        if _convertible(layer):
            config = explicit_config(layer)
            return lambda: topographic_class(layer)(
                **config, topography=topography, topographic_weight=per_layer
            )
        if layer.activity_regularizer is not None:
            raise ValueError(
                f"Layer {layer.name!r} already has an activity_regularizer; remove it or leave "
                "the layer out of `layers`."
            )
        config = layer.get_config()
        config["activity_regularizer"] = TopographicRegularizer(topography, weight=per_layer)
        return lambda: layer.__class__.from_config(config)

    return copy_model(model, topographic, "their layers are not made topographic")[0]


def strip_topography(model):
    """A plain Keras copy of a model: topographic and fast layers (`keras_topo.fast_layers`)
    back to their Keras classes and `TopographicRegularizer`s removed. Same weights, same
    outputs, no topographic losses; ready to export (the losses are training-only) and to load
    without keras_topo."""
    return stripped_copy(model)[0]


def stripped_copy(model):
    """`strip_topography`'s copy and `{id(original layer): its layer in the copy}`."""
    _check_cloneable(model, "strip_topography")
    return copy_model(model, _plain, "their topographic layers are not stripped")


def has_topography(model):
    """Whether `strip_topography` would change `model` (custom layers seen through)."""
    return changes(model, _plain)


def _plain(layer):
    """`strip_topography`'s replacement of `layer`: a factory of its plain twin, or None."""
    if is_topographic(layer):
        return lambda: plain_class(layer).from_config(layer.plain_config())
    if type(layer) in KERAS_CLASSES:
        return lambda: KERAS_CLASSES[type(layer)].from_config(layer.get_config())
    regularized = [
        key
        for key in ("activity_regularizer", "kernel_regularizer")
        if isinstance(getattr(layer, key, None), TopographicRegularizer)
    ]
    if not regularized:
        return None
    return lambda: layer.__class__.from_config({**layer.get_config(), **dict.fromkeys(regularized)})


def use_fast_layers(model):
    """A copy of a Sequential or functional model (nested models included) whose Keras
    `Conv2D`, `Conv3D` and `BatchNormalization` layers are `keras_topo.fast_layers`' (torch's
    zero-copy convolution and fused batch norm): same weights and outputs, faster training on
    the torch backend. `strip_topography` turns them back."""
    _check_cloneable(model, "use_fast_layers")

    def fast(layer):
        if type(layer) not in FAST_CLASSES:
            return None
        return lambda: FAST_CLASSES[type(layer)].from_config(layer.get_config())

    return copy_model(model, fast, "their layers are not made fast")[0]


def _convertible(layer):
    return topographic_class(layer) is not None


def _regularizable(layer):
    return (
        not isinstance(layer, (keras.Model, keras.layers.InputLayer))
        and not is_topographic(layer)
        and hasattr(layer, "activity_regularizer")
    )


def _check_cloneable(model, function):
    functional = isinstance(model, keras.Sequential) or (
        isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth")
    )
    if not functional:
        raise ValueError(
            f"{function} needs a Sequential or functional model; {type(model).__name__} is "
            "subclassed and cannot be cloned. Use keras_topo's topographic layers (or "
            "keras_topo.TopographicRegularizer) inside its definition instead."
        )
    if not model.built:
        raise ValueError(f"{function} needs a built model: give it an Input or call it once.")
