"""`prune_channels`: the entry point, input checks and the choice of channels."""

import keras
import numpy as np

# Keras exports no public "is a functional model" check; `Functional` is the class that
# `keras.Model(inputs, outputs)` instantiates.
from keras.src.models.functional import Functional

from keras_topo.pruning import importance, masking, rebuild
from keras_topo.topographic_conv2d import TopographicConv2D

MODES = ("remove", "mask")


def prune_channels(model, fraction, criterion="l2", layers=None, mode="remove", seed=None):
    """Prunes a fraction of the output channels of conv layers; returns a NEW model.

    In each selected layer, `round(fraction * filters)` channels (Python's round, as
    `torch.nn.utils.prune` in the paper's code; at most `filters - 1`, so one always stays)
    with the lowest score are pruned: "l2" / "l1" filter norm, or "random" (seeded by `seed`).

    Args:
        model: a functional or Sequential `keras.Model`; it is not modified.
        fraction: in [0, 1), the share of each layer's channels to prune.
        criterion: "l2" (paper), "l1" or "random".
        layers: None for every `TopographicConv2D` of the model (the paper's setting), or a
            list of `Conv2D` layer names (or layers) of the model.
        mode: "remove" rebuilds a smaller functional model with the filters gone (see
            `keras_topo.pruning.rebuild` for what each layer becomes) whose outputs equal
            those of "mask", the paper's method: pruned filters and biases zeroed, shapes
            unchanged.
        seed: int seed of the "random" criterion.

    Returns:
        A new `keras.Model` ("remove": always functional).
    """
    if not isinstance(model, (keras.Sequential, Functional)):
        raise ValueError(
            f"model must be a functional or Sequential keras.Model, got {type(model).__name__}: "
            "a subclassed model has no graph to rebuild. Rewrite it with the functional API."
        )
    if not (isinstance(fraction, (int, float, np.floating)) and 0 <= fraction < 1):
        raise ValueError(f"fraction must be a number in [0, 1), got {fraction!r}.")
    if criterion not in importance.CRITERIA:
        raise ValueError(f"criterion must be one of {importance.CRITERIA}, got {criterion!r}.")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    rng = np.random.default_rng(seed)
    kept_by_layer = {}
    for layer in _selected_layers(model, layers):
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        scores = importance.channel_scores(kernel, criterion, rng)
        kept_by_layer[layer.name] = importance.kept_channels(scores, fraction)
    if mode == "mask":
        return masking.mask(model, kept_by_layer)
    if isinstance(model, keras.Sequential):
        model = keras.Model(model.inputs[0], model.outputs[0], name=model.name)
    return rebuild.rebuild(model, kept_by_layer)


def _selected_layers(model, layers):
    """The conv layers to prune, in model order."""
    if layers is None:
        selected = [layer for layer in model.layers if isinstance(layer, TopographicConv2D)]
        if not selected:
            names = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
            raise ValueError(
                f"layers=None prunes the model's TopographicConv2D layers, but {model.name!r} "
                f"has none. Pass the conv layers to prune by name, e.g. layers={names[:3]}."
            )
        return selected
    if isinstance(layers, (str, keras.layers.Layer)):
        layers = [layers]
    by_name = {layer.name: layer for layer in model.layers}
    selected = []
    for item in layers:
        name = item.name if isinstance(item, keras.layers.Layer) else item
        if name not in by_name or (
            isinstance(item, keras.layers.Layer) and by_name[name] is not item
        ):
            raise ValueError(f"layers: {name!r} is not a layer of model {model.name!r}.")
        layer = by_name[name]
        if not isinstance(layer, keras.layers.Conv2D):
            raise ValueError(
                f"layers: {name!r} is a {type(layer).__name__}, not a Conv2D; only conv layers' "
                "output channels can be pruned."
            )
        if layer.groups != 1 or layer.data_format != "channels_last":
            raise ValueError(
                f"layers: {name!r} must be a channels_last Conv2D with groups=1 to be pruned "
                f"(got groups={layer.groups}, data_format={layer.data_format!r})."
            )
        if name not in [s.name for s in selected]:
            selected.append(layer)
    return selected
