"""Channel positions: where each output channel of a topographic layer sits.

Every scheme returns a float32 array of shape `(n, dimension)`. The coordinates equal those
of the paper's reference implementation (`tests/test_positions.py` checks them against it).
"""

import math

import numpy as np

SCHEME_DIMENSIONS = {
    "grid": (2, 3),
    "nested": (2, 3),
    "circle": (2,),
    "sphere": (3,),
    "line": (1,),
}
DISTANCES = ("euclidean", "l1")


def grid(n, dimension=2):
    """Regular grid in `[0, 1]^dimension` with `ceil(n ** (1/dim))` points per axis.

    2D: `p_k = (c[k % N], c[k // N])`; 3D: `p_k = (c[(k // N) % N], c[k // N**2], c[k % N])`.
    """
    _check_dimension("grid", dimension)
    side = _points_per_axis(n, dimension)
    c = np.linspace(0.0, 1.0, side)
    k = np.arange(n)
    if dimension == 2:
        coords = (c[k % side], c[k // side])
    else:
        coords = (c[(k // side) % side], c[k // side**2], c[k % side])
    return np.stack(coords, axis=1).astype("float32")


def nested(n, dimension=2, factor=0.5):
    """Nested squares (2D, 8 points each) or cubes (3D, 20 points each), outermost first.

    Each step emits the points of the current box, then shrinks it around its centre to
    `factor` of its side.
    """
    _check_dimension("nested", dimension)
    if not 0.0 < factor < 1.0:
        raise ValueError(f"nested_factor must be in (0, 1), got {factor}.")
    points = []
    lo, hi = 0.0, 1.0
    while len(points) < n:
        mid = (lo + hi) / 2
        ring = [(lo, lo), (mid, lo), (hi, lo), (lo, mid), (hi, mid), (lo, hi), (mid, hi), (hi, hi)]
        if dimension == 2:
            points.extend(ring)
        else:
            corners = [(lo, lo), (hi, lo), (lo, hi), (hi, hi)]
            points.extend((x, y, lo) for x, y in ring)
            points.extend((x, y, mid) for x, y in corners)
            points.extend((x, y, hi) for x, y in ring)
        half = (hi - lo) * factor / 2
        lo, hi = mid - half, mid + half
    return np.asarray(points[:n], dtype="float32")


def circle(n, dimension=2):
    """`n` points evenly spaced on a circle of radius 0.5: `0.5 (cos 2πk/n, sin 2πk/n)`."""
    _check_dimension("circle", dimension)
    angle = 2 * np.pi * np.arange(n) / n
    return (0.5 * np.stack([np.cos(angle), np.sin(angle)], axis=1)).astype("float32")


def sphere(n, dimension=3):
    """Fibonacci sphere of radius 0.5 (`phi = π (3 - √5)`, `y_k = 1 - 2k / (n - 1)`)."""
    _check_dimension("sphere", dimension)
    _check_count(n)
    k = np.arange(n)
    phi = np.pi * (3.0 - math.sqrt(5.0))
    y = 1.0 - 2.0 * k / (n - 1)
    r = np.sqrt(1.0 - y**2)
    theta = phi * k
    return (0.5 * np.stack([np.cos(theta) * r, y, np.sin(theta) * r], axis=1)).astype("float32")


def line(n, dimension=1):
    """`n` evenly spaced points on `[0, 1]`."""
    _check_dimension("line", dimension)
    return np.linspace(0.0, 1.0, n, dtype="float32")[:, None]


_SCHEMES = {"grid": grid, "nested": nested, "circle": circle, "sphere": sphere, "line": line}


def get(name, n, dimension=None, nested_factor=0.5):
    """Positions of `n` channels for the scheme `name`, shape `(n, dimension)`.

    `dimension=None` picks the scheme's natural one (2 for grid/nested/circle, 3 for sphere,
    1 for line).
    """
    if name not in _SCHEMES:
        raise ValueError(
            f"Unknown topography {name!r}. Use one of {sorted(_SCHEMES)} or an array of "
            "positions of shape (filters, dimension)."
        )
    _check_count(n)
    dimension = SCHEME_DIMENSIONS[name][0] if dimension is None else dimension
    if name == "nested":
        return nested(n, dimension, factor=nested_factor)
    return _SCHEMES[name](n, dimension)


def resolve(topography, n, dimension=None, nested_factor=0.5):
    """A scheme name or an explicit array of positions -> float32 array `(n, dim)`."""
    if isinstance(topography, str):
        return get(topography, n, dimension, nested_factor=nested_factor)
    positions = np.asarray(topography, dtype="float32")
    if positions.ndim != 2 or positions.shape[0] != n:
        raise ValueError(
            f"topography: explicit positions must have shape (filters, dimension) = ({n}, d), "
            f"got {positions.shape}. Give one position per output channel."
        )
    if not np.all(np.isfinite(positions)):
        raise ValueError("topography: explicit positions contain NaN or infinite values.")
    return positions


def pairwise_distances(positions, distance="euclidean"):
    """Distance matrix `(n, n)` between positions `(n, dim)` (float64)."""
    if distance not in DISTANCES:
        raise ValueError(f"Unknown distance {distance!r}. Use one of {list(DISTANCES)}.")
    diff = np.asarray(positions, dtype="float64")[:, None, :] - np.asarray(positions, "float64")
    if distance == "l1":
        return np.abs(diff).sum(-1)
    return np.sqrt((diff**2).sum(-1))


def target_similarity(positions, distance="euclidean"):
    """The loss's target `T_ij = 1 / (d(p_i, p_j) + 1)`, shape `(n, n)`, float32."""
    return (1.0 / (pairwise_distances(positions, distance) + 1.0)).astype("float32")


def _points_per_axis(n, dimension):
    # Literally the reference's `ceil(n ** (1 / dim))`, float rounding included (27 points in
    # 3D give 4 per axis, as in the reference), so that coordinates match it exactly.
    return math.ceil(n ** (1.0 / dimension))


def _check_dimension(name, dimension):
    if dimension not in SCHEME_DIMENSIONS[name]:
        raise ValueError(
            f"dimension={dimension} is not supported by the {name!r} topography; "
            f"use dimension in {SCHEME_DIMENSIONS[name]}."
        )


def _check_count(n):
    if int(n) != n or n < 2:
        raise ValueError(f"A topographic layer needs at least 2 channels (filters >= 2), got {n}.")
