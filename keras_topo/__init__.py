"""keras-topo: topographic convolutional networks for Keras 3."""

from keras_topo import positions
from keras_topo.conversion import make_topographic
from keras_topo.topographic_conv2d import TopographicConv2D
from keras_topo.topographic_loss import topographic_loss
from keras_topo.topographic_loss_logger import TopographicLossLogger, topographic_layers

__version__ = "0.1.0"

__all__ = [
    "TopographicConv2D",
    "TopographicLossLogger",
    "make_topographic",
    "positions",
    "topographic_layers",
    "topographic_loss",
    "__version__",
]
