"""The pre-activation outputs of chosen layers of a model, read batch by batch into statistics.

Shared by `keras_topo.metrics.measure_topography` and
`keras_topo.metrics.similarity_ordering`: a plain copy of the model (`plain_graph`) replayed
with the layers' activations removed, its outputs fed to one statistics object per layer
(`accumulate_statistics`).
"""

import keras
import numpy as np

from keras_topo.conversion import stripped_copy
from keras_topo.metrics.channel_statistics import ChannelStatistics
from keras_topo.pruning.graph import InlinedGraph


def plain_graph(model, layers):
    """`(graph, copies, keys)`: `graph` the `InlinedGraph` of a plain copy of `model`
    (`strip_topography`: same weights, no topographic losses to compute; nested models and
    traced custom layers inlined, as the pruner sees it), `copies` the copies of `layers`
    (layers of `model`) in it, `keys` their result keys (`result_keys`). The copy's layers
    are renamed to the graph's unique names (`InlinedGraph.unique_names`, for its flat
    replay; the model is untouched)."""
    try:
        plain, copies = stripped_copy(model)
        graph = InlinedGraph(plain)
    except ValueError as error:
        raise ValueError(
            f"measure_topography needs a functional or Sequential model: {error}"
        ) from error
    layers = [copies[id(layer)] for layer in layers]
    return graph, layers, result_keys(graph, layers)


def result_keys(graph, layers):
    """The result key of each of `layers` (layers of `graph`): its name where no other layer
    of the inlined model has it, else its path under the nested models and custom layers
    holding it (`Call.path`, e.g. "vi_t_backbone/vit_encoder/transformer_block_1/mlp/dense_1")."""
    names = graph.unique_names()
    paths = {}
    for call in graph.calls:
        paths.setdefault(id(call.op), call.path)
    keys = [layer.name if names[id(layer)] == layer.name else paths[id(layer)] for layer in layers]
    for call in graph.calls:  # a flat replay needs unique names
        if id(call.op) in names:
            call.op.name = names[id(call.op)]
    return keys


def accumulate_statistics(
    graph, layers, probes, x, y, batch_size, make_statistics=ChannelStatistics
):
    """One `make_statistics(channels)` per layer (default `ChannelStatistics`), fed the layers'
    pre-activation outputs on `x` through its `update(responses, labels)`.

    `graph`, `probes`: the `InlinedGraph` of a plain copy and the copies of `layers` in it
    (`plain_graph`), whose activation is removed (the copy's own layers: the model is
    untouched). A layer called more than once is read at its first call.
    """
    for probe in probes:
        probe.activation = None
    read = {}

    def call(call, args, kwargs):
        outputs = call.op(*args, **kwargs)
        read.setdefault(id(call.op), outputs)
        return outputs

    flat, _ = graph.replay(call)
    probe = keras.Model(flat.inputs, [read[id(layer)] for layer in probes])
    statistics = [make_statistics(layer.filters) for layer in layers]
    seen = 0
    for inputs, labels in _batches(x, y, batch_size):
        outputs = probe.predict_on_batch(inputs)
        if len(layers) == 1 and not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        for layer, stats, out in zip(layers, statistics, outputs, strict=True):
            out = np.asarray(keras.ops.convert_to_numpy(out))
            if getattr(layer, "data_format", "channels_last") == "channels_first":
                out = np.moveaxis(out, 1, -1)
            stats.update(out, labels)
        seen += len(labels) if labels is not None else 1
    if seen == 0:
        raise ValueError("measure_topography: `x` holds no input.")
    return statistics


def _labels(y):
    y = np.asarray(y)
    if y.ndim == 2:
        return np.argmax(y, axis=1)
    if y.ndim != 1:
        raise ValueError(f"y must be labels (N,) or one-hot (N, K), got shape {y.shape}.")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.mod(y, 1) == 0):
            raise ValueError("y must hold integer class labels (or one-hot rows).")
        y = y.astype("int64")
    return y


def _batches(x, y, batch_size):
    """`(inputs, labels or None)` batches from an array `x` (+ `y`) or an iterable of batches."""
    if hasattr(x, "shape") and hasattr(x, "__len__"):
        if y is not None:
            y = _labels(y)
            if len(y) != len(x):
                raise ValueError(
                    f"y has {len(y)} labels but x has {len(x)} inputs: give one label per input."
                )
        for start in range(0, len(x), batch_size):
            stop = start + batch_size
            yield np.asarray(x[start:stop]), None if y is None else y[start:stop]
        return
    for batch in x:
        if isinstance(batch, (tuple, list)) and len(batch) >= 2:
            if y is not None:
                raise ValueError(
                    "x yields (inputs, labels) batches and y was given too: pass only one of them."
                )
            yield np.asarray(batch[0]), _labels(batch[1])
        else:
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            if y is not None:
                raise ValueError("With batches for x, give labels inside the batches, not as y.")
            yield np.asarray(inputs), None
