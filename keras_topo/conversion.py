"""`make_topographic`: a copy of an existing model with chosen `Conv2D` layers made topographic."""

import keras

from keras_topo.topographic_conv2d import TopographicConv2D

REDUCTIONS = ("mean", "sum")


def make_topographic(
    model,
    layers=None,
    topography="grid",
    weight=1.0,
    reduction="mean",
    dimension=None,
    distance="euclidean",
    nested_factor=0.5,
):
    """Copy a Sequential or functional model, swapping `Conv2D` layers for `TopographicConv2D`.

    Every other layer, and every weight, is kept; the copy is not compiled.

    Args:
        model: a built `keras.Sequential` or functional `keras.Model` (nested ones included).
        layers: which `Conv2D` layers to swap: None (all), a list of layer names, or a
            predicate `layer -> bool`.
        topography, dimension, distance, nested_factor: as `TopographicConv2D`.
        weight: lambda, the weight of the topographic term in the total loss.
        reduction: "mean" (the paper: `lambda * mean over layers`, i.e. `lambda / L` per layer)
            or "sum" (the reference code: `lambda` per layer).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"Unknown reduction {reduction!r}. Use one of {list(REDUCTIONS)}.")
    if weight is None or weight < 0:
        raise ValueError(f"weight (lambda) must be a non-negative number, got {weight}.")
    _check_cloneable(model)
    convs = [layer for layer in _walk(model) if _is_conv2d(layer)]
    chosen = _select(convs, layers)
    per_layer = weight / len(chosen) if reduction == "mean" else weight
    chosen_ids = {id(layer) for layer in chosen}

    def clone_layer(layer):
        config = layer.get_config()
        if id(layer) in chosen_ids:
            return TopographicConv2D(
                **config,
                topography=topography,
                dimension=dimension,
                distance=distance,
                topographic_weight=per_layer,
                nested_factor=nested_factor,
            )
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    for old, new in zip(_walk(model), _walk(copy), strict=True):
        if not isinstance(old, keras.Model):
            # A new TopographicConv2D has one extra weight (its logged loss) after kernel/bias.
            # Copy through numpy: sharing a buffer would let JAX donate the original's.
            for target, source in zip(new.weights, old.weights, strict=False):
                target.assign(keras.ops.convert_to_numpy(source))
    return copy


def _walk(model):
    """The model's layers in order, descending into nested Sequential/functional models."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _walk(layer)


def _is_conv2d(layer):
    return isinstance(layer, keras.layers.Conv2D) and not isinstance(layer, TopographicConv2D)


def _check_cloneable(model):
    functional = isinstance(model, keras.Sequential) or (
        isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth")
    )
    if not functional:
        raise ValueError(
            f"make_topographic needs a Sequential or functional model; {type(model).__name__} "
            "is subclassed and cannot be cloned. Use keras_topo.TopographicConv2D in place of "
            "Conv2D inside its definition instead."
        )
    if not model.built:
        raise ValueError("make_topographic needs a built model: give it an Input or call it once.")


def _select(convs, layers):
    names = [layer.name for layer in convs]
    if not convs:
        raise ValueError("The model has no Conv2D layer to make topographic.")
    if layers is None:
        return convs
    if callable(layers):
        chosen = [layer for layer in convs if layers(layer)]
    else:
        if isinstance(layers, str):
            layers = [layers]
        unknown = [name for name in layers if name not in names]
        if unknown:
            raise ValueError(
                f"layers: {unknown} are not Conv2D layers of the model. Its Conv2D layers are "
                f"{names}."
            )
        chosen = [layer for layer in convs if layer.name in set(layers)]
    if not chosen:
        raise ValueError(f"layers selected no Conv2D layer. The model's Conv2D layers: {names}.")
    return chosen
