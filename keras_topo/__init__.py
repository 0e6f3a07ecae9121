"""keras-topo: topographic neural networks for Keras 3.

`keras_topo.data` (tf.data pipelines, needs TensorFlow) is imported on demand. Importing the
package changes no environment variable: the `keras-topo` command sets the fast path's
(`keras_topo_launcher`) before Keras loads; `keras_topo.doctor` says what a process runs with.
"""

import importlib

from keras_topo import applications, positions, pruning, training_recipe
from keras_topo.conversion import make_topographic, strip_topography, use_fast_layers
from keras_topo.export import export_model
from keras_topo.fast_layers import FastBatchNormalization, FastConv2D, FastConv3D
from keras_topo.token_topography import (
    TopographicDense,
    TopographicEinsumDense,
    TopographicGroupedQueryAttention,
    TopographicMultiHeadAttention,
)
from keras_topo.topographic_conv import TopographicConv1D, TopographicConv2D, TopographicConv3D
from keras_topo.topographic_loss import topographic_loss
from keras_topo.topographic_loss_logger import TopographicLossLogger, topographic_layers
from keras_topo.topographic_regularizer import TopographicRegularizer
from keras_topo.topography import Topography

__version__ = "0.3.0"

# Public submodules reached as attributes after `import keras_topo`, imported on first use
# (some are heavy: tf.data pipelines, the runner, matplotlib figures).
_LAZY_SUBMODULES = (
    "data",
    "distribute",
    "doctor",
    "experiments",
    "figures",
    "loss_recording",
    "metrics",
    "objectives",
)


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FastBatchNormalization",
    "FastConv2D",
    "FastConv3D",
    "Topography",
    "TopographicConv1D",
    "TopographicConv2D",
    "TopographicConv3D",
    "TopographicDense",
    "TopographicEinsumDense",
    "TopographicGroupedQueryAttention",
    "TopographicMultiHeadAttention",
    "TopographicLossLogger",
    "TopographicRegularizer",
    "applications",
    "export_model",
    "make_topographic",
    "positions",
    "pruning",
    "strip_topography",
    "topographic_layers",
    "topographic_loss",
    "training_recipe",
    "use_fast_layers",
    "__version__",
]
