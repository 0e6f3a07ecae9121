"""The paper's architectures as data: their convs and topographic layers without building a model.

A builder (`ResNet18`, `VGG16`, `DenseNet121`) wires layers; its module also states the
architecture as data (`conv_widths(width_multiplier)`, `PAPER_LAYERS`), which the builder itself
reads. `topographic_layer_specs` answers "which layers would be topographic, with how many
channels, where on the map" from that data alone, e.g. to prune or score a baseline at the
layers its topographic twin would have, without building a model.
"""

import dataclasses

import numpy as np

from keras_topo.topography import Topography

from .conv_factory import topographic_names


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One of the paper's architectures: its builder and its convs as data."""

    build: object  # the builder function, e.g. `ResNet18`
    conv_widths: object  # `fn(width_multiplier) -> {conv name: filters}`, in graph order
    paper_layers: object  # the conv names the paper made topographic, or "all"


@dataclasses.dataclass(frozen=True)
class TopographicLayerSpec:
    """A topographic layer a builder would create: its name, filters and `(filters, dim)` positions."""

    name: str
    filters: int
    positions: np.ndarray


def topographic_layer_specs(
    architecture, topography="grid", topographic_layers=None, width_multiplier=1.0
):
    """The topographic layers of a builder's model, in graph order, without building it.

    Args:
        architecture: an `Architecture` (see `keras_topo.applications.ARCHITECTURES`).
        topography: a `keras_topo.Topography` or its scheme name (positions of the layers).
        topographic_layers: as the builders' argument: None (the paper's layers), "all", a
            list of conv names or a predicate on names.
        width_multiplier: as the builders' argument.

    Returns:
        A list of `TopographicLayerSpec`, equal to the builder's topographic layers (tested).
    """
    widths = architecture.conv_widths(width_multiplier)
    names = topographic_names(widths, topographic_layers, architecture.paper_layers)
    settings = Topography.coerce(topography)
    return [
        TopographicLayerSpec(name, widths[name], settings.positions(widths[name])) for name in names
    ]
