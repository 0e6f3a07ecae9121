"""Copies keras-topo makes save as they compute, or saving says why not (`layer_saving`).

Small stand-ins for keras-hub 0.32's layers: a config with a key the constructor rejects
(`ViTPatchingAndEmbedding`), an `Activation` of a Python function (MobileNetV5's
`ConvNormAct`), a variable saving that drops trained state (`DINOV2Embedding`).
"""

import keras
import numpy as np
import pytest

from keras_topo.model_copy import copy_model
from keras_topo.pruning import prune_channels


class Gain(keras.layers.Layer):
    """`x * gain` (a scalar weight); its config also returns `num_weights`, which the
    constructor rejects (as keras-hub's ViT patch embedding returns `num_patches`)."""

    def __init__(self, initial=1.0, **kwargs):
        super().__init__(**kwargs)
        self.initial = initial

    def build(self, input_shape):
        self.gain = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.initial))

    def call(self, x):
        return x * self.gain

    def get_config(self):
        return {**super().get_config(), "initial": self.initial, "num_weights": 1}


class RequiredWidth(keras.layers.Layer):
    """`x * scale`; its config leaves out `width`, which the constructor requires."""

    def __init__(self, width, **kwargs):
        super().__init__(**kwargs)
        self.scale = self.add_weight(shape=(width,), initializer="ones")

    def call(self, x):
        return x * self.scale

    def get_config(self):
        return {k: v for k, v in super().get_config().items() if k != "width"}


class SyncedOffset(keras.layers.Layer):
    """`x + offset`, saved as DINOv2's embedding saves its interpolated position embeddings:
    `offset` is recomputed on load from `stored`, which saving syncs only when the signed sum
    of `stored - offset` exceeds epsilon."""

    def build(self, input_shape):
        shape = input_shape[-1:]
        self.stored = self.add_weight(shape, "zeros", trainable=False, name="stored")
        self.offset = self.add_weight(shape, "zeros", name="offset")

    def call(self, x):
        return x + self.offset

    def save_own_variables(self, store):
        if keras.ops.sum(self.stored - self.offset) > keras.config.epsilon():
            self.stored.assign(self.offset)
        store["0"] = self.stored

    def load_own_variables(self, store):
        self.stored.assign(store["0"])
        self.offset.assign(store["0"])


CUSTOM = {cls.__name__: cls for cls in (Gain, RequiredWidth, SyncedOffset)}


def _model(block):
    """`Input (6, 6, 3) -> block -> Conv2D(6) -> ReLU -> Conv2D(4) -> pooling -> Dense(3)`."""
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", name="conv_a")(block(inputs))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv_b")(keras.layers.ReLU()(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


def _data():
    return np.random.default_rng(0).standard_normal((4, 6, 6, 3)).astype("float32")


def _outputs(model, x):
    return keras.ops.convert_to_numpy(model(x))


def _reloaded(model, tmp_path):
    model.save(tmp_path / "model.keras")
    return keras.models.load_model(tmp_path / "model.keras", custom_objects=CUSTOM)


def _copy(model):
    return copy_model(model, lambda layer: None)[0]


def test_the_stand_in_reproduces_the_broken_config(tmp_path):
    model = _model(Gain(0.5, name="gain"))
    with pytest.raises(TypeError, match="Gain"):
        _reloaded(model, tmp_path)


def test_a_config_with_a_rejected_key_is_repaired_in_copies_and_pruned_models(tmp_path):
    model = _model(Gain(0.5, name="gain"))
    model.get_layer("gain").gain.assign(-2.0)
    x = _data()
    for made in (_copy(_copy(model)), prune_channels(model, 0.5, layers=["conv_a"])):
        assert made.get_layer("gain").get_config().keys() == {
            "name",
            "trainable",
            "dtype",
            "initial",
        }
        loaded = _reloaded(made, tmp_path)
        assert keras.ops.convert_to_numpy(loaded.get_layer("gain").gain) == -2.0
        np.testing.assert_allclose(_outputs(loaded, x), _outputs(made, x), rtol=1e-6, atol=1e-6)
    # conv_a 6 -> 3 filters (3 * 9 * 3 + 3), conv_b reads 3 channels (3 * 9 * 4 + 4)
    assert made.get_layer("conv_a").count_params() == 84


def test_a_python_function_activation_is_saved_as_the_keras_activation_it_computes(tmp_path):
    exact_gelu = keras.layers.Activation(
        lambda v: keras.activations.gelu(v, approximate=False), name="gelu"
    )
    model = _model(exact_gelu)
    copied = _copy(model)
    assert copied.get_layer("gelu").get_config()["activation"] == "gelu"
    x = _data()
    want = _outputs(model, x)
    np.testing.assert_allclose(_outputs(copied, x), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(_outputs(_reloaded(copied, tmp_path), x), want, rtol=1e-6, atol=1e-6)


def test_a_layer_no_config_builds_again_copies_but_refuses_saving(tmp_path):
    model = _model(RequiredWidth(3, name="width"))
    copied = _copy(model)
    x = _data()
    np.testing.assert_allclose(_outputs(copied, x), _outputs(model, x), rtol=1e-6, atol=1e-6)
    pruned = prune_channels(copied, 0.5, layers=["conv_a"])  # a copy's copy still prunes
    for made in (copied, pruned):
        with pytest.raises(
            ValueError, match="'width' .RequiredWidth. cannot be saved.*already opened"
        ):
            made.save(tmp_path / "model.keras")


@pytest.mark.parametrize("change", [-1.0, 1.0])
def test_a_variable_saving_that_loses_state_is_refused_at_save_time(change, tmp_path):
    """A change of negative sum is synced by the class's saving (saved and reloaded equal);
    one of positive sum is not (plain Keras would reload an offset of zero): saving raises."""
    copied = _copy(_model(SyncedOffset(name="offset")))
    offset = copied.get_layer("offset").offset
    offset.assign(change * np.array([0.5, 1.0, 2.0], "float32"))
    x = _data()
    if change < 0:
        loaded = _reloaded(copied, tmp_path)
        np.testing.assert_allclose(_outputs(loaded, x), _outputs(copied, x), rtol=1e-6, atol=1e-6)
        return
    with pytest.raises(ValueError, match="'offset' .*changes 'offset/offset' by 1.0e"):
        copied.save(tmp_path / "model.keras")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(offset), [0.5, 1.0, 2.0])
