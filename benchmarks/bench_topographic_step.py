"""Training-step time of each topographic model over its plain twin, measured in one run.

TensorFlow backend, `jit_compile=False` (the fast path on CPU), batch 64 of 32x32x3 inputs,
topography "grid" with lambda 1 at the paper's layers. Steps of the two models are interleaved
(alternating which goes first) so that load from other processes hits both alike; the ratio is
the median topographic step over the median plain step.

    python benchmarks/bench_topographic_step.py [--models resnet18 densenet121 vgg16] [--steps 15]
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras_topo.applications import VGG16, DenseNet121, ResNet18  # noqa: E402

from keras_topo.experiments import fast_path  # noqa: E402

BUILDERS = {"resnet18": ResNet18, "densenet121": DenseNet121, "vgg16": VGG16}


def compiled(builder, topography):
    model = builder(input_shape=(32, 32, 3), num_classes=10, topography=topography)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    return model


def step_seconds(model, x, y):
    start = time.perf_counter()
    model.train_on_batch(x, y)
    return time.perf_counter() - start


def bench(builder, steps, batch, warmup=2):
    """Median step times (plain, topographic) in seconds and the median per-pair ratio."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=batch)
    models = {"plain": compiled(builder, None), "topo": compiled(builder, "grid")}
    times = {"plain": [], "topo": []}
    for i in range(warmup + steps):
        order = ("plain", "topo") if i % 2 == 0 else ("topo", "plain")
        for key in order:
            elapsed = step_seconds(models[key], x, y)
            if i >= warmup:
                times[key].append(elapsed)
    pair_ratios = [t / p for t, p in zip(times["topo"], times["plain"], strict=True)]
    return statistics.median(times["plain"]), statistics.median(times["topo"]), pair_ratios


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(BUILDERS), default=list(BUILDERS))
    parser.add_argument("--steps", type=int, default=15, help="timed steps per model")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    if keras.backend.backend() != "tensorflow":
        raise SystemExit("Run this benchmark with KERAS_BACKEND=tensorflow.")
    print(fast_path.settings_line())
    print(f"batch {args.batch}, 32x32x3, TF, jit_compile=False, {args.steps} interleaved steps")
    for name in args.models:
        plain, topo, pair_ratios = bench(BUILDERS[name], args.steps, args.batch)
        print(
            f"{name:12s} plain {plain * 1000:7.1f} ms  topographic {topo * 1000:7.1f} ms  "
            f"ratio {topo / plain:.3f}  (median per-pair ratio {statistics.median(pair_ratios):.3f})",
            flush=True,
        )


if __name__ == "__main__":
    main()
