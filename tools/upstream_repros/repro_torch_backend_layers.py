"""Minimal repro (plain Keras, no keras-topo): Keras' torch backend vs native torch, per layer.

Forward + backward (training mode) of the two layers a ResNet is made of, first on the shape of
ResNet-18's first stage on CIFAR, `(batch, 32, 32, 64)`:

- `keras.layers.BatchNormalization()`: Keras computes the batch moments and the normalisation
  with separate element-wise ops (`keras.src.backend.torch.nn.moments` and
  `batch_normalization`), each with its own autograd node; native torch runs one fused
  `torch.nn.functional.batch_norm`.
- `keras.layers.Conv2D(64, 3, padding="same")` (channels_last): Keras permutes the input to
  NCHW, makes it contiguous, converts it to torch's channels_last memory format and permutes
  the output back, around `torch.nn.functional.conv2d`; native torch convolves NCHW directly.
- The same conv at ResNet-18's last stage, 512 channels on `(batch, 2, 2, 512)`: there the
  kernel outweighs the activations, and Keras' `(kh, kw, in, out)` kernel is a permuted view
  of torch's `(out, in, kh, kw)`, reordered by oneDNN in each convolution of the step.

Timed alternately in one process (median of `--repeats`); the ratio is Keras over native.

    KERAS_BACKEND=torch python tools/upstream_repros/repro_torch_backend_layers.py [--batch 64]
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "torch")


def _inputs(shape):
    """The same values as Keras' NHWC tensor and as native torch's NCHW one, with gradients."""
    import numpy as np
    import torch

    x_np = np.random.default_rng(0).normal(size=shape).astype("float32")
    x_last = torch.tensor(x_np, requires_grad=True)
    x_first = torch.tensor(x_np.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    return x_last, x_first


def _conv_case(shape):
    """(Keras forward, native forward) of one 3x3 "same" conv without bias on `shape`."""
    import keras
    import torch

    x_last, x_first = _inputs(shape)
    conv = keras.layers.Conv2D(shape[-1], 3, padding="same", use_bias=False)
    conv.build(shape)
    weight = conv.kernel.value.detach().permute(3, 2, 0, 1).contiguous().requires_grad_(True)
    return (
        lambda: conv(x_last),
        lambda: torch.nn.functional.conv2d(x_first, weight, padding=1),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    import keras
    import torch

    if keras.backend.backend() != "torch":
        sys.exit("Run with KERAS_BACKEND=torch.")
    shape = (args.batch, args.size, args.size, args.channels)
    x_last, x_first = _inputs(shape)
    batch_norm = keras.layers.BatchNormalization()
    batch_norm.build(shape)
    gamma = torch.ones(args.channels, requires_grad=True)
    beta = torch.zeros(args.channels, requires_grad=True)
    mean, var = torch.zeros(args.channels), torch.ones(args.channels)
    cases = {
        f"BatchNormalization (training) {shape}": (
            lambda: batch_norm(x_last, training=True),
            lambda: torch.nn.functional.batch_norm(
                x_first, mean, var, gamma, beta, training=True, momentum=0.1, eps=1e-3
            ),
        ),
    }
    # ResNet-18's first stage, activations larger than the kernel; and its last stage, a
    # 512x512x3x3 kernel on 2x2 maps, where Keras' (kh, kw, in, out) kernel layout is reordered
    # into torch's (out, in, kh, kw) for the forward pass, both backward convolutions and the
    # weight gradient.
    for conv_shape in (shape, (args.batch, 2, 2, 512)):
        cases[f"Conv2D 3x3 same {conv_shape}"] = _conv_case(conv_shape)

    def step(forward):
        start = time.perf_counter()
        forward().square().sum().backward()
        return time.perf_counter() - start

    print(f"forward + backward, torch {torch.__version__}, keras {keras.__version__}\n")
    print("| layer | Keras (torch backend) ms | native torch ms | Keras / native |")
    print("|---|---|---|---|")
    for name, (keras_fn, native_fn) in cases.items():
        step(keras_fn), step(native_fn)  # warm-up
        keras_times, native_times = [], []
        for _ in range(args.repeats):
            keras_times.append(step(keras_fn))
            native_times.append(step(native_fn))
        k, n = statistics.median(keras_times), statistics.median(native_times)
        print(f"| {name} | {k * 1e3:.1f} | {n * 1e3:.1f} | {k / n:.2f} |")


if __name__ == "__main__":
    main()
