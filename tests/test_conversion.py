"""make_topographic: a topographic copy of a user's own model, weights kept."""

import keras
import numpy as np
import pytest
from reference_loss import reference_loss
from subclassed_model import Subclassed

import keras_topo
from keras_topo import positions


def functional_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_a")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Conv2D(5, 3, name="conv_b")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def test_copy_keeps_weights_and_outputs():
    model = functional_model()
    topo = keras_topo.make_topographic(model, topography="circle", weight=2.0)
    x = np.random.randn(4, 8, 8, 3).astype("float32")
    np.testing.assert_allclose(to_numpy(topo(x)), to_numpy(model(x)), atol=1e-6)
    layers = keras_topo.topographic_layers(topo)
    assert [layer.name for layer in layers] == ["conv_a", "conv_b"]
    assert all(layer.topography.scheme == "circle" for layer in layers)
    assert not any(isinstance(layer, keras_topo.TopographicConv2D) for layer in model.layers)


def pre_activation_output(model, name, x):
    """A conv layer's output before its activation, recomputed with a plain Conv2D."""
    layer = model.get_layer(name)
    conv_input = keras.Model(model.input, layer.input)(x)
    plain = keras.layers.Conv2D.from_config({**layer.get_config(), "activation": None})
    plain.build(conv_input.shape)
    plain.set_weights(layer.get_weights())
    return to_numpy(plain(conv_input))


@pytest.mark.parametrize("reduction, per_layer", [("mean", 1.5), ("sum", 3.0)])
def test_total_loss_is_lambda_times_reduction(reduction, per_layer):
    model = functional_model()
    topo = keras_topo.make_topographic(model, weight=3.0, reduction=reduction)
    x = np.random.randn(2, 8, 8, 3).astype("float32")
    topo(x)
    total = sum(float(to_numpy(loss)) for loss in topo.losses)
    expected = sum(
        reference_loss(pre_activation_output(model, name, x), positions.grid(filters))
        for name, filters in [("conv_a", 6), ("conv_b", 5)]
    )
    np.testing.assert_allclose(total, per_layer * expected, rtol=1e-4)
    weights = [layer.topographic_weight for layer in keras_topo.topographic_layers(topo)]
    assert weights == [per_layer, per_layer]


def test_choose_layers_by_name_and_predicate():
    model = functional_model()
    by_name = keras_topo.make_topographic(model, layers=["conv_b"])
    assert [layer.name for layer in keras_topo.topographic_layers(by_name)] == ["conv_b"]
    assert keras_topo.topographic_layers(by_name)[0].topographic_weight == 1.0
    by_predicate = keras_topo.make_topographic(
        model, layers=lambda layer: getattr(layer, "filters", 0) == 6
    )
    assert [layer.name for layer in keras_topo.topographic_layers(by_predicate)] == ["conv_a"]


def test_sequential_and_nested_models():
    inner = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(4, 3, name="inner")])
    inputs = keras.Input((6, 6, 2))
    outer = keras.Model(inputs, keras.layers.Flatten()(inner(inputs)))
    topo = keras_topo.make_topographic(outer, topography="grid", dimension=3)
    x = np.random.randn(2, 6, 6, 2).astype("float32")
    np.testing.assert_allclose(to_numpy(topo(x)), to_numpy(outer(x)), atol=1e-6)
    (layer,) = keras_topo.topographic_layers(topo)
    assert layer.positions.shape == (4, 3)


def test_default_leaves_out_too_small_and_squeeze_excite_convs():
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="body")(inputs)
    tiny = keras.layers.Conv2D(2, 3, padding="same", name="tiny")(x)
    s = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    s = keras.layers.Conv2D(4, 1, activation="relu", name="se_reduce")(s)
    s = keras.layers.Conv2D(8, 1, activation="sigmoid", name="se_expand")(s)
    x = keras.layers.Multiply()([x, s])
    m = keras.ops.mean(x, axis=(1, 2), keepdims=True)
    m = keras.layers.Conv2D(4, 1, name="mean_reduce")(m)
    model = keras.Model(inputs, [x, tiny, m])
    topo = keras_topo.make_topographic(model)
    assert [layer.name for layer in keras_topo.topographic_layers(topo)] == ["body"]
    chosen = keras_topo.make_topographic(model, layers=["tiny", "se_reduce"])
    assert {layer.name for layer in keras_topo.topographic_layers(chosen)} == {"tiny", "se_reduce"}


def test_copy_trains_with_fit():
    topo = keras_topo.make_topographic(functional_model())
    topo.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = topo.fit(np.random.randn(4, 8, 8, 3), np.array([0, 1, 2, 0]), verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize(
    "model_fn, kwargs, message",
    [
        (
            functional_model,
            {"layers": ["conv_z"]},
            r"Its Conv/Dense/EinsumDense/MultiHeadAttention layers are "
            r"\['conv_a', 'conv_b', 'head'\]",
        ),
        (functional_model, {"reduction": "max"}, "Unknown reduction"),
        (functional_model, {"weight": -1}, "non-negative"),
        (functional_model, {"topography": "spiral"}, "Unknown topography"),
        (functional_model, {"layers": lambda layer: False}, "selected no Conv/Dense"),
        (Subclassed, {}, "subclassed"),
    ],
)
def test_bad_input(model_fn, kwargs, message):
    with pytest.raises(ValueError, match=message):
        keras_topo.make_topographic(model_fn(), **kwargs)
