"""Where a ResNet-18 training step's time goes on Keras' torch backend vs native PyTorch.

Profiles `--steps` training steps of keras-topo's ResNet-18 (`model.fit`, torch backend,
plain or `--topography grid`) and of the same network written in native PyTorch
(`bench_backends.native_torch_resnet18`), with `torch.profiler`, and prints both
`key_averages()` tables (self CPU time, largest first) and a summary by kind of work:
convolutions (forward + backward), layout copies (`aten::copy_`: Keras' NHWC <-> NCHW
transposes), batch norm, and element-wise arithmetic.

The builders' layers run `keras_topo.fast_layers`' kernels; `--keras-kernels` profiles Keras'
own conv and batch norm instead.

    KERAS_BACKEND=torch python tools/profilers/profile_torch.py [--width 1] [--batch 64] [--steps 2]
        [--topography grid] [--keras-kernels]
"""

import argparse
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "torch")
# bench_backends (the native torch ResNet-18) lives in benchmarks/.
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, "benchmarks")
)

KINDS = {  # profiler op name -> kind of work, for the summary
    "convolution": ("aten::mkldnn_convolution", "aten::convolution_backward"),
    "layout copies": ("aten::copy_", "aten::clone", "aten::contiguous"),
    "batch norm (fused)": ("aten::native_batch_norm", "aten::native_batch_norm_backward"),
    "element-wise / reductions": (
        "aten::add",
        "aten::add_",
        "aten::mul",
        "aten::mul_",
        "aten::sub",
        "aten::div",
        "aten::sum",
        "aten::mean",
        "aten::pow",
        "aten::neg",
        "aten::rsqrt",
        "aten::square",
        "aten::clamp_min",
        "aten::threshold_backward",
        "aten::fill_",
        "aten::addcmul_",
    ),
}


def profile(run, steps, title, rows):
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    run(2)  # warm-up
    start = time.perf_counter()
    run(steps)
    wall = (time.perf_counter() - start) / steps
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        run(steps)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(
        f"## {title}: {total / 1e6 / steps:.3f} s self CPU time in torch ops per step; "
        f"{wall:.3f} s wall per step unprofiled, so {wall - total / 1e6 / steps:.3f} s "
        "outside torch ops (Python, framework, waiting)\n"
    )
    print(events.table(sort_by="self_cpu_time_total", row_limit=rows))
    summary = {}
    for kind, names in KINDS.items():
        summary[kind] = sum(e.self_cpu_time_total for e in events if e.key in names) / total
    summary["other"] = 1.0 - sum(summary.values())
    print("By kind: " + ", ".join(f"{k} {v:.0%}" for k, v in summary.items()) + "\n")
    return total / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--topography", default=None, help="e.g. grid (default: plain)")
    parser.add_argument("--rows", type=int, default=15, help="rows of each key_averages table")
    parser.add_argument(
        "--keras-kernels",
        action="store_true",
        help="Keras' own conv and batch norm instead of keras_topo.fast_layers' fused kernels",
    )
    args = parser.parse_args()

    import keras
    import numpy as np
    import torch
    from bench_backends import native_torch_resnet18
    from keras_topo.applications import ResNet18

    from keras_topo import fast_layers

    fast_layers.use_fused_kernels(not args.keras_kernels)

    if keras.backend.backend() != "torch":
        sys.exit("Run with KERAS_BACKEND=torch.")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=(args.batch,))

    model = ResNet18((32, 32, 3), 10, topography=args.topography, width_multiplier=args.width)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )

    def run_keras(steps):
        for _ in range(steps):
            model.fit(x, y, batch_size=args.batch, verbose=0)

    net = native_torch_resnet18(10, args.width)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    images = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(y)

    def run_native(steps):
        for _ in range(steps):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(images), labels).backward()
            optimizer.step()

    kind = (args.topography or "plain") + (", Keras' kernels" if args.keras_kernels else "")
    keras_time = profile(run_keras, args.steps, f"keras-topo ({kind}), torch backend", args.rows)
    native_time = profile(run_native, args.steps, "native PyTorch (plain)", args.rows)
    print(f"keras-topo / native self CPU time per step: {keras_time / native_time:.2f}")


if __name__ == "__main__":
    from keras_topo.experiments.fast_path import settings_line

    print(settings_line(), flush=True)  # the backend, oneDNN and thread settings of this run
    main()
