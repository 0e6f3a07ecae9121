"""Group pruning of every keras.applications model: params / MACs ratios, time, remove == mask.

Each model is built offline (`weights=None`, 10 classes, logits, the smallest input it accepts
among 32 / 75 / 224), its batch-norm statistics randomised, then pruned with
`prune_channels(fraction, layers=<every Conv2D / SeparableConv2D / Dense>)` (the classifier's
group is a model output: never pruned) at each fraction. Columns: parameter and MAC ratios
pruned / unpruned, seconds to prune, and at the last fraction the largest |remove - mask|
relative to the largest output. Models that fail to build or prune are listed with the reason.
Then the measured latency ratio against the MAC ratio at 0.5 (batch 32, interleaved timings)
for our ResNet-18 (CIFAR stem), VGG-16 and MobileNetV2.

    KERAS_BACKEND=tensorflow nice -n 5 python benchmarks/bench_pruning_applications.py \
        [--models ResNet50 VGG16] [--max-params 100e6] [--repeats 7]
"""

import argparse
import os
import time
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_topo.layer_selection import walk_layers  # noqa: E402
from keras_topo.pruning import compare, count_params, prune_channels  # noqa: E402

FRACTIONS = (0.25, 0.5)
SIDES = (32, 75, 224)
HIDDEN = (keras.layers.Conv2D, keras.layers.SeparableConv2D, keras.layers.Dense)
# Measured with Torch-Pruning 1.6.1 (MagnitudePruner, L2, torchvision resnet18, CIFAR stem).
TORCH_PRUNING = {"ResNet18": {0.25: (0.563, 0.566), 0.5: (0.250, 0.254)}}


def prunable(layer):
    return isinstance(layer, HIDDEN)


def randomize_batch_norm(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in walk_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, c))
            if layer.center:
                layer.beta.assign(rng.normal(0.0, 0.5, c))
            layer.moving_mean.assign(rng.normal(0.0, 0.5, c))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, c))
    return model


def build(name):
    """(model, side) for the smallest accepted input side, or raises the last error."""
    error = None
    for side in SIDES:
        try:
            kwargs = {"weights": None, "classes": 10, "classifier_activation": None}
            model = getattr(keras.applications, name)(input_shape=(side, side, 3), **kwargs)
            return randomize_batch_norm(model), side
        except ValueError as e:  # input too small for this architecture
            error = e
    raise error


def ours():
    from keras_topo.applications import ResNet18

    return randomize_batch_norm(ResNet18((32, 32, 3), 10)), 32


def row(name, make, args):
    start = time.perf_counter()
    model, side = make()
    built = time.perf_counter() - start
    if count_params(model) > args.max_params:
        return f"| {name} | {count_params(model) / 1e6:.0f}M params: skipped (--max-params) |"
    x = np.random.default_rng(1).normal(size=(2, side, side, 3)).astype("float32")
    cells = []
    for fraction in FRACTIONS:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Channels of layer")  # the classifier
            warnings.filterwarnings("ignore", message="Layer .* makes no channels")  # depthwise
            start = time.perf_counter()
            removed = prune_channels(model, fraction, layers=prunable)
            seconds = time.perf_counter() - start
            masked = prune_channels(model, fraction, layers=prunable, mode="mask")
        r = compare(model, removed, repeats=0)
        reference = TORCH_PRUNING.get(name, {}).get(fraction)
        tp = f"{reference[0]:.3f} / {reference[1]:.3f}" if reference else ""
        cells += [f"{r['params_ratio']:.3f}", f"{r['macs_ratio']:.3f}", f"{seconds:.1f}", tp]
        got, want = (keras.ops.convert_to_numpy(m(x, training=False)) for m in (removed, masked))
        diff = np.abs(got - want).max() / np.abs(want).max()
    params = f"{count_params(model) / 1e6:.2f}M"
    return f"| {name} | {side} | {params} | {built:.1f} | " + " | ".join(cells) + f" | {diff:.1e} |"


def latency_rows(args):
    print("\n| model | params | MACs | latency | latency / MACs |\n|---|---|---|---|---|")
    makes = {
        "ResNet18": ours,
        "VGG16": lambda: build("VGG16"),
        "MobileNetV2": lambda: build("MobileNetV2"),
    }
    for name, make in makes.items():
        model, _ = make()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Channels of layer")
            removed = prune_channels(model, 0.5, layers=prunable)
        r = compare(model, removed, batch_size=32, repeats=args.repeats)
        ratio = r["latency_ratio"] / r["macs_ratio"]
        print(
            f"| {name} | {r['params_ratio']:.3f} | {r['macs_ratio']:.3f} | "
            f"{r['latency_ratio']:.3f} | {ratio:.2f} |",
            flush=True,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="keras.applications names (default: all)")
    parser.add_argument("--max-params", type=float, default=float("inf"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-latency", action="store_true")
    args = parser.parse_args()
    names = args.models or [n for n in dir(keras.applications) if n[0].isupper()]
    print(f"backend={keras.backend.backend()}, fractions {FRACTIONS}")
    head = " | ".join(f"params {f} | MACs {f} | seconds {f} | Torch-Pruning {f}" for f in FRACTIONS)
    print(f"\n| model | side | params | build s | {head} | remove vs mask |")
    print("|---" * (5 + 4 * len(FRACTIONS)) + "|")
    failures = []
    for name in ["ResNet18", *names]:
        make = ours if name == "ResNet18" else (lambda n=name: build(n))
        try:
            print(row(name, make, args), flush=True)
        except Exception as e:  # noqa: BLE001 - listed below, with the reason
            failures.append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        keras.backend.clear_session()
    for failure in failures:
        print("failed:", failure)
    if not args.no_latency:
        latency_rows(args)


if __name__ == "__main__":
    from keras_topo.experiments.fast_path import settings_line

    print(settings_line(), flush=True)  # the backend, oneDNN and thread settings of this run
    main()
