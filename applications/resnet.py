"""ResNet-18 (torchvision's, with the paper's 3x3 stride-1 stem) as a Keras functional model."""

import keras

from . import builder_utils
from .conv_factory import ConvFactory

STAGE_WIDTHS = (64, 128, 256, 512)
BLOCKS_PER_STAGE = 2
STEM_WIDTH = 64
# The convs the paper made topographic: the stem and each stage's last conv.
PAPER_LAYERS = ("stem_conv",) + tuple(
    f"stage{s}_block{BLOCKS_PER_STAGE}_conv2" for s in range(1, len(STAGE_WIDTHS) + 1)
)


def conv_widths(width_multiplier=1.0):
    """`{conv name: filters}` of every conv, in graph order: the architecture as data."""
    widths = {"stem_conv": builder_utils.scaled(STEM_WIDTH, width_multiplier)}
    previous = widths["stem_conv"]
    for s, stage_width in enumerate(STAGE_WIDTHS, start=1):
        width = builder_utils.scaled(stage_width, width_multiplier)
        for b in range(1, BLOCKS_PER_STAGE + 1):
            prefix = f"stage{s}_block{b}"
            widths[f"{prefix}_conv1"] = widths[f"{prefix}_conv2"] = width
            if _block_strides(s, b) != 1 or previous != width:
                widths[f"{prefix}_downsample_conv"] = width
            previous = width
    return widths


def _block_strides(stage, block):
    """Each stage after the first halves the map in its first block."""
    return 2 if stage > 1 and block == 1 else 1


def ResNet18(
    input_shape=(32, 32, 3),
    num_classes=10,
    topography=None,
    topographic_layers=None,
    width_multiplier=1.0,
    weights=None,
    name="resnet18",
    **topography_settings,
):
    """ResNet-18 as trained in the paper: torchvision's with a 3x3 stride-1 padding-1 stem.

    The stem's 3x3 stride-2 padding-1 max-pool is kept, as in the reference code. Parameter
    count (trainable, 10 classes, 3 channels, `width_multiplier=1`): 11,173,962.

    With `topography` set, `TopographicConv2D` replaces (by default) the paper's five convs:
    `stem_conv` and `stage{1..4}_block2_conv2` (the second conv of each stage's last block).

    Initialisation as torchvision: conv kernels Kaiming normal (fan_out, ReLU gain, not
    truncated), no conv bias; batch norm gamma 1, beta 0, momentum 0.9 in Keras terms (torch
    0.1), epsilon 1e-5; the classifier as torch's `nn.Linear` default (uniform
    `+-1/sqrt(fan_in)` for kernel and bias).

    Layer names: `stem_conv`, `stem_bn`, `stem_relu`, `stem_pool`,
    `stage{s}_block{b}_conv{1,2}`, `stage{s}_block{b}_bn{1,2}`, `stage{s}_block{b}_relu{1,2}`,
    `stage{s}_block{b}_add`, `stage{s}_block1_downsample_conv` / `_downsample_bn` (stages 2-4),
    `avg_pool`, `classifier`.

    Args:
        input_shape: `(height, width, channels)`, e.g. (32, 32, 3) or (64, 101, 1).
        num_classes: size of the output logits (no softmax).
        topography: None for a plain `Conv2D` baseline, or a `keras_topo.Topography` (or
            its scheme name): positions, distance, lambda (`weight`), `reduction` ("mean":
            each of the `L` topographic layers weighs `lambda / L`, the paper's formula;
            "sum": each weighs `lambda`, the reference code), objective.
        topographic_layers: None (the paper's layers), "all" (every conv), a list of conv names
            or a predicate on names.
        width_multiplier: scales every conv width (for small CPU experiments).
        weights: None or the path of a `.weights.h5` / `.keras` file to load.
        name: the model's name.
        **topography_settings: fields of `keras_topo.Topography` replacing those of
            `topography` (`weight` or its old name `topographic_weight`, `reduction`,
            `dimension`, `distance`, `nested_factor`, `objective`, `shrink_factor`).

    Returns:
        A `keras.Model` mapping `(B, H, W, C)` inputs to `(B, num_classes)` logits.
    """
    input_shape = builder_utils.check_inputs(input_shape, num_classes, width_multiplier)
    widths = conv_widths(width_multiplier)
    topography = builder_utils.resolve_topography(topography, topography_settings)
    factory = ConvFactory(
        topography, widths, topographic_layers, PAPER_LAYERS, conv_init_mode="fan_out"
    )
    inputs = keras.Input(input_shape, name="input")
    x = factory.conv(inputs, widths["stem_conv"], 3, "stem_conv")
    x = factory.batch_norm(x, "stem_bn")
    x = keras.layers.ReLU(name="stem_relu")(x)
    # torch pads the max-pool with -inf; zeros are equivalent here because the input is
    # post-ReLU (>= 0) and every window holds at least one real value.
    x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
    for s in range(1, len(STAGE_WIDTHS) + 1):
        for b in range(1, BLOCKS_PER_STAGE + 1):
            x = _basic_block(factory, x, widths, _block_strides(s, b), f"stage{s}_block{b}")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = builder_utils.torch_linear(num_classes, x.shape[-1], "classifier")(x)
    return builder_utils.finish(inputs, outputs, factory, weights, name)


def _basic_block(factory, x, widths, strides, prefix):
    """torchvision's `BasicBlock`: conv3x3-bn-relu-conv3x3-bn, + shortcut, relu."""
    shortcut = x
    y = factory.conv(x, widths[f"{prefix}_conv1"], 3, f"{prefix}_conv1", strides=strides)
    y = factory.batch_norm(y, f"{prefix}_bn1")
    y = keras.layers.ReLU(name=f"{prefix}_relu1")(y)
    y = factory.conv(y, widths[f"{prefix}_conv2"], 3, f"{prefix}_conv2")
    y = factory.batch_norm(y, f"{prefix}_bn2")
    if f"{prefix}_downsample_conv" in widths:
        width = widths[f"{prefix}_downsample_conv"]
        shortcut = factory.conv(x, width, 1, f"{prefix}_downsample_conv", strides=strides)
        shortcut = factory.batch_norm(shortcut, f"{prefix}_downsample_bn")
    y = keras.layers.Add(name=f"{prefix}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{prefix}_relu2")(y)
