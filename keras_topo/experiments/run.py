"""One training run of the paper's recipe: fit, keep the best checkpoint, test it, record it.

A run lives in its own folder (`RunFolder`, which owns the layout): `config.json` (the
`RunConfig`), `best.keras` (the model at the epoch of best validation accuracy,
`BestModelCheckpoint`), `log.csv` (one row per finished epoch, `topo_loss/<layer>` included),
`tensorboard/`, `result.json` (`keras_topo.experiments.results`), and `backup/` until the run
is finished (`AtomicBackupAndRestore`, saved at each epoch's end): an interrupted run, killed
even mid-epoch, resumes from its last finished epoch when the same command runs again. A
finished run (`result.json` with status "complete") is not retrained. `.lock` is held by the
process training in the folder (`run_lock`); a second one is refused.

Every argument and the folder are checked before anything is written; checkpoints are written
whole then renamed (`checkpoints`); a NaN or infinite loss or metric stops the run before it is
logged (`divergence`), so a diverged run is never recorded as complete.
"""

import contextlib
import time
import warnings
from pathlib import Path

import keras

from keras_topo import distribute, training_recipe
from keras_topo.applications import ARCHITECTURES, topographic_layer_specs
from keras_topo.conversion import make_topographic
from keras_topo.experiments import (
    checkpoints,
    datasets,
    divergence,
    fast_path,
    results,
    run_lock,
)
from keras_topo.experiments.run_config import JIT_CHOICES, RunConfig
from keras_topo.experiments.run_folder import RunFolder
from keras_topo.metrics import measure_topography
from keras_topo.topographic_loss_logger import TopographicLossLogger, topographic_layers
from keras_topo.topography import Topography

__all__ = [
    "JIT_CHOICES",
    "RunConfig",
    "RunFolder",
    "build_model",
    "compile_model",
    "distribution_scope",
    "map_scores",
    "resolve_jit_compile",
    "scored_model",
    "topographic_layer_names",
    "train",
]


def build_model(config, input_shape, num_classes):
    """The architecture named by `config.model` (`ARCHITECTURES`) with `config.topography`
    (None: the plain baseline), uncompiled."""
    return ARCHITECTURES[config.model].build(
        input_shape,
        num_classes,
        topography=config.topography,
        width_multiplier=config.width_multiplier,
    )


def topographic_layer_names(model, config):
    """The names of a run's topographic layers: `model`'s own, or for a baseline those its
    architecture makes topographic (`topographic_layer_specs`: no model is built). The layers
    a prune sweep prunes and the map scores measure by default."""
    names = [layer.name for layer in topographic_layers(model)]
    if names or config.topography is not None:
        return names
    specs = topographic_layer_specs(config.model, width_multiplier=config.width_multiplier)
    return [spec.name for spec in specs]


def scored_model(model, config):
    """`model`, or for a baseline a copy (same weights) whose `topographic_layer_names` sit at
    the positions a default `Topography` gives them (`make_topographic`): the reference an
    arrangement without a map scores."""
    if config.topography is not None:
        return model
    return make_topographic(model, topographic_layer_names(model, config), Topography())


def map_scores(model, config, split):
    """`keras_topo.metrics.measure_topography` of `model` (`scored_model`) on `split` (a
    `datasets.Split`)."""
    return measure_topography(scored_model(model, config), split.dataset)


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
    """`keras_topo.distribute.distribution_scope(name)`; "none": no scope at all."""
    if name == "none":
        return contextlib.nullcontext()
    return distribute.distribution_scope(name)


def train(config, callbacks=()):
    """Runs (or resumes, or returns the finished) run described by `config`; returns its result.

    `callbacks` are appended to the runner's own (after the bookkeeping ones). Raises
    `ValueError` before writing anything when `config.out` or `config.data_dir` cannot be used,
    `run_lock.RunFolderBusy` when another process trains in `config.out`, and
    `divergence.TrainingDiverged` when the loss or a metric becomes NaN or infinite.
    """
    folder = RunFolder(config.out)
    run_lock.check_writable_folder(folder.path)
    if config.dataset != "digits" and not (config.data_dir and Path(config.data_dir).is_dir()):
        raise ValueError(f"--data-dir {config.data_dir}: no such folder ({config.dataset}'s data).")
    folder.path.mkdir(parents=True, exist_ok=True)
    with run_lock.lock_run_folder(folder.path):
        return _train_in_folder(config, folder, callbacks)


def _train_in_folder(config, folder, callbacks):
    """`train` once the folder exists and this process holds its lock."""
    folder.write_config(config)
    if folder.is_complete():
        return folder.read_result()
    fast_path.warn_if_slow_kernels()
    with fast_path.precision_policy(config.precision):
        return _fit_and_record(config, folder, callbacks)


def _fit_and_record(config, folder, callbacks):
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
        optimizer = training_recipe.make_optimizer(
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
            keras.callbacks.CSVLogger(str(folder.log_path), append=True),
            checkpoints.BestModelCheckpoint(
                folder.best_model_path,
                monitor="val_accuracy",
                initial_value_threshold=folder.best_logged("val_accuracy"),
            ),
            *_tensorboard(folder.tensorboard_dir),
            # Last, so that a backed-up epoch always has its log row and checkpoint.
            # Kept after `fit` (removed once result.json is written), so that a crash during
            # the test evaluation resumes with zero epochs left rather than retraining.
            checkpoints.AtomicBackupAndRestore(folder.backup_dir),
        ]
        model.fit(
            train_split.dataset,
            validation_data=validation,
            epochs=config.epochs,
            callbacks=bookkeeping + list(callbacks),
            verbose=config.verbose,
            shuffle=False,  # The tf.data pipeline shuffles the training split itself.
        )
        best = compile_model(folder.load_best_model(), jit_compile)
        test = datasets.evaluate(best, config.dataset, "test", config.data_dir, config.batch_size)
        divergence.check_finite(test, "on the test split")
        maps = map_scores(best, config, _load(config, "test"))
    result = results.make(
        config=config,
        epochs=folder.read_log(),
        test=test,
        topographic_layers=[layer.name for layer in topographic_layers(model)],
        params=model.count_params(),
        jit_compile=jit_compile,
        fast_path=fast_path.settings(jit_compile, config.precision),
        wall_time_s=time.time() - start,
    )
    result["map_scores"] = maps
    folder.write_result(result)
    folder.remove_backup()
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
    """Deprecated: `RunFolder(folder).read_log()` (`path`: a run's `log.csv`)."""
    warnings.warn(
        "run.read_log(path) is deprecated: use RunFolder(run_dir).read_log().",
        DeprecationWarning,
        stacklevel=2,
    )
    return RunFolder(Path(path).parent).read_log()


def _load(config, split, subset=None):
    return datasets.load(
        config.dataset,
        split,
        data_dir=config.data_dir,
        batch_size=config.batch_size,
        seed=config.seed,
        subset=subset,
    )
