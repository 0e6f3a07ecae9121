"""A two-conv architecture for the runner's tests, registered like the paper's builders.

The runner's tests are about the runner, not ResNet-18: `registered()` adds "tiny" to
`keras_topo.applications.ARCHITECTURES` (and `BUILDERS`, the CLI's `--model` choices) and
removes it afterwards, so that `RunConfig(model="tiny")`, its map scores and its default
pruning layers go through the same registry and data (`topographic_layer_specs`) as a real one.
"""

import contextlib

import keras
import pytest
from keras_topo.applications.architecture import Architecture
from keras_topo.applications.builder_utils import resolve_topography
from keras_topo.applications.conv_factory import ConvFactory

from keras_topo import applications

NAME = "tiny"
PAPER_LAYERS = ("conv2",)


def conv_widths(width_multiplier=1.0):
    """`{conv name: filters}`; the width is fixed (8 channels carry a small map)."""
    return {"conv1": 8, "conv2": 8}


def TinyNet(
    input_shape,
    num_classes,
    topography=None,
    topographic_layers=None,
    width_multiplier=1.0,
    **topography_settings,
):
    """conv1 - ReLU - conv2 (topographic by default) - ReLU - global pool - Dense logits."""
    topography = resolve_topography(topography, topography_settings)
    widths = conv_widths(width_multiplier)
    factory = ConvFactory(topography, widths, topographic_layers, PAPER_LAYERS, "fan_out")
    inputs = keras.Input(input_shape)
    x = keras.layers.ReLU()(factory.conv(inputs, widths["conv1"], 3, "conv1"))
    x = keras.layers.ReLU()(factory.conv(x, widths["conv2"], 3, "conv2"))
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes)(x)
    factory.finalize()
    return keras.Model(inputs, outputs, name=NAME)


@contextlib.contextmanager
def registered():
    """The "tiny" architecture in the registries for the duration of the block."""
    with pytest.MonkeyPatch.context() as patch:
        architecture = Architecture(TinyNet, conv_widths, PAPER_LAYERS)
        patch.setitem(applications.ARCHITECTURES, NAME, architecture)
        patch.setitem(applications.BUILDERS, NAME, TinyNet)
        yield architecture
