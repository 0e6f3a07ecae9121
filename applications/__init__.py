"""Model builders for the paper's architectures (installed as `keras_topo.applications`).

`ResNet18`, `VGG16` and `DenseNet121` return Keras functional models, plain (`topography=None`)
or with `TopographicConv2D` where the paper put it.
"""

from .densenet import DenseNet121
from .resnet import ResNet18
from .vgg import VGG16

__all__ = ["DenseNet121", "ResNet18", "VGG16"]
