"""Carried-over layers that save as they compute: repaired configs, checked variable stores.

`keras_topo.model_copy.carry_over` copies a layer a transformation leaves unchanged. Once a
custom block is inlined, Keras saves each of its layers' own config (no longer the block's), and
two kinds of library layers do not save faithfully:

- a config its class's `from_config` rejects: keras-hub 0.32's `ViTPatchingAndEmbedding.get_config()`
  returns `num_patches` and `num_positions`, which its constructor rejects; MobileNetV5's
  `ConvNormAct` holds `Activation(lambda x: gelu(x, approximate=False))`, whose config holds a
  Python function. `repaired_copy` looks for a config that builds (keys no constructor of the
  class names dropped; a Python-function activation replaced by the Keras activation of the
  same values), checked: the rebuilt layer takes the weights and gives the original's outputs
  on a random batch. The copy then answers `get_config()` with that config (a per-instance
  override: Keras' `serialize_keras_object` calls `layer.get_config()`). The pruner applies
  the same checked repair (`config_repair`) to the narrowed config of a layer losing channels.
  Where no repair is found, `refuse_saving` makes saving raise a ValueError naming the layer,
  instead of writing a file that cannot load.
- a class whose own `save_own_variables` / `load_own_variables` do not restore its state:
  keras-hub 0.32's `DINOV2Embedding` saves its trained (interpolated) position embeddings only
  when the *signed* sum of their change exceeds epsilon, and re-interpolates them on load, so a
  trained model reloads with other position embeddings. `check_saved_variables` wraps such a
  copy's `save_own_variables` (per instance): what the class writes is loaded back, and saving
  raises a ValueError naming the layer and variable where the loaded state differs.
"""

import inspect

import keras
import numpy as np
from keras.src import activations

from keras_topo.layer_copy import layer_config, rebuilt

TOLERANCE = 1e-5  # relative: outputs of a repaired layer, variables restored from a store
# Why a layer whose config does not build it again is refused, and what fixes it.
NO_REPAIR = (
    "no repair (dropping keys its constructor rejects, naming a Python-function activation) "
    "computes the same. Fix its class's `get_config()` to return its constructor's arguments"
)
# Keras' `model.save` opens the file before it serializes (keras 3.15), so a refusal leaves it.
PARTIAL_FILE = (
    " Keras had already opened the file: whatever was at that path is now empty or partial "
    "(delete it; keep your previous model at another path until this save succeeds)."
)


def repaired_copy(layer, name, args, kwargs):
    """`(copy of layer named name, its outputs on args)` from a repaired config, or None.

    The repair is `config_repair`'s; the copy is the one it was checked with.
    """
    found = _checked_repair(layer, name, args, kwargs)
    return None if found is None else (found[1], found[1](*args, **kwargs))


def config_repair(layer, args, kwargs):
    """The `ConfigRepair` that makes `layer`'s config build a layer computing the same on a
    random batch shaped as `args`, `kwargs`, or None. Also applies to a config of `layer`
    changed elsewhere (the pruner's narrowed configs): its class rejects the same keys."""
    found = _checked_repair(layer, layer.name, args, kwargs)
    return None if found is None else found[0]


class ConfigRepair:
    """Keys dropped from a config and `*activation` entries named by a Keras activation.

    Args:
        dropped: config keys no constructor of the class names.
        activations: `{config key: Keras activation name}` replacing Python functions.
    """

    def __init__(self, dropped, activations):
        self.dropped = tuple(dropped)
        self.activations = dict(activations)

    def apply(self, config):
        """`config` repaired."""
        kept = {key: value for key, value in config.items() if key not in self.dropped}
        return {**kept, **self.activations}

    def install(self, layer):
        """Makes `layer` (built from an applied config) answer `get_config()` repaired."""
        if self.dropped:
            keep_config_without(layer, self.dropped)


def _checked_repair(layer, name, args, kwargs):
    """`(ConfigRepair, copy built from it)` for the first repair whose copy builds, takes the
    weights, saves a config that loads and gives `layer`'s outputs on a random batch, or None.

    Candidates: `layer`'s config without the keys no constructor of its class names; with each
    `*activation` that holds a Python function replaced by each named Keras activation.
    """
    try:
        config = dict(layer_config(layer), name=name)
    except Exception:  # noqa: BLE001 - no config at all: nothing to repair
        return None
    dropped = sorted(set(config) - _constructor_arguments(type(layer)))
    functions = [
        key
        for key, value in config.items()
        if key not in dropped
        and key.endswith("activation")
        and not isinstance(value, (str, type(None)))
    ]
    repairs = [ConfigRepair(dropped, {})] if dropped else []
    repairs += [
        ConfigRepair(dropped, dict.fromkeys(functions, activation))
        for activation in (sorted(activations.ALL_OBJECTS_DICT) if functions else [])
    ]
    batch_args, batch_kwargs = _random_batch((args, kwargs))
    for repair in repairs:
        try:  # built on the random batch first: no node left in the graph by a failed one
            new, _ = rebuilt(layer, repair.apply(config), batch_args, batch_kwargs)
            repair.install(new)
            type(new).from_config(new.get_config())  # what saving stores loads again
            same = _same_outputs(layer, new, batch_args, batch_kwargs)
        except Exception:  # noqa: BLE001, S112 - a candidate that does not build is no repair
            continue
        if same:
            return repair, new
    return None


def keep_config_without(layer, dropped):
    """`layer.get_config()` answers its class's config without the keys in `dropped`."""
    layer.get_config = _ConfigWithout(layer, tuple(dropped))


def dropped_keys(layer):
    """The keys `keep_config_without` drops from `layer`'s config (empty: none)."""
    override = layer.__dict__.get("get_config")
    return override.dropped if isinstance(override, _ConfigWithout) else ()


class _ConfigWithout:
    """A per-instance `get_config`: the class's config without the keys its constructor rejects."""

    def __init__(self, layer, dropped):
        self.layer = layer
        self.dropped = dropped

    def __call__(self):
        config = type(self.layer).get_config(self.layer)
        return {key: value for key, value in config.items() if key not in self.dropped}


def refuse_saving(layer, reason):
    """Saving a model holding `layer` (`model.save`, `get_config`) raises a ValueError naming it.

    The override is `get_build_config`, which only Keras' serialization calls, so the
    transformations (which read `get_config()`) still copy and prune the model.
    """
    layer.get_build_config = _RefusedSaving(layer, reason)


class _RefusedSaving:
    def __init__(self, layer, reason):
        self.layer = layer
        self.reason = reason

    def __call__(self):
        raise ValueError(
            f"Layer {self.layer.name!r} ({type(self.layer).__name__}) cannot be saved: its "
            f"config does not build the layer again ({self.reason}), and {NO_REPAIR}, or "
            "save the weights only (`model.save_weights`)." + PARTIAL_FILE
        )


def check_saved_variables(layer):
    """Wraps `layer.save_own_variables` with a check of its class's own variable saving.

    Only for classes that define `save_own_variables` or `load_own_variables` outside Keras;
    nothing is installed for the others.
    """
    cls = type(layer)
    own = (cls.save_own_variables, cls.load_own_variables)
    if all(method.__module__.startswith("keras.") for method in own):
        return
    layer.save_own_variables = _CheckedSave(layer)


class _CheckedSave:
    """A per-instance `save_own_variables`: the class's, checked by loading it back."""

    def __init__(self, layer):
        self.layer = layer

    def __call__(self, store):
        layer = self.layer
        written = _ValueStore()
        type(layer).save_own_variables(layer, written)
        state = [np.array(keras.ops.convert_to_numpy(v)) for v in layer.variables]
        try:
            type(layer).load_own_variables(layer, written)
            loaded = [np.array(keras.ops.convert_to_numpy(v)) for v in layer.variables]
        finally:
            for variable, value in zip(layer.variables, state, strict=True):
                variable.assign(value)
        for variable, want, got in zip(layer.variables, state, loaded, strict=True):
            if not _close(got, want):
                difference = _relative_difference(got, want)
                raise ValueError(
                    f"Layer {layer.name!r} ({type(layer).__module__}.{type(layer).__name__}) "
                    f"does not save its state: loading what its `save_own_variables` writes "
                    f"changes {variable.path!r} by {difference:.1e} (relative), so the saved "
                    "model would compute something else. Its class's `save_own_variables` / "
                    "`load_own_variables` are at fault; set the variables its loading "
                    "recomputes this one from before saving (see the Pruning guide, keras-hub)."
                    + PARTIAL_FILE
                )
        for key, value in written.items():
            store[key] = value


class _ValueStore(dict):
    """A variable store (as Keras passes to `save_own_variables`) keeping copies of values."""

    def __setitem__(self, key, value):
        super().__setitem__(key, np.array(keras.ops.convert_to_numpy(value)))


def _constructor_arguments(cls):
    """Argument names of `cls`'s constructor and those its `**kwargs` reach, up to Keras'
    `Layer` (whose `**kwargs` Keras itself checks)."""
    names = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = list(inspect.signature(klass.__init__).parameters.values())[1:]
        names |= {p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if klass is keras.layers.Layer or not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return names


def _random_batch(structure, seed=0):
    """`structure` with each KerasTensor replaced by random values of its shape (None: 2)."""
    rng = np.random.default_rng(seed)

    def value(x):
        if not isinstance(x, keras.KerasTensor):
            return x
        shape = tuple(2 if size is None else size for size in x.shape)
        dtype = keras.backend.standardize_dtype(x.dtype)
        if "float" in dtype:
            return rng.standard_normal(shape).astype(dtype)
        return np.ones(shape, dtype)  # integers and booleans: valid ids, masks all on

    return keras.tree.map_structure(value, structure)


def _same_outputs(layer, new, args, kwargs):
    want = keras.tree.flatten(layer(*args, **kwargs))
    got = keras.tree.flatten(new(*args, **kwargs))
    return len(got) == len(want) and all(
        _close(np.asarray(keras.ops.convert_to_numpy(g)), np.asarray(keras.ops.convert_to_numpy(w)))
        for g, w in zip(got, want, strict=True)
    )


def _close(got, want):
    return got.shape == want.shape and _relative_difference(got, want) <= TOLERANCE


def _relative_difference(got, want):
    got, want = (np.asarray(a, dtype="float64") for a in (got, want))
    if got.size == 0:
        return 0.0
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))
