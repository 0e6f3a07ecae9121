"""One entry point for the runner's datasets: the paper's four (`keras_topo.data`) and `digits`.

Splits are "train", "validation" (checkpoint and lambda selection) and "test".
"""

import dataclasses

from keras_topo.experiments import digits

DATASETS = ("cifar10", "cifar100", "speechcommands", "birddcase", "digits")
SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class Split:
    """A batched `tf.data.Dataset` of `(inputs, labels)` and what a model needs to fit it."""

    dataset: object
    input_shape: tuple
    num_classes: int
    class_names: list


def load(name, split, data_dir=None, batch_size=256, seed=0, subset=None):
    """The `split` of dataset `name` as a `Split`; `subset` keeps that many examples."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {name!r}.")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    if name == "digits":
        dataset = digits.load(split, batch_size, seed=seed, subset=subset)
        names = [str(c) for c in range(digits.NUM_CLASSES)]
        return Split(dataset, digits.INPUT_SHAPE, digits.NUM_CLASSES, names)
    if data_dir is None:
        raise ValueError(f"dataset {name!r} needs --data-dir (the folder holding its files).")
    from keras_topo import data  # tf.data pipelines: TensorFlow loads only for these datasets

    info = data.load(name, data_dir, split=split, batch_size=batch_size, seed=seed, subset=subset)
    return Split(info.dataset, tuple(info.input_shape), info.num_classes, list(info.class_names))


def evaluate(model, name, split, data_dir=None, batch_size=256):
    """Metrics of a compiled `model` on a split: `loss` and `accuracy` (+ `roc_auc`).

    BirdDCASE is scored per clip, as in the paper: the logits of a clip's non-overlapping 1 s
    windows are averaged (`keras_topo.data.clip_level_metrics`); `window_accuracy` keeps the
    per-window accuracy. `loss` includes any topographic terms the model adds.
    """
    metrics = model.evaluate(
        load(name, split, data_dir, batch_size).dataset, return_dict=True, verbose=0
    )
    metrics = {key: float(value) for key, value in metrics.items()}
    if name == "birddcase":
        from keras_topo import data  # tf.data pipelines: TensorFlow loads only for these datasets

        windows, clip_ids, labels = data.bird_dcase_windows(data_dir, split, batch_size)
        clip = data.clip_level_metrics(model.predict(windows, verbose=0), clip_ids, labels)
        metrics["window_accuracy"] = metrics.pop("accuracy")
        metrics.update(clip)
    return metrics
