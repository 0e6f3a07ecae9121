"""Mixed precision (`mixed_float16`, `mixed_bfloat16`): every objective's loss is float32 and
close to the float32 policy's on the same weights, and a small model trains finite, on every
backend (all three run float16 and bfloat16 convolutions on CPU)."""

import keras
import numpy as np
import pytest

import keras_topo
from keras_topo import Topography
from keras_topo.fast_layers import FastBatchNormalization
from keras_topo.objectives import OBJECTIVES

# Unit roundoff of each policy's compute dtype: 2^-11 (float16), 2^-8 (bfloat16).
ROUNDOFF = {"mixed_float16": 2.0**-11, "mixed_bfloat16": 2.0**-8}
POLICIES = tuple(ROUNDOFF)


def layer_loss(policy, objective, weights, x):
    """The topographic loss a TopographicConv2D adds under `policy`, with `weights` set."""
    keras.config.set_dtype_policy(policy)
    layer = keras_topo.TopographicConv2D(
        12,
        3,
        padding="same",
        topography=Topography(objective=objective, shrink_factor=2),
        topographic_weight=1.0,
    )
    layer.build(x.shape)
    if weights is not None:
        layer.set_weights(weights)
    outputs = layer(x)
    (loss,) = layer.losses
    return layer, outputs, loss


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_loss_is_float32_and_close_to_the_float32_policy(policy, objective):
    """Rounding the conv's input, kernel and output to the compute dtype moves each output
    value (the kernel for "weights") by at most about `u` relative, in random directions; the
    losses are smooth, scale-free functions of them (cosines, correlations), whose first-order
    change averages those moves, so it stays well below `u`. Bound: 2u (0.1 % for float16,
    0.8 % for bfloat16); measured at most 0.3u (three seeds, three backends). A float16 loss
    would miss the dtype check; a loss accumulated in the compute dtype, the float32 oracle
    test in test_topographic_loss.py."""
    x = np.random.randn(4, 6, 6, 3).astype("float32")
    reference, _, expected = layer_loss("float32", objective, None, x)
    _, outputs, loss = layer_loss(policy, objective, reference.get_weights(), x)
    assert keras.backend.standardize_dtype(outputs.dtype) == policy.removeprefix("mixed_")
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    got, want = (float(keras.ops.convert_to_numpy(v)) for v in (loss, expected))
    assert np.isfinite(got)
    assert abs(got - want) <= 2 * ROUNDOFF[policy] * abs(want)


@pytest.mark.parametrize("policy", POLICIES)
def test_small_model_trains_finite(policy):
    """A few SGD steps of a topographic conv, fast batch norm and dense head: finite losses,
    float32 topographic losses, float32 variables."""
    keras.config.set_dtype_policy(policy)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            keras_topo.TopographicConv2D(8, 3, padding="same", topographic_weight=1.0),
            FastBatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, dtype="float32"),
        ]
    )
    model.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(True))
    x = np.random.randn(16, 6, 6, 3).astype("float32")
    y = np.random.randint(0, 3, 16)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    model(x)
    assert all(keras.backend.standardize_dtype(loss.dtype) == "float32" for loss in model.losses)
    assert all(
        np.all(np.isfinite(keras.ops.convert_to_numpy(v)))
        for v in model.weights
        if keras.backend.standardize_dtype(v.dtype) == "float32"
    )
