"""Cost of a model: parameters, multiply-accumulates and measured latency, and comparisons."""

import time
import warnings
from types import SimpleNamespace

import keras
import numpy as np

# Keras exports no common base of Conv1D/2D/3D (resp. the depthwise and separable families).
from keras.src.layers.convolutional.base_conv import BaseConv
from keras.src.layers.convolutional.base_depthwise_conv import BaseDepthwiseConv
from keras.src.layers.convolutional.base_separable_conv import BaseSeparableConv
from keras.src.ops.numpy import Matmul

from keras_topo.call_graph import TensorKey
from keras_topo.pruning.attention import AttentionHeads, attention_macs
from keras_topo.pruning.graph import InlinedGraph
from keras_topo.pruning.handlers import get_handler
from keras_topo.tracing import opaque_warning


def count_params(model):
    """Number of trainable parameters (as torch's `sum(p.numel())`; BN statistics excluded)."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def count_macs(model, input_shape=None):
    """Multiply-accumulates of one example's forward pass, counted from the layers' shapes.

    Counted: `Conv1D/2D/3D` (`H' W' C_out kh kw C_in / groups`), `DepthwiseConv1D/2D`
    (`H' W' C_out kh kw`), `SeparableConv1D/2D` (depthwise and pointwise parts), `Dense`
    (`positions * C_in * units`), `MultiHeadAttention` and `GroupQueryAttention`
    (`keras_topo.pruning.attention.attention_macs`), `keras.ops.matmul` (`output entries *
    contracted length`: attention written in raw ops), at every call, inside nested models and
    custom layers alike (the pruner's inlined graph, `keras_topo.pruning.graph.InlinedGraph`;
    a custom layer that cannot be traced counts 0, with a warning naming it). Other layers
    (batch norm, activations, pooling, additions) are not counted, as in the usual MAC tables.

    Args:
        model: a functional or Sequential model.
        input_shape: for a model built with unknown dimensions (a sequence length, an image
            size), the shape of one example without the batch axis, e.g. `(128,)`: one tuple
            for every input, or a list of them in `model.inputs` order. The layers' shapes are
            then inferred for it (`compute_output_spec`; the model is not changed). None: the
            model's own shapes; where a nested model was built for unknown dimensions, they
            are inferred from the model's inputs, which must then be static.
    """
    with warnings.catch_warnings():  # InlinedGraph's warning speaks of pruning: ours follows
        warnings.simplefilter("ignore")
        graph = InlinedGraph(model)
    if graph.opaque:
        warnings.warn(opaque_warning(graph.opaque, "so their MACs are not counted"), stacklevel=2)
    shapes = graph.shapes
    if input_shape is None and not _static(shapes.values()):
        # e.g. a keras-hub backbone built for any sequence length, in a model with a fixed one
        input_shape = [shapes[key].shape[1:] for key in graph.inputs]
        input_shape = input_shape if _static(shapes[key] for key in graph.inputs) else None
    if input_shape is not None:
        shapes = _shapes_for(graph, input_shape)
    total = 0
    for call in graph.calls:
        if isinstance(get_handler(call.op), AttentionHeads):
            args, kwargs = _arguments(call, shapes)
            total += attention_macs(call.op, SimpleNamespace(args=args, kwargs=kwargs))
            continue
        in_shape = shapes[call.inputs[0]].shape if call.inputs else ()
        total += _layer_macs(call.op, in_shape, shapes[call.outputs[0]].shape)
    return int(total)


def _static(tensors):
    return all(d is not None for tensor in tensors for d in tensor.shape[1:])


def _arguments(call, shapes):
    """`call`'s `(args, kwargs)` with each tensor key replaced by its KerasTensor in `shapes`."""
    return keras.tree.map_structure(
        lambda x: shapes[x] if isinstance(x, TensorKey) else x, (call.args, call.kwargs)
    )


def _shapes_for(graph, input_shape):
    """`{key: KerasTensor}` of every tensor of `graph` for inputs of `input_shape` (batch 1)."""
    per_input = input_shape if isinstance(input_shape, list) else [input_shape] * len(graph.inputs)
    if len(per_input) != len(graph.inputs):
        raise ValueError(
            f"input_shape has {len(per_input)} shapes but the model has {len(graph.inputs)} "
            "inputs: give one tuple for every input, or a list with one per model input."
        )
    shapes = {}
    for key, shape in zip(graph.inputs, per_input, strict=True):
        original = graph.shapes[key]
        if len(shape) != len(original.shape) - 1:
            raise ValueError(
                f"input_shape {tuple(shape)} does not fit the model input of shape "
                f"{original.shape}: give the shape of one example, without the batch axis."
            )
        shapes[key] = keras.KerasTensor((1, *shape), dtype=original.dtype)
    for call in graph.calls:
        args, kwargs = _arguments(call, shapes)
        outputs = keras.tree.flatten(call.op.compute_output_spec(*args, **kwargs))
        shapes.update(zip(call.outputs, outputs, strict=True))
    return shapes


def _layer_macs(layer, in_shape, out_shape):
    counted = (BaseConv, BaseDepthwiseConv, BaseSeparableConv, keras.layers.Dense, Matmul)
    if not isinstance(layer, counted):
        return 0
    if any(d is None for d in (*in_shape[1:], *out_shape[1:])):
        raise ValueError(
            f"count_macs needs static shapes; layer {layer.name!r} sees {in_shape} -> "
            f"{out_shape}. Build the model with a fixed input shape, e.g. (32, 32, 3)."
        )
    positions = int(np.prod(out_shape[1:-1]))
    c_in, c_out = in_shape[-1], out_shape[-1]
    if isinstance(layer, Matmul):  # (..., N, K) @ (..., K, M): K per output entry
        return positions * c_out * c_in
    if isinstance(layer, keras.layers.Dense):
        return positions * c_in * c_out
    taps = int(np.prod(layer.kernel_size))
    if isinstance(layer, BaseDepthwiseConv):
        return positions * c_out * taps
    if isinstance(layer, BaseSeparableConv):
        depth = c_in * layer.depth_multiplier
        return positions * depth * (taps + c_out)
    return positions * c_out * taps * c_in // layer.groups


def measure_latency(model, batch_size=32, repeats=20, warmup=3):
    """Median seconds of `model.predict_on_batch` on one random batch `(batch_size, ...)`."""
    return _latencies([model], batch_size, repeats, warmup)[0]


def compare(
    model_a, model_b, batch_size=32, repeats=20, warmup=3, print_table=False, input_shape=None
):
    """Parameters, MACs and latency of two models (e.g. unpruned and pruned), with ratios b / a.

    Latencies are medians over `repeats` interleaved timings (a, b, a, b, ...) of
    `predict_on_batch` on a random batch, so both models see the same machine load;
    `repeats=0` skips the timing; `input_shape` as in `count_macs` (for models built with
    unknown dimensions).

    Returns:
        dict with `params_a`, `params_b`, `params_ratio`, `macs_a`, `macs_b`, `macs_ratio`
        (MACs per example) and, when timed, `latency_a`, `latency_b` (seconds per batch),
        `latency_ratio`.
    """
    result = {}
    for key, count in (
        ("params", count_params),
        ("macs", lambda model: count_macs(model, input_shape)),
    ):
        a, b = count(model_a), count(model_b)
        result.update({f"{key}_a": a, f"{key}_b": b, f"{key}_ratio": b / a})
    if repeats:
        a, b = _latencies([model_a, model_b], batch_size, repeats, warmup)
        result.update({"latency_a": a, "latency_b": b, "latency_ratio": b / a})
    if print_table:
        print(format_comparison(result, model_a.name, model_b.name))
    return result


def format_comparison(result, name_a="a", name_b="b"):
    """A text table of a `compare` result."""
    rows = [("params", "params", "{:,}", 1), ("MACs", "macs", "{:,}", 1)]
    rows.append(("latency (ms)", "latency", "{:.2f}", 1e3))
    rows = [row for row in rows if f"{row[1]}_a" in result]
    lines = [f"{'':12} {name_a:>16} {name_b:>16} {'b / a':>7}"]
    for label, key, fmt, scale in rows:
        a, b = (fmt.format(result[f"{key}_{s}"] * scale) for s in "ab")
        lines.append(f"{label:12} {a:>16} {b:>16} {result[key + '_ratio']:7.3f}")
    return "\n".join(lines)


def _latencies(models, batch_size, repeats, warmup):
    rng = np.random.default_rng(0)
    batches = [
        rng.standard_normal((batch_size, *m.inputs[0].shape[1:])).astype("float32") for m in models
    ]
    for model, x in zip(models, batches, strict=True):
        for _ in range(warmup):
            model.predict_on_batch(x)
    times = [[] for _ in models]
    for _ in range(repeats):
        for model, x, record in zip(models, batches, times, strict=True):
            start = time.perf_counter()
            model.predict_on_batch(x)
            record.append(time.perf_counter() - start)
    return [float(np.median(t)) for t in times]
