"""One training run of the paper's recipe: fit, keep the best checkpoint, test it, record it.

A run lives in its own folder `out/`:

- `config.json`: the `RunConfig`; `result.json`: see `keras_topo.experiments.results`.
- `best.keras`: the model at the epoch of best validation accuracy (`BestModelCheckpoint`).
- `log.csv` (`CSVLogger`, one row per finished epoch, `topo_loss/<layer>` included) and
  `tensorboard/` (`TensorBoard`).
- `backup/` until the run is finished (`AtomicBackupAndRestore`, saved at each epoch's end): an
  interrupted run, killed even mid-epoch, resumes from its last finished epoch when the same
  command runs again. A finished run (`result.json` with status "complete") is not retrained.
- `.lock`: held by the process training in the folder (`run_lock`); a second one is refused.

Every argument and the folder are checked before anything is written; checkpoints are written
whole then renamed (`checkpoints`); a NaN or infinite loss or metric stops the run before it is
logged (`divergence`), so a diverged run is never recorded as complete.
"""

import contextlib
import csv
import dataclasses
import json
import math
import shutil
import time
import warnings
from pathlib import Path

import keras

from keras_topo.applications import BUILDERS
from keras_topo.experiments import (
    checkpoints,
    datasets,
    divergence,
    fast_path,
    recipe,
    results,
    run_lock,
)
from keras_topo.topographic_loss_logger import TopographicLossLogger, topographic_layers
from keras_topo.topography import Topography

MODELS = tuple(BUILDERS)
JIT_CHOICES = ("default", "auto", "true", "false")
# Fields that do not change what is trained: a resumed run may differ in these.
_TOPOGRAPHY_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Topography)}
_BOOKKEEPING = ("data_dir", "out", "verbose", "distribute", "jit_compile")


@dataclasses.dataclass
class RunConfig:
    """Everything that defines a run (`topography=None` is the baseline).

    `epochs=None` takes the paper's epochs for the dataset (`recipe.EPOCHS`). `jit_compile`:
    "default" is the backend's fast path (`keras_topo.experiments.fast_path`: TF without XLA on
    CPU, "auto" on an accelerator; JAX always jitted; torch eager). `precision`: the Keras dtype
    policy of the run (`fast_path.PRECISIONS`: float32, mixed_float16, mixed_bfloat16).
    """

    dataset: str = "digits"
    model: str = "resnet18"
    topography: str | None = None
    dimension: int | None = None
    topographic_weight: float = _TOPOGRAPHY_DEFAULTS["weight"]
    reduction: str = _TOPOGRAPHY_DEFAULTS["reduction"]
    distance: str = _TOPOGRAPHY_DEFAULTS["distance"]
    nested_factor: float = _TOPOGRAPHY_DEFAULTS["nested_factor"]
    objective: str = _TOPOGRAPHY_DEFAULTS["objective"]
    shrink_factor: float = _TOPOGRAPHY_DEFAULTS["shrink_factor"]
    seed: int = 0
    data_dir: str | None = None
    out: str = "runs/run"
    epochs: int | None = None
    batch_size: int = recipe.BATCH_SIZE
    learning_rate: float = recipe.LEARNING_RATE
    momentum: float = recipe.MOMENTUM
    weight_decay: float = recipe.WEIGHT_DECAY
    weight_decay_mode: str = "coupled"
    warmup_fraction: float = recipe.WARMUP_FRACTION
    train_subset: int | None = None
    width_multiplier: float = 1.0
    jit_compile: str = "default"
    precision: str = "float32"
    distribute: str = "none"
    verbose: str | int = "auto"

    def __post_init__(self):
        if self.dataset not in datasets.DATASETS:
            raise ValueError(f"dataset must be one of {datasets.DATASETS}, got {self.dataset!r}.")
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}.")
        if self.weight_decay_mode not in recipe.WEIGHT_DECAY_MODES:
            raise ValueError(
                f"weight_decay_mode must be one of {recipe.WEIGHT_DECAY_MODES}, "
                f"got {self.weight_decay_mode!r}."
            )
        self.settings()  # validates the topographic options (the baseline's too)
        if str(self.jit_compile).lower() not in JIT_CHOICES:
            raise ValueError(f"jit_compile must be one of {JIT_CHOICES}, got {self.jit_compile!r}.")
        fast_path.check_precision(self.precision)
        if self.epochs is None:
            self.epochs = recipe.EPOCHS[self.dataset]
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        _check_training_numbers(self)

    def settings(self):
        """The run's `keras_topo.Topography` (for the baseline: the settings it would use)."""
        return Topography(
            scheme=self.topography or _TOPOGRAPHY_DEFAULTS["scheme"],
            dimension=self.dimension,
            distance=self.distance,
            weight=self.topographic_weight,
            reduction=self.reduction,
            nested_factor=self.nested_factor,
            objective=self.objective,
            shrink_factor=self.shrink_factor,
        )


def build_model(config, input_shape, num_classes):
    """The application named by `config.model`, topographic or not, uncompiled."""
    from keras_topo import applications

    return applications.BUILDERS[config.model](
        input_shape,
        num_classes,
        topography=None if config.topography is None else config.settings(),
        width_multiplier=config.width_multiplier,
    )


def map_scores(model, config, split):
    """`keras_topo.metrics.measure_topography` of `model` on `split` (a `datasets.Split`).

    A baseline is scored on the positions its topographic twin gives the same layers (same
    weights), the reference an arrangement without a map scores.
    """
    from keras_topo.metrics import measure_topography

    return measure_topography(scored_model(model, config, split), split.dataset)


def scored_model(model, config, split):
    """`model`, or for a baseline its topographic twin (default scheme) with `model`'s weights."""
    if config.topography is not None:
        return model
    twin_config = dataclasses.replace(config, topography=_TOPOGRAPHY_DEFAULTS["scheme"])
    twin = build_model(twin_config, split.input_shape, split.num_classes)
    twin.set_weights(model.get_weights())
    return twin


def resolve_jit_compile(choice):
    """`jit_compile` for `Model.compile`: "default" -> the backend's fast path (`fast_path`)."""
    choice = str(choice).lower()
    if choice == "default":
        return fast_path.compile_options()["jit_compile"]
    return {"auto": "auto", "true": True, "false": False}[choice]


def compile_model(model, jit_compile=False, optimizer="sgd"):
    """Compiles `model` (logits out) with cross-entropy and accuracy; returns it.

    The default optimizer is a placeholder for models that are only evaluated.
    """
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return model


def distribution_scope(name):
    """`keras_topo.distribute.distribution_scope(name)`, imported only when asked for."""
    if name == "none":
        return contextlib.nullcontext()
    from keras_topo import distribute

    return distribute.distribution_scope(name)


def train(config, callbacks=()):
    """Runs (or resumes, or returns the finished) run described by `config`; returns its result.

    `callbacks` are appended to the runner's own (after the bookkeeping ones). Raises
    `ValueError` before writing anything when `config.out` or `config.data_dir` cannot be used,
    `run_lock.RunFolderBusy` when another process trains in `config.out`, and
    `divergence.TrainingDiverged` when the loss or a metric becomes NaN or infinite.
    """
    out = Path(config.out)
    run_lock.check_writable_folder(out)
    if config.dataset != "digits" and not (config.data_dir and Path(config.data_dir).is_dir()):
        raise ValueError(f"--data-dir {config.data_dir}: no such folder ({config.dataset}'s data).")
    out.mkdir(parents=True, exist_ok=True)
    with run_lock.lock_run_folder(out):
        return _train_in_folder(config, out, callbacks)


def _train_in_folder(config, out, callbacks):
    """`train` once `out` exists and this process holds its lock."""
    _write_or_check_config(out, config)
    finished = results.read(out)
    if finished is not None and finished.get("status") == "complete":
        return finished
    fast_path.warn_if_slow_kernels()
    with fast_path.precision_policy(config.precision):
        return _fit_and_record(config, out, callbacks)


def _fit_and_record(config, out, callbacks):
    """Trains, tests and writes `result.json` (under the run's dtype policy); returns it."""
    start = time.time()
    keras.utils.set_random_seed(config.seed)
    jit_compile = resolve_jit_compile(config.jit_compile)
    train_split = _load(config, "train", subset=config.train_subset)
    validation = _load(config, "validation").dataset
    _load(config, "test")  # Fails now, not after training, if the test split is missing.
    steps = int(train_split.dataset.cardinality())
    if steps < 1:
        raise ValueError(
            f"dataset {config.dataset!r}: the training split's number of batches is unknown or "
            f"zero (cardinality {steps}); the learning-rate schedule needs it."
        )
    with distribution_scope(config.distribute):
        model = build_model(config, train_split.input_shape, train_split.num_classes)
        optimizer = recipe.make_optimizer(
            steps,
            config.epochs,
            learning_rate=config.learning_rate,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            weight_decay_mode=config.weight_decay_mode,
            warmup_fraction=config.warmup_fraction,
        )
        compile_model(model, jit_compile, optimizer)
        bookkeeping = [
            # A baseline has no topographic loss to log (not a column of zeros).
            *([TopographicLossLogger(validation)] if topographic_layers(model) else []),
            divergence.FailOnNonFinite(),  # before anything logs or saves the epoch
            keras.callbacks.CSVLogger(str(out / "log.csv"), append=True),
            checkpoints.BestModelCheckpoint(
                out / "best.keras",
                monitor="val_accuracy",
                initial_value_threshold=_best_logged(out / "log.csv"),
            ),
            *_tensorboard(out / "tensorboard"),
            # Last, so that a backed-up epoch always has its log row and checkpoint.
            # Kept after `fit` (removed once result.json is written), so that a crash during
            # the test evaluation resumes with zero epochs left rather than retraining.
            checkpoints.AtomicBackupAndRestore(out / "backup"),
        ]
        model.fit(
            train_split.dataset,
            validation_data=validation,
            epochs=config.epochs,
            callbacks=bookkeeping + list(callbacks),
            verbose=config.verbose,
            shuffle=False,  # The tf.data pipeline shuffles the training split itself.
        )
        best = compile_model(
            keras.saving.load_model(out / "best.keras", compile=False), jit_compile
        )
        test = datasets.evaluate(best, config.dataset, "test", config.data_dir, config.batch_size)
        divergence.check_finite(test, "on the test split")
        maps = map_scores(best, config, _load(config, "test"))
    result = results.make(
        config=dataclasses.asdict(config),
        epochs=read_log(out / "log.csv"),
        test=test,
        topographic_layers=[layer.name for layer in topographic_layers(model)],
        params=model.count_params(),
        jit_compile=jit_compile,
        fast_path=fast_path.settings(jit_compile, config.precision),
        wall_time_s=time.time() - start,
    )
    result["map_scores"] = maps
    results.write(out, result)
    shutil.rmtree(out / "backup", ignore_errors=True)
    return result


def _tensorboard(log_dir):
    """`[TensorBoard(log_dir)]`, or `[]` with a warning when tensorboard is not installed."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        warnings.warn(
            "tensorboard is not installed: no TensorBoard logs for this run "
            "(pip install tensorboard, or keras-topo[experiments]).",
            stacklevel=3,
        )
        return []
    return [keras.callbacks.TensorBoard(str(log_dir))]


def read_log(path):
    """The CSV log's rows as dicts of floats, one per epoch (a re-run epoch keeps its last row)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = {int(row["epoch"]): row for row in csv.DictReader(f)}
    return [
        {
            key: int(value) if key == "epoch" else float(value)
            for key, value in rows[epoch].items()
            if value not in ("", None)
        }
        for epoch in sorted(rows)
    ]


def _best_logged(log_path):
    """Best validation accuracy logged so far, so that a resumed run keeps a better checkpoint."""
    accuracies = [row["val_accuracy"] for row in read_log(log_path) if "val_accuracy" in row]
    return max(accuracies) if accuracies else None


def _load(config, split, subset=None):
    return datasets.load(
        config.dataset,
        split,
        data_dir=config.data_dir,
        batch_size=config.batch_size,
        seed=config.seed,
        subset=subset,
    )


def _write_or_check_config(out, config):
    path = out / "config.json"
    current = dataclasses.asdict(config)
    defaults = {f.name: f.default for f in dataclasses.fields(RunConfig)}
    if path.exists():
        previous = json.loads(path.read_text())
        changed = sorted(
            key
            for key in set(previous) | set(current)
            # A field missing from an older config.json had its default then.
            if key not in _BOOKKEEPING and previous.get(key, defaults.get(key)) != current.get(key)
        )
        if changed:
            raise ValueError(
                f"{out} holds a run with a different configuration ({', '.join(changed)} "
                "differ); give another --out, or delete the folder to start over."
            )
    path.write_text(json.dumps(current, indent=2))


def _check_training_numbers(config):
    """Raises `ValueError` naming the flag of the first out-of-range number of `config`."""
    ranges = {
        "learning_rate": ("> 0", lambda v: v > 0),
        "momentum": ("in [0, 1)", lambda v: 0 <= v < 1),
        "weight_decay": (">= 0", lambda v: v >= 0),
        "warmup_fraction": ("in [0, 1)", lambda v: 0 <= v < 1),
        "width_multiplier": ("> 0", lambda v: v > 0),
    }
    for name, (words, in_range) in ranges.items():
        value = float(getattr(config, name))
        if not (math.isfinite(value) and in_range(value)):
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} must be a finite number {words}, got {value}.")
    if config.train_subset is not None and int(config.train_subset) < 1:
        raise ValueError(f"--train-subset must be a positive integer, got {config.train_subset}.")
    if int(config.seed) < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {config.seed}.")
    if config.verbose not in ("auto", 0, 1, 2):
        raise ValueError(f"--verbose must be auto, 0, 1 or 2, got {config.verbose!r}.")
