"""Minimal repro (plain Keras, no keras-topo): one 3x3 conv's gradients under XLA:CPU vs torch.

A single 3x3 "same" `keras.ops.conv` on a `(batch, size, size, channels)` batch. The default,
`(32, 2, 2, 256)`, is ResNet-18's last stage on 32x32 CIFAR inputs (x0.5 width): there XLA:CPU
lowers the backward convolutions (non-canonical dimension labels, reversed kernel) to a slow
generic loop instead of its Eigen/oneDNN convolution, about 150 ms each in the model's profile
(`tools/profilers/profile_jax.py`). `--size 32 --channels 64 --batch 64` is the first stage. For the backend in `KERAS_BACKEND` it times, after a
warm-up, the forward pass and the gradients with respect to the input and to the kernel, with
the backend's own autodiff (`jax.grad` under `jax.jit`; `torch.autograd.grad`;
`tf.GradientTape` inside a `tf.function`, with and without `jit_compile`), and prints one JSON
line. The parent runs every backend in its own process, alternating them, and prints medians.

    python tools/upstream_repros/repro_xla_cpu_conv_grad.py [--repeats 5] [--xla-flags "..."]

`--xla-flags` is put into `XLA_FLAGS` for the JAX and TF-XLA children, to try XLA:CPU options.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def _timed(fn, repeats):
    fn()  # warm-up (compilation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def child(args):
    import keras
    import numpy as np

    backend = keras.backend.backend()
    rng = np.random.default_rng(0)
    shape = (args.batch, args.size, args.size, args.channels)
    x_np = rng.normal(size=shape).astype("float32")
    layer = keras.layers.Conv2D(args.channels, 3, padding="same", use_bias=False)
    layer.build(shape)
    result = {"backend": backend + (" XLA" if args.tf_xla else "")}
    if backend == "jax":
        import jax

        kernel = layer.kernel.value
        x = jax.numpy.asarray(x_np)

        def loss(k, x):
            return jax.numpy.sum(keras.ops.conv(x, k, padding="same") ** 2)

        forward = jax.jit(loss)
        grad_kernel = jax.jit(jax.grad(loss, argnums=0))
        grad_input = jax.jit(jax.grad(loss, argnums=1))
        run = {
            "forward": lambda: forward(kernel, x).block_until_ready(),
            "grad_input": lambda: grad_input(kernel, x).block_until_ready(),
            "grad_kernel": lambda: grad_kernel(kernel, x).block_until_ready(),
        }
    elif backend == "torch":
        import torch

        x = torch.tensor(x_np, requires_grad=True)
        kernel = layer.kernel.value

        def loss():
            return torch.sum(keras.ops.conv(x, kernel, padding="same") ** 2)

        def forward():
            with torch.no_grad():
                loss()

        run = {
            "forward": forward,
            "grad_input": lambda: torch.autograd.grad(loss(), x),
            "grad_kernel": lambda: torch.autograd.grad(loss(), kernel),
        }
    else:
        import tensorflow as tf

        x = tf.constant(x_np)
        kernel = layer.kernel.value

        def make(target):
            @tf.function(jit_compile=args.tf_xla)
            def fn():
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    value = tf.reduce_sum(keras.ops.conv(x, kernel, padding="same") ** 2)
                return value if target is None else tape.gradient(value, target)

            return lambda: fn().numpy()

        run = {"forward": make(None), "grad_input": make(x), "grad_kernel": make(kernel)}
    for name, fn in run.items():
        result[name] = _timed(fn, args.repeats)
    print(json.dumps(result))


def parent(args):
    configs = [("tensorflow", 0), ("tensorflow", 1), ("jax", 0), ("torch", 0)]
    rows = {}
    for _ in range(args.rounds):  # A B C D A B C D: load from other processes hits all alike
        for backend, tf_xla in configs:
            if backend not in args.backends.split(","):
                continue
            env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
            if args.xla_flags:
                env["XLA_FLAGS"] = args.xla_flags
            command = [sys.executable, os.path.abspath(__file__), "--child"]
            command += [f"--tf-xla={tf_xla}", f"--repeats={args.repeats}"]
            command += [f"--{name}={getattr(args, name)}" for name in ("batch", "size", "channels")]
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(done.stderr[-2000:])
            result = json.loads(done.stdout.strip().splitlines()[-1])
            rows.setdefault(result.pop("backend"), []).append(result)
    shape = (args.batch, args.size, args.size, args.channels)
    print(f"3x3 'same' conv, {args.channels} filters, on {shape}, median s of {args.rounds} runs")
    print(f"XLA_FLAGS={args.xla_flags!r}\n")
    print("| backend | forward s | grad wrt input s | grad wrt kernel s |")
    print("|---|---|---|---|")
    for backend, results in rows.items():
        cells = [statistics.median(r[k] for r in results) for k in results[0]]
        print(f"| {backend} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=2, help="height and width of the input")
    parser.add_argument("--channels", type=int, default=256, help="input channels = filters")
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per process")
    parser.add_argument("--rounds", type=int, default=2, help="processes per backend")
    parser.add_argument("--xla-flags", default="", help="XLA_FLAGS for the XLA children")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tf-xla", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    (child if args.child else parent)(args)


if __name__ == "__main__":
    main()
