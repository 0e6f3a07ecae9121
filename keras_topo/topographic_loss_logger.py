"""`TopographicLossLogger`: each topographic layer's loss in the training logs."""

import keras

from keras_topo.topographic_conv2d import TopographicConv2D


class TopographicLossLogger(keras.callbacks.Callback):
    """Adds `topo_loss/<layer name>` (unweighted) and `topo_loss` (weighted sum) to epoch logs.

    The values are those of the epoch's last training batch, read from each layer's
    `topographic_loss_value` variable; they then reach `History`, `CSVLogger` and
    `TensorBoard` like any metric (put this callback before those in the list).
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        total = 0.0
        for layer in topographic_layers(self.model):
            value = float(keras.ops.convert_to_numpy(layer.topographic_loss_value))
            logs[f"topo_loss/{layer.name}"] = value
            total += layer.topographic_weight * value
        logs["topo_loss"] = total


def topographic_layers(model):
    """All `TopographicConv2D` layers of a model, nested models included, in order."""
    return [layer for layer in model._flatten_layers() if isinstance(layer, TopographicConv2D)]
