"""Model builders for the paper's architectures (installed as `keras_topo.applications`).

`ResNet18`, `VGG16`, `DenseNet121` and `ViT` return Keras functional models, plain
(`topography=None`) or with `TopographicConv2D` where the paper put it (the ViT: its MLP hidden
layers, through `make_topographic`). `ARCHITECTURES` maps model names to each
builder and its convs as data; `topographic_layer_specs(name, ...)` lists the topographic
layers a builder would create (names, filters, positions) without building the model.
"""

from . import densenet, resnet, vgg, vit
from .architecture import Architecture, TopographicLayerSpec
from .architecture import topographic_layer_specs as _specs
from .densenet import DenseNet121
from .resnet import ResNet18
from .vgg import VGG16
from .vit import ViT

# The one registry of model names (the runner and the CLI read it).
ARCHITECTURES = {
    "resnet18": Architecture(ResNet18, resnet.conv_widths, resnet.PAPER_LAYERS),
    "vgg16": Architecture(VGG16, vgg.conv_widths, vgg.PAPER_LAYERS),
    "densenet121": Architecture(DenseNet121, densenet.conv_widths, densenet.PAPER_LAYERS),
    "vit": Architecture(ViT, vit.mlp_widths, vit.PAPER_LAYERS),  # MLP hidden layers, not convs
}
BUILDERS = {name: architecture.build for name, architecture in ARCHITECTURES.items()}


def topographic_layer_specs(
    model, topography="grid", topographic_layers=None, width_multiplier=1.0
):
    """The topographic layers of the builder `model` (a name of `ARCHITECTURES`), in graph
    order, without building it: a list of `TopographicLayerSpec(name, filters, positions)`.

    The other arguments are the builders' (`topography`: a `Topography` or scheme name).
    """
    if model not in ARCHITECTURES:
        raise ValueError(f"model must be one of {sorted(ARCHITECTURES)}, got {model!r}.")
    return _specs(ARCHITECTURES[model], topography, topographic_layers, width_multiplier)


__all__ = [
    "ARCHITECTURES",
    "BUILDERS",
    "DenseNet121",
    "ResNet18",
    "TopographicLayerSpec",
    "VGG16",
    "ViT",
    "topographic_layer_specs",
]
