"""Group pruning of models nobody here wrote: keras.applications (weights=None) and ours.

The whole list runs in benchmarks/bench_pruning_applications.py; CI tests a representative
subset: MobileNetV3 (raw keras.ops hard-swish, squeeze-and-excitation, depthwise convs),
MobileNetV2, ResNet50 (bottleneck residuals), EfficientNet (SE with Reshape, Rescaling).
"""

import keras
import numpy as np
import pytest

from keras_topo.layer_selection import walk_layers
from keras_topo.pruning import count_params, prune_channels

HIDDEN = (keras.layers.Conv2D, keras.layers.SeparableConv2D, keras.layers.Dense)


def randomized_application(name, **kwargs):
    """A keras.applications model with random batch-norm statistics and affine parameters
    (default ones make every pruned channel a constant 0 and hide mistakes), logits out."""
    build = getattr(keras.applications, name)
    model = build(weights=None, classes=5, classifier_activation=None, **kwargs)
    rng = np.random.default_rng(0)
    for layer in walk_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, c))
            if layer.center:
                layer.beta.assign(rng.normal(0.0, 0.5, c))
            layer.moving_mean.assign(rng.normal(0.0, 0.5, c))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, c))
    return model


def prune_and_check(model, tmp_path, max_params_ratio):
    """remove == mask (1e-4 relative), the function changed, params ratio, .keras round trip."""
    hidden = lambda layer: isinstance(layer, HIDDEN) and layer.name not in model.output_names  # noqa: E731
    x = np.random.default_rng(1).normal(size=(2, *model.input_shape[1:])).astype("float32")
    removed = prune_channels(model, 0.5, layers=hidden)
    masked = prune_channels(model, 0.5, layers=hidden, mode="mask")
    got, want, unpruned = (
        keras.ops.convert_to_numpy(m(x, training=False)) for m in (removed, masked, model)
    )
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 1e-4 * scale
    assert np.abs(want - unpruned).max() > 1e-3 * scale
    assert count_params(removed) / count_params(model) <= max_params_ratio
    path = tmp_path / "pruned.keras"
    removed.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x, training=False)), got, atol=1e-5 * scale
    )
    return loaded


def mobilenet_v3_small():
    return randomized_application(
        "MobileNetV3Small", input_shape=(32, 32, 3), alpha=0.75, include_preprocessing=False
    )


def test_mobilenet_v3_small_prunes_through_raw_ops(tmp_path):
    prune_and_check(mobilenet_v3_small(), tmp_path, 0.3)


@pytest.mark.tf_only  # a compiled training step of a whole application: slow on XLA:CPU (JAX)
def test_pruned_mobilenet_v3_small_trains(tmp_path):
    loaded = prune_and_check(mobilenet_v3_small(), tmp_path, 0.3)
    loaded.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(True))
    x = np.random.default_rng(2).normal(size=(4, 32, 32, 3)).astype("float32")
    history = loaded.fit(x, np.arange(4) % 5, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, kwargs, ratio",
    [
        ("MobileNetV2", {"alpha": 0.35}, 0.3),
        ("ResNet50", {}, 0.26),
        ("EfficientNetB0", {}, 0.3),
    ],
)
def test_keras_applications(name, kwargs, ratio, tmp_path):
    prune_and_check(
        randomized_application(name, input_shape=(32, 32, 3), **kwargs), tmp_path, ratio
    )


def test_our_resnet18_at_half_keeps_a_quarter_of_its_parameters():
    """Torch-Pruning 1.6.1 keeps 25.0% of torchvision's ResNet-18 (CIFAR stem) at 0.5."""
    from keras_topo.applications import ResNet18

    model = ResNet18((32, 32, 3), 10, topography="grid", width_multiplier=0.25)
    convs = lambda layer: isinstance(layer, keras.layers.Conv2D)  # noqa: E731
    removed = prune_channels(model, 0.5, layers=convs)
    assert count_params(removed) / count_params(model) <= 0.26
    assert not any("expand" in layer.name for layer in removed.layers)
