"""Which layers of a model a function acts on: one rule for `make_topographic` and pruning.

`layers=` everywhere in keras-topo takes the same values: None (the caller's default set),
a layer name, a layer object, a list of names and/or layers, or a predicate
`fn(layer) -> bool`. Layers are found through nested models at any depth.
"""

import keras


def walk_layers(model):
    """Every layer of `model` once, in order, descending into nested models (any depth)."""
    seen = set()

    def walk(container):
        for layer in container.layers:
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            yield layer
            if isinstance(layer, keras.Model):
                yield from walk(layer)

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


def is_topographic(layer):
    """True for keras-topo's topographic layers (they carry `positions` and `topography`)."""
    from keras_topo.topographic_conv import TopographicMixin

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
