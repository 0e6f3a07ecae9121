"""`measure_similarity_ordering` against per-image numpy loops on a 1x1 topographic conv."""

import itertools

import keras
import numpy as np
import pytest
from scipy import stats

import keras_topo
from keras_topo.metrics.similarity_ordering import measure_similarity_ordering

CHANNELS = 6


def tiny_model(bias):
    """Input (5, 5, 3) -> 1x1 TopographicConv2D with 6 channels on a grid, relu (not read)."""
    inputs = keras.Input((5, 5, 3))
    conv = keras_topo.TopographicConv2D(
        CHANNELS, 1, activation="relu", topography="grid", name="topo"
    )
    model = keras.Model(inputs, conv(inputs))
    rng = np.random.default_rng(1)
    conv.kernel.assign(rng.normal(size=(1, 1, 3, CHANNELS)).astype("float32"))
    conv.bias.assign(np.full(CHANNELS, bias, dtype="float32"))
    return model, conv


def oracle(images, kernel, bias, layer_positions, bins):
    """Loops over images and pairs; the pre-activation output is `x @ W + b` (1x1 conv)."""
    y = (images.reshape(len(images), -1, 3) @ kernel.reshape(3, CHANNELS) + bias).astype("f8")
    pairs = list(itertools.combinations(range(CHANNELS), 2))
    raw, part, centred = [], [], []
    for i, j in pairs:
        a, b = y[:, :, i], y[:, :, j]
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        raw.append(np.mean((a * b).sum(1) / (na * nb)))
        part.append(np.mean(a.shape[1] * a.mean(1) * b.mean(1) / (na * nb)))
        centred.append(np.mean([np.corrcoef(a[k], b[k])[0, 1] for k in range(len(y))]))
    pooled = np.corrcoef(y.reshape(-1, CHANNELS).T)
    pearson = [pooled[i, j] for i, j in pairs]
    p = np.asarray(layer_positions, "f8")
    distance = np.array([np.linalg.norm(p[i] - p[j]) for i, j in pairs])
    edges = np.linspace(distance.min(), distance.max(), bins + 1)

    def curve(values):
        values = np.asarray(values)
        out = []
        for k in range(bins):
            inside = (distance >= edges[k]) & (distance <= edges[k + 1])
            if k > 0:
                inside &= distance > edges[k]
            out.append(values[inside].mean() if inside.any() else None)
        return out

    return {
        "raw_cosine": np.mean(raw),
        "pearson": np.mean(pearson),
        "image_pearson": np.mean(centred),
        "mean_part": np.mean(part),
        "target": np.mean(1 / (distance + 1)),
        "raw_cosine_distance_correlation": -stats.spearmanr(raw, distance).statistic,
        "pearson_distance_correlation": -stats.spearmanr(pearson, distance).statistic,
        "raw_cosine_curve": curve(raw),
        "pearson_curve": curve(pearson),
    }


def assert_curves_equal(got, expected):
    assert [g is None for g in got] == [e is None for e in expected]
    np.testing.assert_allclose(
        [g for g in got if g is not None], [e for e in expected if e is not None], atol=1e-5
    )


@pytest.mark.parametrize("bias", [0.0, 2.0])
def test_matches_numpy_loops(bias):
    model, conv = tiny_model(bias)
    images = np.random.default_rng(2).normal(size=(7, 5, 5, 3)).astype("float32")
    got = measure_similarity_ordering(model, images, batch_size=3, bins=4)["topo"]
    expected = oracle(images, keras.ops.convert_to_numpy(conv.kernel), bias, conv.positions, bins=4)
    for name, value in expected.items():
        if name.endswith("curve"):
            assert_curves_equal(got[name], value)
        else:
            assert got[name] == pytest.approx(value, abs=1e-5), name
    assert got["mean_share"] == pytest.approx(expected["mean_part"] / expected["raw_cosine"])
    assert got["images"] == 7 and len(got["distance_bins"]) == 4


def test_channel_means_carry_the_raw_cosine_of_a_large_shared_bias():
    """A bias far above the responses' spread: raw cosines near 1 from the means alone, while
    the (mean-centred) Pearson correlations are those of the bias-free layer."""
    images = np.random.default_rng(3).normal(size=(8, 5, 5, 3)).astype("float32")
    plain = measure_similarity_ordering(tiny_model(0.0)[0], images)["topo"]
    shifted = measure_similarity_ordering(tiny_model(50.0)[0], images)["topo"]
    assert shifted["raw_cosine"] > 0.99 and shifted["mean_share"] > 0.99
    assert shifted["pearson"] == pytest.approx(plain["pearson"], abs=1e-5)
    assert shifted["image_pearson"] == pytest.approx(plain["image_pearson"], abs=1e-5)


def test_a_dead_channel_has_similarity_zero_not_nan():
    model, conv = tiny_model(0.0)
    kernel = keras.ops.convert_to_numpy(conv.kernel).copy()
    kernel[..., 0] = 0.0
    conv.kernel.assign(kernel)
    images = np.random.default_rng(4).normal(size=(4, 5, 5, 3)).astype("float32")
    got = measure_similarity_ordering(model, images)["topo"]
    assert all(np.isfinite(got[k]) for k in ("raw_cosine", "pearson", "image_pearson"))


def test_bad_input():
    model, _ = tiny_model(0.0)
    with pytest.raises(ValueError, match="no input"):
        measure_similarity_ordering(model, np.zeros((0, 5, 5, 3), "float32"))
    plain = keras.Sequential([keras.Input((5, 5, 3)), keras.layers.Conv2D(4, 1)])
    with pytest.raises(ValueError, match="topographic"):
        measure_similarity_ordering(plain, np.zeros((2, 5, 5, 3), "float32"))
