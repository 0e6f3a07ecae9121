"""Time and peak memory of the topographic loss's forward+backward: ours vs the naive form.

The naive form materialises the `(B, C, C)` similarities for every shape (as the reference
implementation does); ours switches to the `HW x HW` Gram identities when `C > HW`.
`--shapes resnet18` times the five topographic layers of the CIFAR ResNet-18 and their total.
Runs on CPU with `--backend` (TensorFlow: `tf.function`; JAX: `jax.jit`; torch: eager); peak
memory is the process's peak RSS increase measured in a fresh subprocess per (form, shape), so
the numbers do not contaminate each other.

    python benchmarks/bench_topographic_loss.py [--backend tensorflow] [--shapes paper]
        [--batch 128] [--repeats 5]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

# (channels, spatial side) per shape set.
SHAPES = {
    "paper": [(64, 32), (64, 4), (512, 32), (512, 4)],
    "resnet18": [(64, 32), (64, 16), (128, 8), (256, 4), (512, 2)],  # its topographic layers
}
BACKENDS = ("tensorflow", "jax", "torch")


def naive_loss(y, target):
    """Reference-style loss: per-sample (C, C) similarities, upper-triangle mean."""
    import numpy as np
    from keras import ops

    y = ops.cast(y, "float32")
    channels = y.shape[-1]
    y = ops.reshape(y, (ops.shape(y)[0], -1, channels))
    norms = ops.sqrt(ops.maximum(ops.sum(ops.square(y), axis=1, keepdims=True), 1e-8))
    y_hat = y / norms
    sim = ops.einsum("bpi,bpj->bij", y_hat, y_hat)
    upper = ops.convert_to_tensor(np.triu(np.ones((channels, channels)), 1), "float32")
    pairs = channels * (channels - 1) / 2
    return ops.sum(upper * ops.square(sim - target)) / (pairs * ops.shape(y)[0])


def loss_step(form, y, target):
    """A function returning (loss, gradient w.r.t. `y`) on the current backend, compiled as
    training would run it."""
    import keras

    from keras_topo import topographic_loss

    def loss_fn(y):
        if form == "naive":
            return naive_loss(y, keras.ops.convert_to_tensor(target))
        return topographic_loss(y, target=target)

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        y = tf.Variable(y)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = loss_fn(y)
            return loss, tape.gradient(loss, y)

        return step
    if backend == "jax":
        import jax

        step = jax.jit(jax.value_and_grad(loss_fn))
        return lambda: step(y)
    import torch

    y = torch.tensor(y, requires_grad=True)

    def step():
        loss = loss_fn(y)
        return loss, torch.autograd.grad(loss, y)[0]

    return step


def measure(form, channels, side, batch, repeats):
    """Run in a subprocess: seconds per forward+backward and peak RSS increase in MiB."""
    import keras
    import numpy as np

    from keras_topo import positions

    target = positions.target_similarity(positions.grid(channels))
    # The same input in every subprocess, so that "rel diff" compares the two forms.
    y = np.random.default_rng(0).standard_normal((batch, side, side, channels), "float32")
    step = loss_step(form, y, target)
    step()  # trace
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        loss, grad = step()
        keras.ops.convert_to_numpy(grad)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # The first (traced) call already reached the peak: measure it from a fresh baseline too.
    return {
        "seconds": sorted(times)[len(times) // 2],
        "loss": float(keras.ops.convert_to_numpy(loss)),
        "rss_mib": peak / 1024,
        "rss_before_mib": base / 1024,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backend", choices=BACKENDS, default="tensorflow")
    parser.add_argument("--shapes", choices=tuple(SHAPES), default="paper")
    parser.add_argument("--_child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        form, channels, side = args._child[0], int(args._child[1]), int(args._child[2])
        print(json.dumps(measure(form, channels, side, args.batch, args.repeats)))
        return
    env = {**os.environ, "KERAS_BACKEND": args.backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    baseline = _child(["idle", "2", "1"], args, env)  # a trivial loss: the process floor
    print(
        f"batch {args.batch}, {args.backend} CPU, median of {args.repeats}; memory = peak RSS "
        f"above an idle process ({baseline['rss_mib']:.0f} MiB)"
    )
    print(
        f"{'C':>5} {'HxW':>6} {'naive s':>9} {'ours s':>9} {'speedup':>8} "
        f"{'naive MiB':>10} {'ours MiB':>9} {'mem ratio':>9} {'rel diff':>9}"
    )
    totals = {"naive": 0.0, "ours": 0.0}
    for channels, side in SHAPES[args.shapes]:
        naive = _child(["naive", str(channels), str(side)], args, env)
        ours = _child(["ours", str(channels), str(side)], args, env)
        totals["naive"] += naive["seconds"]
        totals["ours"] += ours["seconds"]
        naive_mem = naive["rss_mib"] - baseline["rss_mib"]
        ours_mem = ours["rss_mib"] - baseline["rss_mib"]
        print(
            f"{channels:>5} {side}x{side:<4} {naive['seconds']:>9.4f} {ours['seconds']:>9.4f} "
            f"{naive['seconds'] / ours['seconds']:>8.2f} {naive_mem:>10.1f} {ours_mem:>9.1f} "
            f"{naive_mem / max(ours_mem, 1e-9):>9.1f} "
            f"{abs(naive['loss'] - ours['loss']) / abs(naive['loss']):>9.1e}"
        )
    print(
        f"{'total':>12} {totals['naive']:>9.4f} {totals['ours']:>9.4f} "
        f"{totals['naive'] / totals['ours']:>8.2f}"
    )


def _child(case, args, env):
    command = [
        sys.executable,
        __file__,
        "--batch",
        str(args.batch),
        "--repeats",
        str(args.repeats),
        "--backend",
        args.backend,
        "--_child",
        *case,
    ]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


if __name__ == "__main__":
    from keras_topo.experiments.fast_path import settings_line

    print(settings_line(), flush=True)  # the backend, oneDNN and thread settings of this run
    main()
