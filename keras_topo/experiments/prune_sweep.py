"""Accuracy of a trained run's best checkpoint pruned at a range of fractions (paper Fig. 3).

No retraining: each fraction prunes that fraction of the output channels of the chosen layers
(`keras_topo.pruning.prune_channels`) and evaluates on the test split. A baseline has no
topographic layers, so by default it is pruned at the layers its architecture makes
topographic (`run.topographic_layer_names`; the paper compares the two at the same layers). With `finetune_epochs`, each pruned model is
then fine-tuned on the run's training split (`keras_topo.pruning.finetune`) and evaluated again.
Results go to `<run>/pruning-<criterion>-<mode>[-compensated][-finetune<N>].json` and `.csv`
(`RunFolder.pruning_stem`), rewritten after each fraction: a sweep run again (e.g. after a kill) reuses the stored points
of the same settings and the same `best.keras`, and computes only the missing fractions.
"""

import csv
import json
import os
import warnings

import numpy as np

from keras_topo import pruning
from keras_topo.applications import topographic_layer_specs
from keras_topo.experiments import datasets, digits, run
from keras_topo.experiments.run_folder import RunFolder


def parse_fractions(text):
    """ "start:stop:step" (stop excluded, like `range`) or "a,b,c" -> sorted list of floats.

    Every fraction must lie in [0, 1): "0:1:0.05" gives 0, 0.05, ..., 0.95.
    """
    text = str(text).strip()
    try:
        if ":" in text:
            start, stop, step = (float(part) for part in text.split(":"))
            if step <= 0:
                raise ValueError
            count = int(np.ceil((stop - start) / step - 1e-9))
            fractions = [round(start + i * step, 6) for i in range(max(count, 0))]
        else:
            fractions = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(
            f"fractions {text!r}: use 'start:stop:step' (e.g. 0:1:0.05) or a list like "
            "'0,0.25,0.5'."
        ) from None
    if not fractions or any(not 0.0 <= f < 1.0 for f in fractions):
        raise ValueError(f"fractions {text!r}: give at least one, each in [0, 1).")
    return sorted(set(fractions))


def prune_sweep(
    run_dir,
    fractions,
    criterion="l2",
    mode="mask",
    layers=None,
    seed=0,
    data_dir=None,
    batch_size=None,
    finetune_epochs=0,
    finetune_learning_rate=None,
    keep_topography=True,
    calibration_size=None,
    compensate=False,
    log=print,
):
    """Evaluates the run's `best.keras` pruned at each fraction; writes and returns the results.

    Args:
        run_dir: a finished run's folder.
        fractions: list of floats in [0, 1), or a string for `parse_fractions`.
        criterion, mode, seed: as `keras_topo.pruning.prune_channels` ("mask" is the paper's
            zeroed filters; "remove" gives the same outputs from a smaller model).
        layers: layer names to prune; None = `run.topographic_layer_names` (the model's
            topographic layers, or those its architecture makes topographic for a baseline).
        data_dir, batch_size: override the run's (e.g. data moved since training).
        finetune_epochs: 0 (the paper: no retraining), or epochs of fine-tuning after pruning
            (needs mode="remove": a masked model would regrow its zeroed filters).
        finetune_learning_rate: default the run's learning rate / 10.
        keep_topography: fine-tune with the topographic losses on (True) or stripped.
        calibration_size: images of the run's training split (`calibration_images`) given to
            `prune_channels` as `calibration_data` (criterion "redundancy", `compensate`).
        compensate: `prune_channels(compensate=True)`: the consumers are refitted on the
            calibration images to make up for the pruned channels.

    Returns:
        dict with `run`, `organisation`, `criterion`, `mode`, `layers`, `finetune_epochs`,
        `compensate`, `calibration_size`, `checkpoint` and `points`, one `{"fraction",
        "accuracy", "loss", "params", ...}` per fraction computed now or before (+
        `finetuned_accuracy`, `finetuned_loss` when fine-tuned), sorted by fraction.
    """
    folder = RunFolder(run_dir)
    if isinstance(fractions, str):
        fractions = parse_fractions(fractions)
    if not fractions:
        raise ValueError("prune_sweep: give at least one fraction.")
    if finetune_epochs and mode != "remove":
        raise ValueError(
            "fine-tuning needs mode='remove' (--mode remove): a masked model would regrow its "
            "zeroed filters."
        )
    config = folder.read_config()
    data_dir = data_dir or config.data_dir
    batch_size = batch_size or config.batch_size
    if (criterion == "redundancy" or compensate) and not calibration_size:
        raise ValueError(
            f"criterion={criterion!r}, compensate={compensate}: give calibration_size, the "
            "number of training images the pruner reads responses from (e.g. 2048)."
        )
    model = folder.load_best_model()
    if layers is None:
        layers = run.topographic_layer_names(model, config)
    extra = {}
    if calibration_size:
        extra["calibration_data"] = calibration_images(config, data_dir, calibration_size)
    if compensate:
        extra["compensate"] = True
    sweep = {
        "run": str(run_dir),
        "organisation": config.organisation,
        "criterion": criterion,
        "mode": mode,
        "seed": seed,
        "layers": list(layers),
        "finetune_epochs": finetune_epochs,
        "compensate": bool(compensate),
        "calibration_size": calibration_size,
        "checkpoint": folder.checkpoint_identity(),
    }
    stem = folder.pruning_stem(criterion, mode, finetune_epochs, compensate)
    done = {point["fraction"]: point for point in _stored_points(stem, sweep)}
    for fraction in fractions:
        if fraction in done:
            log(f"{folder.name}: fraction {fraction:.2f} stored, skipped")
            continue
        pruned = pruning.prune_channels(
            model,
            fraction,
            criterion=criterion,
            layers=layers,
            mode=mode,
            coupling="expand",  # the paper's per-layer pruning
            seed=seed,
            **extra,
        )
        run.compile_model(pruned, run.resolve_jit_compile(config.jit_compile))
        metrics = datasets.evaluate(pruned, config.dataset, "test", data_dir, batch_size)
        point = {"fraction": fraction, **metrics, "params": pruned.count_params()}
        log(f"{folder.name}: fraction {fraction:.2f} -> test accuracy {metrics['accuracy']:.4f}")
        if finetune_epochs:
            train = datasets.load(
                config.dataset, "train", data_dir, batch_size, config.seed, config.train_subset
            )
            tuned = pruning.finetune(
                pruned,
                train.dataset,
                finetune_epochs,
                learning_rate=finetune_learning_rate or config.learning_rate / 10,
                keep_topography=keep_topography,
                momentum=config.momentum,
                weight_decay=config.weight_decay,
                weight_decay_mode=config.weight_decay_mode,
                jit_compile=run.resolve_jit_compile(config.jit_compile),
                verbose=0,
            )
            tuned_metrics = datasets.evaluate(tuned, config.dataset, "test", data_dir, batch_size)
            point.update({f"finetuned_{key}": value for key, value in tuned_metrics.items()})
            log(f"  after {finetune_epochs} fine-tuning epochs: {tuned_metrics['accuracy']:.4f}")
        done[fraction] = point
        sweep["points"] = [done[f] for f in sorted(done)]
        _write(stem, sweep)  # after each fraction: a killed sweep resumes here
    sweep["points"] = [done[f] for f in sorted(done)]
    return sweep


def calibration_images(config, data_dir, size):
    """`(size, *input_shape)` float32: a fixed sample of the run's training split, not
    augmented (the same images for every run and seed of a dataset)."""
    if config.dataset == "digits":
        images = digits.arrays("train")[0]
        if size > len(images):
            raise ValueError(f"calibration_size {size}: digits' training split has {len(images)}.")
        return images[np.random.default_rng(0).permutation(len(images))[:size]]
    from keras_topo import data  # tf.data pipelines: TensorFlow loads only for these datasets

    kwargs = {"augment": False} if config.dataset.startswith("cifar") else {}
    split = data.load(
        config.dataset, data_dir, split="train", batch_size=512, seed=0, subset=size, **kwargs
    )
    return np.concatenate([np.asarray(images) for images, _ in split.dataset])


def _stored_points(stem, sweep):
    """The points of the stored sweep at `stem` if its settings and checkpoint are `sweep`'s."""
    path = stem.with_suffix(".json")
    if not path.exists():
        return []
    stored = json.loads(path.read_text())
    same = all(stored.get(key) == value for key, value in json.loads(json.dumps(sweep)).items())
    return stored["points"] if same else []


def _write(stem, sweep):
    tmp = stem.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(sweep, indent=2))
    os.replace(tmp, stem.with_suffix(".json"))
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(sweep["points"][0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(sweep["points"])


# Deprecated: the run folder's layout moved to `RunFolder`, the default layers to `run`.


def _deprecated(old, new):
    warnings.warn(f"prune_sweep.{old} is deprecated: use {new}.", DeprecationWarning, stacklevel=3)


def run_config(run_dir):
    """Deprecated: `RunFolder(run_dir).read_config()`."""
    _deprecated("run_config(run_dir)", "RunFolder(run_dir).read_config()")
    return RunFolder(run_dir).read_config()


def load_best(run_dir):
    """Deprecated: `RunFolder(run_dir).load_best_model()`."""
    _deprecated("load_best(run_dir)", "RunFolder(run_dir).load_best_model()")
    return RunFolder(run_dir).load_best_model()


def checkpoint_identity(run_dir):
    """Deprecated: `RunFolder(run_dir).checkpoint_identity()`."""
    _deprecated("checkpoint_identity(run_dir)", "RunFolder(run_dir).checkpoint_identity()")
    return RunFolder(run_dir).checkpoint_identity()


def sweep_stem(run_dir, criterion, mode, finetune_epochs=0, compensate=False):
    """Deprecated: `RunFolder(run_dir).pruning_stem(...)`."""
    _deprecated("sweep_stem(run_dir, ...)", "RunFolder(run_dir).pruning_stem(...)")
    return RunFolder(run_dir).pruning_stem(criterion, mode, finetune_epochs, compensate)


def default_layers(model, config, data_dir=None, batch_size=None):
    """Deprecated: `run.topographic_layer_names(model, config)` (no data is read)."""
    _deprecated("default_layers(...)", "run.topographic_layer_names(model, config)")
    return run.topographic_layer_names(model, config)


def twin_layers(config, input_shape=None, num_classes=None):
    """Deprecated: the names of `applications.topographic_layer_specs` (no model is built)."""
    _deprecated("twin_layers(config, ...)", "keras_topo.applications.topographic_layer_specs")
    specs = topographic_layer_specs(config.model, width_multiplier=config.width_multiplier)
    return [spec.name for spec in specs]
