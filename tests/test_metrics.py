"""Map scores: numpy/scipy oracles, and hand-built maps (smooth -> high, shuffled -> about 0)."""

import keras
import numpy as np
import pytest
from scipy import stats

import keras_topo
from keras_topo import positions
from keras_topo.metrics import (
    ChannelStatistics,
    distance_correlation,
    measure_topography,
    morans_i,
    similarity_curve,
    smoothness,
)
from keras_topo.metrics.map_scores import inverse_distance_weights

CHANNELS = 64
CLASSES = 3


def map_model(shuffle=False, activation=None):
    """A 1x1 topographic conv whose filter varies smoothly with the channel's grid position."""
    inputs = keras.Input((4, 4, CLASSES))
    conv = keras_topo.TopographicConv2D(
        CHANNELS, 1, use_bias=False, topography="grid", activation=activation
    )
    outputs = keras.layers.GlobalAveragePooling2D()(conv(inputs))
    model = keras.Model(inputs, outputs)
    pos = positions.grid(CHANNELS)
    angle = 2 * np.pi * pos[:, 0] / 1.2
    # Filter over the three input (class) channels: a smooth direction in colour space.
    kernel = np.stack([np.cos(angle), np.sin(angle), pos[:, 1] - 0.5])  # (3, C)
    if shuffle:
        kernel = kernel[:, np.random.default_rng(1).permutation(CHANNELS)]
    conv.kernel.assign(kernel.reshape(1, 1, CLASSES, CHANNELS).astype("float32"))
    return model, conv, kernel


def class_images(n=300, seed=0):
    """Noise images whose class `c` raises input channel `c`."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    x = rng.normal(size=(n, 4, 4, CLASSES)).astype("float32")
    x[np.arange(n), :, :, labels] += 2.0
    return x, labels


def test_smooth_map_scores_high_and_shuffled_about_zero():
    x, y = class_images()
    smooth = measure_topography(map_model()[0], x, y, permutations=199)
    shuffled = measure_topography(map_model(shuffle=True)[0], x, y, permutations=199)
    (layer,) = smooth
    good, bad = smooth[layer], shuffled[next(iter(shuffled))]
    assert good["distance_correlation"] > 0.3
    assert good["smoothness"] > 0.3
    assert good["selectivity_morans_i"] > 0.1 and good["selectivity_p_value"] < 0.01
    assert abs(bad["distance_correlation"]) < 0.1
    assert abs(bad["smoothness"]) < 0.1
    assert abs(bad["selectivity_morans_i"]) < 0.05 and bad["selectivity_p_value"] > 0.05
    curve = good["curve"]
    assert len(curve["distance"]) == 10 and sum(curve["pairs"]) == CHANNELS * (CHANNELS - 1) // 2
    assert curve["similarity"][0] > curve["shuffled_high"][0]  # above chance when near
    assert len(good["preferred_class"]) == CHANNELS and set(good["preferred_class"]) <= {0, 1, 2}


def test_scores_equal_numpy_forward_pass():
    """The layer's pre-activation output, recomputed in numpy, gives the same scores."""
    x, y = class_images(100)
    model, conv, kernel = map_model(activation="relu")  # scores read before the ReLU
    got = measure_topography(model, x, y, batch_size=32, permutations=9)[conv.name]
    responses = np.einsum("nhwi,ic->nhwc", x, kernel)
    corr = np.corrcoef(responses.reshape(-1, CHANNELS).T)
    dist = positions.pairwise_distances(positions.grid(CHANNELS))
    np.testing.assert_allclose(got["distance_correlation"], distance_correlation(corr, dist), 1e-5)
    np.testing.assert_allclose(got["smoothness"], smoothness(corr, dist), rtol=1e-5)
    assert model.layers[1].activation is keras.activations.relu  # restored


def test_dataset_batches_give_the_same_scores():
    x, y = class_images(96)
    model = map_model()[0]
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 96, 32)]
    from_batches = measure_topography(model, batches, permutations=19)
    from_arrays = measure_topography(model, x, y, batch_size=50, permutations=19)
    for key in ("distance_correlation", "smoothness", "selectivity_morans_i"):
        name = next(iter(from_arrays))
        assert from_batches[name][key] == pytest.approx(from_arrays[name][key], rel=1e-5)


def test_distance_correlation_matches_ranks():
    sim = np.corrcoef(np.random.randn(12, 40))
    dist = positions.pairwise_distances(positions.circle(12))
    rows, cols = np.triu_indices(12, 1)
    ranks = [stats.rankdata(m[rows, cols]) for m in (sim, dist)]
    assert distance_correlation(sim, dist) == pytest.approx(-np.corrcoef(*ranks)[0, 1])


def test_morans_i_matches_double_loop():
    pos = positions.grid(20)
    dist = positions.pairwise_distances(pos).astype("float64")
    values = np.random.randn(20)
    n, num, wsum = 20, 0.0, 0.0
    z = values - values.mean()
    for i in range(n):
        for j in range(n):
            if i != j:
                num += z[i] * z[j] / dist[i, j]
                wsum += 1 / dist[i, j]
    expected = n / wsum * num / np.sum(z**2)
    assert morans_i(values, inverse_distance_weights(dist)) == pytest.approx(expected)
    smooth = pos[:, 0] + pos[:, 1]
    assert morans_i(smooth, inverse_distance_weights(dist)) > 0.15  # random: about -0.05


def test_similarity_curve_matches_loop():
    sim = np.corrcoef(np.random.randn(10, 30))
    dist = positions.pairwise_distances(positions.grid(10)).astype("float64")
    centres, means, counts = similarity_curve(sim, dist, bins=4)
    edges = np.linspace(dist[dist > 0].min(), dist.max(), 5)
    for b in range(4):
        values = [
            sim[i, j]
            for i in range(10)
            for j in range(i + 1, 10)
            if (edges[b] < dist[i, j] or b == 0) and dist[i, j] <= edges[b + 1] + 1e-12
        ]
        assert counts[b] == len(values)
        if values:
            assert means[b] == pytest.approx(np.mean(values))
    np.testing.assert_allclose(centres, (edges[:-1] + edges[1:]) / 2)


def test_channel_statistics_stable_with_large_means():
    data = np.random.randn(3, 50, 5) + 1e4  # three batches, a large common offset
    data[..., 1] = data[..., 0] * 0.5 + np.random.randn(3, 50) * 0.1
    stats_ = ChannelStatistics(5)
    for batch in data:
        stats_.update(batch.astype("float32"))
    np.testing.assert_allclose(
        stats_.correlation(), np.corrcoef(data.reshape(-1, 5).astype("float32").T), atol=2e-3
    )


def test_bad_input():
    x, y = class_images(20)
    model = map_model()[0]
    with pytest.raises(ValueError, match="y has 19 labels but x has 20 inputs"):
        measure_topography(model, x, y[:19])
    plain = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(4, 1)])
    with pytest.raises(ValueError, match="no topographic layer"):
        measure_topography(plain, x)
    with pytest.raises(ValueError, match="pass only one of them"):
        measure_topography(model, [(x, y)], y)
    with pytest.raises(ValueError, match="holds no input"):
        measure_topography(model, x[:0])
    with pytest.raises(ValueError, match="integer class labels"):
        measure_topography(model, x, y + 0.5)


@pytest.mark.tf_only  # the runner's datasets are tf.data pipelines
def test_runner_scores_a_baseline_on_its_twins_positions():
    from keras_topo.experiments import datasets, run

    config = run.RunConfig(dataset="digits", width_multiplier=0.25, epochs=1)
    split = datasets.load("digits", "test", batch_size=128)
    baseline = run.build_model(config, split.input_shape, split.num_classes)
    scores = run.map_scores(baseline, config, split)
    assert list(scores) == [
        "stem_conv",
        "stage1_block2_conv2",
        "stage2_block2_conv2",
        "stage3_block2_conv2",
        "stage4_block2_conv2",
    ]
    for layer in scores.values():
        assert abs(layer["distance_correlation"]) < 0.2  # untrained, no map
        assert 0.0 <= layer["selectivity_p_value"] <= 1.0


def test_report_averages_map_scores_over_layers_then_seeds():
    from keras_topo.experiments import report

    def result(seed, scores):
        return {
            "status": "complete",
            "organisation": "grid-2d",
            "config": {"dataset": "cifar10", "model": "resnet18", "topography": "grid"}
            | {"topographic_weight": 1.0, "seed": seed},
            "best_val_accuracy": 0.5,
            "test": {"accuracy": 0.5},
            "map_scores": {
                name: dict(zip(report.MAP_SCORES, values, strict=True))
                for name, values in scores.items()
            },
        }

    found = [
        result(0, {"a": (0.1, 0.2, 0.3), "b": (0.3, 0.4, 0.5)}),
        result(1, {"a": (0.5, 0.0, 0.1), "b": (0.5, 0.0, 0.1)}),
    ]
    (row,) = report.summarise(found)
    assert row["distance_correlation_mean"] == pytest.approx(0.35)
    assert row["smoothness_mean"] == pytest.approx(0.15)
    assert row["selectivity_morans_i_mean"] == pytest.approx(0.25)
    assert "| cifar10 | resnet18 | grid-2d | 0.350 | 0.150 | 0.250 |" in report.to_markdown([row])


def test_nested_layers_are_measured_and_too_small_ones_skipped_with_a_note():
    """A topographic layer inside a nested model scores as it does at the top level; a
    2-channel one is skipped (warning and entry) instead of refusing the model."""
    x, y = class_images(60)
    flat, conv, _ = map_model()
    inputs = keras.Input((4, 4, CLASSES))
    inner = keras.Model(inputs, conv(inputs), name="inner")
    outer_inputs = keras.Input((4, 4, CLASSES))
    features = inner(outer_inputs)
    tiny = keras_topo.TopographicConv2D(2, 1, topography="grid", name="tiny")(features)
    pooled = keras.layers.GlobalAveragePooling2D()
    outer = keras.Model(outer_inputs, [pooled(features), pooled(tiny)])
    want = measure_topography(flat, x, y, permutations=9)[conv.name]
    with pytest.warns(UserWarning, match="skips layer 'tiny': 2 channels"):
        got = measure_topography(outer, x, y, permutations=9)
    assert list(got) == [conv.name, "tiny"]
    assert got["tiny"] == {"channels": 2, "skipped": "2 channels: map scores need at least 3"}
    for key in ("distance_correlation", "smoothness", "selectivity_morans_i"):
        assert got[conv.name][key] == pytest.approx(want[key], rel=1e-5)
