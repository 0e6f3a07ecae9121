"""The six position schemes of the paper's Fig. 2, for `n` channels."""

from matplotlib.figure import Figure

from keras_topo import positions

SCHEMES = (
    ("2D grid", "grid", 2),
    ("3D grid", "grid", 3),
    ("nested 2D", "nested", 2),
    ("nested 3D", "nested", 3),
    ("circle", "circle", 2),
    ("sphere", "sphere", 3),
)


def plot_position_schemes(path, n=256):
    """Writes a PNG with one panel per scheme; points coloured by channel index."""
    figure = Figure(figsize=(12, 7.5), layout="constrained")
    for index, (title, name, dimension) in enumerate(SCHEMES, start=1):
        points = positions.get(name, n, dimension)
        if dimension == 3:
            axes = figure.add_subplot(2, 3, index, projection="3d")
            axes.scatter(*points.T, c=range(n), cmap="viridis", s=8, depthshade=False)
        else:
            axes = figure.add_subplot(2, 3, index)
            axes.scatter(*points.T, c=range(n), cmap="viridis", s=8)
            axes.set_aspect("equal")
        axes.set_title(f"{title} ({n} channels)")
    figure.savefig(path, dpi=110)
    return path
