"""The call graph of a Keras 3 functional or Sequential model, nested models and traceable
custom layers inlined (any depth; `keras_topo.tracing`): the one view of a model that the
pruner (`keras_topo.pruning.graph`), the cost counts, the map metrics and the default layer
selection walk. Hand-written: Keras' own graph walk (`clone_model`) stops at custom layers.
"""

import collections
import dataclasses
import functools
import warnings

import keras
from keras.src.models.functional import Functional

from keras_topo.tracing import is_custom, marked_opaque, opaque_warning, traced_view


class TensorKey(str):
    """Names one tensor of the inlined graph (a str, so `keras.tree` treats it as a leaf)."""


@dataclasses.dataclass
class Call:
    """One call of an operation in the inlined graph; tensors are named by keys."""

    op: keras.Operation
    args: tuple  # the call's arguments with each KerasTensor replaced by its key
    kwargs: dict
    inputs: list  # keys of the tensor arguments, in `keras.tree.flatten((args, kwargs))` order
    outputs: list  # keys of the outputs
    path: str = ""  # op's name under the nested models and custom layers holding it ("a/b/op")


class CallGraph:
    """The call graph of a functional or Sequential model with nested models and traceable
    custom layers inlined (any depth; `keras_topo.tracing`): `calls` in order, tensors named
    by `TensorKey`s (`shapes`: key -> original KerasTensor), the model's `inputs` and
    `outputs` keys; `opaque`: the custom layers left as single calls, with the reason."""

    def __init__(self, model):
        self.model = model
        self.calls = []
        self.shapes = {}  # key -> KerasTensor of the original graph (shape, dtype)
        self.opaque = {}  # name -> (class name, reason) of the custom layers left untraced
        self.inputs, self.outputs = self._inline(model, None, ())
        if self.opaque:
            warnings.warn(
                opaque_warning(self.opaque, "so their channels are neither pruned nor measured"),
                stacklevel=3,
            )

    def _inline(self, model, bound, scope):
        """Appends the calls of `model` to `self.calls`; returns (input keys, output keys)."""
        functional = model._functional if isinstance(model, keras.Sequential) else model
        if not isinstance(functional, Functional):
            raise ValueError(
                f"Model {model.name!r} ({type(model).__name__}) has no functional graph to "
                "inline: a subclassed model cannot be rebuilt. Rewrite it with the functional "
                "API, or build the Sequential model with a keras.Input."
            )
        inputs = keras.tree.flatten(functional.inputs)
        keys = {}
        for i, tensor in enumerate(inputs):
            keys[id(tensor)] = bound[i] if bound else _key(scope, tensor)
            self.shapes.setdefault(keys[id(tensor)], tensor)
        for depth in sorted(functional._nodes_by_depth, reverse=True):
            for node in functional._nodes_by_depth[depth]:
                if node.operation is None or node.is_input:
                    continue
                tensors = node.arguments.keras_tensors
                if any(id(t) not in keys for t in tensors):
                    continue  # not connected to the inputs (as Functional skips it)
                in_keys = [keys[id(t)] for t in tensors]
                op = node.operation
                inner = self._inner_model(op, node)
                if inner is not None:
                    nested_scope = (*scope, op.name, len(self.calls))
                    _, out_keys = self._inline(inner, in_keys, nested_scope)
                else:
                    out_keys = [_key(scope, t) for t in node.outputs]
                    args, kwargs = node.arguments.convert(
                        lambda x: keys[id(x)] if isinstance(x, keras.KerasTensor) else x
                    )
                    path = "/".join((*scope[::2], op.name))  # scope: (name, count, ...)
                    self.calls.append(Call(op, args, kwargs, in_keys, out_keys, path))
                for tensor, key in zip(node.outputs, out_keys, strict=True):
                    keys[id(tensor)] = key
                    self.shapes.setdefault(key, tensor)
        outputs = [keys[id(t)] for t in keras.tree.flatten(functional.outputs)]
        return [keys[id(t)] for t in inputs], outputs

    def _inner_model(self, op, node):
        """The graph to inline for `op`'s call `node`: a nested model itself, a custom layer
        this graph sees into (`sees_into`) its traced view (`keras_topo.tracing`), else None."""
        if isinstance(op, (Functional, keras.Sequential)):
            return op
        if not is_custom(op) or not self.sees_into(op):
            return None
        view = traced_view(op, node.arguments)
        if not view and not marked_opaque(op) and (op._layers or not op.weights):
            # (a leaf layer with weights of its own is the handlers' case: prune warns)
            self.opaque[op.name] = (type(op).__name__, view.reason)
        return view.model

    def sees_into(self, op):
        """Whether the custom layer `op` is inlined through its traced view (else one call)."""
        return True

    def unique_names(self):
        """`{id(op): name}` for every layer of the inlined graph: its own name where no other
        layer has it, else its `Call.path` with "/" as "_" (keras-hub names a dense layer of
        every transformer block `dense_1`: "vit_encoder_transformer_block_1_mlp_dense_1").
        Computed once per graph; do not modify it."""
        return self._names

    def name_of(self, op):
        """`op`'s name in this graph: `unique_names()`'s for a layer, a raw op's own. The
        pruner's reports, histories and `coupling="expand"` keys use it."""
        return self._names.get(id(op), op.name)

    @functools.cached_property
    def _names(self):
        ops = {}
        for call in self.calls:
            if isinstance(call.op, keras.layers.Layer):
                ops.setdefault(id(call.op), call)
        counts = collections.Counter(call.op.name for call in ops.values())
        return {
            key: call.op.name if counts[call.op.name] == 1 else call.path.replace("/", "_")
            for key, call in ops.items()
        }

    def replay(self, call_fn, input_name=lambda name: name):
        """A new flat functional model: each call replaced by `call_fn(call, args, kwargs)`
        (`args`, `kwargs`: the call's arguments on the new tensors), on new `keras.Input`s
        named `input_name(original input layer name)`.

        Returns:
            `(model, tensors)`: `tensors` maps each key to its new tensor.
        """
        functional = self.model
        if isinstance(functional, keras.Sequential):
            functional = functional._functional
        tensors, inputs = {}, []
        for key in self.inputs:
            original = self.shapes[key]
            name = input_name(original._keras_history.operation.name)
            inputs.append(keras.Input(batch_shape=original.shape, dtype=original.dtype, name=name))
            tensors[key] = inputs[-1]
        for call in self.calls:
            args, kwargs = keras.tree.map_structure(
                lambda x: tensors[x] if isinstance(x, TensorKey) else x, (call.args, call.kwargs)
            )
            outputs = keras.tree.flatten(call_fn(call, args, kwargs))
            for key, tensor in zip(call.outputs, outputs, strict=True):
                tensors[key] = tensor
        model = keras.Model(
            keras.tree.pack_sequence_as(functional._inputs_struct, inputs),
            keras.tree.pack_sequence_as(
                functional._outputs_struct, [tensors[key] for key in self.outputs]
            ),
            name=self.model.name,
        )
        return model, tensors


def _key(scope, tensor):
    return TensorKey("/".join(map(str, (*scope, id(tensor)))))
