"""Training-step time of a small topographic ViT over its plain twin, measured in one run.

TensorFlow backend, `jit_compile=False`, batch 64 of 32x32x3 images, `keras_topo.applications.ViT`
(patch 4: 64 tokens, hidden 64, 4 heads, MLP 128, 4 blocks) made topographic by
`make_topographic(vit, topography=...)` with the default layers (the 4 MLP hidden layers, tokens as
samples: 4096 samples of 128 channels per layer). Steps of the models are interleaved (rotating
which goes first) so that load from other processes hits all alike; each ratio is the median
topographic step over the median plain step.

    python benchmarks/bench_transformer_topography.py [--objectives activation spatial] [--steps 15]
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras_topo.applications import ViT  # noqa: E402

import keras_topo  # noqa: E402
from keras_topo.experiments import fast_path  # noqa: E402

# Sampled: TopoLM's 5 neighbourhoods of radius 0.3 on the 12 x 11 grid of 128 units.
VARIANTS = {
    "activation": keras_topo.Topography(objective="activation"),
    "spatial": keras_topo.Topography(objective="spatial"),
    "spatial-sampled": keras_topo.Topography(objective="spatial", neighbourhoods=5, radius=0.3),
}


def compiled(model):
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    return model


def bench(variants, steps, batch, warmup=2):
    """`{name: median step seconds}` of the plain ViT and each topographic variant."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=batch)
    plain = ViT(input_shape=(32, 32, 3), num_classes=10)
    models = {"plain": compiled(plain)}
    for name in variants:
        models[name] = compiled(keras_topo.make_topographic(plain, topography=VARIANTS[name]))
    times = {name: [] for name in models}
    names = list(models)
    for i in range(warmup + steps):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            start = time.perf_counter()
            models[name].train_on_batch(x, y)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=15, help="timed steps per model")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    if keras.backend.backend() != "tensorflow":
        raise SystemExit("Run this benchmark with KERAS_BACKEND=tensorflow.")
    print(fast_path.settings_line())
    print(
        f"ViT, batch {args.batch}, 32x32x3, TF, jit_compile=False, {args.steps} interleaved steps"
    )
    medians = bench(args.objectives, args.steps, args.batch)
    print(f"plain            {medians['plain'] * 1000:7.1f} ms")
    for name in args.objectives:
        ratio = medians[name] / medians["plain"]
        print(f"{name:16s} {medians[name] * 1000:7.1f} ms  ratio {ratio:.3f}", flush=True)


if __name__ == "__main__":
    main()
