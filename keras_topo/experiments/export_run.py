"""Ship a trained run: its `best.keras`, optionally pruned (and fine-tuned), as an inference file.

`keras-topo export RUN --format litert --prune 0.5 --int8` calls `export_run`: the pruned model
is rebuilt with the filters removed (`prune_channels(..., mode="remove")`, at the layers that
`keras-topo prune` prunes), int8 is calibrated on the run's training split, and the exported
file is scored on the test split in its own runtime.
"""

from pathlib import Path

import keras
import numpy as np

from keras_topo import export, pruning
from keras_topo.experiments import datasets, run
from keras_topo.experiments.run_folder import RunFolder


def export_run(
    run_dir,
    format,
    out=None,
    prune=None,
    quantize=None,
    criterion="l2",
    finetune_epochs=0,
    data_dir=None,
    batch_size=None,
    log=print,
):
    """Exports a run's best checkpoint; returns `{"path", "bytes", "test_accuracy", ...}`.

    Args:
        run_dir: a finished run's folder.
        format, quantize: as `keras_topo.export_model`.
        out: the file (folder for a SavedModel) to write; default
            `<run>/export/best[-pruned<P>][-finetune<N>][-<quantize>]<suffix>`.
        prune: None, or the fraction of channels to prune (`prune_channels`, group coupling,
            mode "remove") at `run.topographic_layer_names` (the run's topographic layers,
            or those its architecture makes topographic for a baseline).
        criterion: the pruning criterion.
        finetune_epochs: fine-tune the pruned model this many epochs on the training split.
        data_dir, batch_size: override the run's.

    Returns:
        dict with `path`, `bytes` (file or folder size), `params` and `test_accuracy` (the
        exported file's top-1 accuracy on each test example or window).
    """
    folder = RunFolder(run_dir)
    config = folder.read_config()
    data_dir = data_dir or config.data_dir
    batch_size = batch_size or config.batch_size
    model = folder.load_best_model()
    name = "best"
    if prune:
        layers = run.topographic_layer_names(model, config)
        model = pruning.prune_channels(model, prune, criterion=criterion, layers=layers)
        name += f"-pruned{round(100 * prune)}"
    if finetune_epochs:
        if not prune:
            raise ValueError("--finetune-epochs fine-tunes a pruned model: give --prune too.")
        model = pruning.finetune(
            model,
            _split(config, "train", data_dir, batch_size).dataset,
            finetune_epochs,
            learning_rate=config.learning_rate / 10,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            weight_decay_mode=config.weight_decay_mode,
            jit_compile=run.resolve_jit_compile(config.jit_compile),
            verbose=0,
        )
        name += f"-finetune{finetune_epochs}"
    if quantize:
        name += f"-{quantize}"
    if out is None:
        folder.export_dir.mkdir(exist_ok=True)
        out = folder.export_dir / (name + export.SUFFIXES.get(format, ""))
    calibration = None
    if quantize == "int8":
        calibration = _split(config, "train", data_dir, batch_size).dataset
    path = export.export_model(model, out, format, quantize, calibration)
    accuracy = exported_accuracy(path, _split(config, "test", data_dir, batch_size).dataset)
    log(f"{path}: {file_size(path) / 1e6:.2f} MB, test accuracy {accuracy:.4f}")
    return {
        "path": str(path),
        "bytes": file_size(path),
        "params": model.count_params(),
        "test_accuracy": accuracy,
    }


def exported_accuracy(path, dataset):
    """Top-1 accuracy of an exported model over a dataset of `(x, y)` batches."""
    predict = export.load_exported(path)
    correct = total = 0
    for x, y in dataset:
        logits = predict(keras.ops.convert_to_numpy(x))
        correct += int(np.sum(np.argmax(logits, axis=-1) == keras.ops.convert_to_numpy(y)))
        total += len(logits)
    return correct / total


def file_size(path):
    """Bytes of a file, or of every file under a folder."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def _split(config, split, data_dir, batch_size):
    subset = config.train_subset if split == "train" else None
    return datasets.load(config.dataset, split, data_dir, batch_size, config.seed, subset)
