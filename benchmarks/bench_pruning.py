"""Structural pruning: parameter, MAC and measured CPU latency ratios (pruned / unpruned).

VGG-16 (all 13 convs pruned) and ResNet-18 (its 5 topographic layers, `topography="grid"`)
on 32x32x3 inputs, at fractions 0.25 / 0.5 / 0.75 of each pruned layer's channels, with
`prune_channels(mode="remove", coupling="expand")` (the paper's per-layer pruning; group
pruning of keras.applications models: bench_pruning_applications.py). Latencies: batch 32,
`predict_on_batch`, pruned and unpruned timed interleaved in the same run, median of
`--repeats`. Batch-norm statistics are
randomised so that the pruned channels' constants are non-zero (the folds are exercised).

    KERAS_BACKEND=tensorflow python benchmarks/bench_pruning.py [--repeats 7]
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras_topo.applications import VGG16, ResNet18  # noqa: E402

from keras_topo.pruning import compare, prune_channels  # noqa: E402

FRACTIONS = (0.25, 0.5, 0.75)


def randomize_batch_norm(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, c))
            layer.beta.assign(rng.normal(0.0, 1.0, c))
            layer.moving_mean.assign(rng.normal(0.0, 1.0, c))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, c))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--width-multiplier", type=float, default=1.0)
    args = parser.parse_args()
    print(f"backend={keras.backend.backend()} batch={args.batch_size} repeats={args.repeats}")
    header = (
        f"{'model':10} {'fraction':>8} {'params':>8} {'MACs':>8} {'latency':>8} {'lat/MACs':>9}"
    )
    print(header)
    for build in (VGG16, ResNet18):
        model = build((32, 32, 3), 10, topography="grid", width_multiplier=args.width_multiplier)
        randomize_batch_norm(model)
        for fraction in FRACTIONS:
            pruned = prune_channels(model, fraction, mode="remove", coupling="expand")
            r = compare(model, pruned, batch_size=args.batch_size, repeats=args.repeats)
            print(
                f"{build.__name__:10} {fraction:8.2f} {r['params_ratio']:8.3f} "
                f"{r['macs_ratio']:8.3f} {r['latency_ratio']:8.3f} "
                f"{r['latency_ratio'] / r['macs_ratio']:9.2f}",
                flush=True,
            )
        print(
            f"{build.__name__}: unpruned {r['params_a']:,} params, {r['macs_a']:,} MACs/example, "
            f"{1e3 * r['latency_a']:.1f} ms/batch"
        )


if __name__ == "__main__":
    from keras_topo.experiments.fast_path import settings_line

    print(settings_line(), flush=True)  # the backend, oneDNN and thread settings of this run
    main()
