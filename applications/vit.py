"""A small Vision Transformer (ViT) as a plain Keras functional model.

No convolution: the patch embedding is a `Dense` on flattened patches, so
`keras_topo.make_topographic(model)` without `layers` picks the MLP hidden layers (where
TopoNets and TopoLM put their maps). `PAPER_LAYERS` names them too.
"""

import keras

from keras_topo.conversion import make_topographic

from . import builder_utils
from .conv_factory import topographic_names
from .position_embedding import PositionEmbedding

# The defaults: the CPU-scale ViT of `keras_topo.experiments.vit_study` (about 140k params).
PATCH_SIZE = 4
NUM_BLOCKS = 4
HIDDEN_DIM = 64
NUM_HEADS = 4
MLP_DIM = 128
PAPER_LAYERS = "all"  # every MLP hidden layer: `mlp_widths` lists the layers that can carry a map
EPSILON = 1e-6


def mlp_layer_name(block):
    """Name of block `block`'s MLP hidden `Dense` (the first of `Dense - GELU - Dense`)."""
    return f"block{block}_mlp1"


def mlp_widths(width_multiplier=1.0, num_blocks=NUM_BLOCKS, mlp_dim=MLP_DIM):
    """`{MLP hidden layer name: units}` in graph order: the layers that can be topographic."""
    units = builder_utils.scaled(mlp_dim, width_multiplier)
    return {mlp_layer_name(b): units for b in range(1, num_blocks + 1)}


def ViT(
    input_shape=(32, 32, 3),
    num_classes=10,
    topography=None,
    topographic_layers=None,
    width_multiplier=1.0,
    weights=None,
    name="vit",
    patch_size=PATCH_SIZE,
    num_blocks=NUM_BLOCKS,
    hidden_dim=HIDDEN_DIM,
    num_heads=NUM_HEADS,
    mlp_dim=MLP_DIM,
    **topography_settings,
):
    """A pre-norm ViT: patch embedding, learned positions, `num_blocks` transformer blocks,
    mean-pooled tokens, a linear classifier.

    Images `(B, H, W, C)` are cut into `T = (H / p) (W / p)` patches of `p x p` (`p =
    patch_size`), each flattened and embedded by the `Dense` `patch_embed` to `E =
    hidden_dim` channels, plus a `PositionEmbedding`. Each block `b` (from 1): LayerNorm -
    `MultiHeadAttention` (`num_heads` heads of `E / num_heads`, self-attention) - residual add,
    then LayerNorm - `Dense(mlp_dim)` - GELU - `Dense(E)` - residual add. A final LayerNorm,
    the mean over tokens, `Dense(num_classes)`. Keras' default initialisers, no dropout.

    Layer names: `patch_rows`, `patch_order`, `patches` (reshapes), `patch_embed`, `position_embedding`, `block{b}_ln1`, `block{b}_attention`,
    `block{b}_add1`, `block{b}_ln2`, `block{b}_mlp1` (the MLP hidden layer), `block{b}_gelu`,
    `block{b}_mlp2`, `block{b}_add2`, `final_ln`, `pool`, `classifier`.

    With `topography` set, the chosen MLP hidden layers are made topographic by
    `keras_topo.make_topographic` (tokens as samples for the activation objectives, the kernel
    for TopoLoss).

    Args:
        input_shape: `(H, W, C)`; `patch_size` must divide `H` and `W`.
        num_classes: logits out.
        topography: None (plain) or a `keras_topo.Topography` / scheme name.
        topographic_layers: None or "all" (every MLP hidden layer), a list of their names or a
            predicate on names.
        width_multiplier: scales `hidden_dim` and `mlp_dim`.
        weights: None or a `.weights.h5` / `.keras` file of the same builder and arguments.
        patch_size, num_blocks, hidden_dim, num_heads, mlp_dim: the sizes.
        **topography_settings: fields of `Topography` replacing those of `topography`.

    Returns:
        A `keras.Model` mapping `(B, H, W, C)` to `(B, num_classes)` logits.
    """
    input_shape = builder_utils.check_inputs(input_shape, num_classes, width_multiplier)
    topography = builder_utils.resolve_topography(topography, topography_settings)
    for key, value in (
        ("patch_size", patch_size),
        ("num_blocks", num_blocks),
        ("hidden_dim", hidden_dim),
        ("num_heads", num_heads),
        ("mlp_dim", mlp_dim),
    ):
        if not builder_utils._is_positive_int(value):
            raise ValueError(f"{key} must be a positive integer, got {value!r}.")
    height, width, channels = input_shape
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"patch_size {patch_size} must divide the image height and width {height}x{width}; "
            "choose a divisor or resize the images."
        )
    embed = builder_utils.scaled(hidden_dim, width_multiplier)
    if embed < num_heads:
        raise ValueError(f"hidden_dim {embed} is smaller than num_heads {num_heads}.")
    grid = (height // patch_size, width // patch_size)
    inputs = keras.Input(input_shape, name="input")
    x = keras.layers.Reshape(
        (grid[0], patch_size, grid[1], patch_size, channels), name="patch_rows"
    )(inputs)
    x = keras.layers.Permute((1, 3, 2, 4, 5), name="patch_order")(x)
    x = keras.layers.Reshape(
        (grid[0] * grid[1], patch_size * patch_size * channels), name="patches"
    )(x)
    x = keras.layers.Dense(embed, name="patch_embed")(x)
    x = PositionEmbedding(name="position_embedding")(x)
    widths = mlp_widths(width_multiplier, num_blocks, mlp_dim)
    for b in range(1, num_blocks + 1):
        y = keras.layers.LayerNormalization(epsilon=EPSILON, name=f"block{b}_ln1")(x)
        y = keras.layers.MultiHeadAttention(
            num_heads, embed // num_heads, name=f"block{b}_attention"
        )(y, y)
        x = keras.layers.Add(name=f"block{b}_add1")([x, y])
        y = keras.layers.LayerNormalization(epsilon=EPSILON, name=f"block{b}_ln2")(x)
        y = keras.layers.Dense(widths[mlp_layer_name(b)], name=mlp_layer_name(b))(y)
        y = keras.layers.Activation("gelu", name=f"block{b}_gelu")(y)
        y = keras.layers.Dense(embed, name=f"block{b}_mlp2")(y)
        x = keras.layers.Add(name=f"block{b}_add2")([x, y])
    x = keras.layers.LayerNormalization(epsilon=EPSILON, name="final_ln")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, name="classifier")(x)
    model = keras.Model(inputs, outputs, name=name)
    if topography is not None:
        names = topographic_names(widths, topographic_layers, PAPER_LAYERS)
        model = make_topographic(model, layers=names, topography=topography)
    if weights is not None:
        builder_utils.load_weights(model, weights)
    return model
