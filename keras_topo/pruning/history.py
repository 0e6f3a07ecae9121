"""A pruning history: which channels left which layers, saved as JSON and replayed.

`prune_channels(..., report=True)` returns a `PruningReport` whose `history` lists, for every
layer that makes channels (conv, dense: the producers) and lost some, its output width before
and after and the indices of the removed output channels; an attention layer's heads are an
entry of their own, `"<layer name>/heads"` (head indices; Keras layer names hold no "/"). `replay(model, history)` prunes
another model of the same architecture (another checkpoint: same layer names and widths,
other weights) the same way: the same channels leave the same layers, and everything coupled
to them (batch norms, residual sums, consumers) follows, as in the first pruning.
"""

import json

import numpy as np

from keras_topo.pruning.expand_rebuild import rebuild_expand
from keras_topo.pruning.graph import ChannelGraph
from keras_topo.pruning.group_rebuild import rebuild_groups

FORMAT = "keras_topo.pruning_history"
VERSION = 1
HEADS = "/heads"  # entry name suffix of an attention layer's heads (its inner channel space)


class LayerPruning:
    """One layer's pruned output channels.

    Attributes:
        name: layer name.
        before, after: output channels before and after pruning.
        removed: sorted indices (in the unpruned layer) of the channels that left.
    """

    def __init__(self, name, before, removed):
        self.name = str(name)
        self.before = int(before)
        self.removed = sorted(int(i) for i in removed)
        if any(not 0 <= i < self.before for i in self.removed) or len(set(self.removed)) != len(
            self.removed
        ):
            raise ValueError(
                f"Layer {self.name!r}: removed channels {self.removed} must be distinct "
                f"indices in [0, {self.before})."
            )

    @property
    def after(self):
        return self.before - len(self.removed)

    @property
    def kept(self):
        return np.setdiff1d(np.arange(self.before), self.removed)

    def to_dict(self):
        return {
            "name": self.name,
            "before": self.before,
            "after": self.after,
            "removed": self.removed,
        }


class PruningHistory:
    """What `prune_channels` removed, replayable on another model of the same architecture.

    Attributes:
        layers: list of `LayerPruning`, in model order.
        coupling, mode: the arguments of `prune_channels` ("group"/"expand", "remove"/"mask").
    """

    def __init__(self, layers, coupling, mode):
        self.layers = list(layers)
        self.coupling, self.mode = coupling, mode

    @classmethod
    def from_kept(cls, widths, kept_by_layer, coupling, mode):
        """From `{layer name: output width}` and `{layer name: kept indices}`; layers that
        keep all their channels are left out."""
        layers = [
            LayerPruning(name, widths[name], np.setdiff1d(np.arange(widths[name]), kept))
            for name, kept in kept_by_layer.items()
            if len(kept) < widths[name]
        ]
        return cls(layers, coupling, mode)

    @classmethod
    def from_groups(cls, graph, kept_by_space, mode):
        """The producers' removed output channels when `graph`'s groups keep `kept_by_space`
        (root space -> kept channel indices), as `coupling="group"` prunes them."""
        layouts = _recorded_layouts(graph)
        widths = {name: graph.width(layout) for name, layout in layouts.items()}
        kept = {name: graph.kept(layout, kept_by_space) for name, layout in layouts.items()}
        return cls.from_kept(widths, kept, "group", mode)

    def to_dict(self):
        return {
            "format": FORMAT,
            "version": VERSION,
            "coupling": self.coupling,
            "mode": self.mode,
            "layers": [layer.to_dict() for layer in self.layers],
        }

    @classmethod
    def from_dict(cls, data):
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"Not a keras-topo pruning history (no 'format': {FORMAT!r}).")
        if data.get("version") != VERSION:
            raise ValueError(
                f"Pruning history version {data.get('version')!r} is not supported "
                f"(this keras-topo reads version {VERSION})."
            )
        layers = [LayerPruning(e["name"], e["before"], e["removed"]) for e in data["layers"]]
        return cls(layers, data["coupling"], data["mode"])

    def save(self, path):
        """Writes the history to `path` as JSON."""
        with open(path, "w", encoding="utf-8") as file:
            json.dump(self.to_dict(), file, indent=1)

    @classmethod
    def load(cls, path):
        with open(path, encoding="utf-8") as file:
            return cls.from_dict(json.load(file))

    def __repr__(self):
        parts = ", ".join(f"{layer.name} {layer.before}->{layer.after}" for layer in self.layers)
        return f"PruningHistory({self.coupling}, {self.mode}: {parts})"


def replay(model, history, mode=None):
    """Prunes `model` as `history` records: the same channels leave the same layers.

    Args:
        model: a functional or Sequential model of the architecture the history was recorded
            on (same layer names and widths; other weights, e.g. another checkpoint). Not
            modified.
        history: a `PruningHistory` (`PruningReport.history`) or the path of its JSON file.
        mode: "remove" or "mask"; None: the history's.

    Returns:
        A new model, structured as the pruned model the history was recorded from.

    Raises:
        ValueError: the history does not fit `model` (the first mismatch is named: a missing
            layer, another width, channels coupled differently); `model` is untouched.
    """
    if not isinstance(history, PruningHistory):
        history = PruningHistory.load(history)
    mode = history.mode if mode is None else mode
    if mode not in ("remove", "mask"):
        raise ValueError(f'mode must be "remove", "mask" or None, got {mode!r}.')
    graph = ChannelGraph(model)
    if history.coupling == "expand":
        producers = {graph.name_of(op): op for op in _producers(graph)}
        for entry in history.layers:
            op = producers.get(entry.name)
            width = None if op is None else graph.width(graph.op_spaces[(id(op), 0)])
            _check_width(model, entry, op, width)
        return rebuild_expand(graph, {e.name: e.kept for e in history.layers}, mode)
    return rebuild_groups(graph, _kept_by_space(model, graph, history), mode)


def _kept_by_space(model, graph, history):
    """The groups' kept channels from the history's producers; checks that it fits."""
    layouts = _recorded_layouts(graph)
    recorded = {entry.name.removesuffix(HEADS) for entry in history.layers}
    groups = {graph.root(group): group for group in graph.groups()}
    kept_by_space, source = {}, {}
    for entry in history.layers:
        layout = layouts.get(entry.name)
        _check_width(model, entry, layout, None if layout is None else graph.width(layout))
        offset = 0
        for block in layout:
            root = graph.find(block.space)
            size = graph.sizes[root]
            # channel c * inner + k of the block is channel c of its group (heads: k < D)
            channels = offset + np.arange(size * block.inner).reshape(size, block.inner)
            removed = np.isin(channels, entry.removed)
            offset += size * block.inner
            group = groups[root]
            if np.any(removed.any(axis=1) != removed.all(axis=1)):
                raise ValueError(
                    f"The history does not fit model {model.name!r}: it removes part of a "
                    f"unit of {block.inner} channels (an attention head) of layer "
                    f"{entry.name!r}, which leave together here (group {group.index})."
                )
            kept = np.flatnonzero(~removed.all(axis=1))
            if len(kept) == size:
                continue
            if not group.prunable:
                raise ValueError(
                    f"The history does not fit model {model.name!r}: it removes channels of "
                    f"layer {entry.name!r}, whose group {group.index} cannot be pruned here "
                    f"({'; '.join(group.blocked)})."
                )
            if root in kept_by_space and not np.array_equal(kept_by_space[root], kept):
                raise ValueError(
                    f"The history does not fit model {model.name!r}: layers "
                    f"{source[root]!r} and {entry.name!r} share channels (group {group.index}) "
                    "but the history removes different ones."
                )
            kept_by_space[root], source[root] = kept, entry.name
    for root in kept_by_space:
        for member in groups[root].members:
            if member.role == "produces" and member.name not in recorded:
                raise ValueError(
                    f"The history does not fit model {model.name!r}: layer {member.name!r} "
                    f"shares channels with {source[root]!r} (group {groups[root].index}) but "
                    "the history does not record it."
                )
    return kept_by_space


def _check_width(model, entry, found, width):
    """`found`: the layer (or layout) the entry names in `model`, None if none."""
    if found is None:
        raise ValueError(
            f"The history does not fit model {model.name!r}: it has no layer {entry.name!r} "
            "that makes channels (the history was recorded on another architecture)."
        )
    if width != entry.before:
        raise ValueError(
            f"The history does not fit model {model.name!r}: layer {entry.name!r} has {width} "
            f"output channels, the history was recorded with {entry.before}."
        )


def _recorded_layouts(graph):
    """`{entry name: layout}` of what a history records: each producer's output channels (by
    its graph name) and each attention layer's heads (`name + HEADS`)."""
    layouts = {}
    for op in _producers(graph):
        layouts[graph.name_of(op)] = graph.op_spaces[(id(op), 0)]
        for heads in graph.inner_layouts(op):
            layouts[graph.name_of(op) + HEADS] = heads
    return layouts


def _producers(graph):
    """The operations that make a new channel space, once each, in model order."""
    seen = {}
    for call in graph.calls:
        if (id(call.op), 0) in graph.op_spaces:
            seen.setdefault(id(call.op), call.op)
    return list(seen.values())
