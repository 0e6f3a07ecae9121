"""New layers from configs without running their random initialisers, under unique names.

The pruner's copies get their weights assigned right after they are built, and random
initialisers are slow on JAX (one XLA compilation per kernel shape, up to seconds each), so
copies are built with "zeros" and get their original initialisers back once built: their
`get_config()` is the original's.
"""

import keras


def from_config_zero_init(cls, config):
    """`cls.from_config(config)` with every `*_initializer` entry replaced by "zeros"."""
    zeros = {
        key: "zeros" for key, value in config.items() if key.endswith("_initializer") and value
    }
    return cls.from_config({**config, **zeros})


def restore_initializers(layer, config):
    """Puts `config`'s initialisers back on the built `layer`."""
    for key, value in config.items():
        if key.endswith("_initializer") and value and hasattr(layer, key):
            setattr(layer, key, keras.initializers.get(value))


class UniqueNames:
    """Names unique within one rebuilt model: `name` itself, else `name_1`, `name_2`, ..."""

    def __init__(self):
        self.taken = set()

    def __call__(self, name):
        candidate, n = name, 1
        while candidate in self.taken:
            candidate, n = f"{name}_{n}", n + 1
        self.taken.add(candidate)
        return candidate
