"""Topography as a true drop-in: Conv1D/2D/3D, the plain layer's variables, the regularizer,
`Topography` settings and `strip_topography`."""

import keras
import numpy as np
import pytest
from reference_loss import reference_loss

import keras_topo
from keras_topo import Topography
from keras_topo.loss_recording import recording

PLAIN = {
    keras_topo.TopographicConv1D: keras.layers.Conv1D,
    keras_topo.TopographicConv2D: keras.layers.Conv2D,
    keras_topo.TopographicConv3D: keras.layers.Conv3D,
}
INPUTS = {
    keras_topo.TopographicConv1D: (3, 12, 2),
    keras_topo.TopographicConv2D: (3, 7, 6, 2),
    keras_topo.TopographicConv3D: (3, 5, 4, 6, 2),
}


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("cls", list(PLAIN))
def test_positional_arguments_and_variables_are_the_plain_layers(cls):
    x = np.random.randn(*INPUTS[cls]).astype("float32")
    topo = cls(6, 3, 1, "same", activation="relu")  # filters, kernel_size, strides, padding
    plain = PLAIN[cls](6, 3, 1, "same", activation="relu")
    topo(x), plain(x)
    assert [v.path.split("/")[-1] for v in topo.weights] == [
        v.path.split("/")[-1] for v in plain.weights
    ]
    plain.set_weights(topo.get_weights())  # both ways
    topo.set_weights(plain.get_weights())
    np.testing.assert_allclose(to_numpy(topo(x)), to_numpy(plain(x)), atol=1e-6)
    assert topo.positions.shape == (6, 2)


@pytest.mark.parametrize("cls", list(PLAIN))
def test_loss_equals_the_per_pair_formula(cls):
    x = np.random.randn(*INPUTS[cls]).astype("float32")
    layer = cls(5, 3, activation="relu", topography="circle", topographic_weight=0.5)
    layer(x)
    plain = PLAIN[cls].from_config({**layer.plain_config(), "activation": None})
    plain.build(x.shape)
    plain.set_weights(layer.get_weights())
    y = to_numpy(plain(x))
    expected = reference_loss(y.reshape(y.shape[0], -1, y.shape[-1]), layer.positions)
    np.testing.assert_allclose(to_numpy(layer.losses[0]), 0.5 * expected, rtol=1e-5)


def test_causal_conv1d_loss_is_taken_on_the_causal_output():
    x = np.random.randn(2, 10, 3).astype("float32")
    layer = keras_topo.TopographicConv1D(4, 3, padding="causal", dilation_rate=2)
    plain = keras.layers.Conv1D(4, 3, padding="causal", dilation_rate=2)
    out = layer(x)
    plain(x)
    plain.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_numpy(out), to_numpy(plain(x)), atol=1e-6)
    expected = reference_loss(to_numpy(plain(x)), layer.positions)
    np.testing.assert_allclose(to_numpy(layer.losses[0]), expected, rtol=1e-5)


def _model(conv):
    inputs = keras.Input((6, 6, 3))
    x = conv(4, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(x))


def test_weights_files_interchange_both_ways(tmp_path):
    topo, plain = _model(keras_topo.TopographicConv2D), _model(keras.layers.Conv2D)
    x = np.random.randn(2, 6, 6, 3).astype("float32")
    topo.save_weights(tmp_path / "topo.weights.h5")
    plain.load_weights(tmp_path / "topo.weights.h5")
    np.testing.assert_allclose(to_numpy(plain(x)), to_numpy(topo(x)), atol=1e-6)
    plain.layers[1].set_weights([w + 1 for w in plain.layers[1].get_weights()])
    plain.save_weights(tmp_path / "plain.weights.h5")
    topo.load_weights(tmp_path / "plain.weights.h5")
    np.testing.assert_allclose(to_numpy(topo(x)), to_numpy(plain(x)), atol=1e-6)
    topo.save(tmp_path / "topo.keras")
    plain.layers[1].set_weights([0 * w for w in plain.layers[1].get_weights()])
    plain.load_weights(tmp_path / "topo.keras")
    np.testing.assert_allclose(to_numpy(plain(x)), to_numpy(topo(x)), atol=1e-6)


def test_lora_behaves_as_on_the_plain_layer(tmp_path):
    x = np.random.randn(2, 6, 6, 3).astype("float32")
    results = {}
    for name, cls in (("topo", keras_topo.TopographicConv2D), ("plain", keras.layers.Conv2D)):
        keras.utils.set_random_seed(1)
        model = _model(cls)
        conv = model.get_layer("conv")
        conv.enable_lora(2)
        conv.lora_kernel_b.assign(np.full(conv.lora_kernel_b.shape, 0.1, "float32"))
        before = to_numpy(model(x))
        model.save_weights(tmp_path / f"{name}.weights.h5")
        model.load_weights(tmp_path / f"{name}.weights.h5")
        after = to_numpy(model(x))
        np.testing.assert_allclose(after, before, atol=1e-6)  # the delta is not added twice
        results[name] = (len(model.weights), after)
    assert results["topo"][0] == results["plain"][0]
    np.testing.assert_allclose(results["topo"][1], results["plain"][1], atol=1e-6)


@pytest.mark.parametrize("batch", [2, 5])
def test_regularizer_equals_the_layer_loss_whatever_the_batch(batch):
    x = np.random.randn(batch, 6, 6, 3).astype("float32")
    layer = keras_topo.TopographicConv2D(6, 3, topography="circle", topographic_weight=0.3)
    regularized = keras.layers.Conv2D(
        6, 3, activity_regularizer=keras_topo.TopographicRegularizer("circle", weight=0.3)
    )
    layer(x), regularized(x)
    regularized.set_weights(layer.get_weights())
    regularized(x)
    np.testing.assert_allclose(
        to_numpy(regularized.losses[0]), to_numpy(layer.losses[0]), rtol=1e-5
    )


def test_regularizer_on_dense_and_attention_outputs_matches_the_formula(tmp_path):
    inputs = keras.Input((5, 4))
    reg = keras_topo.TopographicRegularizer(Topography("line", weight=2.0))
    x = keras.layers.Dense(6, activity_regularizer=reg, name="dense")(inputs)
    x = keras.layers.MultiHeadAttention(2, 3, name="mha")(x, x)
    model = keras.Model(inputs, x)
    data = np.random.randn(3, 5, 4).astype("float32")
    model(data)
    dense_out = to_numpy(keras.Model(inputs, model.get_layer("dense").output)(data))
    expected = 2.0 * reference_loss(dense_out, keras_topo.positions.line(6))
    np.testing.assert_allclose(to_numpy(model.losses[0]), expected, rtol=1e-5)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    loaded(data)
    np.testing.assert_allclose(to_numpy(loaded.losses[0]), expected, rtol=1e-5)


def test_make_topographic_converts_1d_3d_nested_and_regularizes_other_layers():
    inner_in = keras.Input((8, 3))
    inner = keras.Model(inner_in, keras.layers.Conv1D(4, 3, name="c1")(inner_in), name="inner")
    inputs = keras.Input((8, 3))
    x = inner(inputs)
    x = keras.layers.DepthwiseConv1D(3, name="proj")(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling1D()(x))
    topo = keras_topo.make_topographic(
        model,
        layers=lambda layer: layer.name in ("c1", "proj"),
        topography=Topography("grid", weight=2.0, reduction="sum"),
        regularize_other_layers=True,
    )
    data = np.random.randn(2, 8, 3).astype("float32")
    np.testing.assert_allclose(to_numpy(topo(data)), to_numpy(model(data)), atol=1e-6)
    assert isinstance(topo.get_layer("inner").get_layer("c1"), keras_topo.TopographicConv1D)
    assert isinstance(
        topo.get_layer("proj").activity_regularizer, keras_topo.TopographicRegularizer
    )
    assert len(topo.losses) == 2
    with pytest.raises(ValueError, match="not a Conv/Dense/EinsumDense/MultiHeadAttention layer"):
        keras_topo.make_topographic(model, layers=["proj"])

    volume_in = keras.Input((4, 4, 4, 2))
    volume = keras.Model(volume_in, keras.layers.Conv3D(4, 3, name="c3")(volume_in))
    assert isinstance(
        keras_topo.make_topographic(volume).get_layer("c3"), keras_topo.TopographicConv3D
    )


def test_strip_topography_gives_the_plain_model_with_identical_outputs(tmp_path):
    inner_in = keras.Input((6, 6, 3))
    inner = keras.Model(
        inner_in, keras_topo.TopographicConv2D(4, 3, activation="relu", name="t")(inner_in)
    )
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Flatten()(inner(inputs))
    reg = keras_topo.TopographicRegularizer()
    outputs = keras.layers.Dense(3, activity_regularizer=reg, name="d")(x)
    model = keras.Model(inputs, outputs)
    data = np.random.randn(2, 6, 6, 3).astype("float32")
    plain = keras_topo.strip_topography(model)
    np.testing.assert_allclose(to_numpy(plain(data)), to_numpy(model(data)), atol=1e-6)
    assert plain.losses == [] and len(model.losses) == 2
    assert not keras_topo.topographic_layers(plain)
    assert type(plain.layers[1].layers[1]) is keras.layers.Conv2D
    assert plain.get_layer("d").activity_regularizer is None


def test_recording_reads_each_layers_unweighted_loss():
    model = _model(keras_topo.TopographicConv2D)
    x = np.random.randn(2, 6, 6, 3).astype("float32")
    model.get_layer("conv").topographic_weight = 4.0
    with recording() as losses:
        model(x)
    np.testing.assert_allclose(4.0 * to_numpy(losses["conv"]), to_numpy(model.losses[0]), rtol=1e-6)
    model(x)  # outside `recording()` nothing is kept
    assert list(losses) == ["conv"]


def test_topography_settings_validate_once_and_serialize():
    settings = Topography("nested", dimension=3, distance="l1", weight=0.5, reduction="sum")
    assert Topography.from_config(settings.get_config()) == settings
    assert settings.layer_weight(4) == 0.5 and Topography(weight=2.0).layer_weight(4) == 0.5
    explicit = Topography(np.random.rand(5, 2))
    assert explicit.explicit and Topography.from_config(explicit.get_config()) == explicit
    layer = keras_topo.TopographicConv2D(8, 1, topography=settings)
    np.testing.assert_allclose(layer.positions, keras_topo.positions.nested(8, 3))
    clone = keras_topo.TopographicConv2D.from_config(layer.get_config())
    assert clone.topography == settings and clone.topographic_weight == 0.5
    for bad, message in [
        ({"weight": float("nan")}, "finite"),
        ({"weight": float("inf")}, "finite"),
        ({"weight": -1}, "non-negative"),
        ({"reduction": "max"}, "Unknown reduction"),
        ({"scheme": "spiral"}, "Unknown topography scheme"),
        ({"scheme": "circle", "dimension": 3}, "dimension=3"),
        ({"nested_factor": 1.5}, "nested_factor"),
        ({"objective": "magic"}, "Unknown objective"),
        ({"shrink_factor": 0.5}, "shrink_factor"),
    ]:
        with pytest.raises(ValueError, match=message):
            Topography(**bad)


def test_old_flat_keyword_arguments_still_work():
    layer = keras_topo.TopographicConv2D(
        8, 1, topography="nested", dimension=3, distance="l1", nested_factor=0.25
    )
    assert layer.topography == Topography("nested", dimension=3, distance="l1", nested_factor=0.25)


def test_an_unknown_setting_is_refused_everywhere():
    from keras_topo.applications import ResNet18

    inputs = keras.Input((6, 6, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    with pytest.raises(TypeError, match="Unknown topographic settings"):
        keras_topo.make_topographic(model, wieght=2.0)
    with pytest.raises(TypeError, match="Unknown topographic settings"):
        ResNet18((8, 8, 3), 10, topography=None, lamda=1.0)
