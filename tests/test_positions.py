"""Position schemes against coordinates written out from the reference formulas."""

import math

import numpy as np
import pytest

from keras_topo import positions


def test_grid_2d_matches_reference_order():
    # n=5: N=3 points per axis, c = [0, .5, 1], p_k = (c[k % 3], c[k // 3]).
    expected = [(0, 0), (0.5, 0), (1, 0), (0, 0.5), (0.5, 0.5)]
    np.testing.assert_allclose(positions.grid(5, 2), expected)


def test_grid_3d_matches_reference_order():
    n, side = 20, 3
    c = np.linspace(0, 1, side)
    expected = [(c[(k // side) % side], c[k // side**2], c[k % side]) for k in range(n)]
    np.testing.assert_allclose(positions.grid(n, 3), expected)


def test_grid_perfect_square_and_cube_sizes():
    assert len(np.unique(positions.grid(64, 2)[:, 0])) == 8
    assert len(np.unique(positions.grid(64, 3)[:, 2])) == 4


def test_nested_2d_rings_then_shrink():
    outer = [(0, 0), (0.5, 0), (1, 0), (0, 0.5), (1, 0.5), (0, 1), (0.5, 1), (1, 1)]
    inner = [(0.25, 0.25), (0.5, 0.25)]
    np.testing.assert_allclose(positions.nested(10, 2), outer + inner)


def test_nested_2d_factor():
    inner_first = positions.nested(9, 2, factor=0.8)[8]
    np.testing.assert_allclose(inner_first, (0.1, 0.1), atol=1e-7)


def test_nested_3d_cube_points():
    ring = [(0, 0), (0.5, 0), (1, 0), (0, 0.5), (1, 0.5), (0, 1), (0.5, 1), (1, 1)]
    corners = [(0, 0), (1, 0), (0, 1), (1, 1)]
    expected = (
        [(x, y, 0) for x, y in ring]
        + [(x, y, 0.5) for x, y in corners]
        + [(x, y, 1) for x, y in ring]
        + [(0.25, 0.25, 0.25)]
    )
    np.testing.assert_allclose(positions.nested(21, 3), expected)


def test_circle():
    n = 7
    expected = [
        (0.5 * math.cos(2 * math.pi * k / n), 0.5 * math.sin(2 * math.pi * k / n)) for k in range(n)
    ]
    np.testing.assert_allclose(positions.circle(n), expected, atol=1e-7)


def test_sphere_fibonacci():
    n = 6
    phi = math.pi * (3 - math.sqrt(5))
    expected = []
    for k in range(n):
        y = 1 - 2 * k / (n - 1)
        r = math.sqrt(1 - y * y)
        expected.append((0.5 * math.cos(phi * k) * r, 0.5 * y, 0.5 * math.sin(phi * k) * r))
    np.testing.assert_allclose(positions.sphere(n), expected, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(positions.sphere(50), axis=1), 0.5, atol=1e-6)


def test_line_and_get_defaults():
    np.testing.assert_allclose(positions.get("line", 3)[:, 0], [0, 0.5, 1])
    assert positions.get("sphere", 10).shape == (10, 3)
    assert positions.get("grid", 10).shape == (10, 2)
    assert positions.get("grid", 10, 3).shape == (10, 3)
    assert positions.get("nested", 30, 3).dtype == np.float32


def test_distances_and_target():
    p = np.array([[0.0, 0.0], [3.0, 4.0]])
    np.testing.assert_allclose(positions.pairwise_distances(p)[0, 1], 5.0)
    np.testing.assert_allclose(positions.pairwise_distances(p, "l1")[0, 1], 7.0)
    np.testing.assert_allclose(positions.target_similarity(p), [[1, 1 / 6], [1 / 6, 1]], rtol=1e-6)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: positions.get("spiral", 8), "Unknown topography"),
        (lambda: positions.get("circle", 8, 3), "dimension=3"),
        (lambda: positions.get("sphere", 8, 2), "dimension=2"),
        (lambda: positions.get("grid", 8, 4), "dimension=4"),
        (lambda: positions.get("grid", 1), "filters >= 2"),
        (lambda: positions.resolve(np.zeros((5, 2)), 6), r"\(6, d\)"),
        (lambda: positions.resolve(np.zeros(6), 6), "shape"),
        (lambda: positions.pairwise_distances(np.zeros((2, 2)), "cosine"), "Unknown distance"),
        (lambda: positions.nested(8, 2, factor=1.5), "nested_factor"),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()
