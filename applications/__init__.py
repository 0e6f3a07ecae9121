"""Model builders for the paper's architectures (installed as `keras_topo.applications`).

`ResNet18`, `VGG16` and `DenseNet121` return Keras functional models, plain (`topography=None`)
or with `TopographicConv2D` where the paper put it. `BUILDERS` maps model names to them.
"""

from .densenet import DenseNet121
from .resnet import ResNet18
from .vgg import VGG16

# The one registry of model names (the runner and the CLI read it).
BUILDERS = {"resnet18": ResNet18, "vgg16": VGG16, "densenet121": DenseNet121}

__all__ = ["BUILDERS", "DenseNet121", "ResNet18", "VGG16"]
