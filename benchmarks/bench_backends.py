"""Training throughput of ResNet-18, plain and topographic, on every Keras backend vs native torch.

Each configuration runs in its own process (its own `KERAS_BACKEND`):

- `native torch`: the reference-equivalent plain ResNet-18 written directly in PyTorch
  (torchvision's BasicBlock network with the CIFAR 3x3 stride-1 stem and the max-pool kept,
  `nn.CrossEntropyLoss`, `torch.optim.SGD(momentum=0.9)`), the fastest thing a user could run.
- `native torch + reference-style loss`: the same network with the paper's loss as the
  reference PyTorch code computes it (per-sample `(B, C, C)` cosine similarities of each
  topographic conv's output, forward hooks, lambda 1 summed over the same five layers): the
  reference's topographic throughput, which the issue sets as JAX's bar.
- `keras-topo <backend>`: `keras_topo.applications.ResNet18`, plain and with the paper's five
  "grid" topographic layers (lambda 1, summed, as the reference code), trained with
  `model.fit` on in-memory batches (as the runner trains), SGD momentum 0.9, with
  `jit_compile` False or True (TF: XLA; JAX: jit, False would run eagerly; torch:
  `torch.compile`). The configuration `keras_topo.experiments.fast_path` picks for a CPU is
  marked "fast path". On torch the builders' `keras_topo.fast_layers` (zero-copy conv, fused
  batch norm) are measured against Keras' own conv and batch norm in the same run
  (`use_fused_kernels(False)`).

A process warms up (compilation), then times `--rounds` fits of `--steps` steps of each model,
alternating which model goes first. A step's time runs from one batch end to the next (a
callback that reads the loss, so JAX's asynchronous dispatch is waited for): it includes the
data fetch and excludes `fit`'s per-call setup, which `--steps` more batches would amortise
in a real run. Native torch times each step alike. Every
child inherits the fast path's process environment (`fast_path.ENVIRONMENT`:
`OMP_WAIT_POLICY=PASSIVE`), native torch included; set the variable yourself to compare. The
configurations' processes are themselves alternated `--processes` times (A B C A B C), and the
table gives medians of the step times over all of them: images/s and the ratios the issue asks
for (topographic over native-torch plain throughput, topographic over plain step time).

    python benchmarks/bench_backends.py [--width 1] [--batch 64] [--steps 4] [--processes 2]
        [--all-modes] [--backends native,reference,tensorflow,torch,jax]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

BACKENDS = ("tensorflow", "jax", "torch")  # Keras' (the others are native torch)
CONFIGS = (  # (label, backend, jit_compile, fused kernels)
    ("native torch (eager)", "native", False, True),
    ("native torch + reference-style loss (eager)", "reference", False, True),
    ("keras-topo TF, no XLA", "tensorflow", False, True),
    ("keras-topo TF, XLA", "tensorflow", True, True),
    ("keras-topo JAX, jit", "jax", True, True),
    ("keras-topo torch, eager", "torch", False, True),
    ("keras-topo torch, eager, Keras' conv and batch norm", "torch", False, False),
    ("keras-topo torch, torch.compile", "torch", True, True),
)


def native_torch_resnet18(num_classes, width):
    """torchvision's ResNet-18 with the paper's CIFAR stem, in plain PyTorch (NCHW)."""
    import torch
    from torch import nn

    def scaled(channels):
        return max(2, int(round(channels * width)))

    class BasicBlock(nn.Module):
        def __init__(self, inputs, outputs, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(outputs)
            self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(outputs)
            self.downsample = nn.Identity()
            if stride != 1 or inputs != outputs:
                self.downsample = nn.Sequential(
                    nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs)
                )

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(y)) + self.downsample(x))

    stem = scaled(64)
    layers = [nn.Conv2d(3, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU()]
    layers.append(nn.MaxPool2d(3, 2, 1))
    channels = stem
    for stage, base in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(BasicBlock(channels, scaled(base), stride))
            channels = scaled(base)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)


def _reference_losses(net):
    """Hooks the paper's five convs of `net`; returns the list their losses are appended to."""
    import torch

    from keras_topo import positions

    convs = [net[0]] + [net[index].conv2 for index in (5, 7, 9, 11)]  # stem, stage ends
    losses = []

    def hook(conv, inputs, output):
        channels = output.shape[1]
        target = torch.as_tensor(positions.target_similarity(positions.grid(channels)))
        flat = torch.nn.functional.normalize(output.flatten(2), dim=2, eps=1e-8)  # (B, C, HW)
        similarity = flat @ flat.transpose(1, 2)  # (B, C, C)
        pairs = torch.triu(torch.ones(channels, channels, dtype=torch.bool), 1)
        losses.append(((similarity - target)[:, pairs] ** 2).mean())

    for conv in convs:
        conv.register_forward_hook(hook)
    return losses


def _native_runner(args, x, y, topographic=False):
    """`run(steps)` training the native torch ResNet-18 on the same batches; returns each
    step's (wall, CPU) seconds."""
    import torch

    torch.manual_seed(0)
    net = native_torch_resnet18(10, args.width)
    topographic_losses = _reference_losses(net) if topographic else []
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    batches = [
        (
            torch.from_numpy(x[i : i + args.batch]).permute(0, 3, 1, 2).contiguous(),
            torch.from_numpy(y[i : i + args.batch]),
        )
        for i in range(0, len(x), args.batch)
    ]

    def run(steps):
        times = []
        for step in range(steps):
            start = time.perf_counter(), time.process_time()
            images, labels = batches[step % len(batches)]
            optimizer.zero_grad()
            loss = loss_fn(net(images), labels)
            loss = loss + sum(topographic_losses)
            topographic_losses.clear()
            loss.backward()
            optimizer.step()
            times.append((time.perf_counter() - start[0], time.process_time() - start[1]))
        return times

    return run


class _StepTimes:
    """A Keras callback keeping (wall, CPU) seconds between consecutive batch ends: a step
    with its data fetch, without `fit`'s setup (its first batch only starts the clock)."""

    def __init__(self):
        import keras

        class Callback(keras.callbacks.Callback):
            def on_train_batch_end(callback, batch, logs=None):
                float(logs["loss"])  # waits for the step (JAX dispatches asynchronously)
                self.marks.append((time.perf_counter(), time.process_time()))

        self.callback = Callback()
        self.marks = []

    def steps(self):
        pairs = zip(self.marks[:-1], self.marks[1:], strict=True)
        times = [(end[0] - start[0], end[1] - start[1]) for start, end in pairs]
        self.marks = []
        return times


def _keras_runner(args, x, y, topography):
    """`run(steps)` fitting keras-topo's ResNet-18 for `steps` + 1 batches; returns each
    step's (wall, CPU) seconds after the first."""
    import keras
    from keras_topo.applications import ResNet18

    from keras_topo import fast_layers

    fast_layers.use_fused_kernels(bool(args.fused))
    keras.utils.set_random_seed(0)
    model = ResNet18(
        (32, 32, 3),
        10,
        topography=topography,
        reduction="sum",
        width_multiplier=args.width,
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=bool(args.jit_compile),
    )

    timer = _StepTimes()

    def run(steps):
        model.fit(
            x[: (steps + 1) * args.batch],
            y[: (steps + 1) * args.batch],
            batch_size=args.batch,
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=[timer.callback],
        )
        return timer.steps()

    return run


def child(args):
    """Runs in a subprocess with its backend set; prints one JSON line of seconds per step."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=((args.steps + 1) * args.batch, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=((args.steps + 1) * args.batch,))
    if args.backend == "native":
        runners = {"plain": _native_runner(args, x, y)}
    elif args.backend == "reference":
        runners = {"topographic": _native_runner(args, x, y, topographic=True)}
    else:
        runners = {
            kind: _keras_runner(args, x, y, topo)
            for kind, topo in (("plain", None), ("topographic", "grid"))
        }
    for run in runners.values():
        run(args.warmup)
    wall = {kind: [] for kind in runners}
    cpu = {kind: [] for kind in runners}
    for index in range(args.rounds):
        order = list(runners) if index % 2 == 0 else list(runners)[::-1]
        for kind in order:
            for step_wall, step_cpu in runners[kind](args.steps):
                wall[kind].append(step_wall)
                cpu[kind].append(step_cpu)
    print(json.dumps({"wall": wall, "cpu": cpu}))


def parent(args):
    from keras_topo.experiments import fast_path

    fast_path.apply_environment()  # inherited by every child, native torch included
    print(fast_path.settings_line(), file=sys.stderr)
    configs = [
        (label, backend, jit_compile, fused)
        for label, backend, jit_compile, fused in CONFIGS
        if backend in args.backends.split(",")
        and (
            args.all_modes
            or backend not in BACKENDS
            or (_is_fast_path(backend, jit_compile) and (fused or backend == "torch"))
        )
    ]
    wall = {label: {} for label, *_ in configs}
    cpu = {label: {} for label, *_ in configs}
    for _ in range(args.processes):
        for label, backend, jit_compile, fused in configs:
            command = [sys.executable, os.path.abspath(__file__), "--child"]
            command += [f"--backend={backend}", f"--jit-compile={int(jit_compile)}"]
            command += [f"--fused={int(fused)}"]
            command += [
                f"--{name}={getattr(args, name)}"
                for name in ("width", "batch", "steps", "rounds", "warmup")
            ]
            start = time.perf_counter()
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
            env["KERAS_BACKEND"] = "torch" if backend in ("native", "reference") else backend
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            print(f"# {label}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
            if done.returncode != 0:
                raise SystemExit(f"{label} failed:\n{done.stderr[-3000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            for kind, times in result["wall"].items():
                wall[label].setdefault(kind, []).extend(times)
                cpu[label].setdefault(kind, []).extend(result["cpu"][kind])
    median = {label: {k: statistics.median(v) for k, v in d.items()} for label, d in wall.items()}
    median_cpu = {
        label: {k: statistics.median(v) for k, v in d.items()} for label, d in cpu.items()
    }
    by_backend = {backend: median[label] for label, backend, *_ in configs}
    native = by_backend.get("native", {}).get("plain")
    reference = by_backend.get("reference", {}).get("topographic")
    print(
        f"ResNet-18 x{args.width}, batch {args.batch}, 32x32x3, SGD momentum; medians of "
        f"{args.processes} processes x {args.rounds} fits x {args.steps} steps per model.\n"
    )
    print(
        "| configuration | plain img/s | topographic img/s | topographic vs native-torch plain "
        "| topographic vs reference-style topographic | topographic / plain step (wall) "
        "| (CPU time) |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, backend, jit_compile, fused in configs:
        plain, topo = median[label].get("plain"), median[label].get("topographic")
        cells = [f"{args.batch / plain:.1f}" if plain else "-"]
        cells.append(f"{args.batch / topo:.1f}" if topo else "-")
        cells.append(f"{native / topo:.2f}" if topo and native else "-")
        cells.append(f"{reference / topo:.2f}" if topo and reference else "-")
        if plain and topo:
            cpu_ratio = median_cpu[label]["topographic"] / median_cpu[label]["plain"]
            cells += [f"{topo / plain:.3f}", f"{cpu_ratio:.3f}"]
        else:
            cells += ["-", "-"]
        if backend in BACKENDS and _is_fast_path(backend, jit_compile) and fused:
            label += " (fast path)"
        print(f"| {label} | " + " | ".join(cells) + " |")


def _is_fast_path(backend, jit_compile):
    from keras_topo.experiments import fast_path

    return fast_path.compile_options(backend, accelerator=False)["jit_compile"] == jit_compile


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=1.0, help="ResNet width multiplier")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4, help="steps per timed fit")
    parser.add_argument("--rounds", type=int, default=3, help="timed fits per model and process")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (compilation)")
    parser.add_argument("--processes", type=int, default=2, help="processes per configuration")
    parser.add_argument("--backends", default="native,reference,tensorflow,torch,jax")
    parser.add_argument(
        "--all-modes", action="store_true", help="also the non-fast-path jit_compile choices"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--jit-compile", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--fused", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    (child if args.child else parent)(args)


if __name__ == "__main__":
    main()
