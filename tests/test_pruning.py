"""keras_topo.pruning with coupling="expand" (the paper's per-layer pruning): channel choice,
masks, the structural rebuild, costs and export. Group coupling: test_pruning_groups.py."""

import functools

import keras
import numpy as np
import pytest
from subclassed_model import Subclassed

from keras_topo import TopographicConv2D
from keras_topo.pruning import (
    ExpandChannels,
    compare,
    count_macs,
    count_params,
    format_comparison,
    prune_channels,
)
from keras_topo.pruning.importance import channel_scores, kept_channels, pruned_count

FRACTIONS = (0.25, 0.5, 0.75)
prune_expand = functools.partial(prune_channels, coupling="expand")


# --- fixtures: small functional models with the paper's structures ------------------------------


def randomize(model, seed=0):
    """Random BN statistics / affine parameters (non-trivial constants) and O(1) dense layers."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, c))
            layer.beta.assign(rng.normal(0.0, 1.0, c))
            layer.moving_mean.assign(rng.normal(0.0, 1.0, c))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, c))
        elif isinstance(layer, keras.layers.Dense):
            fan_in = layer.kernel.shape[0]
            layer.kernel.assign(rng.normal(0.0, fan_in**-0.5, layer.kernel.shape))
    return model


def conv_bn_relu(x, filters, name, topographic=False, **kwargs):
    cls = TopographicConv2D if topographic else keras.layers.Conv2D
    kwargs.setdefault("padding", "same")
    x = cls(filters, kwargs.pop("kernel_size", 3), use_bias=False, name=name, **kwargs)(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def resnet_like():
    """Stem + pad/max-pool, an identity block and a strided block with a projection."""
    inputs = keras.Input((16, 16, 3))
    x = conv_bn_relu(inputs, 8, "stem", topographic=True)
    x = keras.layers.ZeroPadding2D(1)(x)
    x = keras.layers.MaxPooling2D(3, strides=2)(x)
    y = conv_bn_relu(x, 8, "b1_conv1")
    y = TopographicConv2D(8, 3, padding="same", use_bias=False, name="b1_conv2")(y)
    y = keras.layers.BatchNormalization()(y)
    x = keras.layers.ReLU()(keras.layers.Add()([y, x]))
    y = keras.layers.ZeroPadding2D(1)(x)
    y = conv_bn_relu(y, 12, "b2_conv1", strides=2, padding="valid")
    y = TopographicConv2D(12, 3, padding="same", use_bias=False, name="b2_conv2")(y)
    y = keras.layers.BatchNormalization()(y)
    shortcut = keras.layers.Conv2D(12, 1, strides=2, use_bias=False, name="b2_proj")(x)
    shortcut = keras.layers.BatchNormalization()(shortcut)
    x = keras.layers.ReLU()(keras.layers.Add()([y, shortcut]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return randomize(keras.Model(inputs, keras.layers.Dense(5)(x), name="resnet_like"))


def densenet_like():
    """Concatenated growth layers, a transition, a depthwise conv, flatten and dense."""
    inputs = keras.Input((12, 12, 3))
    x = TopographicConv2D(8, 3, padding="same", bias_initializer="ones", name="stem")(inputs)
    for k in range(3):
        y = keras.layers.BatchNormalization()(x)
        y = keras.layers.ReLU()(y)
        y = keras.layers.Conv2D(8, 1, use_bias=False)(y)
        y = keras.layers.BatchNormalization()(y)
        y = keras.layers.ReLU()(y)
        cls = TopographicConv2D if k == 2 else keras.layers.Conv2D
        y = cls(4, 3, padding="same", use_bias=False, name=f"dense{k}")(y)
        x = keras.layers.Concatenate()([x, y])
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(6, 1, name="transition")(x)
    x = keras.layers.AveragePooling2D(2)(x)
    x = keras.layers.DepthwiseConv2D(3, padding="valid", depth_multiplier=2, name="dw")(x)
    x = keras.layers.Flatten()(x)
    return randomize(keras.Model(inputs, keras.layers.Dense(3)(x), name="densenet_like"))


def chain():
    """Plain conv-BN-ReLU chain, a same-padded depthwise conv, flatten -> dense (no topography)."""
    inputs = keras.Input((8, 8, 2))
    x = conv_bn_relu(inputs, 6, "c1")
    x = conv_bn_relu(x, 6, "c2")
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(4, 3, padding="valid", activation="relu", name="c3")(x)
    x = keras.layers.Flatten()(x)
    return randomize(keras.Model(inputs, keras.layers.Dense(3)(x), name="chain"))


def assert_remove_equals_mask(model, fraction, **kwargs):
    x = np.random.default_rng(1).normal(size=(4, *model.input_shape[1:])).astype("float32")
    masked = prune_expand(model, fraction, mode="mask", **kwargs)
    removed = prune_expand(model, fraction, mode="remove", **kwargs)
    want = keras.ops.convert_to_numpy(masked(x, training=False))
    got = keras.ops.convert_to_numpy(removed(x, training=False))
    unpruned = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert np.abs(want - unpruned).max() > 1e-2  # the pruning changed the function
    assert count_params(removed) < count_params(model)
    return removed


# --- choice of channels --------------------------------------------------------------------------


def test_pruned_count_rounds_like_torch_prune_and_keeps_one():
    assert pruned_count(64, 0.62) == 40  # round(39.68)
    assert pruned_count(10, 0.25) == 2  # round(2.5): half to even
    assert pruned_count(10, 0.35) == 4  # round(3.5)
    assert pruned_count(4, 0.99) == 3
    assert pruned_count(7, 0.0) == 0


def test_scores_are_filter_norms_and_lowest_are_pruned():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 2, 5))
    l2 = np.array([np.linalg.norm(kernel[..., j]) for j in range(5)])
    l1 = np.array([np.abs(kernel[..., j]).sum() for j in range(5)])
    np.testing.assert_allclose(channel_scores(kernel, "l2", rng), l2)
    np.testing.assert_allclose(channel_scores(kernel, "l1", rng), l1)
    np.testing.assert_array_equal(kept_channels(l2, 0.4), np.sort(np.argsort(l2)[2:]))
    first = channel_scores(kernel, "random", np.random.default_rng(3))
    np.testing.assert_array_equal(first, channel_scores(kernel, "random", np.random.default_rng(3)))


def test_random_criterion_is_seeded():
    model = resnet_like()
    kept = [
        prune_expand(model, 0.5, "random", mode="remove", seed=s).get_layer("b2_conv2").positions
        for s in (1, 1, 2)
    ]
    np.testing.assert_array_equal(kept[0], kept[1])
    assert not np.array_equal(kept[0], kept[2])


# --- mode="mask" ---------------------------------------------------------------------------------


def test_mask_zeroes_lowest_l2_filters_and_biases_only():
    model = densenet_like()
    before = [w.copy() for w in model.get_weights()]
    masked = prune_expand(model, 0.5, mode="mask")
    for name in ("stem", "dense2"):  # the TopographicConv2D layers
        original = model.get_layer(name)
        kernel, bias = (keras.ops.convert_to_numpy(v) for v in (original.kernel, original.bias))
        norms = np.sqrt((kernel**2).reshape(-1, kernel.shape[-1]).sum(0))
        pruned = np.argsort(norms)[: round(0.5 * kernel.shape[-1])]
        layer = masked.get_layer(name)
        new_kernel = keras.ops.convert_to_numpy(layer.kernel)
        assert np.all(new_kernel[..., pruned] == 0)
        if layer.use_bias:
            assert np.all(keras.ops.convert_to_numpy(layer.bias)[pruned] == 0)
            assert np.any(keras.ops.convert_to_numpy(original.bias)[pruned] != 0)
        kept = np.setdiff1d(np.arange(kernel.shape[-1]), pruned)
        np.testing.assert_array_equal(new_kernel[..., kept], kernel[..., kept])
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(masked.get_layer("transition").kernel),
        keras.ops.convert_to_numpy(model.get_layer("transition").kernel),
    )
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)  # the input model is untouched
    assert masked.output_shape == model.output_shape


# --- mode="remove" == mode="mask" ----------------------------------------------------------------


@pytest.mark.parametrize("fraction", FRACTIONS)
@pytest.mark.parametrize("build", [resnet_like, densenet_like])
def test_remove_equals_mask_topographic_layers(build, fraction):
    assert_remove_equals_mask(build(), fraction)


@pytest.mark.parametrize("criterion", ["l1", "random"])
def test_remove_equals_mask_chain_given_layers(criterion):
    model = chain()
    removed = assert_remove_equals_mask(
        model, 0.5, criterion=criterion, layers=["c1", "c2", "c3"], seed=0
    )
    assert [removed.get_layer(n).filters for n in ("c1", "c2", "c3")] == [3, 3, 2]


def test_remove_sequential_and_all_convs_of_resnet():
    sequential = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(6, 3, padding="same", name="a"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Conv2D(5, 3, padding="same", name="b"),
            keras.layers.GlobalMaxPooling2D(),
            keras.layers.Dense(2),
        ]
    )
    assert_remove_equals_mask(randomize(sequential), 0.5, layers=["a", "b"])
    model = resnet_like()
    convs = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert_remove_equals_mask(model, 0.5, layers=convs)


def test_removed_topographic_layers_keep_surviving_positions_and_train():
    model = resnet_like()
    removed = prune_expand(model, 0.5, mode="remove")
    for name in ("stem", "b1_conv2", "b2_conv2"):
        original, layer = model.get_layer(name), removed.get_layer(name)
        assert isinstance(layer, TopographicConv2D)
        assert layer.filters == original.filters - round(0.5 * original.filters)
        matches = (layer.positions[:, None, :] == original.positions[None, :, :]).all(-1)
        assert matches.sum() == layer.filters and (matches.sum(1) == 1).all()
        assert [v.name for v in layer.weights] == ["kernel"]  # the plain layer's variables
    removed.compile(optimizer="sgd", loss=keras.losses.MeanSquaredError())
    x = np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype("float32")
    history = removed.fit(x, np.zeros((8, 5), "float32"), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    removed(x[:2])
    assert len(removed.losses) == 3  # one topographic term per pruned topographic layer


def test_expand_channels_scatters_between_constants():
    x = np.arange(12, dtype="float32").reshape(2, 3, 2)
    layer = ExpandChannels([1, -1, 0, -1], [0.0, 2.5, 0.0, -1.0])
    got = keras.ops.convert_to_numpy(layer(x))
    want = np.stack([x[..., 1], np.full((2, 3), 2.5), x[..., 0], np.full((2, 3), -1.0)], -1)
    np.testing.assert_array_equal(got, want)
    clone = ExpandChannels.from_config(layer.get_config())
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(clone(x)), want)


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"fraction": 1.0}, "fraction"),
        ({"fraction": -0.1}, "fraction"),
        ({"fraction": "0.5"}, "fraction"),
        ({"fraction": 0.5, "criterion": "l3"}, "criterion"),
        ({"fraction": 0.5, "mode": "drop"}, "mode"),
        ({"fraction": 0.5, "layers": ["nope"]}, "'nope' is not a conv, dense"),
        ({"fraction": 0.5, "layers": ["c1_bn"]}, "not a conv, dense"),
        ({"fraction": 0.5}, "layers="),  # no TopographicConv2D in `chain`
    ],
)
def test_bad_input_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        prune_expand(chain(), **kwargs)


def test_subclassed_model_raises():
    model = Subclassed()
    model(np.zeros((1, 5, 5, 1), "float32"))
    with pytest.raises(ValueError, match="subclassed"):
        prune_expand(model, 0.5, layers=["conv2d"])


# --- costs ---------------------------------------------------------------------------------------


def test_count_macs_and_params_from_shapes():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 8*8*4*9*3
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2)(x)  # 6*6*8*9
    x = keras.layers.SeparableConv2D(5, 3)(x)  # 4*4*8*9 + 4*4*8*5
    x = keras.layers.Conv2D(6, 1, strides=2, groups=1)(x)  # 2*2*6*5
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(7)(x))  # 24*7
    assert (
        count_macs(model) == 8 * 8 * 4 * 27 + 6 * 6 * 8 * 9 + 16 * 8 * 14 + 2 * 2 * 6 * 5 + 24 * 7
    )
    assert count_params(model) == model.count_params()


def test_compare_reports_ratios_and_latency():
    model = chain()
    removed = prune_expand(model, 0.5, layers=["c1", "c2"])
    result = compare(model, removed, batch_size=4, repeats=2, warmup=1)
    assert result["params_ratio"] == pytest.approx(count_params(removed) / count_params(model))
    assert 0 < result["macs_ratio"] < 1 and result["latency_a"] > 0
    assert "MACs" in format_comparison(result)


# --- saving and export ---------------------------------------------------------------------------


def test_keras_file_round_trip(tmp_path):
    removed = prune_expand(resnet_like(), 0.5)
    path = tmp_path / "pruned.keras"
    removed.save(path)
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(2).normal(size=(2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x, training=False)),
        keras.ops.convert_to_numpy(removed(x, training=False)),
        atol=1e-6,
    )
    np.testing.assert_array_equal(
        loaded.get_layer("b2_conv2").positions, removed.get_layer("b2_conv2").positions
    )


@pytest.mark.tf_only
def test_saved_model_export_serves_same_outputs(tmp_path):
    import tensorflow as tf

    removed = prune_expand(densenet_like(), 0.5)
    removed.export(str(tmp_path / "saved"), format="tf_saved_model", verbose=False)
    served = tf.saved_model.load(str(tmp_path / "saved"))
    x = np.random.default_rng(3).normal(size=(2, 12, 12, 3)).astype("float32")
    np.testing.assert_allclose(
        served.serve(x).numpy(), removed(x, training=False).numpy(), atol=1e-5
    )


# --- the paper's architectures -------------------------------------------------------------------


@functools.cache
def application(name):
    """One small randomised model per architecture (pruning never modifies its input)."""
    from keras_topo import applications

    build = getattr(applications, name)
    return randomize(build((32, 32, 3), 10, topography="grid", width_multiplier=0.125))


@pytest.mark.slow
@pytest.mark.parametrize("fraction", FRACTIONS)
@pytest.mark.parametrize("name", ["ResNet18", "VGG16", "DenseNet121"])
def test_applications_remove_equals_mask(name, fraction):
    model = application(name)
    expected = {"ResNet18": 5, "VGG16": 13, "DenseNet121": 5}[name]
    topographic = [layer for layer in model.layers if isinstance(layer, TopographicConv2D)]
    assert len(topographic) == expected
    removed = assert_remove_equals_mask(model, fraction)
    for layer in topographic:
        assert removed.get_layer(layer.name).filters == layer.filters - round(
            fraction * layer.filters
        )


@pytest.mark.tf_only
@pytest.mark.slow
def test_full_width_resnet18_at_the_papers_fraction():
    from keras_topo.applications import ResNet18

    model = randomize(ResNet18((32, 32, 3), 10, topography="grid"))
    removed = assert_remove_equals_mask(model, 0.62)
    assert removed.get_layer("stage4_block2_conv2").filters == 512 - 317
    assert count_macs(removed) < 0.85 * count_macs(model)
