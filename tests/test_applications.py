"""Tests of keras_topo.applications: ResNet18, VGG16, DenseNet121."""

import keras
import numpy as np
import pytest
from keras_topo.applications import VGG16, DenseNet121, ResNet18

import keras_topo
from keras_topo import TopographicConv2D, topographic_loss
from keras_topo.loss_recording import recording

# torchvision's trainable parameter counts (10 classes, 3 channels, 3x3 stem for ResNet and
# DenseNet). A 1-channel input removes 3x3x2x64 weights from the stem conv of each model.
REFERENCE_COUNTS = {ResNet18: 11_173_962, DenseNet121: 6_956_426, VGG16: 134_309_962}
PAPER_LAYERS = {
    ResNet18: ["stem_conv"] + [f"stage{s}_block2_conv2" for s in range(1, 5)],
    DenseNet121: ["stem_conv"]
    + [f"denseblock{b}_layer{n}_conv2" for b, n in zip(range(1, 5), (6, 12, 24, 16), strict=True)],
    VGG16: [
        f"block{b}_conv{i}"
        for b, n in zip(range(1, 6), (2, 2, 3, 3, 3), strict=True)
        for i in range(1, n + 1)
    ],
}
# Conv layers of each architecture: ResNet-18 1 + 16 + 3 shortcuts; DenseNet-121
# 1 + 2 x 58 + 3 transitions; VGG-16 13.
CONV_COUNTS = {ResNet18: 20, DenseNet121: 120, VGG16: 13}
BUILDERS = [ResNet18, DenseNet121, VGG16]
SMALL = 1 / 16  # width multiplier for the training and saving tests
SMALL_SHAPE = {ResNet18: (12, 12, 3), DenseNet121: (16, 16, 3), VGG16: (32, 32, 3)}


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def topographic_names(model):
    return [layer.name for layer in model.layers if isinstance(layer, TopographicConv2D)]


def small(builder, **kwargs):
    return builder(input_shape=SMALL_SHAPE[builder], width_multiplier=SMALL, **kwargs)


def inputs_for(model, batch=2, seed=0):
    shape = (batch, *model.input_shape[1:])
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.fixture(scope="module")
def full_models():
    """Full-width models built once: {builder: {3: topographic (grid), 1: plain}}."""
    keras.utils.set_random_seed(0)
    return {
        builder: {
            3: builder(input_shape=(32, 32, 3), topography="grid"),
            # The spatial size does not change the count; 32x32 keeps the weight shapes (and
            # JAX's compiled initialisers) shared with the 3-channel model.
            1: builder(input_shape=(32, 32, 1)),
        }
        for builder in BUILDERS
    }


@pytest.mark.parametrize("builder", BUILDERS, ids=lambda b: b.__name__)
def test_parameter_counts_equal_torchvision(full_models, builder):
    # The 1-channel plain model also shows that the loss adds no trainable weight.
    for channels, model in full_models[builder].items():
        expected = REFERENCE_COUNTS[builder] - 3 * 3 * (3 - channels) * 64
        assert trainable_count(model) == expected, (builder.__name__, channels)


@pytest.mark.parametrize("builder", BUILDERS, ids=lambda b: b.__name__)
def test_topographic_layers_where_the_paper_put_them(full_models, builder):
    model = full_models[builder][3]
    assert topographic_names(model) == PAPER_LAYERS[builder]
    assert topographic_names(full_models[builder][1]) == []
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == CONV_COUNTS[builder]
    assert model.output_shape == (None, 10)


# Small models only: on JAX every new shape met eagerly costs compilations, so the calling
# tests share SMALL_SHAPE.
@pytest.mark.parametrize("builder", BUILDERS, ids=lambda b: b.__name__)
def test_one_loss_per_topographic_layer_and_none_for_the_baseline(builder):
    topographic = small(builder, topography="grid")
    plain = small(builder)
    assert topographic_names(plain) == []
    x = inputs_for(topographic)
    topographic(x)
    plain(x)
    assert len(topographic.losses) == len(PAPER_LAYERS[builder])
    assert all(float(keras.ops.convert_to_numpy(v)) > 0 for v in topographic.losses)
    assert len(plain.losses) == 0


def test_layer_names_are_stable():
    resnet = small(ResNet18)
    for name in [
        "stem_conv",
        "stem_bn",
        "stage3_block2_conv2",
        "stage3_block2_bn2",
        "stage2_block1_downsample_conv",
        "classifier",
    ]:
        resnet.get_layer(name)
    DenseNet121(input_shape=(16, 16, 3), width_multiplier=SMALL).get_layer("transition1_conv")
    small(VGG16).get_layer("block4_conv3")


def test_topographic_layers_option():
    all_convs = small(ResNet18, topography="grid", topographic_layers="all")
    assert len(topographic_names(all_convs)) == CONV_COUNTS[ResNet18]
    chosen = ["stage1_block1_conv1", "stage4_block1_downsample_conv"]
    listed = small(ResNet18, topography="grid", topographic_layers=chosen)
    assert topographic_names(listed) == chosen
    predicate = small(
        DenseNet121, topography="grid", topographic_layers=lambda n: "transition" in n
    )
    assert topographic_names(predicate) == [
        "transition1_conv",
        "transition2_conv",
        "transition3_conv",
    ]
    # The selection is ignored for a plain baseline.
    assert topographic_names(small(ResNet18, topographic_layers="all")) == []


@pytest.mark.parametrize("builder", [ResNet18, VGG16], ids=lambda b: b.__name__)
def test_reduction_mean_and_sum(builder):
    lam = 0.6
    mean = small(builder, topography="grid", topographic_weight=lam, reduction="mean")
    total = small(builder, topography="grid", topographic_weight=lam, reduction="sum")
    n_layers = len(PAPER_LAYERS[builder])
    topo_layers = [mean.get_layer(name) for name in PAPER_LAYERS[builder]]
    assert [layer.topographic_weight for layer in topo_layers] == pytest.approx(
        [lam / n_layers] * n_layers
    )
    assert [total.get_layer(n).topographic_weight for n in PAPER_LAYERS[builder]] == pytest.approx(
        [lam] * n_layers
    )
    total.set_weights(mean.get_weights())
    x = inputs_for(mean)
    mean(x)
    total(x)
    # The mean model's loss: lambda times the mean of each layer's loss, computed independently
    # from the convs' outputs.
    probe = keras.Model(mean.input, [layer.output for layer in topo_layers])
    layer_losses = [
        float(topographic_loss(y, layer.positions))
        for y, layer in zip(probe(x), topo_layers, strict=True)
    ]
    mean_loss = float(sum(keras.ops.convert_to_numpy(v) for v in mean.losses))
    sum_loss = float(sum(keras.ops.convert_to_numpy(v) for v in total.losses))
    assert mean_loss == pytest.approx(lam * np.mean(layer_losses), rel=1e-4)
    assert sum_loss == pytest.approx(lam * np.sum(layer_losses), rel=1e-4)


@pytest.mark.parametrize("builder", BUILDERS, ids=lambda b: b.__name__)
def test_fit_one_step(builder):
    model = small(builder, topography="grid", num_classes=3)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        # Tracing DenseNet's 120 convs into a TF graph takes ~25 s where eager takes ~3 s;
        # ResNet and VGG cover TF's graph path with the same layer kinds. (On JAX, eager is
        # the slower path, and torch's fit is eager anyway.)
        run_eagerly=builder is DenseNet121 and keras.backend.backend() == "tensorflow",
    )
    x = inputs_for(model, batch=4)
    y = np.array([0, 1, 2, 1])
    before = [keras.ops.convert_to_numpy(w).copy() for w in model.trainable_weights]
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    assert all(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))
    # Each topographic layer's (positive) loss can be read back on a batch.
    with recording() as losses:
        model(x)
    assert float(keras.ops.convert_to_numpy(losses[PAPER_LAYERS[builder][0]])) > 0


@pytest.mark.parametrize("builder", BUILDERS, ids=lambda b: b.__name__)
def test_keras_file_round_trip(builder, tmp_path):
    model = small(builder, topography="nested", topographic_weight=0.3, reduction="sum")
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = inputs_for(model)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-5
    )
    assert topographic_names(loaded) == topographic_names(model)
    assert loaded.get_layer(PAPER_LAYERS[builder][0]).topographic_weight == pytest.approx(0.3)
    np.testing.assert_allclose(
        float(sum(keras.ops.convert_to_numpy(v) for v in loaded.losses)),
        float(sum(keras.ops.convert_to_numpy(v) for v in model.losses)),
        rtol=1e-5,
    )


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras"])
def test_weights_argument_loads_saved_weights(tmp_path, suffix):
    source = small(ResNet18, topography="grid")
    path = tmp_path / f"saved{suffix}"
    if suffix == ".keras":
        source.save(path)
    else:
        source.save_weights(path)
    loaded = small(ResNet18, topography="grid", weights=str(path))
    x = inputs_for(source)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(source(x)), atol=1e-5
    )


def test_weights_argument_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        small(ResNet18, weights=str(tmp_path / "missing.weights.h5"))
    with pytest.raises(ValueError, match="weights.h5"):
        small(ResNet18, weights=str(tmp_path / "model.h5"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"input_shape": (32, 32)}, "input_shape"),
        ({"input_shape": (32, 0, 3)}, "input_shape"),
        ({"num_classes": 0}, "num_classes"),
        ({"width_multiplier": 0}, "width_multiplier"),
        ({"topography": "hexagon"}, "topography"),
        ({"topography": "grid", "distance": "cosine"}, "distance"),
        ({"topography": "grid", "topographic_weight": -1.0}, r"weight \(lambda\)"),
        ({"topography": "grid", "weight": float("nan")}, "finite"),
        ({"topography": "grid", "reduction": "max"}, "reduction"),
        ({"topography": "grid", "topographic_layers": "stem_conv"}, "topographic_layers"),
        ({"topography": "grid", "topographic_layers": ["stem_conv", "conv9"]}, "conv9"),
        ({"topography": "grid", "topographic_layers": lambda name: False}, "selected no conv"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResNet18(**{"input_shape": (8, 8, 3), "width_multiplier": SMALL, **kwargs})


@pytest.mark.parametrize("builder, size", [(VGG16, 32), (DenseNet121, 16)])
def test_inputs_smaller_than_the_pools_allow_are_rejected(builder, size):
    with pytest.raises(ValueError, match=f"at least {size}"):
        builder(input_shape=(size - 1, size, 3), width_multiplier=SMALL)


@pytest.mark.parametrize("builder", BUILDERS, ids=lambda b: b.__name__)
def test_spectrogram_input(builder):
    model = builder(input_shape=(64, 101, 1), num_classes=5, width_multiplier=SMALL)
    assert model.output_shape == (None, 5)


def test_resnet_matches_torch_reference():
    """The Keras ResNet-18 with ported weights equals an independent torch one (odd input size
    checks torch's symmetric padding of strided convs and of the stem max-pool)."""
    torch = pytest.importorskip("torch")
    model = ResNet18(input_shape=(11, 13, 2), num_classes=4, width_multiplier=SMALL)
    x = inputs_for(model, batch=2)
    params = {w.path: keras.ops.convert_to_numpy(w) for w in model.weights}

    def t(array):
        return torch.tensor(np.asarray(array))

    def conv(h, name, stride=1):
        kernel = t(params[f"{name}/kernel"]).permute(3, 2, 0, 1)
        return torch.nn.functional.conv2d(h, kernel, stride=stride, padding=kernel.shape[-1] // 2)

    def bn(h, name):
        g, b, m, v = (
            t(params[f"{name}/{k}"]) for k in ("gamma", "beta", "moving_mean", "moving_variance")
        )
        return torch.nn.functional.batch_norm(h, m, v, g, b, training=False, eps=1e-5)

    relu = torch.relu
    h = t(x).permute(0, 3, 1, 2)
    h = relu(bn(conv(h, "stem_conv"), "stem_bn"))
    h = torch.nn.functional.max_pool2d(h, 3, stride=2, padding=1)
    for s in range(1, 5):
        for b in (1, 2):
            p, stride = f"stage{s}_block{b}", 2 if s > 1 and b == 1 else 1
            y = relu(bn(conv(h, f"{p}_conv1", stride), f"{p}_bn1"))
            y = bn(conv(y, f"{p}_conv2"), f"{p}_bn2")
            if f"{p}_downsample_conv/kernel" in params:
                h = bn(conv(h, f"{p}_downsample_conv", stride), f"{p}_downsample_bn")
            h = relu(y + h)
    h = h.mean(dim=(2, 3))
    expected = h @ t(params["classifier/kernel"]) + t(params["classifier/bias"])
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(x)), expected.numpy(), rtol=1e-4, atol=1e-5
    )


def test_initialisation_follows_torchvision():
    model = ResNet18(input_shape=(32, 32, 3), width_multiplier=0.5)
    kernel = keras.ops.convert_to_numpy(model.get_layer("stage4_block2_conv2").kernel)
    fan_out = 3 * 3 * kernel.shape[-1]
    assert kernel.std() == pytest.approx(np.sqrt(2.0 / fan_out), rel=0.05)
    bn = model.get_layer("stem_bn")
    assert (bn.momentum, bn.epsilon) == (0.9, 1e-5)
    dense = DenseNet121(input_shape=(16, 16, 3), width_multiplier=SMALL)
    kernel = keras.ops.convert_to_numpy(dense.get_layer("denseblock3_layer5_conv1").kernel)
    fan_in = np.prod(kernel.shape[:3])
    assert kernel.std() == pytest.approx(np.sqrt(2.0 / fan_in), rel=0.1)


@pytest.mark.parametrize("name", ["resnet18", "vgg16", "densenet121"])
@pytest.mark.parametrize("layers", [None, "all"])
def test_layer_specs_equal_the_built_models_topographic_layers(name, layers):
    """The architecture as data agrees with the model the builder wires: names, order,
    filters and positions of every topographic layer, and the widths of every conv."""
    from keras_topo.applications import ARCHITECTURES, topographic_layer_specs

    settings = keras_topo.Topography("nested", dimension=3)
    model = ARCHITECTURES[name].build(
        SMALL_SHAPE[ARCHITECTURES[name].build],
        topography=settings,
        topographic_layers=layers,
        width_multiplier=SMALL,
    )
    built = [layer for layer in model.layers if isinstance(layer, TopographicConv2D)]
    specs = topographic_layer_specs(name, settings, layers, width_multiplier=SMALL)
    assert [spec.name for spec in specs] == [layer.name for layer in built]
    for spec, layer in zip(specs, built, strict=True):
        assert spec.filters == layer.filters
        np.testing.assert_array_equal(spec.positions, layer.positions)
    convs = {layer.name: layer.filters for layer in model.layers if hasattr(layer, "filters")}
    assert ARCHITECTURES[name].conv_widths(SMALL) == convs


def test_layer_specs_refuse_unknown_names_and_models():
    from keras_topo.applications import topographic_layer_specs

    with pytest.raises(ValueError, match="not convs"):
        topographic_layer_specs("resnet18", topographic_layers=["stem_conv", "fc9"])
    with pytest.raises(ValueError, match="must be one of"):
        topographic_layer_specs("resnet19")
