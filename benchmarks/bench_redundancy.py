"""Redundancy ranking + compensation of ResNet-18's five topographic layers: time and error.

The paper's ResNet-18 (width 1, `topography="grid"`, random weights) is pruned at `--fraction`
of its five topographic layers' channel groups (`coupling="group"`, `mode="remove"`) from
`--calibration` images: the sklearn digits, upscaled to 32x32x3 and standardised. The time of
`prune_channels(criterion="redundancy", compensate=True)` (wall and process CPU seconds, and
the load average: the CPU may be shared by other processes, so CPU seconds are the figure to
compare) is split into its phases (the dependency graph, the calibration pass: probe model,
its trace and forward pass and the float64 moments, the ranking, the map check, the rebuild
and the compensation), each timed in wall and CPU seconds by a wrapper (no profiler: it would
inflate the Python-heavy phases); a plain `predict_on_batch` of the unpruned model over the
same images (traced beforehand) is the forward pass's floor, and `criterion="l2"` is timed in
the same run for the ratio. Then the logits' relative error (max |pruned - unpruned| /
max |unpruned|) on held-out digits of: L2, redundancy, redundancy + compensation, and the same
from every position of every map (`responses.CALIBRATION_POSITIONS = None`) with the share of
removed channels both agree on.
Goal: <= 10 s for 2,048 images on the CPU.

    KERAS_BACKEND=tensorflow python benchmarks/bench_redundancy.py [--calibration 2048]
"""

import argparse
import contextlib
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras_topo.applications import ResNet18  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from keras_topo.pruning import calibration, prune, prune_channels, responses  # noqa: E402

GOAL_SECONDS = 10.0
# (label, module, attribute): the phases of one calibrated prune, as the pruner looks them up.
PHASES = (
    ("dependency graph", prune, "ChannelGraph"),
    ("calibration pass", calibration, "response_moments"),
    ("redundancy ranking", calibration, "redundancy_scores"),
    ("map check", calibration, "map_check"),
    ("rebuild", prune, "rebuild_groups"),
    ("compensation", calibration, "compensate"),
)


def digits(count, seed=0):
    """`count` sklearn digits (repeated with flips when needed), 32x32x3, standardised."""
    images = load_digits().images.astype("float32")  # (1797, 8, 8)
    images = np.concatenate([images, images[:, :, ::-1]])
    rng = np.random.default_rng(seed)
    chosen = images[rng.permutation(len(images))[:count]]
    upscaled = np.kron(chosen, np.ones((4, 4), "float32"))[..., None].repeat(3, axis=-1)
    return (upscaled - upscaled.mean()) / upscaled.std()


def clock():
    return np.array([time.perf_counter(), time.process_time()])


@contextlib.contextmanager
def phase_clocks(totals):
    """Adds each phase's `[wall, CPU]` seconds to `totals[label]` while inside."""
    originals = [(module, name, getattr(module, name)) for _, module, name in PHASES]

    def timed(label, function):
        def wrapper(*args, **kwargs):
            start = clock()
            try:
                return function(*args, **kwargs)
            finally:
                totals[label] = totals.get(label, 0) + clock() - start

        return wrapper

    for (label, module, name), (_, _, function) in zip(PHASES, originals, strict=True):
        setattr(module, name, timed(label, function))
    try:
        yield totals
    finally:
        for module, name, function in originals:
            setattr(module, name, function)


def timed_prune(model, fraction, calibration_images):
    """`(pruned, report, [wall, CPU] seconds, {phase: [wall, CPU]})` of a redundancy +
    compensation prune."""
    with phase_clocks({}) as phases:
        start = clock()
        pruned, report = prune_channels(
            model,
            fraction,
            criterion="redundancy",
            calibration_data=calibration_images,
            compensate=True,
            report=True,
        )
        seconds = clock() - start
    return pruned, report, seconds, phases


def plain_forward(model, images):
    """`[wall, CPU]` seconds of `predict_on_batch` over `images` in calibration batches
    (traced by a first call, not timed)."""
    batch = responses.CALIBRATION_BATCH
    model.predict_on_batch(images[:batch])
    start = clock()
    for first in range(0, len(images), batch):
        model.predict_on_batch(images[first : first + batch])
    return clock() - start


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
    floor = plain_forward(model, calibration)
    compensated, report, (seconds, cpu), phases = timed_prune(model, args.fraction, calibration)
    start = time.perf_counter()
    l2 = prune_channels(model, args.fraction, criterion="l2")
    l2_seconds = time.perf_counter() - start
    print(
        f"redundancy + compensation: {seconds:.2f} s wall, {cpu:.2f} s CPU; ratio to the "
        f"{GOAL_SECONDS:.0f} s goal: {seconds / GOAL_SECONDS:.2f} wall, {cpu / GOAL_SECONDS:.2f} "
        f"CPU; l2 prune {l2_seconds:.2f} s wall (ratio {seconds / l2_seconds:.1f}); load "
        f"average {os.getloadavg()[0]:.1f}"
    )
    print(f"  {'phase':34s} {'wall s':>7s} {'CPU s':>7s} {'CPU share':>9s}")
    rest = np.array([seconds, cpu]) - sum(phases.values())
    for label, (wall, process) in [*phases.items(), ("other (checks, choice, report)", rest)]:
        print(f"  {label:34s} {wall:7.2f} {process:7.2f} {process / cpu:9.2f}")
    print(
        f"  {'(floor: plain predict, traced)':34s} {floor[0]:7.2f} {floor[1]:7.2f} "
        f"{floor[1] / cpu:9.2f}"
    )
    print(report, flush=True)
    plain = prune_channels(
        model, args.fraction, criterion="redundancy", calibration_data=calibration
    )
    responses.CALIBRATION_POSITIONS = None  # the ablation: every position of every map
    every, every_report, (every_seconds, every_cpu), _ = timed_prune(
        model, args.fraction, calibration
    )
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
