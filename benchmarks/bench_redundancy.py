"""Redundancy ranking + compensation of ResNet-18's five topographic layers: time and error.

The paper's ResNet-18 (width 1, `topography="grid"`, random weights) is pruned at `--fraction`
of its five topographic layers' channel groups (`coupling="group"`, `mode="remove"`) from
`--calibration` images: the sklearn digits, upscaled to 32x32x3 and standardised. The time of
`prune_channels(criterion="redundancy", compensate=True)` is split (cProfile, cumulative) into
the dependency graph, the calibration forward passes and moments, the ranking, the rebuild and
the compensation; `criterion="l2"` is timed in the same run for the ratio. Then the logits'
relative error (max |pruned - unpruned| / max |unpruned|) on held-out digits of: L2,
redundancy, redundancy + compensation. Goal: <= 10 s for 2,048 images on the CPU.

    KERAS_BACKEND=tensorflow python benchmarks/bench_redundancy.py [--calibration 2048]
"""

import argparse
import cProfile
import os
import pstats
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras_topo.applications import ResNet18  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from keras_topo.pruning import prune_channels  # noqa: E402

# (label, function name as cProfile records it): the parts of one calibrated prune.
PARTS = (
    ("dependency graph", "_trace"),
    ("forward passes + moments", "response_moments"),
    ("redundancy ranking", "redundancy_scores"),
    ("map check", "map_check"),
    ("rebuild", "rebuild_groups"),
    ("compensation", "compensate"),
)


def digits(count, seed=0):
    """`count` sklearn digits (repeated with flips when needed), 32x32x3, standardised."""
    images = load_digits().images.astype("float32")  # (1797, 8, 8)
    images = np.concatenate([images, images[:, :, ::-1]])
    rng = np.random.default_rng(seed)
    chosen = images[rng.permutation(len(images))[:count]]
    upscaled = np.kron(chosen, np.ones((4, 4), "float32"))[..., None].repeat(3, axis=-1)
    return (upscaled - upscaled.mean()) / upscaled.std()


def cumulative_seconds(profile, name):
    stats = pstats.Stats(profile).stats
    return sum(entry[3] for (_, _, func), entry in stats.items() if func == name)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration", type=int, default=2048)
    parser.add_argument("--held-out", type=int, default=256)
    parser.add_argument("--fraction", type=float, default=0.5)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    model = ResNet18((32, 32, 3), 10, topography="grid", width_multiplier=1.0)
    images = digits(args.calibration + args.held_out)
    calibration, held_out = images[: args.calibration], images[args.calibration :]
    reference = keras.ops.convert_to_numpy(model.predict_on_batch(held_out))

    print(
        f"backend {keras.backend.backend()}, {args.calibration} calibration images, "
        f"fraction {args.fraction}",
        flush=True,
    )
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    compensated, report = prune_channels(
        model,
        args.fraction,
        criterion="redundancy",
        calibration_data=calibration,
        compensate=True,
        report=True,
    )
    profile.disable()
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    l2 = prune_channels(model, args.fraction, criterion="l2")
    l2_seconds = time.perf_counter() - start
    print(
        f"redundancy + compensation: {seconds:.2f} s (goal <= 10 s); l2 prune "
        f"{l2_seconds:.2f} s (ratio {seconds / l2_seconds:.1f})"
    )
    for label, name in PARTS:
        print(f"  {label:26s} {cumulative_seconds(profile, name):6.2f} s")
    print(report, flush=True)
    plain = prune_channels(
        model, args.fraction, criterion="redundancy", calibration_data=calibration
    )
    print("logits relative error on held-out digits (max |pruned - unpruned| / max |unpruned|):")
    for label, pruned in (
        ("l2", l2),
        ("redundancy", plain),
        ("redundancy + compensate", compensated),
    ):
        out = keras.ops.convert_to_numpy(pruned.predict_on_batch(held_out))
        error = np.abs(out - reference).max() / np.abs(reference).max()
        print(f"  {label:24s} {error:.3f}", flush=True)


if __name__ == "__main__":
    from keras_topo.experiments.fast_path import settings_line

    print(settings_line(), flush=True)  # the backend, oneDNN and thread settings of this run
    main()
