"""coupling="expand" on the dependency graph and handlers: 1D/3D layers, dense layers, nested
models, custom handlers, and the paper's ResNet-18 (kept channels, parameters, remove == mask)."""

import functools

import keras
import numpy as np
import pytest
from test_pruning import randomize
from test_pruning_groups import ChannelScale, conv, nested

from keras_topo.pruning import (
    Follower,
    Producer,
    count_params,
    prune_channels,
    register_handler,
)

prune_expand = functools.partial(prune_channels, coupling="expand")


def outputs(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def assert_remove_equals_mask(model, fraction=0.5, **kwargs):
    """Removed == masked (1e-4 of the output scale), the function changed, fewer params."""
    x = np.random.default_rng(1).normal(size=(2, *model.input_shape[1:])).astype("float32")
    removed = prune_expand(model, fraction, mode="remove", **kwargs)
    masked = prune_expand(model, fraction, mode="mask", **kwargs)
    got, want, unpruned = outputs(removed, x), outputs(masked, x), outputs(model, x)
    scale = max(1.0, np.abs(want).max())
    np.testing.assert_allclose(got, want, atol=1e-4 * scale, rtol=0)
    assert np.abs(want - unpruned).max() > 1e-3 * scale
    assert count_params(removed) < count_params(model) == count_params(masked)
    return removed


def l2_kept(layer, fraction):
    """Numpy oracle of the "l2" choice: the filters of largest kernel norm, sorted."""
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    norms = np.sqrt((kernel.reshape(-1, kernel.shape[-1]).astype("float64") ** 2).sum(0))
    pruned = round(fraction * norms.size)
    return np.sort(np.argsort(norms, kind="stable")[pruned:])


def residual_1d():
    """Conv1D, batch norm, a residual sum with an unpruned branch, causal padding, dense."""
    inputs = keras.Input((10, 3))
    x = keras.layers.Conv1D(8, 3, padding="same", name="a")(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    y = keras.layers.Conv1D(8, 3, padding="causal", name="b")(x)
    y = keras.layers.BatchNormalization()(y)
    x = keras.layers.Add()([x, y])
    x = keras.layers.ZeroPadding1D(1)(x)
    x = keras.layers.MaxPooling1D(2)(x)
    x = keras.layers.Dense(5, activation="relu", name="d")(x)
    x = keras.layers.Flatten()(x)
    return randomize(keras.Model(inputs, keras.layers.Dense(2, name="head")(x)))


def conv_3d():
    inputs = keras.Input((4, 4, 4, 2))
    x = keras.layers.Conv3D(6, 3, padding="same", name="a")(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.Conv3D(4, 3, padding="valid", activation="relu", name="b")(x)
    x = keras.layers.GlobalAveragePooling3D()(x)
    return randomize(keras.Model(inputs, keras.layers.Dense(2, name="head")(x)))


def test_1d_layers_dense_and_a_residual_sum():
    removed = assert_remove_equals_mask(residual_1d(), layers=["a", "b", "d"])
    assert [removed.get_layer(n).filters for n in ("a", "b")] == [4, 4]
    assert removed.get_layer("d").units == 3  # round(2.5) = 2 of 5 pruned (half to even)
    assert any(isinstance(layer, keras.layers.Add) for layer in removed.layers)


def test_3d_layers():
    model = conv_3d()
    removed = assert_remove_equals_mask(model, 0.5, layers=["a", "b"])
    assert removed.get_layer("b").kernel.shape == (3, 3, 3, 3, 2)  # its inputs narrowed too
    _, report = prune_expand(model, 0.5, layers=["a"], report=True)
    np.testing.assert_array_equal(report.history.layers[0].kept, l2_kept(model.get_layer("a"), 0.5))


def test_nested_model_layers_are_pruned_in_the_flat_rebuild():
    model = nested()
    removed = assert_remove_equals_mask(model, layers=["base_a", "base_b"])
    assert [removed.get_layer(n).filters for n in ("base_a", "base_b")] == [3, 4]


@keras.saving.register_keras_serializable(package="keras_topo_tests")
class ExpandScale(ChannelScale):
    """A per-channel scale taught here only (the group tests keep `ChannelScale` unknown)."""


@keras.saving.register_keras_serializable(package="keras_topo_tests")
class Projection(keras.layers.Layer):
    """A dense-like custom layer: `x @ kernel`, no bias (and no `use_bias` setting)."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        shape = (input_shape[-1], self.units)
        self.kernel = self.add_weight(shape=shape, initializer="glorot_uniform", name="kernel")

    def call(self, x):
        return keras.ops.matmul(x, self.kernel)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_custom_handlers_reach_the_expand_coupling():
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.BatchNormalization()(conv(6, "a")(inputs))  # non-zero constants
    x = ExpandScale(name="scale")(x)
    x = Projection(5, name="proj")(keras.layers.ReLU()(x))
    model = randomize(keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x))))
    model.get_layer("scale").scale.assign(np.linspace(0.5, 2.0, 6))
    register_handler(ExpandScale, Follower(weights=("scale",)))
    register_handler(Projection, Producer("units"))
    removed = assert_remove_equals_mask(model, layers=["a", "proj"])
    assert removed.get_layer("scale").scale.shape == (3,)
    assert removed.get_layer("proj").kernel.shape == (4, 3)  # 3 kept rows + the all-ones row


def test_layer_normalisation_gets_its_full_input():
    inputs = keras.Input((4, 4, 3))
    x = conv(6, "a")(inputs)
    x = keras.layers.LayerNormalization(name="ln")(x)
    model = randomize(keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x))))
    removed = assert_remove_equals_mask(model, layers=["a"])
    assert removed.get_layer("ln").gamma.shape == (6,)


# --- the paper's ResNet-18 (keras-topo prune's default: its topographic layers) -----------------

# count_params of the removed ResNet-18 below (176402 unpruned), recorded with the separate
# expand walker that this graph-based rebuild replaced (keras_topo/pruning/rebuild.py of
# version 0.3.0): the removed channels' constants decide which consumers gain a folded bias.
# Same run: kept channels identical and predictions bit-identical on 48 prunings (3 criteria,
# 3 fractions, both modes, topographic or all convs, and the small fixtures of test_pruning).
RECORDED_PARAMS = {0.25: 163900, 0.5: 151398, 0.62: 145147}


@functools.cache
def paper_resnet18():
    """The paper's ResNet-18 at width 1/8, seeded (TF's initialisers) and randomised."""
    from keras_topo.applications import ResNet18

    keras.utils.set_random_seed(0)
    return randomize(ResNet18((32, 32, 3), 10, topography="grid", width_multiplier=0.125))


@pytest.mark.slow
@pytest.mark.tf_only
@pytest.mark.parametrize("fraction", sorted(RECORDED_PARAMS))
def test_papers_resnet18_keeps_the_recorded_channels_and_parameters(fraction):
    model = paper_resnet18()
    removed, report = prune_expand(model, fraction, mode="remove", report=True)
    names = ["stem_conv"] + [f"stage{s}_block2_conv2" for s in range(1, 5)]
    assert [entry.name for entry in report.history.layers] == names
    for entry in report.history.layers:
        np.testing.assert_array_equal(entry.kept, l2_kept(model.get_layer(entry.name), fraction))
        assert removed.get_layer(entry.name).filters == entry.kept.size
    assert count_params(removed) == RECORDED_PARAMS[fraction]
    x = np.random.default_rng(7).normal(size=(4, 32, 32, 3)).astype("float32")
    masked = prune_expand(model, fraction, mode="mask")
    np.testing.assert_allclose(outputs(removed, x), outputs(masked, x), atol=1e-4, rtol=0)
