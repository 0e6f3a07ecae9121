"""Where a ResNet-18 training step's time goes on the JAX backend (XLA:CPU), op by op.

Builds `keras_topo.applications.ResNet18` (plain, or `--topography grid`), compiles it with
JAX's jit, warms up with `fit`, then records one more `fit` step with `jax.profiler.trace` and
reads the trace back with `jax.profiler.ProfileData`: the XLA thunks executed (one per HLO
instruction: `convolution.N`, fusions, ...) summed by name, the largest first, with the HLO
instruction's shape and Keras layer taken from an optimized-HLO dump (`--xla_dump_to`), so a
slow op can be traced back to its layer.

    python tools/profilers/profile_jax.py [--width 0.5] [--batch 32] [--top 15]
"""

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--topography", default=None, help="e.g. grid (default: plain)")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="profile_jax_")
    if os.environ.get("KERAS_BACKEND", "jax") != "jax":
        sys.exit("Run with KERAS_BACKEND=jax (or unset).")
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_dump_to={work}/hlo"
    ).strip()

    import jax
    import keras
    import numpy as np
    from keras_topo.applications import ResNet18

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=(args.batch,))
    model = ResNet18((32, 32, 3), 10, topography=args.topography, width_multiplier=args.width)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    for _ in range(2):
        model.fit(x, y, batch_size=args.batch, verbose=0)
    start = time.perf_counter()
    model.fit(x, y, batch_size=args.batch, verbose=0)
    step = time.perf_counter() - start
    with jax.profiler.trace(f"{work}/trace"):
        model.fit(x, y, batch_size=args.batch, verbose=0)
    trace = glob.glob(f"{work}/trace/**/*.xplane.pb", recursive=True)[0]
    totals, counts = collections.Counter(), collections.Counter()
    for plane in jax.profiler.ProfileData.from_file(trace).planes:
        for line in plane.lines:
            if not line.name.startswith("tf_XLAEigen"):  # XLA's compute threads
                continue
            for event in line.events:
                if event.name != "ThunkExecutor::Execute":
                    totals[event.name] += event.duration_ns / 1e6
                    counts[event.name] += 1
    hlo = _hlo_instructions(f"{work}/hlo")
    compute = sum(totals.values())
    print(
        f"ResNet-18 x{args.width} ({args.topography or 'plain'}), batch {args.batch}, jax "
        f"{jax.__version__}: one fit step {step:.3f} s; XLA thunks {compute:.0f} ms "
        f"(both threads)\n"
    )
    print("| XLA op | ms | share | HLO | Keras layer |")
    print("|---|---|---|---|---|")
    for name, ms in totals.most_common(args.top):
        shape, layer = hlo.get(name, ("", ""))
        print(f"| {name} | {ms:.1f} | {ms / compute:.1%} | {shape} | {layer} |")
    kinds = collections.Counter()
    for name, ms in totals.items():
        kinds[re.sub(r"[.\d]+$", "", name).split("_")[0]] += ms
    print("\nBy kind: " + ", ".join(f"{k} {v / compute:.0%}" for k, v in kinds.most_common(6)))


def _hlo_instructions(dump_dir):
    """`{instruction name: (shape and window, Keras layer)}` from the train step's optimized HLO."""
    files = glob.glob(f"{dump_dir}/*train_step*cpu_after_optimizations.txt")
    found = {}
    pattern = re.compile(r"%([\w.-]+) = (\S+) (\w+)\(.*?(window=\{[^}]*\})?.*?op_name=\"([^\"]*)\"")
    for path in files:
        with open(path) as f:
            for line in f:
                match = pattern.search(line)
                if match:
                    name, shape, op, window, op_name = match.groups()
                    layer = re.findall(r"(?:jvp|transpose)\(([\w]+)\)", op_name)
                    kind = "backward" if "transpose(" in op_name else "forward"
                    found[name] = (
                        f"{op} {shape} {window or ''}".strip(),
                        f"{layer[-1]} ({kind})" if layer else "",
                    )
    return found


if __name__ == "__main__":
    from keras_topo.experiments.fast_path import settings_line

    print(settings_line(), flush=True)  # the backend, oneDNN and thread settings of this run
    main()
