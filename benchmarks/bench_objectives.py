"""Training-step time of a ResNet-18 under each topographic objective over plain training.

TensorFlow backend, `jit_compile=False` (the fast path on CPU), 32x32x3 inputs, grid positions,
lambda 1 at the paper's five layers. The four models' steps are interleaved, the order rotating
each round, so that load from other processes hits all alike; each ratio is the median step of
the objective over the median plain step, measured in this one run.

    python benchmarks/bench_objectives.py [--steps 12] [--batch 64] [--width 1.0]
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras_topo.applications import ResNet18  # noqa: E402

from keras_topo import Topography  # noqa: E402
from keras_topo.objectives import OBJECTIVES  # noqa: E402


def compiled(objective, width):
    topography = None if objective == "plain" else Topography(objective=objective)
    model = ResNet18((32, 32, 3), 10, topography=topography, width_multiplier=width)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="timed steps per model")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=float, default=1.0, help="ResNet-18 width multiplier")
    args = parser.parse_args()
    if keras.backend.backend() != "tensorflow":
        raise SystemExit("Run this benchmark with KERAS_BACKEND=tensorflow.")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=args.batch)
    names = ("plain", *OBJECTIVES)
    models = {name: compiled(name, args.width) for name in names}
    times = {name: [] for name in names}
    warmup = 2
    for i in range(warmup + args.steps):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            start = time.perf_counter()
            models[name].train_on_batch(x, y)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    plain = statistics.median(times["plain"])
    print(
        f"ResNet-18 x{args.width:g}, batch {args.batch}, 32x32x3, TF, jit_compile=False, "
        f"{args.steps} interleaved steps\n\n| objective | step ms | / plain |\n|---|---|---|"
    )
    for name in names:
        median = statistics.median(times[name])
        print(f"| {name} | {1000 * median:.1f} | {median / plain:.3f} |", flush=True)


if __name__ == "__main__":
    from keras_topo.experiments.fast_path import settings_line

    print(settings_line(), flush=True)  # the backend, oneDNN and thread settings of this run
    main()
