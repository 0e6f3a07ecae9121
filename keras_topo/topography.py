"""`Topography`: the one settings object of keras-topo's topographic options.

Layers, `make_topographic`, the model builders, the regularizer and the runner all take a
`Topography`, and all validation of the options happens here, once.
"""

import dataclasses
import math
import numbers

import keras
import numpy as np

from keras_topo import objectives
from keras_topo import positions as positions_lib

REDUCTIONS = ("mean", "sum")


@keras.saving.register_keras_serializable(package="keras_topo")
@dataclasses.dataclass(frozen=True)
class Topography:
    """Where the channels of a topographic layer sit and how their loss is weighed.

    Args:
        scheme: a position scheme of `keras_topo.positions` ("grid", "nested", "circle",
            "sphere", "line") or explicit positions, an array `(channels, dimension)`.
        dimension: of the sheet for "grid"/"nested" (2 or 3); None: the scheme's first.
        distance: "euclidean" or "l1" between positions.
        weight: lambda, the non-negative finite weight of the topographic term.
        reduction: how a model combines its `L` topographic layers: "mean" (the paper: each
            layer weighs `weight / L`) or "sum" (the reference code: each weighs `weight`).
        nested_factor: shrink factor between the nested squares/cubes, in (0, 1).
        objective: the loss: "activation" (the paper's), "weights" (TopoLoss) or "spatial"
            (TDANN); see `keras_topo.objectives`.
        shrink_factor: the "weights" objective's down-scaling of the sheet, a number or
            `(h, w)`, each at least 1 (checked against the sheet by the layer).
        neighbourhoods: "spatial" only: TopoLM's sampling for wide layers, K neighbourhoods
            (the units within `radius` of a random unit) drawn per step, the loss averaged over
            them; None: all pairs. Draws follow `keras.utils.set_random_seed`.
        radius: the neighbourhoods' radius in position units (the "grid" sheet spans [0, 1]);
            required with `neighbourhoods`.

    A `Topography` is immutable and hashable; `replace(**changes)` returns a modified copy.
    """

    scheme: object = "grid"
    dimension: int | None = None
    distance: str = "euclidean"
    weight: float = 1.0
    reduction: str = "mean"
    nested_factor: float = 0.5
    objective: str = "activation"
    shrink_factor: object = objectives.DEFAULT_SHRINK_FACTOR
    neighbourhoods: int | None = None
    radius: float | None = None

    def __post_init__(self):
        if isinstance(self.scheme, str):
            if self.scheme not in positions_lib.SCHEME_DIMENSIONS:
                raise ValueError(
                    f"Unknown topography scheme {self.scheme!r}. Use one of "
                    f"{sorted(positions_lib.SCHEME_DIMENSIONS)} or explicit positions "
                    "(an array of shape (channels, dimension))."
                )
            dims = positions_lib.SCHEME_DIMENSIONS[self.scheme]
            if self.dimension is not None and self.dimension not in dims:
                raise ValueError(
                    f"dimension={self.dimension!r} is not supported by the {self.scheme!r} "
                    f"scheme; use one of {dims}."
                )
        else:
            points = np.asarray(self.scheme, dtype="float64")
            # One channel is allowed (pruning may leave one): it has no pair, so no loss.
            if points.ndim != 2 or points.shape[0] < 1 or not np.all(np.isfinite(points)):
                raise ValueError(
                    "Explicit positions must be a finite array of shape (channels, dimension), "
                    f"got shape {points.shape}."
                )
            if self.dimension is not None and self.dimension != points.shape[1]:
                raise ValueError(
                    f"dimension={self.dimension} contradicts the explicit positions of "
                    f"dimension {points.shape[1]}; leave dimension=None."
                )
            # A tuple of tuples keeps the object hashable, comparable and JSON-serializable.
            object.__setattr__(self, "scheme", tuple(map(tuple, points.astype("float32").tolist())))
        if self.distance not in positions_lib.DISTANCES:
            raise ValueError(
                f"Unknown distance {self.distance!r}. Use one of {list(positions_lib.DISTANCES)}."
            )
        if not _is_finite_non_negative(self.weight):
            raise ValueError(
                f"weight (lambda) must be a finite non-negative number, got {self.weight!r}."
            )
        object.__setattr__(self, "weight", float(self.weight))
        if self.reduction not in REDUCTIONS:
            raise ValueError(
                f"Unknown reduction {self.reduction!r}. Use one of {list(REDUCTIONS)}: 'mean' "
                "(the paper, lambda / L per layer) or 'sum' (the reference code)."
            )
        if not (_is_finite_non_negative(self.nested_factor) and 0 < self.nested_factor < 1):
            raise ValueError(f"nested_factor must be in (0, 1), got {self.nested_factor!r}.")
        objectives.validate_objective(self.objective)
        factors = np.atleast_1d(np.asarray(self.shrink_factor, dtype="object"))
        if factors.size not in (1, 2) or not all(
            _is_finite_non_negative(f) and f >= 1 for f in factors
        ):
            raise ValueError(
                f"shrink_factor must be a number >= 1 or a pair (h, w) of them, got "
                f"{self.shrink_factor!r}."
            )
        if isinstance(self.shrink_factor, (list, tuple)):
            object.__setattr__(self, "shrink_factor", tuple(self.shrink_factor))
        self._validate_neighbourhoods()

    def _validate_neighbourhoods(self):
        if self.neighbourhoods is None:
            if self.radius is not None:
                raise ValueError(
                    "radius sets the spatial objective's neighbourhoods: give "
                    "neighbourhoods=K too, or leave radius=None."
                )
            return
        if self.objective != "spatial":
            raise ValueError(
                f'neighbourhoods samples pairs of the "spatial" objective; objective is '
                f'{self.objective!r}. Use objective="spatial" or neighbourhoods=None.'
            )
        if isinstance(self.neighbourhoods, bool) or not (
            isinstance(self.neighbourhoods, numbers.Integral) and self.neighbourhoods >= 1
        ):
            raise ValueError(
                f"neighbourhoods must be a positive integer (K per step), got "
                f"{self.neighbourhoods!r}."
            )
        if not (_is_finite_non_negative(self.radius) and self.radius > 0):
            raise ValueError(
                f"radius must be a positive number with neighbourhoods=K, got {self.radius!r}."
            )
        object.__setattr__(self, "neighbourhoods", int(self.neighbourhoods))
        object.__setattr__(self, "radius", float(self.radius))

    @classmethod
    def coerce(cls, value=None, **changes):
        """A `Topography` from a `Topography`, a scheme name, positions, a config dict or None
        (the defaults); `changes` whose value is None are ignored, the others replace fields."""
        if isinstance(value, dict):
            value = cls.from_config(value)
        elif value is None:
            value = cls()
        elif not isinstance(value, cls):
            value = cls(scheme=value)
        changes = {key: item for key, item in changes.items() if item is not None}
        return value.replace(**changes) if changes else value

    def replace(self, **changes):
        """A copy with some fields changed (validated again); an unknown field is a TypeError."""
        unknown = sorted(set(changes) - set(self.__dataclass_fields__))
        if unknown:
            raise TypeError(
                f"Unknown topographic settings {unknown}; the fields of keras_topo.Topography are "
                f"{sorted(self.__dataclass_fields__)}."
            )
        if "scheme" in changes and not isinstance(changes["scheme"], str):
            changes.setdefault("dimension", None)
        return dataclasses.replace(self, **changes)

    @property
    def explicit(self):
        """True when `scheme` holds explicit positions rather than a scheme name."""
        return not isinstance(self.scheme, str)

    def positions(self, channels):
        """The channels' positions, float32 `(channels, dimension)`.

        The "weights" objective (TopoLoss) lays the channels row-major on its own sheet
        (`keras_topo.objectives.sheet_positions`), whatever the scheme.
        """
        if self.objective == "weights":
            return objectives.sheet_positions(channels)
        return positions_lib.resolve(
            self.scheme, channels, self.dimension, nested_factor=self.nested_factor
        )

    def target(self, channels):
        """The activation objective's target `1 / (d + 1)`, float32 `(channels, channels)`."""
        return positions_lib.target_similarity(self.positions(channels), self.distance)

    def layer_weight(self, num_layers):
        """Each of `num_layers` topographic layers' factor: `weight / L` ("mean") or `weight`."""
        if self.reduction == "mean":
            return self.weight / num_layers
        return self.weight

    def label(self):
        """The map's name: "<scheme>-<dimension>d" ("explicit-<channels>x<dimension>" for
        explicit positions), with "-<objective>" for objectives other than the paper's
        "activation", e.g. "grid-2d", "nested-3d", "grid-2d-spatial". The one label of the
        organisation (run folders, result tables, figure legends)."""
        if self.explicit:
            where = f"explicit-{len(self.scheme)}x{len(self.scheme[0])}"
        else:
            dims = self.dimension or positions_lib.SCHEME_DIMENSIONS[self.scheme][0]
            where = f"{self.scheme}-{dims}d"
        return where if self.objective == "activation" else f"{where}-{self.objective}"

    def describe(self):
        """A short human-readable summary, e.g. "grid-2d, lambda 1 (mean)" (`label` first)."""
        sampled = f" ({self.neighbourhoods} x r {self.radius:g})" if self.neighbourhoods else ""
        return f"{self.label()}, lambda {self.weight:g} ({self.reduction}){sampled}"

    def get_config(self):
        config = dataclasses.asdict(self)
        if self.explicit:
            config["scheme"] = [list(point) for point in self.scheme]
        if isinstance(self.shrink_factor, tuple):
            config["shrink_factor"] = list(self.shrink_factor)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _is_finite_non_negative(value):
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )
