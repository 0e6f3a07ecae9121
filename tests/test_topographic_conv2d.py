"""TopographicConv2D: a Conv2D drop-in whose add_loss is the paper's loss."""

import keras
import numpy as np
import pytest
from reference_loss import reference_loss

import keras_topo
from keras_topo import positions


def small_model(**layer_kwargs):
    inputs = keras.Input((6, 6, 3))
    conv = keras_topo.TopographicConv2D(8, 3, padding="same", name="topo", **layer_kwargs)
    hidden = keras.layers.GlobalAveragePooling2D()(conv(inputs))
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(hidden))


def pre_activation(layer, x):
    """The layer's output before activation, by an independent plain Conv2D."""
    plain = keras.layers.Conv2D.from_config(
        {**keras.layers.Conv2D.get_config(layer), "activation": None}
    )
    plain.build(x.shape)
    plain.set_weights([keras.ops.convert_to_numpy(w) for w in layer.weights[:2]])
    return keras.ops.convert_to_numpy(plain(x))


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def test_loss_is_weighted_paper_loss_on_pre_activation_output():
    layer = keras_topo.TopographicConv2D(
        6, 3, activation="relu", topography="circle", topographic_weight=0.5
    )
    x = np.random.randn(3, 5, 5, 2).astype("float32")
    out = layer(x)
    assert float(to_numpy(keras.ops.min(out))) >= 0.0
    (loss,) = layer.losses
    expected = reference_loss(pre_activation(layer, x), positions.circle(6))
    np.testing.assert_allclose(float(to_numpy(loss)), 0.5 * expected, rtol=1e-5)


def test_outputs_equal_plain_conv2d():
    layer = keras_topo.TopographicConv2D(4, 3, strides=2, activation="relu")
    x = np.random.randn(2, 7, 7, 3).astype("float32")
    out = to_numpy(layer(x))
    assert out.shape == (2, 3, 3, 4)
    np.testing.assert_allclose(out, np.maximum(pre_activation(layer, x), 0), atol=1e-6)


def test_groups():
    layer = keras_topo.TopographicConv2D(6, 3, groups=2, topography="line")
    x = np.random.randn(2, 5, 5, 4).astype("float32")
    layer(x)
    expected = reference_loss(pre_activation(layer, x), positions.line(6))
    np.testing.assert_allclose(float(to_numpy(layer.losses[0])), expected, rtol=1e-5)


def test_channels_first():
    last = keras_topo.TopographicConv2D(5, 3)
    first = keras_topo.TopographicConv2D(5, 3, data_format="channels_first")
    x = np.random.randn(2, 6, 6, 3).astype("float32")
    last(x)
    first.build((None, 3, 6, 6))
    first.set_weights(last.get_weights())
    out = first(np.moveaxis(x, -1, 1))
    np.testing.assert_allclose(np.moveaxis(to_numpy(out), 1, -1), to_numpy(last(x)), atol=1e-5)
    np.testing.assert_allclose(to_numpy(first.losses[0]), to_numpy(last.losses[0]), rtol=1e-5)


def test_fit_includes_loss_and_logs_it_per_layer():
    model = small_model(topographic_weight=3.0)
    x = np.random.randn(8, 6, 6, 3).astype("float32")
    y = np.random.randint(0, 2, 8)
    model.compile(keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(True))
    history = model.fit(
        x, y, batch_size=8, epochs=1, verbose=0, callbacks=[keras_topo.TopographicLossLogger(x)]
    )
    topo = reference_loss(pre_activation(model.get_layer("topo"), x), positions.grid(8))
    classif = keras.losses.SparseCategoricalCrossentropy(True)(y, model(x))
    np.testing.assert_allclose(history.history["topo_loss/topo"][0], topo, rtol=1e-4)
    np.testing.assert_allclose(history.history["topo_loss"][0], 3 * topo, rtol=1e-4)
    np.testing.assert_allclose(
        history.history["loss"][0], float(to_numpy(classif)) + 3 * topo, rtol=1e-4
    )


def test_dead_channels_give_finite_gradients():
    model = small_model()
    conv = model.get_layer("topo")
    kernel = to_numpy(conv.kernel)
    kernel[..., :3] = 0.0  # three channels always output exactly zero (bias is zero)
    conv.kernel.assign(kernel)
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(True))
    x = np.random.randn(4, 6, 6, 3).astype("float32")
    x[0] = 0.0  # and one input is all zeros: every channel is dead for it
    history = model.fit(x, np.array([0, 1, 0, 1]), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert all(np.isfinite(to_numpy(w)).all() for w in model.trainable_weights)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_large_activations(policy):
    if policy == "mixed_float16" and keras.backend.backend() == "torch":
        pytest.skip("torch has no float16 convolution kernel on CPU")
    x = (1e3 * np.random.randn(2, 6, 6, 3)).astype("float32")
    full = keras_topo.TopographicConv2D(8, 3)
    full(x)
    keras.config.set_dtype_policy(policy)
    mixed = keras_topo.TopographicConv2D(8, 3)
    mixed.build(x.shape)
    mixed.set_weights(full.get_weights())
    mixed(x)
    (loss,) = mixed.losses
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    assert np.isfinite(float(to_numpy(loss)))
    np.testing.assert_allclose(to_numpy(loss), to_numpy(full.losses[0]), rtol=0.05)


@pytest.mark.parametrize("jit", [True, False])
def test_trains_with_and_without_jit(jit):
    if jit and keras.backend.backend() == "torch":
        pytest.skip("torch.compile is not part of the supported CPU path")
    model = small_model()
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(True), jit_compile=jit)
    history = model.fit(np.random.randn(4, 6, 6, 3), np.array([0, 1, 0, 1]), verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize("topography", ["nested", np.random.rand(8, 3)])
def test_keras_round_trip_safe_mode(tmp_path, topography):
    model = small_model(topography=topography, distance="l1", topographic_weight=0.7)
    x = np.random.randn(2, 6, 6, 3).astype("float32")
    expected_out = to_numpy(model(x))
    expected_loss = to_numpy(model.losses[0])
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(to_numpy(loaded(x)), expected_out, rtol=1e-6)
    np.testing.assert_allclose(to_numpy(loaded.losses[0]), expected_loss, rtol=1e-6)
    layer = loaded.get_layer("topo")
    assert isinstance(layer, keras_topo.TopographicConv2D)
    np.testing.assert_allclose(layer.positions, model.get_layer("topo").positions)
    assert layer.topography.distance == "l1" and layer.topographic_weight == 0.7


def test_config_round_trip_keeps_explicit_positions():
    pos = np.random.rand(4, 2).astype("float32")
    layer = keras_topo.TopographicConv2D(4, 1, topography=pos)
    clone = keras_topo.TopographicConv2D.from_config(layer.get_config())
    np.testing.assert_allclose(clone.positions, pos)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"topography": "spiral"}, "Unknown topography"),
        ({"topography": np.zeros((3, 2))}, r"\(filters, dimension\)"),
        ({"topography": "circle", "dimension": 3}, "dimension=3"),
        ({"filters": 1}, "filters >= 2"),
        ({"topographic_weight": -1.0}, "weight"),
        ({"topographic_weight": float("nan")}, "finite"),
        ({"topographic_weight": float("inf")}, "finite"),
        ({"distance": "cosine"}, "Unknown distance"),
    ],
)
def test_bad_arguments(kwargs, message):
    kwargs = {"filters": 4, "kernel_size": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        keras_topo.TopographicConv2D(**kwargs)
