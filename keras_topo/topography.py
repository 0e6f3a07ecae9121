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

    def describe(self):
        """A short human-readable label, e.g. "grid-2d, lambda 1 (mean), activation"."""
        if self.explicit:
            where = f"explicit {len(self.scheme)}x{len(self.scheme[0])} positions"
        else:
            dims = self.dimension or positions_lib.SCHEME_DIMENSIONS[self.scheme][0]
            where = f"{self.scheme}-{dims}d"
        return f"{where}, lambda {self.weight:g} ({self.reduction}), {self.objective}"

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
