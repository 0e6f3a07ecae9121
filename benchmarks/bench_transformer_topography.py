"""Training-step time of a small topographic ViT over its plain twin, measured in one run.

TensorFlow backend, `jit_compile=False`, batch 64 of 32x32x3 images, `keras_topo.applications.ViT`
(patch 4: 64 tokens, hidden 64, 4 heads, MLP 128, 4 blocks) made topographic by
`make_topographic(vit, topography=...)` with the default layers (the 4 MLP hidden layers, tokens as
samples: 4096 samples of 128 channels per layer). Robust on a loaded machine: each timed round
runs a plain step and a topographic step back to back (A/B, the order alternating), and the
ratio reported is the median over rounds of these paired ratios, next to the load average and
issue 21's bar (a topographic step at most 1.10 plain steps with the paper's or the spatial
objective; TopoLM's sampled variant is reported against it too).

    python benchmarks/bench_transformer_topography.py [--objectives activation spatial] [--steps 40]
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


BAR = 1.10  # issue 21: topographic / plain training step


def bench(variants, steps, batch, warmup=2):
    """`{name: [topographic / plain step time per round]}`, and the plain steps' seconds."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=batch)
    plain = compiled(ViT(input_shape=(32, 32, 3), num_classes=10))
    models = {
        name: compiled(keras_topo.make_topographic(plain, topography=VARIANTS[name]))
        for name in variants
    }

    def step_time(model):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        return time.perf_counter() - start

    ratios = {name: [] for name in models}
    plain_times = []
    for i in range(warmup + steps):
        for name, model in models.items():
            if i % 2:
                topographic, reference = step_time(model), step_time(plain)
            else:
                reference, topographic = step_time(plain), step_time(model)
            if i >= warmup:
                ratios[name].append(topographic / reference)
                plain_times.append(reference)
    return ratios, plain_times


def load_line():
    return "load average (1, 5, 15 min): " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=40, help="timed A/B rounds per objective")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    if keras.backend.backend() != "tensorflow":
        raise SystemExit("Run this benchmark with KERAS_BACKEND=tensorflow.")
    print(fast_path.settings_line())
    print(f"ViT, batch {args.batch}, 32x32x3, TF, jit_compile=False, {args.steps} A/B rounds")
    print(load_line())
    ratios, plain_times = bench(args.objectives, args.steps, args.batch)
    print(load_line())
    print(f"plain step: median {statistics.median(plain_times) * 1000:.1f} ms")
    print(f"{'objective':16s} {'median ratio':>12s} {'quartiles':>13s}  bar {BAR:.2f}")
    for name in args.objectives:
        low, median, high = statistics.quantiles(ratios[name], n=4)
        verdict = "within" if median <= BAR else "OVER"
        print(f"{name:16s} {median:12.3f} {low:6.3f}-{high:.3f}  {verdict}", flush=True)


if __name__ == "__main__":
    main()
