"""The channel-dependency graph of a Keras 3 functional or Sequential model.

Every tensor's last axis (its channels) is described by a layout: a tuple of `Block`s, each a
run of channels of one *channel space*. Producers (convs, dense layers) create spaces; per-channel
layers pass them on; `Add` & co merge the spaces of their inputs (union-find); `Concatenate`
puts layouts side by side; a split or channel slice (`keras.ops.split`, `x[..., a:b]`) cuts
the spaces it crosses into sub-spaces at its bounds (every space of the group alike), and so does
a merge of layouts cut at different places. A reshape of `(..., H * D)` to `(..., H, D)` (attention
heads written in raw ops) *coarsens* the spaces of its input into units of `D` channels, one per
head, and follows the heads on their own axis through the attention's raw ops
(`keras_topo.pruning.head_axis`) until a reshape back to `(..., H * D)` returns them to the
channels. The merged spaces are the *groups*: channel `c` of a group is
pruned from every producer, per-channel layer and consumer of all its spaces at once (the idea
of Torch-Pruning's DepGraph, Fang et al., CVPR 2023; written here for Keras' functional graph).

Nested models and custom layers (any depth) are inlined (`keras_topo.call_graph`), the latter
through their traced views (`keras_topo.tracing`): the graph is that of the flat model the
pruner rebuilds. A custom layer
that cannot be traced stays one unknown operation (one warning names them all).
A group touched by an operation the pruner does not understand, a model input or a model output
is *blocked*: never pruned.
"""

import dataclasses

import keras
import numpy as np

from keras_topo.call_graph import CallGraph, TensorKey
from keras_topo.pruning.handlers import Block, ChannelHandler, get_handler, layer_weights

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


class InlinedGraph(CallGraph):
    """The call graph the pruner sees (`keras_topo.call_graph.CallGraph`): a custom layer
    with a registered handler (`keras_topo.pruning.register_handler`) stays one call."""

    def sees_into(self, op):
        return type(get_handler(op)) is ChannelHandler


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
        self.coarsened = {}  # a space pruned in units of `factor` channels -> (space, factor)
        self.heads = {}  # TensorKey -> (axis, layout) of a tensor's attention heads axis
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
        """`layout` with every cut space replaced by its sub-spaces, every coarsened one by
        its space of units."""
        if layout is None:
            return None
        out = []
        for block in layout:
            root = self.find(block.space)
            if root in self.children:
                out.extend(self.resolve(tuple(Block(c, block.inner) for c in self.children[root])))
            elif root in self.coarsened:
                space, factor = self.coarsened[root]
                out.extend(self.resolve((Block(space, block.inner * factor),)))
            else:
                out.append(block)
        return tuple(out)

    def split_heads(self, layout, head_dim):
        """The layout of the heads axis of a tensor of `layout` reshaped to `(..., H, head_dim)`,
        or None when a head's channels span two blocks. Each space is coarsened into units of
        one head's channels (`Block(unit space, head_dim)` in `layout`), so that heads prune
        whole: a head is one channel of the heads axis."""
        layout, offset, factors = self.resolve(layout), 0, {}
        for block in layout:
            width = self.sizes[self.find(block.space)] * block.inner
            if offset % head_dim or width % head_dim:
                return None
            if block.inner % head_dim and head_dim % block.inner:
                return None
            factor = max(head_dim // block.inner, 1)
            if factors.setdefault(self.find(block.space), factor) != factor:
                return None  # one space twice, at different granularities
            offset += width
        for root, factor in factors.items():
            if factor > 1:
                self._coarsen(root, factor)
        return tuple(Block(b.space, b.inner // head_dim) for b in self.resolve(layout))

    def head_roots(self):
        """The root spaces whose channels are attention heads split off by a reshape."""
        return {self.find(space) for space, _ in self.coarsened.values()}

    def is_heads(self, layout):
        """Whether every channel of `layout` is an attention head split off by a reshape."""
        heads = self.head_roots()
        return all(self.find(b.space) in heads for b in self.resolve(layout))

    def _coarsen(self, root, factor):
        """Makes root space `root` a space of `size / factor` units of `factor` channels: it
        passes on its members, blocking reasons and weight entries (whose layouts resolve)."""
        (block,) = self.new_space(self.sizes[root] // factor)
        for table in (self.space_members, self.space_blocked, self.space_entries):
            table[block.space], table[root] = table[root], []
        self.coarsened[root] = (block.space, factor)

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
            self.block([self.layouts[key], self.heads.get(key, (None, ()))[1]], "model output")
        self._resolve_all()

    def _resolve_all(self):
        """Rewrites every stored layout over uncut spaces only."""
        for key, layout in self.layouts.items():
            self.layouts[key] = self.resolve(layout)
        for key, layout in self.op_spaces.items():
            self.op_spaces[key] = self.resolve(layout)
        for key, (axis, layout) in self.heads.items():
            self.heads[key] = (axis, self.resolve(layout))
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
        self._trace_heads(call, handler, inputs, outputs)
        if handler.shared_state and in_layouts:
            first = self.first_inputs.setdefault(id(op), in_layouts)
            if first is not in_layouts:  # a shared layer: one copy for all its calls
                for a, b in zip(first, in_layouts, strict=True):
                    self.merge([a, b], op.name)
        self._record(op, handler, in_layouts, out_layouts)

    def _trace_heads(self, call, handler, inputs, outputs):
        """Follows the attention heads axis of the call's inputs (`self.heads`) to its outputs
        (`handler.head_axes`): the heads of all inputs are coupled; an operation that does not
        keep the heads apart blocks them."""
        found = [self.heads.get(key) for key in call.inputs]
        layouts = [heads[1] for heads in found if heads is not None]
        if not layouts:
            return
        axes = [None if heads is None else heads[0] for heads in found]
        out_axes = handler.head_axes(call.op, inputs, outputs, axes, self)
        if out_axes is None:
            self.block(layouts, f"{call.op.name!r} does not keep attention heads apart")
            self.untraced.add(id(call))
            return
        layout = self.merge(layouts, call.op.name) if len(layouts) > 1 else layouts[0]
        for key, axis in zip(call.outputs, out_axes, strict=True):
            if axis is not None:
                self.heads[key] = (axis, layout)

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
            self.space_members[space].append(Member(self.name_of(op), role))
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
            if root in self.children or root in self.coarsened:
                continue  # cut into sub-spaces or coarsened: its channels are theirs
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
