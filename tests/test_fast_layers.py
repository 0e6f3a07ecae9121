"""`FastConv2D / 3D` and `FastBatchNormalization` compute exactly what Keras' layers compute:
outputs, gradients and moving statistics, on every backend (the fused kernels run on torch)."""

import keras
import numpy as np
import pytest

import keras_topo
from applications import ResNet18
from keras_topo.fast_layers import FastBatchNormalization, FastConv2D, FastConv3D


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def gradients(layer, x, training=False):
    """(output, d sum(output * r) / d (input, weights...)) with a fixed random r."""
    r = np.random.default_rng(1).normal(size=layer.compute_output_shape(x.shape))
    r = r.astype("float32")
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            total = tf.reduce_sum(y * r)
        grads = tape.gradient(total, [x, *layer.trainable_variables])
    elif backend == "torch":
        import torch

        x = torch.tensor(x, requires_grad=True)
        y = layer(x, training=training)
        variables = [v.value for v in layer.trainable_variables]
        grads = torch.autograd.grad((y * torch.tensor(r)).sum(), [x, *variables])
    else:
        import jax

        trainable = [v.value for v in layer.trainable_variables]
        frozen = [v.value for v in layer.non_trainable_variables]

        kwargs = {"training": training} if training else {}  # convs take no `training`

        def total(x, trainable):
            y, _ = layer.stateless_call(trainable, frozen, x, **kwargs)
            return (y * r).sum()

        grads = jax.grad(total, argnums=(0, 1))(x, trainable)
        grads = [grads[0], *grads[1]]
        y = layer(x, training=training)  # moves the statistics once, as on the other backends
    return to_numpy(y), [to_numpy(g) for g in grads]


def assert_same_as_keras(fast, plain, x, training=False, atol=1e-5):
    for layer in (fast, plain):
        if not layer.built:
            layer.build(x.shape)
    plain.set_weights(fast.get_weights())
    y_fast, grads_fast = gradients(fast, x, training)
    y_plain, grads_plain = gradients(plain, x, training)
    np.testing.assert_allclose(y_fast, y_plain, atol=atol, rtol=1e-5)
    for g_fast, g_plain in zip(grads_fast, grads_plain, strict=True):
        np.testing.assert_allclose(g_fast, g_plain, atol=atol, rtol=1e-4)


CONVOLUTIONS = [  # (filters, kernel_size, keyword arguments): every padding rule
    (5, 3, {"padding": "same"}),
    (5, 3, {"padding": "valid", "strides": 2}),
    (5, 3, {"padding": "same", "strides": 2}),  # uneven: Keras' own path
    (5, 3, {"padding": "same", "strides": 3}),  # 9 and 8 by 3: 3 and 2 in all
    (5, 1, {"padding": "same", "strides": 2}),  # 1x1: none
    (5, 2, {"padding": "same"}),  # even kernel: uneven too
    (5, 3, {"padding": "same", "dilation_rate": 2}),
    (6, 1, {"padding": "valid", "use_bias": True, "activation": "relu"}),
    (6, 3, {"padding": "same", "groups": 2}),
]


@pytest.mark.parametrize("filters, kernel_size, kwargs", CONVOLUTIONS)
def test_fast_conv2d_equals_keras(filters, kernel_size, kwargs):
    x = np.random.randn(3, 9, 8, 4).astype("float32")
    fast = FastConv2D(filters, kernel_size, **kwargs, bias_initializer="random_normal")
    plain = keras.layers.Conv2D(filters, kernel_size, **kwargs)
    assert_same_as_keras(fast, plain, x)


def test_fast_layers_take_inputs_of_any_size():
    inputs = keras.Input((None, None, 3))
    x = FastBatchNormalization()(FastConv2D(4, 3, strides=2, padding="same")(inputs))
    model = keras.Model(inputs, x)
    for size in (7, 8):
        y = model(np.random.randn(2, size, size, 3).astype("float32"), training=True)
        assert tuple(y.shape) == (2, (size + 1) // 2, (size + 1) // 2, 4)


def test_fast_conv3d_equals_keras():
    x = np.random.randn(2, 5, 6, 4, 3).astype("float32")
    assert_same_as_keras(
        FastConv3D(4, 3, padding="same"), keras.layers.Conv3D(4, 3, padding="same"), x
    )


def test_topographic_conv_runs_the_fast_convolution_with_lora():
    x = np.random.randn(2, 7, 6, 3).astype("float32")
    topo = keras_topo.TopographicConv2D(4, 3, padding="same")
    plain = keras.layers.Conv2D(4, 3, padding="same")
    topo.build(x.shape), plain.build(x.shape)
    plain.set_weights(topo.get_weights())
    for layer in (topo, plain):
        layer.enable_lora(2)
        for variable in (layer.lora_kernel_a, layer.lora_kernel_b):
            variable.assign(np.linspace(-0.3, 0.3, np.prod(variable.shape)).reshape(variable.shape))
    np.testing.assert_allclose(to_numpy(topo(x)), to_numpy(plain(x)), atol=1e-5)


@pytest.mark.parametrize(
    "shape, kwargs",
    [
        ((4, 6, 5, 3), {}),
        ((4, 6, 5, 3), {"center": False, "scale": False}),
        ((6, 3), {}),  # after a Dense layer
        ((4, 3, 6, 5), {"axis": 1}),  # channels first
    ],
)
@pytest.mark.parametrize("training", [True, False])
def test_fast_batch_norm_equals_keras(shape, kwargs, training):
    x = (np.random.randn(*shape) * 3 + 2).astype("float32")
    settings = dict(kwargs, momentum=0.9, epsilon=1e-5)
    fast, plain = FastBatchNormalization(**settings), keras.layers.BatchNormalization(**settings)
    fast.build(x.shape)
    # Statistics and affine weights away from their initial values.
    weights = [np.random.uniform(0.5, 2, w.shape).astype("float32") for w in fast.get_weights()]
    fast.set_weights(weights)
    assert_same_as_keras(fast, plain, x, training=training)
    # Moving statistics: moved identically, once.
    for fast_weight, plain_weight in zip(fast.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_allclose(fast_weight, plain_weight, rtol=1e-5, atol=1e-6)
    if training:
        assert not np.allclose(fast.get_weights()[-1], weights[-1])


def test_fast_batch_norm_keeps_mixed_precision_output_dtype():
    keras.config.set_dtype_policy("mixed_bfloat16")
    layer = FastBatchNormalization()
    y = layer(np.random.randn(2, 4, 4, 3).astype("float32"), training=True)
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"


def test_fast_layers_interchange_weights_and_strip_to_keras(tmp_path):
    model = ResNet18((16, 16, 3), 4, width_multiplier=0.125)
    kinds = {type(layer) for layer in model.layers}
    assert {FastConv2D, FastBatchNormalization} <= kinds
    plain = keras_topo.strip_topography(model)
    assert not any(type(layer).__module__.startswith("keras_topo") for layer in plain.layers)
    x = np.random.randn(2, 16, 16, 3).astype("float32")
    np.testing.assert_allclose(to_numpy(plain(x)), to_numpy(model(x)), atol=1e-5)
    # A weights file written by one loads into the other (Keras addresses layers by class name).
    model.save_weights(tmp_path / "fast.weights.h5")
    fresh = ResNet18((16, 16, 3), 4, width_multiplier=0.125)
    plain.load_weights(tmp_path / "fast.weights.h5")
    fresh.set_weights([np.zeros_like(w) for w in fresh.get_weights()])
    fresh.load_weights(tmp_path / "fast.weights.h5")
    np.testing.assert_allclose(to_numpy(fresh(x)), to_numpy(model(x)), atol=1e-5)
    reloaded = keras.saving.load_model(_saved(model, tmp_path))
    assert type(reloaded.get_layer("stem_bn")) is FastBatchNormalization
    np.testing.assert_allclose(to_numpy(reloaded(x)), to_numpy(model(x)), atol=1e-5)


def test_make_topographic_converts_fast_convolutions():
    model = ResNet18((16, 16, 3), 4, width_multiplier=0.125)
    topo = keras_topo.make_topographic(model, layers=["stem_conv"])
    assert isinstance(topo.get_layer("stem_conv"), keras_topo.TopographicConv2D)


def test_use_fast_layers_swaps_a_users_layers_with_weights_and_outputs_kept():
    inner = keras.Sequential([keras.layers.Conv2D(4, 3, padding="same"), keras.layers.ReLU()])
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.BatchNormalization()(keras.layers.Conv2D(6, 3, strides=2)(inputs))
    x = keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(inner(x)))
    model = keras.Model(inputs, x)
    fast = keras_topo.use_fast_layers(model)
    kinds = [type(layer) for layer in keras_topo.layer_selection.walk_layers(fast)]
    assert kinds.count(FastConv2D) == 2 and FastBatchNormalization in kinds
    assert keras.layers.Dense in kinds and keras.layers.Conv2D not in kinds
    data = np.random.randn(4, 8, 8, 3).astype("float32")
    for training in (False, True):
        np.testing.assert_allclose(
            to_numpy(fast(data, training=training)),
            to_numpy(model(data, training=training)),
            atol=1e-5,
        )
    topographic = keras_topo.use_fast_layers(keras_topo.make_topographic(model))
    assert len(keras_topo.topographic_layers(topographic)) == 2
    topographic(data, training=True)
    assert len(topographic.losses) == 2
    back = keras_topo.strip_topography(fast)
    assert keras.layers.Conv2D in [
        type(layer) for layer in keras_topo.layer_selection.walk_layers(back)
    ]


def _saved(model, tmp_path):
    path = tmp_path / "model.keras"
    model.save(path)
    return path


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="the fused kernels are torch's")
def test_builders_train_on_torch_kernels_without_keras_conv_or_batch_norm(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("Keras' unfused path was taken")

    for name in ("conv", "batch_normalization", "moments"):
        monkeypatch.setattr(f"keras.src.ops.{name}", refuse)
    model = ResNet18((16, 16, 3), 4, topography="grid", width_multiplier=0.125)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(np.random.randn(4, 16, 16, 3), np.arange(4), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    model.predict(np.random.randn(2, 16, 16, 3), verbose=0)


def test_fused_kernels_can_be_turned_off(monkeypatch):
    calls = []
    original = keras.src.ops.conv
    monkeypatch.setattr("keras.src.ops.conv", lambda *a, **k: calls.append(1) or original(*a, **k))
    layer = FastConv2D(3, 3, padding="same")
    x = np.random.randn(1, 5, 5, 2).astype("float32")
    try:
        keras_topo.fast_layers.use_fused_kernels(False)
        off = to_numpy(layer(x))
    finally:
        keras_topo.fast_layers.use_fused_kernels(True)
    assert calls == [1]
    np.testing.assert_allclose(to_numpy(layer(x)), off, atol=1e-5)
    assert len(calls) == (1 if keras.backend.backend() == "torch" else 2)
