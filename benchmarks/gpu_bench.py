"""One command for a GPU: ResNet-18 training throughput per backend, the CIFAR input
pipeline, native PyTorch's plain step, and the time one paper-scale training run would take.

Sections, each in its own process (its own `KERAS_BACKEND`) with its own time budget:

- `data`: `keras_topo.data.cifar`'s training pipeline (shuffle, random crop + flip, normalise,
  batch), on CPU (TensorFlow is kept off the GPU, as when JAX or torch trains), over synthetic
  uint8 images or the decoded JPEGs of `--data-dir`: images/s, and per CPU-second.
- `native`: the reference-equivalent plain ResNet-18 in PyTorch
  (`bench_backends.native_torch_resnet18`), channels_last, SGD momentum with the recipe's
  weight decay, `torch.autocast` (+ `GradScaler` for float16) for mixed precision.
- `tensorflow`, `jax`, `torch`: `keras_topo.applications.ResNet18`, plain and topographic (the
  paper's setting: "grid" positions at the paper's five layers, lambda 1, summed), compiled as
  the runner compiles (`keras_topo.experiments.run.compile_model` with the recipe's optimizer,
  `keras_topo.training_recipe.make_optimizer`) with the fast path's `jit_compile` for the
  device (`fast_path.compile_options`: TF XLA "auto" on a GPU, JAX jit, torch eager with
  `keras_topo.fast_layers`' channels_last convolutions; `--torch-compile` adds
  `torch.compile`, whose warm-up takes minutes). Float32 and each mixed policy of
  `--precisions` (`keras.config.set_dtype_policy`). Eval throughput (`Model.evaluate`) of the
  topographic model.

GPU settings: TF and JAX use TF32 tensor cores for float32 by default on GPUs that have them;
for torch this script sets the same (`torch.set_float32_matmul_precision("high")`) and
`torch.backends.cudnn.benchmark = True`. On GPUs without bfloat16 (before Ampere) pass
`--precisions float32,mixed_float16`.

Timing: steps are run by `Model.fit` (`evaluate`) on in-memory batches (each batch copied to
the device, as the runner's input is). Warm-up calls (compilation, cuDNN autotuning) are not
timed; then `--repeats` calls of `--steps` S and 2S steps alternate, each started and ended by
a device sync (reading every weight's value back to the host; `torch.cuda.synchronize` for
native torch), and one step's time is (median of the 2S calls - median of the S calls) / S,
which cancels `fit`'s per-call setup and the syncs. A section stops starting new
configurations when its budget (`--budget SECTION=SECONDS`) would be exceeded, and is killed
`GRACE_S` after it; what it finished is kept.

One paper-scale run (`paper_run_seconds`): the recipe's epochs (`training_recipe.EPOCHS["cifar10"]`)
of ceil(45,000 / batch) steps, plus one validation pass (5,000 images) per epoch and the test
split twice (test metrics, map scores) at the measured eval rate.

    python benchmarks/gpu_bench.py [--out runs/gpu_bench.json] [--sections data,native,tensorflow,jax,torch]
        [--precisions float32,mixed_bfloat16] [--data-dir DATA] [--torch-compile] [--quick]

Prints one Markdown table and writes every figure to `--out` (JSON). `--quick`: a CPU smoke
run (batch 8, width 0.125, 2 steps; flags given win), not a measurement.
"""

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time

SECTIONS = ("data", "native", "tensorflow", "jax", "torch")
KERAS_SECTIONS = ("tensorflow", "jax", "torch")
BUDGETS_S = {"data": 45, "native": 40, "tensorflow": 140, "jax": 140, "torch": 105}
GRACE_S = 30  # after its budget, a section's process is killed
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
MODELS = {"plain": None, "topographic": "grid"}  # the paper's topographic setting: grid,
PAPER_REDUCTION = "sum"  # lambda 1 (the default weight), the layers' losses summed
# CIFAR-10's 50,000 training images less the runner's 5,000 for validation; the test split.
TRAIN_IMAGES, VALIDATION_IMAGES, TEST_IMAGES = 45_000, 5_000, 10_000
QUICK = {
    "batch": 8,
    "width": 0.125,
    "steps": 2,
    "repeats": 1,
    "data_images": 256,
    "data_batches": 4,
}
NO_GPU = (
    "no GPU visible to this backend: install its CUDA build (tensorflow[and-cuda], "
    "jax[cuda12], a CUDA torch wheel)"
)
ENVIRONMENT_SHOWN = (
    "TF_ENABLE_ONEDNN_OPTS",
    "OMP_WAIT_POLICY",
    "XLA_FLAGS",
    "CUDA_VISIBLE_DEVICES",
)


def paper_run_seconds(step_s, eval_images_per_s, batch, epochs=None):
    """Seconds of one run of the recipe on CIFAR-10: `epochs` (default: the paper's) of
    ceil(45,000 / batch) training steps of `step_s`, one validation pass per epoch and two test
    passes (metrics, map scores) at `eval_images_per_s`."""
    from keras_topo import training_recipe

    epochs = training_recipe.EPOCHS["cifar10"] if epochs is None else epochs
    steps = epochs * math.ceil(TRAIN_IMAGES / batch)
    return steps * step_s + (epochs * VALIDATION_IMAGES + 2 * TEST_IMAGES) / eval_images_per_s


def per_step_seconds(call, sync, steps, repeats):
    """One step's seconds of `call(n)` (runs n steps) from `repeats` alternating calls of
    `steps` and `2 * steps`, each between two `sync()`s: (median long - median short) / steps.

    Returns `(seconds, exact)`; where noise leaves no positive difference, `exact` is False and
    `seconds` is the long calls' median over `2 * steps`, an upper bound.
    """
    times = {steps: [], 2 * steps: []}
    for _ in range(repeats):
        for count in times:
            sync()
            start = time.perf_counter()
            call(count)
            sync()
            times[count].append(time.perf_counter() - start)
    long, short = statistics.median(times[2 * steps]), statistics.median(times[steps])
    if long > short:
        return (long - short) / steps, True
    return long / (2 * steps), False


class _Budget:
    """A section's time budget: starts the first configuration, then another only if the
    longest so far still fits."""

    def __init__(self, seconds):
        self.start, self.seconds, self.longest = time.perf_counter(), seconds, None

    def fits(self):
        if self.longest is None:
            return True
        return time.perf_counter() - self.start + self.longest <= self.seconds

    def timed(self, fn):
        start = time.perf_counter()
        try:
            return fn()
        finally:
            self.longest = max(self.longest or 0.0, time.perf_counter() - start)


def _emit(row):
    print(json.dumps(row), flush=True)


def _run_configs(section, configs, measure, budget):
    """Emits one row per `(label fields dict)` of `configs`: `measure(config)`'s figures, or
    why there are none (skipped for the budget, or the error)."""
    for config in configs:
        row = {"section": section, **config}
        if not budget.fits():
            row["skipped"] = f"section budget ({budget.seconds:.0f} s) spent"
        else:
            try:
                row.update(budget.timed(lambda config=config: measure(config)))
            except Exception as error:  # one failing configuration must not hide the others
                row["error"] = f"{type(error).__name__}: {str(error)[:300]}"
        _emit(row)


def _synthetic_batches(args, count):
    """`(x, y)`: `count` float32 NHWC images (standard normal) and int labels, seeded."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(count * args.batch, 32, 32, 3)).astype("float32")
    return x, rng.integers(0, 10, size=count * args.batch).astype("int32")


def _torch_gpu_settings():
    """Sets and returns torch's recommended GPU settings (none on CPU)."""
    import torch

    if not torch.cuda.is_available():
        return {"device": "cpu"}
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high")  # TF32, as TF and JAX use by default
    return {
        "device": torch.cuda.get_device_name(0),
        "cudnn.benchmark": True,
        "float32_matmul_precision": "high",
    }


def _settings(backend):
    """The device, library versions and environment a section runs with (torch: its GPU
    settings, applied here)."""
    from keras_topo.experiments import results

    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        details = tf.config.experimental.get_device_details(gpus[0]) if gpus else {}
        settings = {"device": details.get("device_name", "GPU") if gpus else "cpu"}
    elif backend == "jax":
        import jax

        settings = {"device": jax.devices()[0].device_kind}
    else:
        settings = _torch_gpu_settings()
    settings["versions"] = results.versions()
    settings["environment"] = {name: os.environ.get(name) for name in ENVIRONMENT_SHOWN}
    return settings


def keras_section(args, budget):
    """Plain and topographic ResNet-18 steps (and eval) on the current Keras backend."""
    import keras
    from keras_topo.applications import ResNet18

    from keras_topo import training_recipe
    from keras_topo.experiments import fast_path, run

    backend = keras.backend.backend()
    settings = _settings(backend)
    jit_choices = [fast_path.compile_options(backend)["jit_compile"]]
    if backend == "torch" and args.torch_compile:
        jit_choices.append(True)
    x, y = _synthetic_batches(args, 2 * args.steps)

    def measure(config):
        keras.backend.clear_session()
        keras.config.set_dtype_policy(config["precision"])
        try:
            keras.utils.set_random_seed(0)
            topographic = MODELS[config["model"]] is not None
            model = ResNet18(
                (32, 32, 3),
                10,
                topography=MODELS[config["model"]],
                width_multiplier=args.width,
                **({"reduction": PAPER_REDUCTION} if topographic else {}),
            )
            optimizer = training_recipe.make_optimizer(
                math.ceil(TRAIN_IMAGES / args.batch), training_recipe.EPOCHS["cifar10"]
            )
            run.compile_model(model, config["jit_compile"], optimizer)

            def sync():
                for variable in model.variables:
                    keras.ops.convert_to_numpy(variable)

            def fit(count):
                images, labels = x[: count * args.batch], y[: count * args.batch]
                model.fit(images, labels, batch_size=args.batch, shuffle=False, verbose=0)

            def evaluate(count):
                images, labels = x[: count * args.batch], y[: count * args.batch]
                model.evaluate(images, labels, batch_size=args.batch, verbose=0)

            warm = time.perf_counter()
            fit(args.steps)  # compilation, autotuning
            figures = {"warmup_s": time.perf_counter() - warm}
            figures["step_s"], exact = per_step_seconds(fit, sync, args.steps, args.repeats)
            figures["upper_bound"] = [] if exact else ["step_s"]
            if topographic:
                evaluate(args.steps)
                eval_step, exact = per_step_seconds(evaluate, sync, args.steps, args.repeats)
                figures["eval_images_per_s"] = args.batch / eval_step
                figures["upper_bound"] += [] if exact else ["eval_images_per_s"]
            figures["jit_compile_resolved"] = str(model.jit_compile)
            return figures
        finally:
            keras.config.set_dtype_policy("float32")

    _emit({"section": backend, "settings": settings})
    configs = [
        {"precision": precision, "model": model, "jit_compile": jit}
        for jit in jit_choices
        for precision in args.precisions
        for model in MODELS
    ]
    _run_configs(backend, configs, measure, budget)


def native_section(args, budget):
    """Native PyTorch's plain ResNet-18 step (channels_last, autocast for mixed precision)."""
    import torch
    from bench_backends import native_torch_resnet18

    from keras_topo import training_recipe

    settings = _settings("torch")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x, y = _synthetic_batches(args, 2 * args.steps)
    autocast_dtypes = {
        "float32": None,
        "mixed_bfloat16": torch.bfloat16,
        "mixed_float16": torch.float16,
    }

    def measure(config):
        dtype = autocast_dtypes[config["precision"]]
        torch.manual_seed(0)
        net = native_torch_resnet18(10, args.width).to(device, memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(
            net.parameters(),
            lr=training_recipe.LEARNING_RATE,
            momentum=training_recipe.MOMENTUM,
            weight_decay=training_recipe.WEIGHT_DECAY,
        )
        scaler = torch.amp.GradScaler(device, enabled=dtype == torch.float16)
        loss_fn = torch.nn.CrossEntropyLoss()

        def fit(count):
            for index in range(count):
                rows = slice(index * args.batch, (index + 1) * args.batch)
                # NHWC on the host: permuted, it is NCHW with channels_last strides.
                images = torch.from_numpy(x[rows]).to(device).permute(0, 3, 1, 2)
                labels = torch.from_numpy(y[rows]).to(device).long()
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
                    loss = loss_fn(net(images), labels)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()

        def sync():
            if device == "cuda":
                torch.cuda.synchronize()

        fit(args.steps)  # cuDNN autotuning
        step_s, exact = per_step_seconds(fit, sync, args.steps, args.repeats)
        return {"step_s": step_s, "upper_bound": [] if exact else ["step_s"]}

    _emit({"section": "native", "settings": {**settings, "memory_format": "channels_last"}})
    configs = [{"precision": precision, "model": "plain"} for precision in args.precisions]
    _run_configs("native", configs, measure, budget)


def data_section(args, budget):
    """The CIFAR training pipeline's images/s on CPU (and the JPEG decode with --data-dir)."""
    import numpy as np
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")  # the pipeline runs on CPU, whatever trains
    from keras_topo.data.cifar import cifar_arrays, cifar_pipeline

    def measure(config):
        figures = {"cpus": len(os.sched_getaffinity(0))}
        if args.data_dir:
            start = time.perf_counter()
            images, labels = cifar_arrays(args.data_dir, split="train", subset=args.data_images)
            figures["decode_images_per_s"] = len(labels) / (time.perf_counter() - start)
        else:
            rng = np.random.default_rng(0)
            images = rng.integers(0, 256, (args.data_images, 32, 32, 3), dtype=np.uint8)
            labels = rng.integers(0, 10, args.data_images).astype("int32")
        dataset = cifar_pipeline(images, labels, args.batch, True, 0, augment=True).repeat()
        batches = iter(dataset)
        next(batches)  # builds the pipeline
        wall, cpu = time.perf_counter(), time.process_time()
        count = sum(int(next(batches)[0].shape[0]) for _ in range(args.data_batches))
        figures["images_per_s"] = count / (time.perf_counter() - wall)
        figures["images_per_cpu_s"] = count / (time.process_time() - cpu)
        return figures

    source = args.data_dir or f"{args.data_images} synthetic images"
    _run_configs("data", [{"model": "CIFAR pipeline", "source": source}], measure, budget)


def child(args):
    budget = _Budget(args.budget[args.child])
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_backends
    {"data": data_section, "native": native_section}.get(args.child, keras_section)(args, budget)


def run_section(section, args):
    """Runs `section` in its own process; returns its rows (those finished before a kill)."""
    from keras_topo.experiments import fast_path

    command = [sys.executable, os.path.abspath(__file__), f"--child={section}"]
    command += _forwarded(args)
    fast_path.apply_environment()  # the runner's process settings, native torch's too
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env["KERAS_BACKEND"] = section if section in KERAS_SECTIONS else "torch"
    if section == "data":
        env["KERAS_BACKEND"] = "tensorflow"
    limit = args.budget[section] + GRACE_S
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: killed whole (compiler workers too)
    )
    try:
        out, err = process.communicate(timeout=limit)
        note = None if process.returncode == 0 else f"exit status {process.returncode}"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        note = f"killed after {limit} s"
    rows = [json.loads(line) for line in out.splitlines() if line.startswith('{"section"')]
    if note:
        detail = err.strip()[-500:]
        rows.append({"section": section, "error": f"{note}: {detail}" if detail else note})
    return rows


def _forwarded(args):
    names = ("batch", "width", "steps", "repeats", "data_images", "data_batches")
    forwarded = [f"--{name.replace('_', '-')}={getattr(args, name)}" for name in names]
    forwarded.append("--precisions=" + ",".join(args.precisions))
    forwarded += [f"--budget={key}={value}" for key, value in args.budget.items()]
    forwarded += ["--torch-compile"] if args.torch_compile else []
    forwarded += [f"--data-dir={args.data_dir}"] if args.data_dir else []
    return forwarded


def summarise(rows, batch):
    """Adds `images_per_s`, `vs_native_plain` and `paper_run_s` to the rows that have a
    step time; a plain row takes the eval rate of its topographic twin."""
    native = {
        r["precision"]: r["step_s"] for r in rows if r["section"] == "native" and "step_s" in r
    }
    eval_rates = {
        (r["section"], r["precision"], r["jit_compile"]): r["eval_images_per_s"]
        for r in rows
        if "eval_images_per_s" in r
    }
    for row in rows:
        if "step_s" not in row:
            continue
        row["images_per_s"] = batch / row["step_s"]
        if row["precision"] in native:
            row["vs_native_plain"] = native[row["precision"]] / row["step_s"]
        rate = eval_rates.get((row["section"], row["precision"], row.get("jit_compile")))
        if rate:
            row["paper_run_s"] = paper_run_seconds(row["step_s"], rate, batch)
    return rows


def markdown(rows, args):
    """The table of every configuration, the data pipeline's line, and each section's settings."""
    lines = [
        f"ResNet-18 x{args.width:g}, CIFAR 32x32, 10 classes, batch {args.batch}; topographic: "
        f"grid, lambda 1, {PAPER_REDUCTION}med, the paper's five layers. One paper run: "
        "the recipe's epochs on 45k images + evaluation.",
        "",
        "| backend | jit_compile | precision | model | train img/s | step ms | vs native torch "
        "plain | eval img/s | one paper run (h) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row["section"] == "data" or "settings" in row:
            continue
        jit_compile = row.get("jit_compile_resolved", row.get("jit_compile", "-"))
        cells = [row["section"], str(jit_compile), row.get("precision", "-")]
        bounds = row.get("upper_bound")
        cells.append(row.get("model", "-") + (" (noisy: upper bounds)" if bounds else ""))
        if "step_s" in row:
            cells += [f"{row['images_per_s']:,.0f}", f"{1000 * row['step_s']:.1f}"]
            cells.append(f"{row['vs_native_plain']:.2f}" if "vs_native_plain" in row else "-")
            rate = row.get("eval_images_per_s")
            cells.append(f"{rate:,.0f}" if rate else "-")
            cells.append(f"{row['paper_run_s'] / 3600:.2f}" if "paper_run_s" in row else "-")
        else:
            cells += [row.get("skipped") or row.get("error", "?")] + ["-"] * 4
        lines.append("| " + " | ".join(cells) + " |")
    for row in rows:
        if row["section"] == "data" and "images_per_s" in row:
            line = (
                f"\nData pipeline ({row['source']}, crop+flip+normalise, batch {args.batch}): "
                f"{row['images_per_s']:,.0f} images/s on {row['cpus']} CPUs, "
                f"{row['images_per_cpu_s']:,.0f} per CPU-second"
            )
            if "decode_images_per_s" in row:
                line += f"; JPEG decode {row['decode_images_per_s']:,.0f} images/s (once)"
            fastest = max(
                (r["images_per_s"] for r in rows if r["section"] != "data" and "step_s" in r),
                default=None,
            )
            if fastest:
                line += (
                    f". The fastest step consumes {fastest:,.0f} images/s: "
                    f"{math.ceil(fastest / row['images_per_cpu_s'])} core(s) feed it."
                )
            lines.append(line)
        elif row["section"] == "data":
            lines.append(f"\nData pipeline: {row.get('skipped') or row.get('error')}")
    lines.append("")
    for row in rows:
        if "settings" in row:
            warning = "" if row["settings"]["device"] != "cpu" else f" <- {NO_GPU}"
            lines.append(f"- {row['section']}: {json.dumps(row['settings'])}{warning}")
    if args.quick:
        lines.append("\n--quick: a smoke run at toy settings, not a measurement.")
    return "\n".join(lines)


def _budgets(items):
    budget = dict(BUDGETS_S)
    for item in items:
        section, _, seconds = item.partition("=")
        if section not in SECTIONS or not seconds.replace(".", "", 1).isdigit():
            raise SystemExit(f"--budget {item!r}: use SECTION=SECONDS with SECTION in {SECTIONS}")
        budget[section] = float(seconds)
    return budget


def _precisions(text):
    chosen = text.split(",")
    unknown = [p for p in chosen if p not in PRECISIONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown precision(s) {unknown}: use {PRECISIONS}")
    return chosen


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/gpu_bench.json", help="JSON of every figure")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--precisions", type=_precisions, default=["float32", "mixed_bfloat16"])
    parser.add_argument("--batch", type=int, help="default: the recipe's (256)")
    parser.add_argument("--width", type=float, default=1.0, help="ResNet width multiplier")
    parser.add_argument("--steps", type=int, default=20, help="S: timed calls run S and 2S steps")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls of each length")
    parser.add_argument("--data-dir", help="CIFAR (image folder or archive); default synthetic")
    parser.add_argument("--data-images", type=int, default=20_000, help="images the pipeline holds")
    parser.add_argument("--data-batches", type=int, default=100, help="pipeline batches timed")
    parser.add_argument("--torch-compile", action="store_true", help="also torch.compile")
    parser.add_argument(
        "--budget",
        action="append",
        default=[],
        help="SECTION=SECONDS (repeatable); defaults "
        + ", ".join(f"{k}={v}" for k, v in BUDGETS_S.items()),
    )
    parser.add_argument("--quick", action="store_true", help="CPU smoke run at toy settings")
    parser.add_argument("--child", choices=SECTIONS, help=argparse.SUPPRESS)
    if parser.parse_known_args(argv)[0].quick:
        parser.set_defaults(**QUICK)  # flags given explicitly still win
    args = parser.parse_args(argv)
    if args.batch is None:
        from keras_topo import training_recipe

        args.batch = training_recipe.BATCH_SIZE
    args.budget = _budgets(args.budget)
    args.sections = args.sections.split(",")
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"--sections: unknown {unknown}; use some of {SECTIONS}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        return child(args)
    rows = []
    for section in args.sections:
        start = time.perf_counter()
        rows += run_section(section, args)
        print(f"# {section}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    rows = summarise(rows, args.batch)
    print(markdown(rows, args))
    settings = {k: v for k, v in vars(args).items() if k != "child"}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"args": settings, "rows": rows}, f, indent=2)
    print(f"\nFigures: {args.out}")


if __name__ == "__main__":
    main()
