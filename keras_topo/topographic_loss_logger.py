"""`TopographicLossLogger`: each topographic layer's loss in the training logs."""

import keras
import numpy as np

from keras_topo.layer_selection import is_topographic, walk_layers
from keras_topo.loss_recording import recording


class TopographicLossLogger(keras.callbacks.Callback):
    """Adds `topo_loss/<layer name>` (unweighted) and `topo_loss` (weighted sum) to epoch logs.

    At the end of each epoch the model runs once, in inference mode, on a fixed probe batch
    and each topographic layer's loss is read (`keras_topo.loss_recording`): values comparable
    across epochs, and nothing added to the training step (no state, no host sync). They then
    reach `History`, `CSVLogger` and `TensorBoard` like any metric (put this callback before
    those in the list).

    Args:
        probe: the inputs of one batch `(B, ...)` (array or tensor), or a dataset / iterable of
            batches (its first batch's inputs are used), e.g. a few validation examples.
    """

    def __init__(self, probe=None):
        super().__init__()
        if probe is None:
            raise TypeError(
                "TopographicLossLogger needs a probe batch since keras-topo 0.2 (the layers no "
                "longer keep a loss variable): TopographicLossLogger(x_val[:64]) or "
                "TopographicLossLogger(validation_dataset)."
            )
        self.probe = _first_inputs(probe)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs.update(topographic_losses(self.model, self.probe))


def topographic_losses(model, x):
    """`{"topo_loss/<layer>": unweighted loss, "topo_loss": weighted sum}` of `model` on `x`."""
    with recording() as losses:
        model(x, training=False)
    values, total = {}, 0.0
    for layer in topographic_layers(model):
        value = float(keras.ops.convert_to_numpy(losses[layer.name]))
        values[f"topo_loss/{layer.name}"] = value
        total += layer.topographic_weight * value
    values["topo_loss"] = total
    return values


def topographic_layers(model):
    """All topographic layers of a model, nested models included, in order."""
    return [layer for layer in walk_layers(model) if is_topographic(layer)]


def _first_inputs(probe):
    if isinstance(probe, (np.ndarray, list)) or keras.ops.is_tensor(probe):
        return probe
    for batch in probe:
        return batch[0] if isinstance(batch, (tuple, list)) else batch
    raise ValueError("TopographicLossLogger: the probe dataset is empty.")
