"""DenseNet-121 (torchvision's, with the paper's 3x3 stride-1 stem) as a Keras functional model."""

import keras

from . import builder_utils
from .conv_factory import ConvFactory

BLOCK_LAYERS = (6, 12, 24, 16)
GROWTH_RATE = 32
BN_SIZE = 4
INIT_FEATURES = 64
# The convs the paper made topographic: the stem and the 3x3 conv of each block's last layer.
PAPER_LAYERS = ("stem_conv",) + tuple(
    f"denseblock{b}_layer{n}_conv2" for b, n in enumerate(BLOCK_LAYERS, start=1)
)


def conv_widths(width_multiplier=1.0):
    """`{conv name: filters}` of every conv, in graph order: the architecture as data."""
    growth = builder_utils.scaled(GROWTH_RATE, width_multiplier)
    widths = {"stem_conv": builder_utils.scaled(INIT_FEATURES, width_multiplier)}
    channels = widths["stem_conv"]  # of the concatenated feature map
    for b, layers in enumerate(BLOCK_LAYERS, start=1):
        for n in range(1, layers + 1):
            widths[f"denseblock{b}_layer{n}_conv1"] = BN_SIZE * growth
            widths[f"denseblock{b}_layer{n}_conv2"] = growth
            channels += growth
        if b < len(BLOCK_LAYERS):
            channels //= 2
            widths[f"transition{b}_conv"] = channels
    return widths


def DenseNet121(
    input_shape=(32, 32, 3),
    num_classes=10,
    topography=None,
    topographic_layers=None,
    width_multiplier=1.0,
    weights=None,
    name="densenet121",
    **topography_settings,
):
    """DenseNet-121 as trained in the paper: torchvision's with a 3x3 stride-1 padding-1 stem.

    Growth rate 32, blocks of 6-12-24-16 dense layers, bottleneck width 4 x growth, transitions
    halving the channels (BN-ReLU-conv1x1-avgpool 2x2); the stem's 3x3 stride-2 padding-1
    max-pool is kept. Parameter count (trainable, 10 classes, 3 channels,
    `width_multiplier=1`): 6,956,426. Height and width must be >= 16.

    With `topography` set, `TopographicConv2D` replaces (by default) the paper's five convs:
    `stem_conv` and `denseblock{b}_layer{last}_conv2` (the 3x3 conv of each block's last layer).

    Initialisation as torchvision: conv kernels Kaiming normal (fan_in, ReLU gain, not
    truncated), no conv bias; batch norm gamma 1, beta 0, momentum 0.9 in Keras terms (torch
    0.1), epsilon 1e-5; classifier kernel as torch's `nn.Linear` default (uniform
    `+-1/sqrt(fan_in)`), bias 0.

    Layer names: `stem_conv`, `stem_bn`, `stem_relu`, `stem_pool`,
    `denseblock{b}_layer{l}_{bn1,relu1,conv1,bn2,relu2,conv2,concat}`,
    `transition{t}_{bn,relu,conv,pool}`, `final_bn`, `final_relu`, `avg_pool`, `classifier`.

    Args: as `keras_topo.applications.ResNet18`; `width_multiplier` scales the stem width and
    the growth rate (hence every conv).

    Returns:
        A `keras.Model` mapping `(B, H, W, C)` inputs to `(B, num_classes)` logits.
    """
    # The stem pool and the three transitions each halve the map (floor), as in torch.
    input_shape = builder_utils.check_inputs(
        input_shape, num_classes, width_multiplier, min_size=2 ** len(BLOCK_LAYERS)
    )
    widths = conv_widths(width_multiplier)
    topography = builder_utils.resolve_topography(topography, topography_settings)
    factory = ConvFactory(
        topography, widths, topographic_layers, PAPER_LAYERS, conv_init_mode="fan_in"
    )
    inputs = keras.Input(input_shape, name="input")
    x = factory.conv(inputs, widths["stem_conv"], 3, "stem_conv")
    x = factory.batch_norm(x, "stem_bn")
    x = keras.layers.ReLU(name="stem_relu")(x)
    # torch pads the max-pool with -inf; zeros are equivalent here because the input is
    # post-ReLU (>= 0) and every window holds at least one real value.
    x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
    for b, layers in enumerate(BLOCK_LAYERS, start=1):
        for n in range(1, layers + 1):
            x = _dense_layer(factory, x, widths, f"denseblock{b}_layer{n}")
        if b < len(BLOCK_LAYERS):
            x = _transition(factory, x, widths, f"transition{b}")
    x = factory.batch_norm(x, "final_bn")
    x = keras.layers.ReLU(name="final_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = builder_utils.torch_linear(
        num_classes, x.shape[-1], "classifier", bias_initializer="zeros"
    )(x)
    return builder_utils.finish(inputs, outputs, factory, weights, name)


def _dense_layer(factory, x, widths, prefix):
    """BN-ReLU-conv1x1 (4 x growth) - BN-ReLU-conv3x3 (growth), concatenated to the input."""
    y = factory.batch_norm(x, f"{prefix}_bn1")
    y = keras.layers.ReLU(name=f"{prefix}_relu1")(y)
    y = factory.conv(y, widths[f"{prefix}_conv1"], 1, f"{prefix}_conv1")
    y = factory.batch_norm(y, f"{prefix}_bn2")
    y = keras.layers.ReLU(name=f"{prefix}_relu2")(y)
    y = factory.conv(y, widths[f"{prefix}_conv2"], 3, f"{prefix}_conv2")
    return keras.layers.Concatenate(name=f"{prefix}_concat")([x, y])


def _transition(factory, x, widths, prefix):
    """BN-ReLU-conv1x1 (half the channels) - average pool 2x2 stride 2."""
    x = factory.batch_norm(x, f"{prefix}_bn")
    x = keras.layers.ReLU(name=f"{prefix}_relu")(x)
    x = factory.conv(x, widths[f"{prefix}_conv"], 1, f"{prefix}_conv")
    return keras.layers.AveragePooling2D(2, strides=2, name=f"{prefix}_pool")(x)
