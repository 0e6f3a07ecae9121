"""Redundancy ranking + compensation of ResNet-18's five topographic layers: time and error.

The paper's ResNet-18 (width 1, `topography="grid"`, random weights) is pruned at `--fraction`
of its five topographic layers' channel groups (`coupling="group"`, `mode="remove"`) from
`--calibration` images: the sklearn digits, upscaled to 32x32x3 and standardised. The time of
`prune_channels(criterion="redundancy", compensate=True)` (wall and process CPU seconds, and
the load average: the CPU may be shared) is split (cProfile, cumulative) into the dependency
graph, the calibration forward pass, the moments, the ranking, the map check, the rebuild and
the compensation; `criterion="l2"` is timed in the same run for the ratio. Then the logits'
relative error (max |pruned - unpruned| / max |unpruned|) on held-out digits of: L2,
redundancy, redundancy + compensation, and the same from every position of every map
(`responses.CALIBRATION_POSITIONS = None`) with the share of removed channels both agree on.
Goal: <= 10 s for 2,048 images on the CPU.

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

from keras_topo.pruning import prune_channels, responses  # noqa: E402

# (label, end of the file name, function name) as cProfile records them: the parts of one
# calibrated prune.
PARTS = (
    ("dependency graph", "graph.py", "_trace"),
    ("calibration forward pass", "trainer.py", "predict_on_batch"),
    ("moments (float64 sums)", "responses.py", "add"),
    ("redundancy ranking", "redundancy.py", "redundancy_scores"),
    ("map check", "redundancy.py", "map_check"),
    ("rebuild", "group_rebuild.py", "rebuild_groups"),
    ("compensation", "compensation.py", "compensate"),
)


def digits(count, seed=0):
    """`count` sklearn digits (repeated with flips when needed), 32x32x3, standardised."""
    images = load_digits().images.astype("float32")  # (1797, 8, 8)
    images = np.concatenate([images, images[:, :, ::-1]])
    rng = np.random.default_rng(seed)
    chosen = images[rng.permutation(len(images))[:count]]
    upscaled = np.kron(chosen, np.ones((4, 4), "float32"))[..., None].repeat(3, axis=-1)
    return (upscaled - upscaled.mean()) / upscaled.std()


def cumulative_seconds(profile, file_end, name):
    stats = pstats.Stats(profile).stats
    return sum(
        entry[3]
        for (path, _, func), entry in stats.items()
        if func == name and path.endswith(file_end)
    )


def timed_prune(model, fraction, calibration, profile=None):
    """`(pruned, report, wall seconds, CPU seconds)` of a redundancy + compensation prune."""
    start, cpu = time.perf_counter(), time.process_time()
    if profile is not None:
        profile.enable()
    pruned, report = prune_channels(
        model,
        fraction,
        criterion="redundancy",
        calibration_data=calibration,
        compensate=True,
        report=True,
    )
    if profile is not None:
        profile.disable()
    return pruned, report, time.perf_counter() - start, time.process_time() - cpu


def removed_channels(report):
    return {(layer.name, int(c)) for layer in report.history.layers for c in layer.removed}


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
        f"fraction {args.fraction}, {responses.CALIBRATION_POSITIONS} positions per map, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
        flush=True,
    )
    profile = cProfile.Profile()
    compensated, report, seconds, cpu = timed_prune(model, args.fraction, calibration, profile)
    start = time.perf_counter()
    l2 = prune_channels(model, args.fraction, criterion="l2")
    l2_seconds = time.perf_counter() - start
    print(
        f"redundancy + compensation: {seconds:.2f} s wall, {cpu:.2f} s CPU (goal <= 10 s); "
        f"l2 prune {l2_seconds:.2f} s (ratio {seconds / l2_seconds:.1f}); load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    for label, file_end, name in PARTS:
        print(f"  {label:26s} {cumulative_seconds(profile, file_end, name):6.2f} s")
    print(report, flush=True)
    plain = prune_channels(
        model, args.fraction, criterion="redundancy", calibration_data=calibration
    )
    responses.CALIBRATION_POSITIONS = None  # the ablation: every position of every map
    every, every_report, every_seconds, every_cpu = timed_prune(model, args.fraction, calibration)
    agreed = len(removed_channels(report) & removed_channels(every_report))
    print(
        f"every position: {every_seconds:.2f} s wall, {every_cpu:.2f} s CPU; removed channels "
        f"in common with the sampled positions: {agreed / len(removed_channels(report)):.3f}"
    )
    print("logits relative error on held-out digits (max |pruned - unpruned| / max |unpruned|):")
    for label, pruned in (
        ("l2", l2),
        ("redundancy", plain),
        ("redundancy + compensate", compensated),
        ("  the same, every position", every),
    ):
        out = keras.ops.convert_to_numpy(pruned.predict_on_batch(held_out))
        error = np.abs(out - reference).max() / np.abs(reference).max()
        print(f"  {label:28s} {error:.3f}", flush=True)


if __name__ == "__main__":
    from keras_topo.experiments.fast_path import settings_line

    print(settings_line(), flush=True)  # the backend, oneDNN and thread settings of this run
    main()
