"""Training-step throughput of a topographic ResNet-18 on each Keras backend, on this machine.

For every backend (TensorFlow, JAX, torch) and compilation mode (TF `jit_compile` False/True,
JAX always XLA, torch eager and `jit_compile=True`, i.e. `torch.compile`), a subprocess with
its own `KERAS_BACKEND` builds `keras_topo.applications.ResNet18` plain and with the paper's
five topographic layers ("grid"), warms both up (compilation), then times `train_on_batch`
steps of both, interleaved, and keeps each model's fastest repeat. Prints a Markdown table:
images/s of both models and the topographic overhead (topographic / plain step time), by wall
time and by process CPU time (the latter is less disturbed by other load on a shared CPU).

    python benchmarks/bench_backends.py --width 0.25 --steps 3 --repeats 2
"""

import argparse
import json
import os
import subprocess
import sys
import time

CONFIGS = (  # (backend, mode, jit_compile)
    ("tensorflow", "no XLA", False),
    ("tensorflow", "XLA", True),
    ("jax", "XLA (always)", True),
    ("torch", "eager", False),
    ("torch", "torch.compile", True),
)


def _time_steps(model, x, y, steps):
    """Wall and process-CPU seconds per step (CPU time is less disturbed by other load)."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def child(args):
    """Runs in a subprocess whose KERAS_BACKEND is already set; prints one JSON line."""
    import keras
    import numpy as np
    from keras_topo.applications import ResNet18

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=(args.batch,))
    models, warmup = {}, {}
    for kind, topography in (("plain", None), ("topographic", "grid")):
        keras.utils.set_random_seed(0)
        model = ResNet18(
            input_shape=(32, 32, 3),
            num_classes=10,
            topography=topography,
            width_multiplier=args.width,
        )
        model.compile(
            optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=args.jit_compile,
        )
        start = time.perf_counter()
        for _ in range(args.warmup):
            model.train_on_batch(x, y)
        warmup[kind] = time.perf_counter() - start
        models[kind] = model
    wall = {kind: float("inf") for kind in models}
    cpu = dict(wall)
    for _ in range(args.repeats):
        for kind, model in models.items():
            step_wall, step_cpu = _time_steps(model, x, y, args.steps)
            wall[kind], cpu[kind] = min(wall[kind], step_wall), min(cpu[kind], step_cpu)
    print(json.dumps({"wall": wall, "cpu": cpu, "warmup": warmup}))


def parent(args):
    here = os.path.abspath(__file__)
    rows = []
    for backend, mode, jit in CONFIGS:
        if backend not in args.backends.split(",") or args.mode not in mode:
            continue
        command = [sys.executable, here, "--child", f"--jit-compile={int(jit)}"]
        command += [
            f"--{name}={getattr(args, name)}"
            for name in ("width", "batch", "steps", "repeats", "warmup")
        ]
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        start = time.perf_counter()
        try:
            done = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=args.timeout
            )
            lines = done.stdout.strip().splitlines()
            result = json.loads(lines[-1]) if done.returncode == 0 and lines else None
            note = "" if result else "failed: " + done.stderr.strip().splitlines()[-1][:120]
        except subprocess.TimeoutExpired:
            result, note = None, f"not done in {args.timeout} s"
        rows.append((backend, mode, result, note))
        print(f"# {backend} {mode}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    print(
        f"ResNet-18 training step, batch {args.batch}, 32x32x3, width x{args.width}, "
        f"best of {args.repeats} x {args.steps} steps after {args.warmup} warm-up step(s).\n"
    )
    print(
        "| backend | mode | plain img/s | topographic img/s | overhead (wall) "
        "| overhead (CPU time) | warm-up s (plain / topo) |"
    )
    print("|---|---|---|---|---|---|---|")
    for backend, mode, result, note in rows:
        if result is None:
            print(f"| {backend} | {mode} | - | - | - | - | {note} |")
            continue
        wall, cpu, warm = result["wall"], result["cpu"], result["warmup"]
        print(
            f"| {backend} | {mode} | {args.batch / wall['plain']:.0f} "
            f"| {args.batch / wall['topographic']:.0f} "
            f"| {wall['topographic'] / wall['plain']:.2f}x "
            f"| {cpu['topographic'] / cpu['plain']:.2f}x "
            f"| {warm['plain']:.1f} / {warm['topographic']:.1f} |"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=0.25, help="ResNet width multiplier")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (compilation)")
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument("--mode", default="", help="only the modes containing this text")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per configuration")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--jit-compile", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.jit_compile = bool(args.jit_compile)
    (child if args.child else parent)(args)


if __name__ == "__main__":
    main()
