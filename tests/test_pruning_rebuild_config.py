"""Group pruning of a layer whose `get_config()` does not rebuild it (keras-hub's
`ViTPatchingAndEmbedding` returns keys its constructor rejects): carried over where no pruned
channel touches it, repaired (`keras_topo.layer_saving.config_repair`) where it loses channels,
a clear ValueError where no repair computes the same."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_topo.pruning import prune_channels


class VersionedScale(keras.layers.Layer):
    """`x * scale + shift` with a per-channel `scale` `(width,)` (the pruner's generic
    `ChannelVectorLayer` handler); `get_config()` adds a "version" its constructor rejects."""

    def __init__(self, width, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.shift = 0.0  # not in the config: set by hand, no repair can rebuild it

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(self.width,), initializer="ones", name="scale")

    def call(self, x):
        return x * self.scale + self.shift

    def get_config(self):
        return {**super().get_config(), "width": self.width, "version": 1}


def scaled_mlp(seed=0):
    """Dense a (6) -> VersionedScale -> Dense b (5) -> Dense c (3), random weights."""
    inputs = keras.Input((4,))
    x = keras.layers.Dense(6, name="a")(inputs)
    x = VersionedScale(6, name="scale")(x)
    x = keras.layers.Dense(5, name="b")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="c")(x))
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    return model


def run(model, x):
    return ops.convert_to_numpy(model(x, training=False))


def sample(n=3, seed=1):
    return np.random.default_rng(seed).normal(size=(n, 4)).astype("float32")


def assert_remove_equals_mask(model, layers):
    """Removed == masked (<= 1e-5 relative) and differs from the unpruned model; the removed."""
    x = sample()
    removed = prune_channels(model, 0.5, layers=layers, mode="remove")
    masked = prune_channels(model, 0.5, layers=layers, mode="mask")
    got, want = run(removed, x), run(masked, x)
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 1e-5 * scale
    assert np.abs(want - run(model, x)).max() > 1e-3 * scale
    return removed


def test_untouched_layer_is_carried_over():
    model = scaled_mlp()
    removed = assert_remove_equals_mask(model, ["b"])
    copy = removed.get_layer("scale")
    assert copy is not model.get_layer("scale")
    np.testing.assert_array_equal(
        ops.convert_to_numpy(copy.scale), ops.convert_to_numpy(model.get_layer("scale").scale)
    )
    assert removed.get_layer("b").units == 3


def test_narrowed_layer_is_repaired_and_saves(tmp_path):
    model = scaled_mlp()
    removed = assert_remove_equals_mask(model, ["a"])
    narrowed = removed.get_layer("scale")
    assert narrowed.width == 3 and tuple(narrowed.scale.shape) == (3,)
    assert "version" not in narrowed.get_config()
    kept = np.flatnonzero(  # the columns of a's kernel that its pruned kernel holds
        np.isin(
            ops.convert_to_numpy(model.get_layer("a").kernel),
            ops.convert_to_numpy(removed.get_layer("a").kernel),
        ).all(0)
    )
    np.testing.assert_array_equal(
        ops.convert_to_numpy(narrowed.scale),
        ops.convert_to_numpy(model.get_layer("scale").scale)[kept],
    )
    path = str(tmp_path / "pruned.keras")
    removed.save(path)
    loaded = keras.saving.load_model(path, custom_objects={"VersionedScale": VersionedScale})
    x = sample()
    np.testing.assert_allclose(run(loaded, x), run(removed, x), rtol=1e-6, atol=1e-6)


def test_narrowed_layer_without_repair_raises():
    model = scaled_mlp()
    model.get_layer("scale").shift = 0.5  # the config cannot say so: no repair computes the same
    with pytest.raises(ValueError, match="'scale'.*loses channels.*get_config"):
        prune_channels(model, 0.5, layers=["a"])
