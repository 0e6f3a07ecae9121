"""The channel-dependency graph of a Keras 3 functional or Sequential model.

Every tensor's last axis (its channels) is described by a layout: a tuple of `Block`s, each a
run of channels of one *channel space*. Producers (convs, dense layers) create spaces; per-channel
layers pass them on; `Add` & co merge the spaces of their inputs (union-find); `Concatenate`
puts layouts side by side; a split or channel slice (`keras.ops.split`, `x[..., a:b]`) cuts
the spaces it crosses into sub-spaces at its bounds (every space of the group alike), and so does
a merge of layouts cut at different places. The merged spaces are the *groups*: channel `c` of a group is
pruned from every producer, per-channel layer and consumer of all its spaces at once (the idea
of Torch-Pruning's DepGraph, Fang et al., CVPR 2023; written here for Keras' functional graph).

Nested models and custom layers (any depth) are inlined, the latter through their traced views
(`keras_topo.tracing`): the graph is that of the flat model the pruner rebuilds. A custom layer
that cannot be traced stays one unknown operation (one warning names them all).
A group touched by an operation the pruner does not understand, a model input or a model output
is *blocked*: never pruned.
"""

import collections
import dataclasses
import warnings

import keras
import numpy as np
from keras.src.models.functional import Functional

from keras_topo.pruning.handlers import Block, ChannelHandler, get_handler, layer_weights
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


ROLES = ("produces", "passes", "reads")
INNER = "inner"  # `op_spaces` index of an op's inner channel space (`ChannelGraph.inner_space`)


@dataclasses.dataclass
class Member:
    """An operation whose weights or tensors carry a group's channels."""

    name: str
    role: str  # "produces", "passes" (per-channel / merge) or "reads" (consumer)


class ChannelGroup:
    """Channels that must be pruned together: `size` channels shared by its `members`.

    Attributes:
        index: the group's number in `channel_groups(model)`.
        size: number of channels.
        members: `Member`s in model order.
        blocked: reasons why the group cannot be pruned (empty if it can).
        entries: `(layer, variable name, axis, layout)` weight slices indexed by the channels.
    """

    def __init__(self, index, size):
        self.index = index
        self.size = size
        self.members = []
        self.blocked = []
        self.entries = []
        self.spaces = []

    @property
    def prunable(self):
        return not self.blocked

    def __repr__(self):
        names = ", ".join(f"{m.name} ({m.role})" for m in self.members)
        state = "prunable" if self.prunable else "blocked: " + "; ".join(self.blocked)
        return f"group {self.index}: {self.size} channels, {state} | {names}"


class ChannelGroups(list):
    """The list of `ChannelGroup`s of a model; prints one line per group."""

    def __str__(self):
        return "\n".join(repr(group) for group in self)


class InlinedGraph:
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
        without a registered handler its traced view (`keras_topo.tracing`), else None."""
        if isinstance(op, (Functional, keras.Sequential)):
            return op
        if not is_custom(op) or type(get_handler(op)) is not ChannelHandler:
            return None
        view = traced_view(op, node.arguments)
        if not view and not marked_opaque(op) and (op._layers or not op.weights):
            # (a leaf layer with weights of its own is the handlers' case: prune warns)
            self.opaque[op.name] = (type(op).__name__, view.reason)
        return view.model

    def unique_names(self):
        """`{id(op): name}` for every layer of the inlined graph: its own name where no other
        layer has it, else its `Call.path` with "/" as "_" (keras-hub names a dense layer of
        every transformer block `dense_1`: "vit_encoder_transformer_block_1_mlp_dense_1")."""
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


class ChannelGraph(InlinedGraph):
    """The inlined call graph of a model and the channel layout of every tensor."""

    def __init__(self, model):
        super().__init__(model)
        self.parent = []  # union-find over spaces
        self.sizes = []
        self.space_members = []
        self.space_blocked = []
        self.space_entries = []
        self.children = {}  # a space cut into sub-spaces -> (head, tail)
        self.layouts = {}
        self.op_spaces = {}  # (id(op), output index) -> space, shared by all calls of op
        self.first_inputs = {}  # id(op) -> input layouts of its first call
        self.arguments = []
        self.call = None
        self.untraced = set()  # id(call) of calls whose channels the handlers do not follow
        self._trace()

    # --- channel spaces ---------------------------------------------------------------------

    def new_space(self, size):
        """A new channel space of `size` channels; `size=None` (a last axis the symbolic graph
        leaves unknown, e.g. an attention mask's token axis) makes an empty, blocked space."""
        self.parent.append(len(self.parent))
        self.sizes.append(0 if size is None else int(size))
        self.space_members.append([])
        self.space_blocked.append([] if size is not None else ["its channel count is unknown"])
        self.space_entries.append([])
        return (Block(len(self.parent) - 1),)

    def find(self, space):
        while self.parent[space] != space:
            self.parent[space] = self.parent[self.parent[space]]
            space = self.parent[space]
        return space

    def output_space(self, op, size, index=0):
        """The layout of a new channel space made by `op` (the same one at every call)."""
        key = (id(op), index)
        if key not in self.op_spaces:
            self.op_spaces[key] = self.new_space(size)
        return self.resolve(self.op_spaces[key])

    def inner_space(self, op, size):
        """The layout of a channel space inside `op` that no tensor carries (attention heads):
        it indexes some of op's weights; its handler's `weight_axes` and `config` see it after
        the outputs' layouts, and selecting op in `layers=` prunes it (`selected_layout`)."""
        return self.output_space(op, size, index=INNER)

    def inner_layouts(self, op):
        """`[layout of op's inner space]`, or `[]` when it has none."""
        key = (id(op), INNER)
        return [self.resolve(self.op_spaces[key])] if key in self.op_spaces else []

    def selected_layout(self, op):
        """The channels that selecting `op` in `layers=` prunes: its inner space if it has one,
        else the space its first output makes (`()` when it makes none)."""
        return (self.inner_layouts(op) or [self.op_spaces.get((id(op), 0), ())])[0]

    def merge(self, layouts, name):
        """Couples layouts of equal width channel by channel; returns the merged layout.

        Layouts are first cut at each other's block bounds (a concatenation added to a conv
        output cuts the conv's space); where a cut falls inside a depthwise conv's channel
        block (`inner > 1`) or the blocks still differ, their spaces are blocked instead."""
        bounds = sorted({b for layout in layouts for b in self._bounds(layout)})
        cut = [self._cut(layout, bounds) for layout in layouts]
        first = cut[0]
        if any(
            lay is None
            or len(lay) != len(first)
            or any(
                self.sizes[self.find(a.space)] != self.sizes[self.find(b.space)]
                or a.inner != b.inner
                for a, b in zip(lay, first, strict=True)
            )
            for lay in cut
        ):
            self.block(layouts, f"{name!r} merges tensors of different channel structure")
            self.untraced.add(id(self.call))
            return self.resolve(layouts[0])
        for lay in cut[1:]:
            for a, b in zip(lay, first, strict=True):
                self._union(a.space, b.space)
        return self.resolve(first)

    def channel_range(self, layout, start, stop):
        """The layout of channels `[start, stop)` of a tensor of `layout` (spaces cut at the
        bounds), or None when a bound falls inside a depthwise conv's channel block."""
        layout = self._cut(layout, [start, stop])
        if layout is None:
            return None
        part, offset = [], 0
        for block in layout:
            width = self.sizes[self.find(block.space)] * block.inner
            if start <= offset and offset + width <= stop:
                part.append(block)
            offset += width
        return tuple(part)

    def resolve(self, layout):
        """`layout` with every cut space replaced by its sub-spaces."""
        if layout is None:
            return None
        out = []
        for block in layout:
            root = self.find(block.space)
            if root in self.children:
                out.extend(self.resolve(tuple(Block(c, block.inner) for c in self.children[root])))
            else:
                out.append(block)
        return tuple(out)

    def _bounds(self, layout):
        offsets = np.cumsum([0] + [self.sizes[self.find(b.space)] * b.inner for b in layout])
        return [int(o) for o in offsets]

    def _cut(self, layout, bounds):
        """`layout` resolved with its spaces cut at the channel positions `bounds`; None when
        a bound falls inside a block's inner channels."""
        layout = self.resolve(layout)
        for bound in bounds:
            offset = 0
            for block in layout:
                width = self.sizes[self.find(block.space)] * block.inner
                if offset < bound < offset + width:
                    if (bound - offset) % block.inner:
                        return None
                    self._split_space(self.find(block.space), (bound - offset) // block.inner)
                    layout = self.resolve(layout)
                    break
                offset += width
        return layout

    def _split_space(self, root, head):
        """Cuts root space `root` into sub-spaces of `head` and `size - head` channels; they
        inherit its members, blocking reasons and weight entries (whose layouts resolve)."""
        parts = []
        for size in (head, self.sizes[root] - head):
            (block,) = self.new_space(size)
            self.space_members[block.space] = list(self.space_members[root])
            self.space_blocked[block.space] = list(self.space_blocked[root])
            self.space_entries[block.space] = list(self.space_entries[root])
            parts.append(block.space)
        for table in (self.space_members, self.space_blocked, self.space_entries):
            table[root] = []
        self.children[root] = tuple(parts)

    def _union(self, a, b):
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        self.parent[a] = b
        for table in (self.space_members, self.space_blocked, self.space_entries):
            table[b].extend(table[a])
            table[a] = []

    def block(self, layouts, reason):
        for layout in layouts:
            for block in self.resolve(layout) or ():
                reasons = self.space_blocked[self.find(block.space)]
                if reason not in reasons:
                    reasons.append(reason)

    def width(self, layout):
        return sum(self.sizes[self.find(b.space)] * b.inner for b in layout)

    # --- tracing ----------------------------------------------------------------------------

    def _trace(self):
        for key in self.inputs:
            self.layouts[key] = self.new_space(self.shapes[key].shape[-1])
            self.block([self.layouts[key]], "model input")
        for call in self.calls:
            self._trace_call(call)
        for key in self.outputs:
            self.block([self.layouts[key]], "model output")
        self._resolve_all()

    def _resolve_all(self):
        """Rewrites every stored layout over uncut spaces only."""
        for key, layout in self.layouts.items():
            self.layouts[key] = self.resolve(layout)
        for key, layout in self.op_spaces.items():
            self.op_spaces[key] = self.resolve(layout)
        for entries in self.space_entries:
            entries[:] = [(op, n, axis, self.resolve(lay)) for op, n, axis, lay in entries]

    def _trace_call(self, call):
        op, handler = call.op, get_handler(call.op)
        in_layouts = [self.resolve(self.layouts[k]) for k in call.inputs]
        inputs = list(zip([self.shapes[k] for k in call.inputs], in_layouts, strict=True))
        outputs = [self.shapes[k] for k in call.outputs]
        self.call = call
        self.arguments = [
            a for a in keras.tree.flatten((call.args, call.kwargs)) if not isinstance(a, TensorKey)
        ]
        out_layouts = list(handler.trace(op, inputs, outputs, self))
        in_layouts = [self.resolve(layout) for layout in in_layouts]  # cut by the handler
        for i, (tensor, layout) in enumerate(zip(outputs, out_layouts, strict=True)):
            if layout is not None and self.width(layout) != tensor.shape[-1]:
                self.block([layout, *in_layouts], f"{op.name!r} changes the channel count")
                layout = None
            if layout is None:
                self.untraced.add(id(call))
                layout = self.new_space(tensor.shape[-1])
                self.block([layout], f"untraced output of {op.name!r}")
            out_layouts[i] = layout
            self.layouts[call.outputs[i]] = layout
        if handler.shared_state and in_layouts:
            first = self.first_inputs.setdefault(id(op), in_layouts)
            if first is not in_layouts:  # a shared layer: one copy for all its calls
                for a, b in zip(first, in_layouts, strict=True):
                    self.merge([a, b], op.name)
        self._record(op, handler, in_layouts, out_layouts)

    def _record(self, op, handler, in_layouts, out_layouts):
        in_layouts = [self.resolve(layout) for layout in in_layouts]
        out_layouts = [self.resolve(layout) for layout in out_layouts]
        inner = self.inner_layouts(op)
        made = [self.resolve(self.op_spaces.get((id(op), i), ())) for i in range(len(out_layouts))]
        produced = {self.find(b.space) for layout in made + inner for b in layout}
        ins = {self.find(b.space) for lay in in_layouts for b in lay}
        outs = {self.find(b.space) for lay in out_layouts + inner for b in lay}
        for space in ins | outs:
            if space in produced:
                role = "produces"
            else:
                role = "passes" if space in outs else "reads"
            self.space_members[space].append(Member(op.name, role))
        variables = layer_weights(op)
        for name, axes in handler.weight_axes(op, in_layouts, out_layouts + inner).items():
            for axis, layout in axes:
                if name not in variables or variables[name].shape[axis] != self.width(layout):
                    reason = f"{op.name!r}: its handler does not match its variable {name!r}"
                    self.untraced.add(id(self.call))
                    self.block([layout], reason)
                    continue
                for space in {self.find(b.space) for b in layout}:
                    self.space_entries[space].append((op, name, axis, layout))

    def kept(self, layout, kept_by_space):
        """Indices kept in a tensor of `layout`, given kept channel indices per root space."""
        parts, offset = [], 0
        for block in self.resolve(layout):
            space = self.find(block.space)
            size = self.sizes[space]
            kept = kept_by_space.get(space)
            if kept is None:
                kept = np.arange(size)
            inner = np.arange(block.inner)
            parts.append(offset + (kept[:, None] * block.inner + inner).ravel())
            offset += size * block.inner
        return np.concatenate(parts) if parts else np.zeros(0, "int64")

    def groups(self):
        """`ChannelGroups` in order of first appearance."""
        groups, by_root = ChannelGroups(), {}
        for space in range(len(self.parent)):
            root = self.find(space)
            if root in self.children:
                continue  # cut into sub-spaces: its channels are theirs
            if root not in by_root:
                by_root[root] = ChannelGroup(len(groups), self.sizes[root])
                group = by_root[root]
                seen = {}
                for member in self.space_members[root]:
                    if member.name not in seen:
                        seen[member.name] = Member(member.name, member.role)
                        group.members.append(seen[member.name])
                    elif ROLES.index(member.role) < ROLES.index(seen[member.name].role):
                        seen[member.name].role = member.role
                group.blocked = list(self.space_blocked[root])
                group.entries = list(self.space_entries[root])
                groups.append(group)
            by_root[root].spaces.append(space)
        return groups

    def root(self, group):
        return self.find(group.spaces[0])


def channel_groups(model):
    """The coupled channel groups of a functional or Sequential `model` (nested models inlined).

    Returns:
        `ChannelGroups`: a list of `ChannelGroup` (size, members with their role, why it is
        blocked if it is), printable one line per group.
    """
    return ChannelGraph(model).groups()


def _key(scope, tensor):
    return TensorKey("/".join(map(str, (*scope, id(tensor)))))
