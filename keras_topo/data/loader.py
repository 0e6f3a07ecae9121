"""`load(name, ...)`: one entry point over the four datasets, with shapes for model building."""

import collections

from keras_topo.data.bird_dcase import CLASS_NAMES, bird_dcase
from keras_topo.data.cifar import cifar, cifar_classes
from keras_topo.data.speech_commands import speech_commands, speech_commands_labels

DatasetInfo = collections.namedtuple(
    "DatasetInfo", ["dataset", "input_shape", "num_classes", "class_names"]
)
NAMES = ("cifar10", "cifar100", "speechcommands", "birddcase")
AUDIO_SHAPE = (64, 101, 1)


def load(name, data_dir, split="train", batch_size=128, seed=0, subset=None, **kwargs):
    """Dataset plus what a model needs: `DatasetInfo(dataset, input_shape, num_classes,
    class_names)`.

    `name` is one of "cifar10", "cifar100", "speechcommands", "birddcase"; `kwargs` go to
    `cifar`, `speech_commands` or `bird_dcase` (e.g. `labels=`, `on_error=`, `download=`).
    """
    if name not in NAMES:
        raise ValueError(f"`name` must be one of {NAMES}; received {name!r}.")
    common = dict(split=split, batch_size=batch_size, seed=seed, subset=subset, **kwargs)
    if name.startswith("cifar"):
        dataset = cifar(data_dir, dataset=name, **common)
        names = cifar_classes(data_dir, name)
        return DatasetInfo(dataset, (32, 32, 3), len(names), names)
    if name == "speechcommands":
        dataset = speech_commands(data_dir, **common)
        names = kwargs.get("labels") or speech_commands_labels(data_dir)
        return DatasetInfo(dataset, AUDIO_SHAPE, len(names), list(names))
    dataset = bird_dcase(data_dir, **common)
    return DatasetInfo(dataset, AUDIO_SHAPE, len(CLASS_NAMES), list(CLASS_NAMES))
