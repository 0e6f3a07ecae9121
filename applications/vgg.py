"""VGG-16 with batch norm (torchvision's `vgg16_bn`) as a Keras functional model."""

import keras

from . import builder_utils
from .adaptive_pooling import AdaptiveAveragePooling2D
from .conv_factory import ConvFactory

# Convs per block and their width (torchvision's configuration "D"); a 2x2 max-pool ends a block.
BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
POOLED_SIZE = 7
HIDDEN_UNITS = 4096
DROPOUT = 0.5
PAPER_LAYERS = "all"  # the paper's VGG: every conv is topographic


def conv_widths(width_multiplier=1.0):
    """`{conv name: filters}` of every conv, in graph order: the architecture as data."""
    return {
        f"block{b}_conv{i}": builder_utils.scaled(width, width_multiplier)
        for b, (convs, width) in enumerate(BLOCKS, start=1)
        for i in range(1, convs + 1)
    }


def VGG16(
    input_shape=(32, 32, 3),
    num_classes=10,
    topography=None,
    topographic_layers=None,
    width_multiplier=1.0,
    weights=None,
    name="vgg16",
    **topography_settings,
):
    """VGG-16 with batch norm, as torchvision's `vgg16_bn` (the model the paper trained).

    13 conv3x3 (padding 1, with bias) - BN - ReLU layers in 5 blocks, each ended by a 2x2
    max-pool; then torchvision's 7x7 adaptive average pool (which replicates a 1x1 map of a
    32x32 input 49 times), flatten, and the classifier Dense 4096 - ReLU - Dropout(0.5) -
    Dense 4096 - ReLU - Dropout(0.5) - Dense `num_classes`. Parameter count (trainable, 10
    classes, 3 channels, `width_multiplier=1`): 134,309,962. Height and width must be >= 32.

    With `topography` set, every conv is a `TopographicConv2D` by default (the paper's VGG).

    Initialisation as torchvision: conv kernels Kaiming normal (fan_out, ReLU gain, not
    truncated), conv bias 0; batch norm gamma 1, beta 0, momentum 0.9 in Keras terms (torch
    0.1), epsilon 1e-5; dense kernels normal(0, 0.01), dense bias 0.

    Layer names: `block{b}_conv{i}`, `block{b}_bn{i}`, `block{b}_relu{i}`, `block{b}_pool`,
    `avg_pool`, `flatten`, `fc1`, `fc1_relu`, `fc1_dropout`, `fc2`, ..., `classifier`.

    Args: as `keras_topo.applications.ResNet18`; `width_multiplier` scales every conv width
    and the 4096 hidden units of the classifier.

    Returns:
        A `keras.Model` mapping `(B, H, W, C)` inputs to `(B, num_classes)` logits.
    """
    input_shape = builder_utils.check_inputs(
        input_shape, num_classes, width_multiplier, min_size=2 ** len(BLOCKS)
    )
    widths = conv_widths(width_multiplier)
    topography = builder_utils.resolve_topography(topography, topography_settings)
    factory = ConvFactory(
        topography, widths, topographic_layers, paper_layers=PAPER_LAYERS, conv_init_mode="fan_out"
    )
    inputs = keras.Input(input_shape, name="input")
    x = inputs
    for b, (convs, _) in enumerate(BLOCKS, start=1):
        for i in range(1, convs + 1):
            name = f"block{b}_conv{i}"
            x = factory.conv(x, widths[name], 3, name, use_bias=True)
            x = factory.batch_norm(x, f"block{b}_bn{i}")
            x = keras.layers.ReLU(name=f"block{b}_relu{i}")(x)
        x = keras.layers.MaxPooling2D(2, strides=2, name=f"block{b}_pool")(x)
    x = AdaptiveAveragePooling2D(POOLED_SIZE, name="avg_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    hidden = builder_utils.scaled(HIDDEN_UNITS, width_multiplier)
    for i in (1, 2):
        x = _linear(hidden, x.shape[-1], f"fc{i}")(x)
        x = keras.layers.ReLU(name=f"fc{i}_relu")(x)
        x = keras.layers.Dropout(DROPOUT, name=f"fc{i}_dropout")(x)
    outputs = _linear(num_classes, x.shape[-1], "classifier")(x)
    return builder_utils.finish(inputs, outputs, factory, weights, name)


def _linear(units, fan_in, name):
    """Dense initialised as torchvision's VGG: normal(0, 0.01) kernel, zero bias."""
    return builder_utils.torch_linear(
        units,
        fan_in,
        name,
        kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01),
        bias_initializer="zeros",
    )
