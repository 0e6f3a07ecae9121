"""mode="mask": the paper's pruning, pruned filters and their biases set to zero."""

import keras
import numpy as np

from keras_topo.pruning.layer_copy import from_config_zero_init, restore_initializers


def mask(model, kept_by_layer):
    """A copy of `model` whose listed conv layers have all but the kept filters zeroed.

    Args:
        model: a functional or Sequential `keras.Model` (not modified).
        kept_by_layer: dict conv layer name -> sorted indices of the filters that stay.

    Returns:
        A new model with the same architecture and shapes: the kernel `[..., j]` and bias `[j]`
        of every pruned filter `j` are 0 (as `torch.nn.utils.prune` masks in the reference
        code), everything else is copied, including non-trainable state.
    """
    configs = {}

    def copy(layer):
        configs[layer.name] = layer.get_config()
        return from_config_zero_init(layer.__class__, configs[layer.name])

    clone = keras.models.clone_model(model, clone_function=copy)
    for layer in clone.layers:
        if layer.name in configs:
            restore_initializers(layer, configs[layer.name])
    clone.set_weights(model.get_weights())
    for name, kept in kept_by_layer.items():
        layer = clone.get_layer(name)
        pruned = np.setdiff1d(np.arange(layer.filters), kept)
        for variable in (layer.kernel, layer.bias):
            if variable is not None:
                value = keras.ops.convert_to_numpy(variable).copy()
                value[..., pruned] = 0
                variable.assign(value)
    return clone
