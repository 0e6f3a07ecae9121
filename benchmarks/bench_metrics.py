"""Time of `keras_topo.metrics.measure_topography` per layer, and its share of a forward pass.

A topographic ResNet-18 (grid, the paper's five layers) on N random 32x32x3 images with 10
labels: the time of `measure_topography` (forward passes through a sub-model, streaming channel
statistics, 999 permutations for Moran's I, 100 shuffles for the curve bands) against a plain
`model.predict` over the same images, measured in this one run.

    python benchmarks/bench_metrics.py [--images 10000] [--width 1.0]
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
from keras_topo.applications import ResNet18  # noqa: E402

from keras_topo.metrics import measure_topography  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--width", type=float, default=1.0, help="ResNet-18 width multiplier")
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.images, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=args.images)
    model = ResNet18((32, 32, 3), 10, topography="grid", width_multiplier=args.width)
    model.predict(x[: args.batch], verbose=0)  # build and trace once
    start = time.perf_counter()
    model.predict(x, batch_size=args.batch, verbose=0)
    forward = time.perf_counter() - start
    start = time.perf_counter()
    scores = measure_topography(model, x, y, batch_size=args.batch)
    measured = time.perf_counter() - start
    print(
        f"ResNet-18 x{args.width:g}, {args.images} images, {len(scores)} layers "
        f"({', '.join(str(s['channels']) for s in scores.values())} channels)\n\n"
        "| model.predict s | measure_topography s | per layer s | / predict |\n|---|---|---|---|\n"
        f"| {forward:.1f} | {measured:.1f} | {measured / len(scores):.1f} | "
        f"{measured / forward:.2f} |"
    )


if __name__ == "__main__":
    from keras_topo.experiments.fast_path import settings_line

    print(settings_line(), flush=True)  # the backend, oneDNN and thread settings of this run
    main()
