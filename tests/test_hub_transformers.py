"""Channel groups of the layers keras-hub transformers and recent CNNs are built with: tensors
whose last axis the symbolic graph leaves unknown (attention masks over tokens) and custom
per-channel vector layers (keras-hub's `RmsNorm2d`), in small stand-ins and, slow, on the
keras-hub backbones themselves (`hub_models`)."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_topo.pruning import channel_groups, prune_channels
from keras_topo.pruning.graph import Member


def masked_mlp():
    """`x (5, 6)` -> Dense(8, relu) -> Dense(6), scaled per sample by the mean of `mask (None,)`:
    the mask's last axis (tokens) is unknown."""
    x = keras.Input((5, 6), name="x")
    mask = keras.Input((None,), name="mask")
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(x)
    out = keras.layers.Dense(6, name="out")(hidden)
    scale = ops.expand_dims(ops.mean(mask, axis=-1, keepdims=True), -1)
    return keras.Model([x, mask], out * scale)


def test_unknown_channel_count_is_a_blocked_group_and_the_rest_prunes():
    model = masked_mlp()
    groups = channel_groups(model)
    unknown = [g for g in groups if "its channel count is unknown" in g.blocked]
    assert unknown and all(g.size == 0 for g in unknown)
    (hidden,) = [g for g in groups if Member("hidden", "produces") in g.members]
    assert hidden.prunable and hidden.size == 8
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 6)).astype("float32")
    mask = rng.random((2, 7)).astype("float32")
    pruned = prune_channels(model, 0.5, layers=["hidden"])
    masked = prune_channels(model, 0.5, layers=["hidden"], mode="mask")
    assert pruned.get_layer("hidden").units == 4
    np.testing.assert_allclose(
        pruned.predict([x, mask], verbose=0), masked.predict([x, mask], verbose=0), atol=1e-5
    )


class ChannelRMSNorm(keras.layers.Layer):
    """RMS norm over the channels with a `gamma (dim,)` vector (as keras-hub's `RmsNorm2d`)."""

    def __init__(self, dim, eps=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.eps = eps

    def build(self, input_shape):
        self.gamma = self.add_weight(shape=(self.dim,), initializer="ones", name="gamma")

    def call(self, x):
        return (
            x * ops.rsqrt(ops.mean(ops.square(x), axis=-1, keepdims=True) + self.eps) * self.gamma
        )

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "eps": self.eps}


class TwoWidths(ChannelRMSNorm):
    """A config with two entries equal to the channel count: which one to narrow is unknown."""

    def get_config(self):
        return {**super().get_config(), "width": self.dim}


def rms_model(norm_class):
    x = keras.Input((6,))
    hidden = keras.layers.Dense(8, name="hidden")(x)
    normed = norm_class(8, name="norm")(hidden)
    return keras.Model(x, keras.layers.Dense(3, name="out")(normed))


def test_custom_channel_vector_layer_is_sliced_with_its_channels():
    model = rms_model(ChannelRMSNorm)
    rng = np.random.default_rng(1)
    for layer in model.layers[1:]:
        layer.set_weights([rng.standard_normal(w.shape) for w in layer.get_weights()])
    pruned = prune_channels(model, 0.5, layers=["hidden"])
    assert pruned.get_layer("norm").get_config()["dim"] == 4
    # numpy oracle: the kept hidden units, normalised over the kept ones only
    w1, b1 = model.get_layer("hidden").get_weights()
    (gamma,) = model.get_layer("norm").get_weights()
    w2, b2 = model.get_layer("out").get_weights()
    kept = np.flatnonzero(np.isin(w1.T, pruned.get_layer("hidden").get_weights()[0].T).all(1))
    assert kept.size == 4
    x = rng.standard_normal((3, 6)).astype("float32")
    h = x @ w1[:, kept] + b1[kept]
    h = h / np.sqrt(np.mean(h**2, axis=-1, keepdims=True) + 1e-6) * gamma[kept]
    np.testing.assert_allclose(pruned.predict(x, verbose=0), h @ w2[kept] + b2, rtol=1e-4)


def test_channel_vector_layer_with_ambiguous_config_stays_unknown():
    groups = channel_groups(rms_model(TwoWidths))
    (hidden,) = [g for g in groups if Member("hidden", "produces") in g.members]
    assert "unknown operation 'norm'" in hidden.blocked


def test_layer_built_with_a_dtype_policy_object_prunes():
    """keras-hub builds `Identity(dtype=<DTypePolicy>)`: Keras' automatic config raises."""
    x = keras.Input((6,))
    hidden = keras.layers.Dense(8, name="hidden")(x)
    policy = keras.dtype_policies.DTypePolicy("float32")
    same = keras.layers.Identity(name="same", dtype=policy)(hidden)
    model = keras.Model(x, keras.layers.Dense(3, name="out")(same))
    with pytest.raises(NotImplementedError):
        model.get_layer("same").get_config()
    pruned = prune_channels(model, 0.5, layers=["hidden"])
    masked = prune_channels(model, 0.5, layers=["hidden"], mode="mask")
    assert pruned.get_layer("hidden").units == 4
    inputs = np.random.default_rng(2).standard_normal((2, 6)).astype("float32")
    np.testing.assert_allclose(
        pruned.predict(inputs, verbose=0), masked.predict(inputs, verbose=0), atol=1e-5
    )


@pytest.mark.slow
@pytest.mark.parametrize(("name", "bound"), [("MobileNetV5", 0.35), ("BERT", 0.7)])
def test_hub_backbone_prunes(name, bound):
    pytest.importorskip("keras_hub")
    import hub_models

    model = hub_models.BACKBONES[name]()
    dense = (keras.layers.Conv2D, keras.layers.Dense, keras.layers.MultiHeadAttention)
    pruned = prune_channels(model, 0.5, layers=lambda layer: isinstance(layer, dense))
    assert pruned.count_params() / model.count_params() < bound


def test_cached_multi_head_attention_gets_a_map_on_its_output_projection(tmp_path):
    """keras-hub's `CachedMultiHeadAttention` (GPT-2, OPT) as `MultiHeadAttention`: the paper's
    loss on its output, tokens as samples; `.keras` round trip; stripped back to keras-hub's."""
    keras_hub = pytest.importorskip("keras_hub")
    from reference_loss import reference_loss

    import keras_topo

    inputs = keras.Input((4, 6))
    attention = keras_hub.layers.CachedMultiHeadAttention(2, 3, name="cached")
    x = keras.layers.Add()([inputs, attention(inputs, inputs)])
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(x))
    topo = keras_topo.make_topographic(model, layers=["cached"], topography="line")
    converted = topo.get_layer("cached")
    assert isinstance(converted, keras_hub.layers.CachedMultiHeadAttention)
    assert keras_topo.topographic_layers(topo) == [converted] and converted.filters == 6
    q = np.random.default_rng(0).standard_normal((2, 4, 6)).astype("float32")
    reference = ops.convert_to_numpy(model(q))
    np.testing.assert_allclose(ops.convert_to_numpy(topo(q)), reference, atol=1e-5)
    inner = ops.convert_to_numpy(attention(q, q)).reshape(1, 8, 6)
    expected = reference_loss(inner, keras_topo.positions.line(6))
    np.testing.assert_allclose(ops.convert_to_numpy(topo.losses[0]), expected, rtol=1e-4)
    topo.save(tmp_path / "cached.keras")
    loaded = keras.saving.load_model(tmp_path / "cached.keras")
    np.testing.assert_allclose(ops.convert_to_numpy(loaded(q)), reference, atol=1e-5)
    plain = keras_topo.strip_topography(loaded)
    assert type(plain.get_layer("cached")) is keras_hub.layers.CachedMultiHeadAttention
    assert plain.losses == []
