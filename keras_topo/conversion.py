"""`make_topographic`, `strip_topography` and `use_fast_layers`: model copies, weights kept."""

import keras

from keras_topo.fast_layers import FAST_CLASSES, KERAS_CLASSES
from keras_topo.layer_selection import carries_a_map, is_topographic, select_layers, walk_layers
from keras_topo.topographic_conv import PLAIN_CLASSES, TOPOGRAPHIC_CLASSES
from keras_topo.topographic_regularizer import TopographicRegularizer
from keras_topo.topography import Topography


def make_topographic(
    model, layers=None, topography=None, *, regularize_other_layers=False, **settings
):
    """A copy of a Sequential or functional model with chosen layers made topographic.

    `Conv1D` / `Conv2D` / `Conv3D` layers become `TopographicConv1D / 2D / 3D`; with
    `regularize_other_layers=True`, other chosen layers (Dense, DepthwiseConv2D, attention
    blocks...) get a `TopographicRegularizer` as `activity_regularizer`. Every other layer and
    every weight is kept; nested models are converted too; the copy is not compiled.

    Args:
        model: a built `keras.Sequential` or functional `keras.Model`.
        layers: None (every Conv1D/2D/3D that can carry a map: at least 3 filters, not a
            squeeze-and-excitation conv on a globally pooled 1 x 1 input; see
            `keras_topo.layer_selection.carries_a_map`), names, layers, or a predicate
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

    kind = "Conv1D/Conv2D/Conv3D" + (" or regularizable" if regularize_other_layers else "")
    chosen = select_layers(
        model,
        layers,
        candidate,
        kind,
        default=lambda layer: _convertible(layer) and carries_a_map(layer),
    )
    chosen_ids = {id(layer) for layer in chosen}
    per_layer = topography.layer_weight(len(chosen))

    def clone_layer(layer):
        config = layer.get_config()
        if id(layer) not in chosen_ids:
            return layer.__class__.from_config(config)
        if _convertible(layer):
            topographic = TOPOGRAPHIC_CLASSES[type(layer)]
            return topographic(**config, topography=topography, topographic_weight=per_layer)
        if layer.activity_regularizer is not None:
            raise ValueError(
                f"Layer {layer.name!r} already has an activity_regularizer; remove it or leave "
                "the layer out of `layers`."
            )
        config["activity_regularizer"] = TopographicRegularizer(topography, weight=per_layer)
        return layer.__class__.from_config(config)

    return _clone_with_weights(model, clone_layer)


def strip_topography(model):
    """A plain Keras copy of a model: topographic and fast layers (`keras_topo.fast_layers`)
    back to their Keras classes and `TopographicRegularizer`s removed. Same weights, same
    outputs, no topographic losses; ready to export (the losses are training-only) and to load
    without keras_topo."""
    _check_cloneable(model, "strip_topography")

    def clone_layer(layer):
        if is_topographic(layer):
            return PLAIN_CLASSES[type(layer)].from_config(layer.plain_config())
        config = layer.get_config()
        if type(layer) in KERAS_CLASSES:
            return KERAS_CLASSES[type(layer)].from_config(config)
        for key in ("activity_regularizer", "kernel_regularizer"):
            if isinstance(getattr(layer, key, None), TopographicRegularizer):
                config[key] = None
        return layer.__class__.from_config(config)

    return _clone_with_weights(model, clone_layer)


def use_fast_layers(model):
    """A copy of a Sequential or functional model (nested models included) whose Keras
    `Conv2D`, `Conv3D` and `BatchNormalization` layers are `keras_topo.fast_layers`' (torch's
    zero-copy convolution and fused batch norm): same weights and outputs, faster training on
    the torch backend. `strip_topography` turns them back."""
    _check_cloneable(model, "use_fast_layers")

    def clone_layer(layer):
        return FAST_CLASSES.get(type(layer), layer.__class__).from_config(layer.get_config())

    return _clone_with_weights(model, clone_layer)


def _clone_with_weights(model, clone_layer):
    copy = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    for old, new in zip(walk_layers(model), walk_layers(copy), strict=True):
        if not isinstance(old, keras.Model):
            # Through numpy: sharing a buffer would let JAX donate the original's.
            new.set_weights(old.get_weights())
    return copy


def _convertible(layer):
    return type(layer) in TOPOGRAPHIC_CLASSES


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
