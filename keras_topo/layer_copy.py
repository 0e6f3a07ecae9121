"""New layers from configs without running their random initialisers, under unique names.

Shared by `keras_topo.model_copy` and the pruner (`keras_topo.pruning`). Their copies get their
weights assigned right after they are built, and random
initialisers are slow on JAX (one XLA compilation per kernel shape, up to seconds each), so
copies are built with "zeros" and get their original initialisers back once built: their
`get_config()` is the original's.
"""

import inspect

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
    """Names unique within one rebuilt model: `name` itself, else `name_1`, `name_2`, ...

    Args:
        preferred: `{id(layer): name}` that `of(layer)` starts from instead of the layer's own
            name (the pruner's `InlinedGraph.unique_names()`: paths where names collide).
    """

    def __init__(self, preferred=None):
        self.taken = set()
        self.preferred = dict(preferred or {})

    def of(self, layer):
        """A unique name for the copy of `layer`."""
        return self(self.preferred.get(id(layer), layer.name))

    def __call__(self, name):
        candidate, n = name, 1
        while candidate in self.taken:
            candidate, n = f"{name}_{n}", n + 1
        self.taken.add(candidate)
        return candidate


def layer_config(op):
    """`op.get_config()`; for a layer whose constructor takes only the base `Layer` arguments
    but whose automatic config failed (keras-hub builds `keras.layers.Identity(dtype=<a
    DTypePolicy object>)`, whose `get_config` raises NotImplementedError), its base config."""
    try:
        return op.get_config()
    except NotImplementedError:
        own = [
            p
            for p in list(inspect.signature(type(op).__init__).parameters.values())[1:]
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        ]
        if own or not isinstance(op, keras.layers.Layer):
            raise
        return {
            "name": op.name,
            "trainable": op.trainable,
            "dtype": keras.dtype_policies.serialize(op.dtype_policy),
        }


def rebuilt(layer, config, args, kwargs):
    """`(layer's class from config, its outputs on args, kwargs)`, with `layer`'s weights.

    Built on `args` (symbolic or values) by its first call, zero-initialised
    (`from_config_zero_init`), then given `layer`'s weights: the outputs are those of that first
    call (meant for symbolic `args`).
    """
    new = from_config_zero_init(layer.__class__, config)
    outputs = new(*args, **kwargs)
    restore_initializers(new, config)
    new.set_weights(layer.get_weights())
    return new, outputs
