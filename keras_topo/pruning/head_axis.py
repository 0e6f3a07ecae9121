"""Attention heads written in raw `keras.ops`: where the heads axis goes, from tensor shapes.

keras-hub's MiT (SegFormer) and many hand-written transformers compute attention without
`MultiHeadAttention`: a `Dense` makes `(B, N, H * D)`, a reshape splits it into `(B, N, H, D)`,
transposes and matmuls pair head `h` of the query with head `h` of the key and of the value, and a
reshape merges `(B, N, H, D)` back into `(B, N, H * D)` for the output `Dense`. The pruner
(`keras_topo.pruning.graph`) follows such heads as a second, tracked axis of these tensors: the
split coarsens the query's (key's, value's) channel space into units of `D` channels, one per
head, each operation on the way moves or keeps the heads axis (its handler's `head_axes`, from
the functions below), the matmuls couple the heads of their inputs, and the merge puts the heads
back on the channels, where the output `Dense` reads them. Removing a head then equals masking it
(a zero query, key and value give a head that adds zero), and the reshapes' targets are narrowed
with it. An operation that would mix heads (a reduction over them, a reshape of another kind)
blocks them: they are not pruned.
"""


def head_split(in_shape, out_shape):
    """`D` when a reshape of `in_shape` to `out_shape` splits the last axis into `(H, D)` with
    `H > 1` (every other axis unchanged), else None."""
    if len(out_shape) != len(in_shape) + 1 or tuple(out_shape[:-2]) != tuple(in_shape[:-1]):
        return None
    heads, depth = out_shape[-2], out_shape[-1]
    if None in (heads, depth, in_shape[-1]) or heads < 2 or heads * depth != in_shape[-1]:
        return None
    return depth


def head_merge(in_shape, out_shape, axis):
    """`D` when a reshape of `in_shape` (heads on `axis`) to `out_shape` merges the heads
    axis, second to last, with the last axis `D` into the channels, else None."""
    if axis != len(in_shape) - 2 or len(out_shape) != len(in_shape) - 1:
        return None
    if tuple(out_shape[:-1]) != tuple(in_shape[:-2]) or None in in_shape[-2:]:
        return None
    return in_shape[-1] if out_shape[-1] == in_shape[-2] * in_shape[-1] else None


def broadcast_axis(shapes, axes, out_rank, batch_only=False):
    """The heads axis of the output of an operation broadcasting `shapes` (right-aligned,
    NumPy rules) whose `axes` give each input's heads axis (None: no heads), or None when the
    heads do not line up: inputs with heads must have them at the same place from the right,
    the others a size-1 axis or none there. `batch_only`: for a matmul, the heads must be on a
    batch axis (neither of the last two)."""
    from_right = {
        len(shape) - axis for shape, axis in zip(shapes, axes, strict=True) if axis is not None
    }
    if len(from_right) != 1:
        return None
    (offset,) = from_right
    if batch_only and offset < 3:
        return None
    for shape, axis in zip(shapes, axes, strict=True):
        if axis is None and len(shape) >= offset and shape[len(shape) - offset] != 1:
            return None
    return out_rank - offset


def reduced_axis(axis, rank, reduced, keepdims=False):
    """The heads axis after reducing (or squeezing) `reduced` axes of a rank-`rank` tensor, or
    None when the heads are among them (or `reduced` is None: every axis)."""
    if reduced is None:
        return None
    reduced = {a % rank for a in (reduced if isinstance(reduced, (list, tuple)) else (reduced,))}
    if axis in reduced:
        return None
    return axis if keepdims else axis - sum(a < axis for a in reduced)


def expanded_axis(axis, out_rank, new):
    """The heads axis after `expand_dims` inserts the axes `new` (positions in the output)."""
    new = sorted(a % out_rank for a in (new if isinstance(new, (list, tuple)) else (new,)))
    for position in new:
        if position <= axis:
            axis += 1
    return axis
