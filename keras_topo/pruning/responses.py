"""Channel responses on calibration data: which tensors a group's consumers read, and their
first and second moments accumulated over batches and positions.

The response of a channel group is what its *consumers* (the convs and dense layers reading
its channels) see at their input: after batch norm, activation, pooling, residual sums... It
is what compensation must reproduce, so redundancy ranks it too. A group read by several
tensors (a residual stream read after each block) pools their samples.

One forward pass of a multi-output model over the calibration batches gives every tensor; its
`CALIBRATION_POSITIONS` random positions per image (all of them on smaller maps) are taken
inside the model, and only `(C,)` sums and `(C, C)` cross products are kept, in float64.
"""

import dataclasses
import functools

import keras
import numpy as np
import threadpoolctl

from keras_topo.model_copy import carry_over
from keras_topo.pruning.handlers import Producer, get_handler

CALIBRATION_BATCH = 256
# Positions per image and tensor measured (None: all). Consecutive positions of a map respond
# alike, so a quarter of a 16x16 map over 2,048 images loses little; see
# benchmarks/bench_redundancy.py for its effect on the kept channels and the error.
CALIBRATION_POSITIONS = 64
COMPENSABLE = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.Dense)


@dataclasses.dataclass
class ConsumerRead:
    """One call of a consumer reading a group: `columns[c]` is the position of the group's
    channel `c` in the call's input tensor `key` (width `width`)."""

    call: object
    key: str
    columns: np.ndarray
    width: int


def group_reads(graph, root):
    """`(reads, others)` of the group of root space `root`: `ConsumerRead`s of the conv and
    dense layers (groups=1) that read its channels, and names of the other layers reading
    them (transposed or separable convs, flattened inputs...: no compensation there)."""
    reads, others = [], []
    for call in graph.calls:
        if not call.inputs:
            continue
        layout = graph.resolve(graph.layouts[call.inputs[0]])
        offset, columns, inner = 0, [], 1
        for block in layout:
            width = graph.sizes[graph.find(block.space)] * block.inner
            if graph.find(block.space) == root:
                columns.append(offset + np.arange(width))
                inner = block.inner
            offset += width
        if not columns or not _reads_channels(call.op):
            continue
        if isinstance(call.op, COMPENSABLE) and getattr(call.op, "groups", 1) == 1 and inner == 1:
            if len(columns) == 1:
                reads.append(ConsumerRead(call, call.inputs[0], columns[0], offset))
                continue
        others.append(call.op.name)
    return reads, others


def _reads_channels(op):
    """True for layers that mix channels (producers); per-channel layers pass them on."""
    return isinstance(get_handler(op), Producer)


class Moments:
    """Running sums of a `(samples, C)` stream, shifted by its first batch's mean for accuracy.

    `mean` `(C,)`, `covariance()` `(C, C)` (centred) and `second_moment()` `(C, C)`
    (uncentred, `E[x x^T]`), float64.
    """

    def __init__(self):
        self.count, self.shift, self.total, self.cross = 0, None, None, None

    def add(self, samples):
        """Adds the rows of `samples` `(n, C)`."""
        x = np.array(samples, dtype="float64")  # a copy, shifted in place
        if self.shift is None:
            self.shift = x.mean(axis=0)
            self.total = np.zeros_like(self.shift)
            self.cross = np.zeros((x.shape[1], x.shape[1]))
        x -= self.shift
        self.count += x.shape[0]
        self.total += x.sum(axis=0)
        self.cross += x.T @ x

    @property
    def mean(self):
        return self.shift + self.total / self.count

    def covariance(self):
        centred = self.total / self.count
        return self.cross / self.count - np.outer(centred, centred)

    def second_moment(self):
        mean = self.mean
        return self.covariance() + np.outer(mean, mean)


def check_calibration_data(model, data):
    """`data` as a list of arrays, one per model input, after checking it; ValueError else."""
    arrays = list(data) if isinstance(data, (list, tuple)) else [data]
    inputs = keras.tree.flatten(model.inputs)
    if len(arrays) != len(inputs):
        raise ValueError(
            f"calibration_data must hold one array per model input ({len(inputs)}), got "
            f"{len(arrays)}. Pass an array (N, ...) or a list of them."
        )
    out = []
    for array, tensor in zip(arrays, inputs, strict=True):
        array = np.asarray(keras.ops.convert_to_numpy(array))
        expected = tuple(tensor.shape[1:])
        if array.ndim != len(expected) + 1 or any(
            e is not None and e != a for e, a in zip(expected, array.shape[1:], strict=True)
        ):
            raise ValueError(
                f"calibration_data for input {tensor.name!r} must have shape (N, "
                f"{', '.join(str(e) for e in expected)}), got {array.shape}."
            )
        if not np.issubdtype(array.dtype, np.number) or not np.all(np.isfinite(array)):
            raise ValueError(f"calibration_data for input {tensor.name!r} must be finite numbers.")
        out.append(array)
    counts = {a.shape[0] for a in out}
    if len(counts) != 1 or min(counts) < 2:
        raise ValueError(
            f"calibration_data arrays need one common number of samples >= 2, got {counts}."
        )
    return out


def response_moments(graph, keys, arrays):
    """`{key: Moments}` of the tensors `keys` of `graph` (an `InlinedGraph`) over `arrays`
    (checked calibration inputs) in one forward pass, each image's positions
    (`sampled_positions`, `CALIBRATION_POSITIONS`) a sample. ValueError when a response is not
    finite."""
    keys = list(dict.fromkeys(keys))
    if not keys:
        return {}
    probe = probe_model(graph, keys)
    moments = {key: Moments() for key in keys}
    for start in range(0, arrays[0].shape[0], CALIBRATION_BATCH):
        batch = [a[start : start + CALIBRATION_BATCH] for a in arrays]
        outputs = probe.predict_on_batch(batch if len(batch) > 1 else batch[0])
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        with one_blas_thread():
            for key, value in zip(keys, outputs, strict=True):
                value = np.asarray(keras.ops.convert_to_numpy(value))
                if not np.all(np.isfinite(value)):
                    raise ValueError(
                        f"The calibration responses of {graph.shapes[key].name!r} are not "
                        "finite (inf or NaN): check the model's weights and the calibration "
                        "data's scale."
                    )
                moments[key].add(value.reshape(-1, value.shape[-1]))
    return moments


def probe_model(graph, keys):
    """The model from `graph`'s inputs to its tensors `keys`, each `sampled_positions`: on
    the model's own tensors when every call is the model's own (nothing is called again), else
    (a nested model or traced custom layer inlined: a call path with a "/") on a replay of the
    inlined graph."""
    if any("/" in call.path for call in graph.calls):
        _, tensors = graph.replay(_uniquely_named_calls(graph))
    else:
        tensors = graph.shapes
    inputs = [tensors[key] for key in graph.inputs]
    outputs = [sampled_positions(tensors[key], CALIBRATION_POSITIONS) for key in keys]
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs)


def _uniquely_named_calls(graph):
    """A `graph.replay` call_fn calling each layer itself, or a copy of it (same weights,
    `model_copy.carry_over`) under its `graph.unique_names()` name where layers of different
    custom layers share a name (keras-hub's `dropout` in every block): a functional model
    needs unique names, and the model's own layers are not renamed."""
    names, copies = graph.unique_names(), {}

    def call_fn(call, args, kwargs):
        op = call.op
        if names.get(id(op), op.name) == op.name:
            return op(*args, **kwargs)
        if id(op) in copies:
            return copies[id(op)](*args, **kwargs)
        copies[id(op)], outputs = carry_over(op, args, kwargs, name=names[id(op)])
        return outputs

    return call_fn


def position_indices(count, positions):
    """Sorted indices of `positions` of `count` positions, drawn at random (seeded by
    `count`: the same for every map of that size)."""
    return np.sort(np.random.default_rng(count).choice(count, positions, replace=False))


def sampled_positions(tensor, positions):
    """A symbolic `(batch, ..., C)` tensor's `(batch, positions, C)` at `position_indices`
    of its `P` flattened positions; the tensor itself when `P <= positions`, `positions` is
    None or a spatial size is unknown."""
    spatial = tensor.shape[1:-1]
    if positions is None or None in spatial or int(np.prod(spatial)) <= positions:
        return tensor
    count = int(np.prod(spatial))
    flat = keras.ops.reshape(tensor, (-1, count, tensor.shape[-1]))
    return keras.ops.take(flat, position_indices(count, positions), axis=1)


@functools.cache
def _blas_controller():
    return threadpoolctl.ThreadpoolController()


def one_blas_thread():
    """Context running NumPy's BLAS and LAPACK on one thread. The matrices here are small
    (`(C, C)`, or tall and `C` wide): on a 2-core CPU shared with the backend's and other
    processes' threads, a `(16384, 128)` Gram took 0.8 s on two BLAS threads, 0.01 s on one."""
    return _blas_controller().limit(limits=1, user_api="blas")
