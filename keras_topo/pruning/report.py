"""`PruningReport`: what `prune_channels(..., report=True)` pruned, and what it saved."""

import dataclasses

from keras_topo.pruning.cost import compare, count_params, format_comparison


@dataclasses.dataclass
class GroupResult:
    """One pruned group (coupling="group") or layer (coupling="expand").

    `calibration` (with calibration data): "map" (on a topographic group: mean R^2 of each
    channel from its map neighbours, from as many random channels, from all others; see
    `keras_topo.pruning.redundancy.map_check`), "compensated" / "not compensated" consumers.
    """

    label: str
    before: int
    after: int
    calibration: dict | None = None


class PruningReport:
    """Channels before/after per group, the criterion, and the cost of both models.

    Attributes:
        groups: list of `GroupResult`.
        history: `keras_topo.pruning.PruningHistory`: which output channels left which layer
            (`history.save(path)` writes JSON; `keras_topo.pruning.replay(other_model,
            history)` prunes another checkpoint of the same architecture the same way).
        criterion, mode, coupling: the arguments of `prune_channels`.
        cost: `keras_topo.pruning.compare` of the two models (params, MACs; latency once
            `measure_latency()` ran). MACs are None for a model without static shapes.
    """

    def __init__(self, model, pruned, groups, criterion, mode, coupling, history):
        self.groups = groups
        self.history = history
        self.criterion, self.mode, self.coupling = criterion, mode, coupling
        self._models = (model, pruned)
        try:
            self.cost = compare(model, pruned, repeats=0)
        except ValueError:  # no static shapes: no MACs
            a, b = count_params(model), count_params(pruned)
            self.cost = {"params_a": a, "params_b": b, "params_ratio": b / a}

    def measure_latency(self, batch_size=32, repeats=10):
        """Adds `latency_a`, `latency_b`, `latency_ratio` (seconds per batch) to `cost`."""
        self.cost = compare(*self._models, batch_size=batch_size, repeats=repeats)
        return self.cost

    def __str__(self):
        head = (
            f"criterion={self.criterion!r}, mode={self.mode!r}, coupling={self.coupling!r}: "
            f"{len(self.groups)} pruned"
        )
        width = max([len(g.label) for g in self.groups] + [5])
        lines = [head, f"{'group':{width}} {'before':>7} {'after':>7}"]
        lines += [f"{g.label:{width}} {g.before:7d} {g.after:7d}" for g in self.groups]
        lines += [
            f"{g.label}: {_calibration_line(g.calibration)}" for g in self.groups if g.calibration
        ]
        return "\n".join([*lines, format_comparison(self.cost, "before", "after")])


def _calibration_line(details):
    parts = []
    if "map" in details:
        r2 = details["map"]
        parts.append(
            f"R^2 from map neighbours {r2['neighbours']:.3f}, random channels "
            f"{r2['random']:.3f}, all others {r2['all']:.3f}"
        )
    if "compensated" in details:
        parts.append(f"compensated {', '.join(details['compensated']) or 'none'}")
    if details.get("not compensated"):
        parts.append(f"not compensated {', '.join(details['not compensated'])}")
    return "; ".join(parts)
