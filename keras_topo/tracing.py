"""See inside custom layers: the functional graph of a layer's `call`, by symbolic re-tracing.

A custom layer (a `keras.layers.Layer` subclass written by a user or a library such as
keras-hub) is one opaque node of its model's functional graph. When its `call` is made of Keras
layers and `keras.ops`, calling `layer.call(...)` on fresh `keras.Input`s records those
sublayers and ops as a functional graph: its *traced view*, a `keras.Model` that computes the
same function with the same sublayer objects. `make_topographic`, `strip_topography`,
`use_fast_layers`, the pruner and `measure_topography` walk traced views as they walk nested
models.

A layer is traced only if all of these hold (else it stays opaque, with the reason):

- it is custom: not a Keras built-in class nor a keras_topo layer (they have handlers), unless
  its class is marked with `mark_traceable`; a class marked with `mark_opaque` never is;
- every variable it has belongs to a sublayer (a layer owning variables directly stays opaque:
  the traced graph would capture them as constants, untrained and unsaved), and no traced op
  reads a sublayer's variable directly;
- its `call` runs on symbolic inputs (backend-specific code, Python control flow on tensor
  values and a `call` that branches on `training` in Python do not). Three patterns of
  keras-hub blocks are traced all the same: a sublayer whose symbolic call fails (keras-hub's
  `DeiTEncoderBlock` returns `(y, None)`) is traced in place as a nested model of its call;
  an output that does not depend on the inputs (`ops.empty` placeholders) becomes `value + 0`
  in the graph; a call doing Python arithmetic on the unknown batch size (Swin's window
  partition: `None // n`) is traced at two concrete batch sizes, which must record the same
  operations except reshape targets scaling with the batch (made -1);
- the traced model's output equals the layer's own on a random batch of 2 (`training=False`)
  within `RTOL` (relative to the output's largest magnitude). This check runs once per class
  and traced structure (the sequence of operation classes): further layers of that class
  whose traces have the same structure share its verdict (a model's ten inverted residual
  blocks are checked once; on TensorFlow each check compiles its grouped convolutions, on JAX
  each side of the check runs as one `jax.jit` program).

Views are cached per layer and input signature (`clear_caches` forgets them and the verdicts).
"""

import contextlib
import inspect
import weakref

import keras
import numpy as np
from keras.src.ops.numpy import Reshape as ReshapeOp

RTOL = 1e-5  # check of a traced view against its layer, relative to the output's magnitude
UNKNOWN_SIDE = 8  # size of an unknown (None) non-batch axis in the numerical check
TRACE_BATCHES = (3, 5)  # batch sizes of a call traced at concrete batch sizes (checked at 2)

_MARKS = {}  # class -> True (mark_traceable) or False (mark_opaque)
_CACHE = weakref.WeakKeyDictionary()  # layer -> {input signature: TracedView}
_CHECKED = {}  # (class, traced structure) -> None (equal) or the reason of the difference


class TracedView:
    """The traced view of one call of a layer: `model` (a functional `keras.Model` whose
    flat inputs are the call's tensor arguments in order), or None with the `reason`."""

    def __init__(self, model=None, reason=None):
        self.model = model
        self.reason = reason

    def __bool__(self):
        return self.model is not None


def mark_opaque(cls):
    """Never trace layers of class `cls` (subclasses included): each stays one node, its
    channels unpruned and its convs unconverted. Returns `cls` (usable as a decorator)."""
    _MARKS[_check_class(cls)] = False
    clear_caches()
    return cls


def mark_traceable(cls):
    """Trace layers of class `cls` (subclasses included) even if it is a Keras or keras_topo
    class; the variable rule and the numerical check still apply. Returns `cls`."""
    _MARKS[_check_class(cls)] = True
    clear_caches()
    return cls


def clear_caches():
    """Forget every traced view and every numerical verdict: the next trace of each layer
    (and the first of each class and structure, its check) runs again."""
    _CACHE.clear()
    _CHECKED.clear()


def _check_class(cls):
    if not (isinstance(cls, type) and issubclass(cls, keras.layers.Layer)):
        raise ValueError(f"Expected a keras.layers.Layer subclass, got {cls!r}.")
    return cls


def _mark(layer):
    for cls in type(layer).__mro__:
        if cls in _MARKS:
            return _MARKS[cls]
    return None


def marked_opaque(layer):
    """Whether `layer`'s class is marked with `mark_opaque` (it is never reported)."""
    return _mark(layer) is False


def is_custom(layer):
    """Whether `layer` is a candidate for tracing: a layer that is not a functional or
    Sequential model (those are inlined as they are), of a class that is not Keras' own nor
    keras_topo's, or marked with `mark_traceable`/`mark_opaque`."""
    from keras.src.models.functional import Functional

    if isinstance(layer, (Functional, keras.Sequential)) or not isinstance(
        layer, keras.layers.Layer
    ):
        return False
    if _mark(layer) is not None:
        return True
    module = type(layer).__module__
    return not module.startswith(("keras.", "keras_topo."))


def layer_view(layer):
    """The traced view of `layer`'s first call (`TracedView`), or an empty view when it was
    never called symbolically or is not custom."""
    if not is_custom(layer) or not layer._inbound_nodes:
        return TracedView(reason="not a custom layer called in a model")
    return traced_view(layer, layer._inbound_nodes[0].arguments)


def traced_view(layer, call_arguments):
    """The functional graph of `layer`'s call on arguments like `call_arguments`.

    Args:
        layer: a built layer.
        call_arguments: the arguments of one symbolic call (a `Node`'s `arguments`: `args`,
            `kwargs`, `keras_tensors`); tensors give the inputs' shapes and dtypes, every
            other argument (`training=`, a mask, a flag) is passed on as it was.

    Returns:
        A `TracedView`: its `model` takes the call's tensor arguments, flattened, in order
        (one tensor: that tensor) and returns the call's outputs; or None with `reason`.
    """
    if not is_custom(layer):
        return TracedView(reason=f"{type(layer).__name__} is not a custom layer")
    signature = _signature(call_arguments)
    views = _CACHE.setdefault(layer, {})
    if signature not in views:
        views[signature] = _trace(layer, call_arguments)
    return views[signature]


def _signature(call_arguments):
    tensors = tuple((tuple(t.shape), str(t.dtype)) for t in call_arguments.keras_tensors)
    rest = keras.tree.map_structure(
        lambda x: None if isinstance(x, keras.KerasTensor) else repr(x),
        (call_arguments.args, call_arguments.kwargs),
    )
    return tensors, repr(rest)


def _trace(layer, call_arguments):
    if _mark(layer) is False:
        return TracedView(reason="marked opaque (keras_topo.tracing.mark_opaque)")
    own = _own_variables(layer)
    if own:
        names = ", ".join(sorted({v.path for v in own})[:3])
        return TracedView(
            reason=f"owns variables directly ({names}): a traced graph would not carry them"
        )
    try:
        model = _symbolic_model(layer, call_arguments, training=None)
    except Exception as error:  # any failure of user code on symbolic inputs
        return TracedView(reason=f"its call fails on symbolic inputs ({_first_line(error)})")
    if _accepts_training(layer) and "training" not in call_arguments.kwargs:
        try:
            trained = _symbolic_model(layer, call_arguments, training=True)
        except Exception as error:
            return TracedView(reason=f"its call fails with training=True ({_first_line(error)})")
        if _op_types(trained) != _op_types(model):
            return TracedView(reason="its call branches on `training` in Python")
    captured = _captured_variables(model)
    if captured:
        return TracedView(
            reason=f"its call reads variable {captured[0].path!r} directly, not through a layer"
        )
    structure = (type(layer), tuple(_op_types(model)))
    if structure not in _CHECKED:
        _CHECKED[structure] = _difference(layer, model, call_arguments)
    difference = _CHECKED[structure]
    if difference is not None:
        return TracedView(reason=difference)
    return TracedView(model)


def _own_variables(layer):
    inner = {id(v) for sub in layer._flatten_layers(include_self=False) for v in sub.variables}
    return [v for v in layer.variables if id(v) not in inner]


def _accepts_training(layer):
    return "training" in inspect.signature(layer.call).parameters


def _symbolic_model(layer, call_arguments, training):
    """`layer.call` on new `keras.Input`s shaped like the call's tensors, as a `keras.Model`.
    A call that fails on the unknown batch size (Python arithmetic on `ops.shape(x)[0]`) is
    traced at two concrete batch sizes instead (`_batch_free_model`)."""
    try:
        model = _traced_model(layer, call_arguments, training, batch=None)
    except Exception as error:  # any failure of user code on symbolic inputs
        if all(t.shape[:1] != (None,) for t in call_arguments.keras_tensors):
            raise
        try:
            return _batch_free_model(layer, call_arguments, training)
        except Exception:  # the concrete-batch traces fail or differ beyond reshapes
            raise error from None
    if any(_batch_reshape(op) for op in model.operations):
        model = _replayed(model, _batch_free_reshape)
    return model


def _traced_model(layer, call_arguments, training, batch):
    """`layer.call` on new `keras.Input`s shaped like the call's tensors, an unknown batch
    size set to `batch` (None: kept unknown), as a `keras.Model`."""
    inputs = [
        keras.Input(batch_shape=(t.shape[0] or batch, *t.shape[1:]), dtype=t.dtype)
        for t in call_arguments.keras_tensors
    ]
    fresh = iter(inputs)
    args, kwargs = call_arguments.convert(
        lambda x: next(fresh) if isinstance(x, keras.KerasTensor) else x
    )
    if training is not None:
        kwargs = dict(kwargs, training=training)
    with _tracing_failing_sublayers_in_place():
        outputs = layer.call(*args, **kwargs)
    outputs = keras.tree.map_structure(lambda t: _symbolic_constant(t, inputs[0]), outputs)
    flat = keras.tree.flatten(outputs)
    if not flat or not all(isinstance(t, keras.KerasTensor) for t in flat):
        raise ValueError("its outputs are not all symbolic tensors")
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs, name=layer.name)


def _symbolic_constant(value, reference):
    """`value` as a graph tensor where it is a constant (an output that does not depend on the
    call's inputs, e.g. keras-hub `DeiTEncoder`'s `ops.empty((0, L, D))` placeholders):
    `value + 0`, the exact zero being the sum of `zeros_like(reference)` (a symbolic input;
    NaN-free whatever it holds; dead code where the caller leaves the output unused), shaped
    `(1,) * value.ndim`. Other values as they are."""
    if isinstance(value, keras.KerasTensor) or not keras.ops.is_tensor(value):
        return value
    zero = keras.ops.sum(keras.ops.zeros_like(reference), keepdims=True)
    zero = keras.ops.reshape(zero, (1,) * len(value.shape))  # no scalar where value is not
    return keras.ops.add(value, keras.ops.cast(zero, value.dtype))


def _batch_free_model(layer, call_arguments, training):
    """The call traced at the batch sizes in `TRACE_BATCHES`, as one model for any batch.

    The two traces must record the same operations with the same arguments, except
    `keras.ops.reshape` targets with one entry proportional to the batch (Swin's window
    partition reshapes to `(B * windows, ...)`): that entry becomes -1 (a -1 already there
    is resolved from the first trace's output shape). The first trace is then replayed on
    inputs with an unknown batch size; the numerical check (at another batch size) decides.
    """
    first, second = (_traced_model(layer, call_arguments, training, b) for b in TRACE_BATCHES)
    newshapes = {}
    for a, b in zip(_op_nodes(first), _op_nodes(second), strict=True):
        if type(a.operation) is not type(b.operation) or not _same_values(
            _constants(a), _constants(b)
        ):
            raise ValueError(f"its {type(a.operation).__name__} depends on the batch size")
        if isinstance(a.operation, ReshapeOp):
            newshapes[id(a.operation)] = _batch_free_target(a, b)
    free = [t.shape[0] is None for t in call_arguments.keras_tensors]
    return _replayed(first, lambda node, _: newshapes.get(id(node.operation)), batch_free=free)


def _constants(node):
    """The non-tensor arguments of `node` and, for a raw op, its public attributes (a
    reshape's target excepted: `_batch_free_target` compares those)."""
    op = node.operation
    attributes = {}
    if not isinstance(op, keras.layers.Layer):
        attributes = {
            k: v for k, v in vars(op).items() if not k.startswith("_") and k not in {"name"}
        }
        attributes.pop("newshape", None)
    arguments = [v for v in node.arguments._flat_arguments if not isinstance(v, keras.KerasTensor)]
    return (op if isinstance(op, keras.layers.Layer) else None, attributes, arguments)


def _same_values(a, b):
    a, b = keras.tree.flatten(a), keras.tree.flatten(b)
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if isinstance(x, keras.layers.Layer) or isinstance(y, keras.layers.Layer):
            if x is not y:
                return False
        elif not np.array_equal(_array(x), _array(y)):
            return False
    return True


def _array(value):
    if keras.ops.is_tensor(value):
        return keras.ops.convert_to_numpy(value)
    return np.asarray(value, dtype=object)


def _batch_free_target(first, second):
    """The target of reshape node `first` with the entry that scales with the batch (from
    `TRACE_BATCHES[0]` to `[1]`, as in node `second`) made -1; raises where none or more
    than one entry differs, or it does not scale with the batch."""
    a, b = list(first.operation.newshape), list(second.operation.newshape)
    differing = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    if not differing:
        return tuple(a)
    (i,) = differing  # more than one: ValueError, the layer stays opaque
    if a[i] * TRACE_BATCHES[1] != b[i] * TRACE_BATCHES[0]:
        raise ValueError("a reshape target does not scale with the batch size")
    out = first.outputs[0].shape
    target = [-1 if j == i else (out[j] if x == -1 else x) for j, x in enumerate(a)]
    if None in target:
        raise ValueError("a reshape target is unknown")
    return tuple(target)


_LAYER_CALL = keras.layers.Layer.__call__


@contextlib.contextmanager
def _tracing_failing_sublayers_in_place():
    """While tracing, a custom sublayer whose symbolic call fails, e.g. one returning a
    non-tensor (keras-hub's `DeiTEncoderBlock` returns `(y, None)`), which Keras refuses as a
    graph node, is traced in place (`_nested_trace`): the trace holds a nested model of its
    call instead, and the variable rule and the numerical check cover it as part of the traced
    layer. Where that fails too, the sublayer's own error stands."""

    def call_or_trace(self, *args, **kwargs):
        try:
            return _LAYER_CALL(self, *args, **kwargs)
        except Exception as error:  # Keras' refusal; on torch, its output-spec inference fails
            if not is_custom(self) or marked_opaque(self):
                raise
            try:
                return _nested_trace(self, args, kwargs)
            except Exception:  # its call fails on symbolic inputs as well: the original reason
                raise error from None

    keras.layers.Layer.__call__ = call_or_trace
    try:
        yield
    finally:
        keras.layers.Layer.__call__ = _LAYER_CALL


def _nested_trace(layer, args, kwargs):
    """`layer.call(*args, **kwargs)` on symbolic arguments as one node: a `keras.Model` (named
    as the layer, so that blocks sharing sublayer names stay apart) of its call on new inputs
    returning its tensor outputs; the `None`s of its output structure are returned as such."""
    tensors = [x for x in keras.tree.flatten((args, kwargs)) if isinstance(x, keras.KerasTensor)]
    inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype) for t in tensors]
    fresh = iter(inputs)
    args, kwargs = keras.tree.map_structure(
        lambda x: next(fresh) if isinstance(x, keras.KerasTensor) else x, (args, kwargs)
    )
    outputs = layer.call(*args, **kwargs)
    leaves = keras.tree.flatten(outputs)
    if not all(x is None or isinstance(x, keras.KerasTensor) for x in leaves):
        raise ValueError(f"{layer.name!r} returns a value that is neither a tensor nor None")
    kept = [x for x in leaves if x is not None]
    single = lambda values: values[0] if len(values) == 1 else values  # noqa: E731
    model = keras.Model(single(inputs), single(kept), name=layer.name)
    results = iter(keras.tree.flatten(model(single(tensors))))
    return keras.tree.pack_sequence_as(
        outputs, [None if x is None else next(results) for x in leaves]
    )


def _batch_reshape(op):
    """Whether `op` is a `keras.ops.reshape` whose target shape starts with the unknown batch
    size (a call that read `ops.shape(x)[0]` of a symbolic input: `(None, H, W, C)`)."""
    return isinstance(op, ReshapeOp) and op.newshape[0] is None


def _batch_free_reshape(node, args):
    """The batch-free target of `node` if it is a batch reshape, else None: target
    `(None, *rest)` becomes `(-1, *rest)` with a `-1` in `rest` resolved from the replayed
    input's static size (later shapes become static too). Needs the input's non-batch axes
    known and `rest` to hold as many elements as they do (the batch is then kept)."""
    if _batch_reshape(node.operation):
        return _make_batch_free(node.operation.newshape, args[0].shape)
    return None


def _replayed(model, retarget, batch_free=()):
    """`model`'s operations re-run in order on new inputs (input `i` with an unknown batch
    size where `batch_free[i]`), each reshape given the target `retarget(node, new args)`
    where not None."""
    old_inputs = keras.tree.flatten(model.inputs)
    free = list(batch_free) or [False] * len(old_inputs)
    inputs = [
        keras.Input(batch_shape=(None if f else t.shape[0], *t.shape[1:]), dtype=t.dtype)
        for t, f in zip(old_inputs, free, strict=True)
    ]
    tensors = {id(old): new for old, new in zip(old_inputs, inputs, strict=True)}
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input:
                continue
            args, kwargs = node.arguments.convert(
                lambda x: tensors[id(x)] if isinstance(x, keras.KerasTensor) else x
            )
            target = retarget(node, args)
            if target is not None:
                node.operation.newshape = target
            outputs = keras.tree.flatten(node.operation(*args, **kwargs))
            for old, new in zip(node.outputs, outputs, strict=True):
                tensors[id(old)] = new
    outputs = keras.tree.pack_sequence_as(
        model._outputs_struct, [tensors[id(t)] for t in keras.tree.flatten(model.outputs)]
    )
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs, name=model.name)


def _make_batch_free(newshape, in_shape):
    rest = list(newshape[1:])
    if any(d is None for d in (*in_shape[1:], *rest)) or rest.count(-1) > 1:
        return None
    size, known = int(np.prod(in_shape[1:])), int(np.prod([d for d in rest if d != -1]))
    if -1 in rest and known and size % known == 0:
        rest[rest.index(-1)] = size // known
    return (-1, *rest) if int(np.prod(rest)) == size else None


def _nodes(model):
    return [node for nodes in model._nodes_by_depth.values() for node in nodes]


def _op_nodes(model):
    return [node for node in _nodes(model) if not node.is_input]


def _op_types(model):
    return [type(op).__name__ for op in model.operations]


def _captured_variables(model):
    return [
        value
        for node in _nodes(model)
        for value in node.arguments._flat_arguments
        if isinstance(value, keras.Variable)
    ]


def _difference(layer, model, call_arguments):
    """None when `model` and `layer` agree on a random batch of 2, else the reason."""
    rng = np.random.default_rng(0)
    values = [_random(t, rng) for t in call_arguments.keras_tensors]
    fresh = iter(values)
    args, kwargs = call_arguments.convert(
        lambda x: next(fresh) if isinstance(x, keras.KerasTensor) else x
    )
    if _accepts_training(layer):
        kwargs = dict(kwargs, training=False)
    try:
        expected = keras.tree.flatten(_inference(layer, args, kwargs))
        inputs = values[0] if len(values) == 1 else values
        got = keras.tree.flatten(_inference(model, (inputs,), {"training": False}))
    except Exception as error:
        return f"its traced graph fails on a random batch ({_first_line(error)})"
    for a, b in zip(expected, got, strict=True):
        a = keras.ops.convert_to_numpy(a).astype("float64")
        b = keras.ops.convert_to_numpy(b).astype("float64")
        scale = max(1.0, float(np.max(np.abs(a), initial=0.0)))
        if a.shape != b.shape or not np.allclose(a, b, rtol=0, atol=RTOL * scale):
            return "its traced graph computes another function than its call"
    return None


def _inference(layer, args, kwargs):
    """`layer(*args, **kwargs)` on arrays. On JAX, as one compiled program (`jax.jit` of
    `stateless_call`; eager JAX compiles each primitive for each new shape, 3-8x slower for a
    MobileNetV3 block); eagerly where that fails (a call jit cannot trace is checked as it runs)."""
    if keras.backend.backend() != "jax":
        return layer(*args, **kwargs)
    import jax

    leaves = keras.tree.flatten((args, kwargs))
    arrays = [i for i, leaf in enumerate(leaves) if isinstance(leaf, np.ndarray)]

    def run(trainable, non_trainable, values):
        filled = list(leaves)
        for i, value in zip(arrays, values, strict=True):
            filled[i] = value
        call_args, call_kwargs = keras.tree.pack_sequence_as((args, kwargs), filled)
        return layer.stateless_call(trainable, non_trainable, *call_args, **call_kwargs)[0]

    try:
        return jax.jit(run)(
            [v.value for v in layer.trainable_variables],
            [v.value for v in layer.non_trainable_variables],
            [leaves[i] for i in arrays],
        )
    except Exception:  # any user code jit cannot trace: checked eagerly instead
        return layer(*args, **kwargs)


def _random(tensor, rng):
    """Random values shaped as `tensor`: an unknown batch axis 2, other unknown axes
    `UNKNOWN_SIDE`, known axes as they are (a first axis that is not a batch, e.g.
    DINOv3's rotary position embeddings `(tokens, dim)`, included)."""
    shape = [2 if tensor.shape[0] is None else tensor.shape[0]]
    shape += [UNKNOWN_SIDE if d is None else d for d in tensor.shape[1:]]
    dtype = keras.backend.standardize_dtype(tensor.dtype)
    if "int" in dtype:
        return rng.integers(0, 2, shape).astype(dtype)
    if dtype == "bool":
        return rng.random(shape) < 0.5
    return rng.standard_normal(shape).astype(dtype)


def _first_line(error):
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:160] if text else ''}"


def opaque_warning(opaque, consequence):
    """One warning message naming the opaque custom layers and how to teach keras_topo.

    Args:
        opaque: `{layer name: (class name, reason)}`.
        consequence: what it means for the caller (e.g. "their channels are not pruned").
    """
    names = "; ".join(f"{name!r} ({cls}): {reason}" for name, (cls, reason) in opaque.items())
    return (
        f"keras_topo cannot see inside {len(opaque)} custom layer(s), {consequence}: {names}. "
        "A layer built from Keras layers and keras.ops is traced: make it so (sublayers hold "
        "every variable, no Python branching on tensor values), or teach the pruner its "
        "channels with keras_topo.pruning.register_handler; "
        "keras_topo.tracing.mark_opaque(Class) silences this warning."
    )
