"""keras-topo: topographic convolutional networks for Keras 3.

`keras_topo.data` (tf.data pipelines, needs TensorFlow) is imported on demand.
"""

from keras_topo import applications, positions, pruning
from keras_topo.conversion import make_topographic
from keras_topo.topographic_conv2d import TopographicConv2D
from keras_topo.topographic_loss import topographic_loss
from keras_topo.topographic_loss_logger import TopographicLossLogger, topographic_layers

__version__ = "0.1.0"

__all__ = [
    "TopographicConv2D",
    "TopographicLossLogger",
    "applications",
    "make_topographic",
    "positions",
    "pruning",
    "topographic_layers",
    "topographic_loss",
    "__version__",
]
