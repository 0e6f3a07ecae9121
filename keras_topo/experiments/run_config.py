"""`RunConfig`: everything that defines one training run, its map settings one `Topography`.

`topography=None` is the baseline. `to_dict()` / `from_dict()` are the format of a run
folder's `config.json` (and of `result.json`'s `config`): the run's fields, with
`"topography"` holding `Topography.get_config()` or null. `from_dict` also reads the flat keys
of the files written by keras-topo 0.3.0 (`"topography": "grid"` with `"dimension"`,
`"topographic_weight"`, `"reduction"`, ... beside it), so older run folders still load.
"""

import dataclasses
import functools
import math
import warnings

from keras_topo import training_recipe
from keras_topo.applications import ARCHITECTURES
from keras_topo.experiments import datasets, fast_path
from keras_topo.topography import Topography

JIT_CHOICES = ("default", "auto", "true", "false")
# Fields that do not change what is trained: a resumed run may differ in these.
BOOKKEEPING = ("data_dir", "out", "verbose", "distribute", "jit_compile")
# keras-topo 0.3.0's flat RunConfig fields (its config.json keys) -> the `Topography` fields
# they set; its "topography" field held the scheme name.
FLAT_TOPOGRAPHY_KEYS = {
    "dimension": "dimension",
    "topographic_weight": "weight",
    "reduction": "reduction",
    "distance": "distance",
    "nested_factor": "nested_factor",
    "objective": "objective",
    "shrink_factor": "shrink_factor",
}


def topography_from_flat(scheme, flat):
    """The `Topography` of 0.3.0's flat settings: `scheme` (its "topography" value; None for
    the baseline, whose settings are checked, then dropped) and `flat` (`FLAT_TOPOGRAPHY_KEYS`)."""
    settings = {FLAT_TOPOGRAPHY_KEYS[key]: value for key, value in flat.items()}
    topography = Topography.coerce(scheme, **settings)
    return None if scheme is None else topography


def _accepts_flat_topography_keywords(cls):
    """Lets `cls(...)` take 0.3.0's flat topographic keywords (deprecated), folded into
    `topography` (`topography_from_flat`)."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        flat = {key: kwargs.pop(key) for key in list(kwargs) if key in FLAT_TOPOGRAPHY_KEYS}
        if flat:
            warnings.warn(
                f"RunConfig({', '.join(f'{key}=' for key in flat)}) is deprecated: pass "
                "topography=keras_topo.Topography(scheme, weight=..., reduction=..., ...).",
                DeprecationWarning,
                stacklevel=2,
            )
            kwargs["topography"] = topography_from_flat(kwargs.get("topography"), flat)
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


@_accepts_flat_topography_keywords
@dataclasses.dataclass
class RunConfig:
    """Everything that defines a run.

    `topography`: None (the baseline), a `keras_topo.Topography`, or what
    `Topography.coerce` takes (a scheme name, a config dict). `epochs=None` takes the paper's
    epochs for the dataset (`training_recipe.EPOCHS`). `jit_compile`: "default" is the backend's fast
    path (`keras_topo.experiments.fast_path`: TF without XLA on CPU, "auto" on an accelerator;
    JAX always jitted; torch eager). `precision`: the Keras dtype policy of the run
    (`fast_path.PRECISIONS`: float32, mixed_float16, mixed_bfloat16). Every field is checked
    here, once; a bad value raises `ValueError` naming its command-line flag.
    """

    dataset: str = "digits"
    model: str = "resnet18"
    topography: Topography | None = None
    seed: int = 0
    data_dir: str | None = None
    out: str = "runs/run"
    epochs: int | None = None
    batch_size: int = training_recipe.BATCH_SIZE
    learning_rate: float = training_recipe.LEARNING_RATE
    momentum: float = training_recipe.MOMENTUM
    weight_decay: float = training_recipe.WEIGHT_DECAY
    weight_decay_mode: str = "coupled"
    warmup_fraction: float = training_recipe.WARMUP_FRACTION
    train_subset: int | None = None
    width_multiplier: float = 1.0
    jit_compile: str = "default"
    precision: str = "float32"
    distribute: str = "none"
    verbose: str | int = "auto"

    def __post_init__(self):
        if self.topography is not None:
            self.topography = Topography.coerce(self.topography)
        if self.dataset not in datasets.DATASETS:
            raise ValueError(f"dataset must be one of {datasets.DATASETS}, got {self.dataset!r}.")
        if self.model not in ARCHITECTURES:
            raise ValueError(f"model must be one of {tuple(ARCHITECTURES)}, got {self.model!r}.")
        if self.weight_decay_mode not in training_recipe.WEIGHT_DECAY_MODES:
            raise ValueError(
                f"weight_decay_mode must be one of {training_recipe.WEIGHT_DECAY_MODES}, "
                f"got {self.weight_decay_mode!r}."
            )
        if str(self.jit_compile).lower() not in JIT_CHOICES:
            raise ValueError(f"jit_compile must be one of {JIT_CHOICES}, got {self.jit_compile!r}.")
        fast_path.check_precision(self.precision)
        if self.epochs is None:
            self.epochs = training_recipe.EPOCHS[self.dataset]
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        _check_training_numbers(self)

    @property
    def organisation(self):
        """ "baseline", or the map's label (`Topography.label`: "grid-2d", "grid-2d-spatial")."""
        return "baseline" if self.topography is None else self.topography.label()

    def to_dict(self):
        """The JSON-ready fields (`"topography"`: `Topography.get_config()` or None)."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        if self.topography is not None:
            values["topography"] = self.topography.get_config()
        return values

    def differences(self, other):
        """Names of the fields where `other` trains differently from `self` (bookkeeping
        fields aside), e.g. `["seed", "topography.weight"]`."""
        mine, theirs = self.to_dict(), other.to_dict()
        changed = []
        for name in mine:
            if name in BOOKKEEPING or mine[name] == theirs[name]:
                continue
            if isinstance(mine[name], dict) and isinstance(theirs[name], dict):
                keys = sorted(set(mine[name]) | set(theirs[name]))
                changed += [
                    f"{name}.{key}" for key in keys if mine[name].get(key) != theirs[name].get(key)
                ]
            else:
                changed.append(name)
        return changed

    @classmethod
    def from_dict(cls, values):
        """A `RunConfig` from `to_dict()`'s format or keras-topo 0.3.0's flat one; a missing
        field takes its default. Raises `ValueError` naming keys that are not settings."""
        values = dict(values)
        flat = {key: values.pop(key) for key in FLAT_TOPOGRAPHY_KEYS if key in values}
        if flat:
            if not (values.get("topography") is None or isinstance(values["topography"], str)):
                raise ValueError(
                    f"run settings hold a topography {values['topography']!r} and 0.3.0's flat "
                    f"topographic keys {sorted(flat)}: keep one of the two."
                )
            values["topography"] = topography_from_flat(values.get("topography"), flat)
        names = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"unknown run settings {unknown}; a RunConfig has {names}.")
        return cls(**values)

    def __getattr__(self, name):
        # Only called for a missing attribute: 0.3.0's flat fields, read from `topography`.
        if name not in FLAT_TOPOGRAPHY_KEYS:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute {name!r}")
        warnings.warn(
            f"RunConfig.{name} is deprecated: read config.topography.{FLAT_TOPOGRAPHY_KEYS[name]} "
            "(config.topography is None for the baseline).",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(self.topography or Topography(), FLAT_TOPOGRAPHY_KEYS[name])


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
