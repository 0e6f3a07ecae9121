"""Figures: PNGs are written, and the numbers they draw equal independent computations."""

import keras
import numpy as np
import pytest
from PIL import Image

from keras_topo import figures, positions

PNG = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    data = open(path, "rb").read()
    assert data[:8] == PNG and len(data) > 10_000


def test_position_schemes_figure(tmp_path):
    assert_png(figures.plot_position_schemes(tmp_path / "schemes.png", n=64))


def test_similarity_by_distance_matches_brute_force():
    rng = np.random.default_rng(0)
    points = rng.uniform(size=(9, 2))  # random, so that no distance sits on a bin edge
    similarity = rng.uniform(-1, 1, (9, 9))
    centres, means = figures.similarity_by_distance(similarity, points, bins=4)
    dmax = max(np.linalg.norm(p - q) for p in points for q in points)
    edges = np.linspace(0, dmax, 5)
    expected = [[] for _ in range(4)]
    for i in range(9):
        for j in range(i + 1, 9):
            d = np.linalg.norm(points[i] - points[j])
            expected[min(np.searchsorted(edges, d, side="right") - 1, 3)].append(similarity[i, j])
    np.testing.assert_allclose(centres, (edges[:-1] + edges[1:]) / 2, rtol=1e-6)
    np.testing.assert_allclose(means, [np.mean(e) if e else np.nan for e in expected], rtol=1e-6)


def test_layer_statistics_match_a_direct_computation():
    inputs = keras.Input((3, 3, 2))
    conv = keras.layers.Conv2D(4, 1, name="conv", bias_initializer="random_normal")
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(conv(inputs)))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(1)
    batches = [
        (rng.normal(size=(5, 3, 3, 2)).astype("float32"), rng.integers(0, 3, 5)) for _ in range(3)
    ]
    similarity, class_means = figures.layer_statistics(model, "conv", batches, num_classes=3)
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in conv.weights)
    sims, responses, labels = [], [], []
    for x, y in batches:
        for image, label in zip(x, y, strict=True):
            out = (image.reshape(9, 2) @ kernel.reshape(2, 4) + bias).astype("float64")
            s = np.empty((4, 4))
            for i in range(4):
                for j in range(4):
                    s[i, j] = (
                        out[:, i]
                        @ out[:, j]
                        / (np.linalg.norm(out[:, i]) * np.linalg.norm(out[:, j]))
                    )
            sims.append(s)
            responses.append(out.mean(0))
            labels.append(label)
    np.testing.assert_allclose(similarity, np.mean(sims, 0), rtol=1e-4, atol=1e-5)
    responses, labels = np.array(responses), np.array(labels)
    for c in range(3):
        np.testing.assert_allclose(
            class_means[c], responses[labels == c].mean(0), rtol=1e-4, atol=1e-5
        )
    with pytest.raises(ValueError, match="no batch"):
        figures.layer_statistics(model, "conv", [], num_classes=3)


@pytest.mark.parametrize("dimension", [2, 3])
def test_topography_figure(tmp_path, dimension):
    rng = np.random.default_rng(2)
    panel = {
        "label": "grid",
        "similarity": rng.uniform(-1, 1, (16, 16)),
        "class_means": rng.normal(size=(10, 16)),
        "positions": positions.grid(16, dimension),
    }
    path = figures.plot_topography(
        tmp_path / "t.png",
        [panel, {**panel, "label": "base"}, {**panel, "label": "grid s1", "map": False}],
        "conv",
        class_names=[f"c{i}" for i in range(10)],
    )
    assert_png(path)
    width, height = Image.open(path).size
    assert width / height < 3.6  # a curve panel and two class maps; the third run adds a curve


def test_pruning_curve_figure(tmp_path):
    sweeps = [
        {
            "organisation": name,
            "run": f"runs/{name}",
            "criterion": "l2",
            "mode": "mask",
            "points": [{"fraction": f, "accuracy": a} for f, a in zip([0, 0.5], acc, strict=True)],
        }
        for name, acc in (
            ("baseline", [0.9, 0.4]),
            ("baseline", [0.8, 0.3]),
            ("grid-2d", [0.9, 0.6]),
        )
    ]
    assert_png(figures.plot_pruning_curves(tmp_path / "p.png", sweeps))
