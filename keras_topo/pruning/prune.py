"""`prune_channels`: the entry point, input checks and the choice of channels."""

import warnings

import keras
import numpy as np

# Keras exports no public "is a functional model" check; `Functional` is the class that
# `keras.Model(inputs, outputs)` instantiates.
from keras.src.models.functional import Functional

from keras_topo.layer_selection import is_topographic, select_layers, walk_layers
from keras_topo.pruning import importance
from keras_topo.pruning.attention import check_heads_left
from keras_topo.pruning.calibration import check_settings
from keras_topo.pruning.expand_rebuild import filter_kernel, rebuild_expand
from keras_topo.pruning.graph import ChannelGraph
from keras_topo.pruning.group_rebuild import rebuild_groups
from keras_topo.pruning.handlers import Producer, get_handler
from keras_topo.pruning.history import PruningHistory
from keras_topo.pruning.report import GroupResult, PruningReport

MODES = ("remove", "mask")
COUPLINGS = ("group", "expand")
SCOPES = ("layer", "global")
PRODUCERS = "conv, dense or attention"  # the layers whose handler is a `Producer`


def prune_channels(
    model,
    fraction,
    criterion="l2",
    layers=None,
    mode="remove",
    coupling="group",
    scope="layer",
    round_to=1,
    seed=None,
    report=False,
    calibration_data=None,
    compensate=False,
    neighbours=None,
):
    """Prunes output channels of a model's layers; returns a NEW model (the input is untouched).

    Args:
        model: a functional or Sequential `keras.Model`; nested models are searched (and, with
            `coupling="group"`, inlined in the result).
        fraction: in [0, 1): the share of channels to prune in each pruned group (or layer);
            `round(fraction * channels)` (Python's round, as `torch.nn.utils.prune` in the
            paper's code), at most all but one (a warning says so).
        criterion: "l2" (paper), "l1", "random" (seeded by `seed`), "bn_scale" (batch-norm
            `|gamma|`, group coupling only) or a callable returning one score per channel:
            `fn(group) -> (group.size,)` (a `ChannelGroup`) with group coupling, `fn(layer) ->
            (filters,)` with expand coupling. The lowest scores are pruned. "redundancy"
            (needs `calibration_data`, scope "layer"): greedily, the channel whose response the
            group's other kept channels predict best (smallest ridge residual variance) goes
            first; responses are measured where the consumers read them (after batch norm,
            activation, residual sums); see `keras_topo.pruning.redundancy`.
        layers: which layers' channels to prune: None (the topographic layers, the paper's
            setting), a name, a layer, a list of names/layers, or a predicate `fn(layer) ->
            bool` (the rule of `make_topographic`; see `keras_topo.layer_selection`): conv
            (1D, 2D, 3D, transposed, separable), dense or attention layers, including layers of
            nested models and custom layers taught with `register_handler(cls, Producer(...))`.
        mode: "remove" rebuilds a smaller model; "mask" keeps every shape and zeroes weights
            (the paper's method). Both compute the same function in inference mode.
        coupling: "group" (default): each group of coupled channels (see `channel_groups`)
            that holds a selected layer is pruned as one unit; the same channels leave every
            producer, per-channel layer and consumer of the group, so residual sums,
            concatenations and depthwise convs shrink too. "expand": only the selected
            layers lose filters; where their channels meet a layer that cannot lose them (a
            residual sum with an unpruned branch, a model output, an unknown layer) the full
            tensor comes back (`ExpandChannels` puts the removed channels' constants back):
            the paper's per-layer masking, which its experiments (`keras-topo prune`) use.
            Both couplings run on the same dependency graph and handlers
            (`keras_topo.pruning.expand_rebuild`); attention heads need "group". Group is the
            default because it is what makes a model smaller and faster (ResNet-18 at 0.5: 25%
            of the parameters instead of 31%).
        scope: "layer": `fraction` of every pruned group (or layer); "global": `fraction` of
            all their channels together, the lowest normalised scores wherever they are (each
            group's scores are divided by their mean first).
        round_to: keep channel counts multiples of this (the nearest, at least `round_to`).
        seed: int seed of the "random" criterion.
        report: also return a `PruningReport` (groups before/after, params, MACs; with
            calibration data, the map check and compensated consumers of each group).
        calibration_data: model inputs, an array `(N, ...)` (or a list, one per input), for
            "redundancy" and `compensate`; every batch and position is a sample.
        compensate: refit the consumers (convs, dense layers) of each pruned group so that
            the kept channels take over the removed ones' contribution (ridge least squares
            on `calibration_data`; exact for linearly dependent channels). With
            `coupling="expand"` only for layers whose channels reach their consumers through
            per-channel layers alone. See `keras_topo.pruning.compensation`.
        neighbours: with "redundancy" on topographic layers: regress each channel on its
            `neighbours` nearest kept map neighbours only (cheaper on wide layers).

    Returns:
        A new `keras.Model` (functional), or `(model, PruningReport)` when `report=True`.
    """
    _check_arguments(model, fraction, criterion, mode, coupling, scope, round_to)
    calibration = check_settings(model, criterion, calibration_data, compensate, neighbours)
    rng = np.random.default_rng(seed)
    if coupling == "expand":
        pruned, results, history = _prune_expand(
            model, fraction, criterion, layers, mode, scope, round_to, rng, calibration
        )
    else:
        pruned, results, history = _prune_groups(
            model, fraction, criterion, layers, mode, scope, round_to, rng, calibration
        )
    if not report:
        return pruned
    name = criterion if isinstance(criterion, str) else getattr(criterion, "__name__", "callable")
    return pruned, PruningReport(model, pruned, results, name, mode, coupling, history)


def _check_arguments(model, fraction, criterion, mode, coupling, scope, round_to):
    if not isinstance(model, (keras.Sequential, Functional)):
        raise ValueError(
            f"model must be a functional or Sequential keras.Model, got {type(model).__name__}: "
            "a subclassed model has no graph to rebuild. Rewrite it with the functional API."
        )
    if not (
        isinstance(fraction, (int, float, np.floating))
        and not isinstance(fraction, bool)
        and 0 <= fraction < 1
    ):
        raise ValueError(f"fraction must be a number in [0, 1), got {fraction!r}.")
    criteria = importance.GROUP_CRITERIA if coupling == "group" else importance.CRITERIA
    criteria += importance.CALIBRATED_CRITERIA
    if not (callable(criterion) or criterion in criteria):
        raise ValueError(
            f"criterion must be one of {criteria} or a callable with coupling={coupling!r}, "
            f"got {criterion!r}."
        )
    for value, name, allowed in ((mode, "mode", MODES), (coupling, "coupling", COUPLINGS)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}.")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}.")
    if criterion == "redundancy" and scope != "layer":
        raise ValueError(
            'criterion="redundancy" ranks channels within each group (removal order, not a '
            'scale comparable across groups): use scope="layer".'
        )
    if not (isinstance(round_to, int) and round_to >= 1):
        raise ValueError(f"round_to must be an int >= 1, got {round_to!r}.")


def _prune_groups(model, fraction, criterion, layers, mode, scope, round_to, rng, calibration):
    graph = ChannelGraph(model)
    selected = _select(model, layers, _is_producer, PRODUCERS)
    groups = {graph.root(g): g for g in graph.groups()}
    chosen = {}
    for layer in selected:
        if not graph.selected_layout(layer):
            warnings.warn(
                f"Layer {layer.name!r} makes no channels of its own (a depthwise or grouped "
                "conv follows its input's channels, or it is never called): select the layer "
                "that produces its input channels.",
                stacklevel=3,
            )
        for block in graph.selected_layout(layer):  # its output channels, or heads
            group = groups[graph.find(block.space)]
            if group.prunable:
                chosen[graph.root(group)] = group
                continue
            unknown = any(reason.startswith("unknown") for reason in group.blocked)
            hint = " Teach the pruner that layer with keras_topo.pruning.register_handler."
            warnings.warn(
                f"Channels of layer {layer.name!r} are not pruned: group {group.index} is "
                f"blocked ({'; '.join(group.blocked)}).{hint if unknown else ''}",
                stacklevel=3,
            )
    labels = {root: f"group {g.index} ({_producers(g)})" for root, g in chosen.items()}
    if calibration:
        calibration.measure(graph, labels)
    scores = {
        root: calibration.scores(graph, root, rng)
        if criterion == "redundancy"
        else importance.group_scores(graph, group, criterion, rng)
        for root, group in chosen.items()
    }
    if scope == "layer":
        check_heads_left(graph, selected, fraction)
    sizes = {root: group.size for root, group in chosen.items()}
    kept = _choose(scores, sizes, labels, fraction, scope, round_to)
    pruned = rebuild_groups(graph, kept, mode)
    if calibration and calibration.compensate:
        calibration.refit(
            graph, pruned, kept, lambda call: _group_kept(graph, call, kept), mode == "remove"
        )
    details = calibration.details if calibration else {}
    results = [GroupResult(labels[r], sizes[r], int(kept[r].size), details.get(r)) for r in chosen]
    return pruned, results, PruningHistory.from_groups(graph, kept, mode)


def _prune_expand(model, fraction, criterion, layers, mode, scope, round_to, rng, calibration):
    graph = ChannelGraph(model)
    selected = _select_producers(model, graph, layers)
    roots = _expand_roots(graph, selected, calibration)
    scores, sizes = {}, {}
    for layer in selected:
        name = graph.name_of(layer)  # its path where keras-hub blocks share layer names
        sizes[name] = graph.width(graph.op_spaces[(id(layer), 0)])
        if criterion == "redundancy":
            scores[name] = calibration.scores(graph, roots[name], rng)
        elif callable(criterion):
            scores[name] = np.asarray(criterion(layer), dtype="float64")
        else:
            scores[name] = importance.channel_scores(filter_kernel(layer), criterion, rng)
        if scores[name].shape != (sizes[name],):
            raise ValueError(
                f"criterion must return {sizes[name]} scores for layer {name!r}, "
                f"got shape {scores[name].shape}."
            )
    kept = _choose(scores, sizes, {k: k for k in sizes}, fraction, scope, round_to)
    if calibration and calibration.compensate:
        # Refit a copy before pruning: the rebuild then folds the removed channels' constants
        # through the refit weights (zero rows), as for any other consumer.
        model = rebuild_expand(graph, {}, "mask")
        by_root = {roots[name]: kept[name] for name in kept}
        calibration.refit(graph, model, by_root, lambda call: _all_channels(graph, call), True)
        graph = ChannelGraph(model)
    pruned = rebuild_expand(graph, kept, mode)
    details = {name: calibration.details.get(roots[name]) for name in sizes} if calibration else {}
    results = [
        GroupResult(name, sizes[name], int(kept[name].size), details.get(name)) for name in sizes
    ]
    history = PruningHistory.from_kept(sizes, kept, "expand", mode)
    return pruned, results, history


def _select_producers(model, graph, layers):
    """The selected layers that make channels of their own (a warning names the others)."""
    selected = _select(model, layers, _is_producer, PRODUCERS)
    for layer in selected:
        if graph.inner_layouts(layer):
            raise ValueError(
                f'coupling="expand" prunes filters, not attention heads ({layer.name!r}): use '
                'coupling="group".'
            )
    made = [layer for layer in selected if (id(layer), 0) in graph.op_spaces]
    for layer in selected:
        if (id(layer), 0) not in graph.op_spaces:
            warnings.warn(
                f"Layer {layer.name!r} makes no channels of its own (a depthwise or grouped "
                "conv follows its input's channels, it works on channels_first data, or it is "
                "never called): select the layer that produces its input channels.",
                stacklevel=4,
            )
    return made


def _expand_roots(graph, selected, calibration):
    """`{layer's graph name: root space}` of the selected layers' channels (coupling="expand"), their
    responses measured; ValueError where compensation cannot reach the consumers."""
    if not calibration:
        return {}
    groups = {graph.root(g): g for g in graph.groups()}
    roots = {}
    for layer in selected:
        layout = graph.op_spaces[(id(layer), 0)]
        group = groups[graph.find(layout[0].space)]
        producers = [m.name for m in group.members if m.role == "produces"]
        if len(layout) != 1 or group.size != graph.width(layout):
            raise ValueError(
                f"The channels of {layer.name!r} are split downstream: calibrated pruning "
                'needs coupling="group" for it.'
            )
        if calibration.compensate and producers != [graph.name_of(layer)]:
            raise ValueError(
                f'compensate=True with coupling="expand" needs {layer.name!r} to be the only '
                f"producer of the channels its consumers read, but {producers} are summed or "
                "concatenated with it (the removed channels' constants mix into them): use "
                'coupling="group", or compensate=False.'
            )
        roots[graph.name_of(layer)] = graph.root(group)
    calibration.measure(graph, {root: name for name, root in roots.items()})
    return roots


def _group_kept(graph, call, kept):
    """(input rows, output columns) a consumer `call` keeps in the group-pruned model."""
    return tuple(graph.kept(graph.layouts[k], kept) for k in (call.inputs[0], call.outputs[0]))


def _all_channels(graph, call):
    """(input rows, output columns) of a consumer `call` in the unpruned model: all."""
    return tuple(np.arange(graph.shapes[k].shape[-1]) for k in (call.inputs[0], call.outputs[0]))


def _select(model, layers, candidate, kind):
    """The selected layers (`keras_topo.layer_selection.select_layers`; None: topographic)."""
    if layers is None and not any(is_topographic(layer) for layer in walk_layers(model)):
        names = [layer.name for layer in walk_layers(model) if candidate(layer)]
        raise ValueError(
            f"layers=None prunes the model's topographic layers, but {model.name!r} has none. "
            f"Pass the {kind} layers to prune, e.g. layers={names[:3]} or a predicate such as "
            "layers=lambda layer: isinstance(layer, keras.layers.Conv2D)."
        )
    return select_layers(model, layers, candidate, kind, default=is_topographic)


def _is_producer(layer):
    return isinstance(get_handler(layer), Producer)


def _choose(scores, sizes, labels, fraction, scope, round_to):
    """Kept channel indices per key: the highest scores, `fraction` pruned per key ("layer")
    or over all keys' mean-normalised scores ("global"), counts rounded to `round_to`."""
    if scope == "layer":
        counts = {}
        for key, size in sizes.items():
            if round(fraction * size) >= size:
                warnings.warn(
                    f"fraction {fraction} would prune all {size} channels of {labels[key]}; "
                    "one is kept.",
                    stacklevel=4,
                )
            counts[key] = importance.rounded_kept(
                size, importance.pruned_count(size, fraction), round_to
            )
    else:
        counts = _global_counts(scores, sizes, fraction, round_to)
    return {key: importance.top_channels(scores[key], counts[key]) for key in sizes}


def _global_counts(scores, sizes, fraction, round_to):
    """Channels kept per key when the lowest normalised scores of all keys go together."""
    entries = []
    for key, values in scores.items():
        mean = values.mean()
        normalised = values / mean if mean > 0 else values
        entries.extend((score, key) for score in normalised)
    to_prune = round(fraction * len(entries))
    left = dict(sizes)
    for _, key in sorted(entries, key=lambda e: e[0]):
        if to_prune == 0:
            break
        if left[key] > min(round_to, sizes[key]):
            left[key] -= 1
            to_prune -= 1
    return {
        key: importance.rounded_kept(sizes[key], sizes[key] - left[key], round_to) for key in sizes
    }


def _producers(group):
    names = [m.name for m in group.members if m.role == "produces"]
    return ", ".join(names[:3]) + (f" +{len(names) - 3}" if len(names) > 3 else "")
