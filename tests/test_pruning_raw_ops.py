"""Group pruning through raw `keras.ops` in a functional graph (pad, split, channel slices,
reshape, transpose, reductions, per-channel constants) and parameter-free handlers."""

import keras
import numpy as np
from keras import ops
from test_pruning import randomize
from test_pruning_groups import assert_mask_equals_remove, conv, run, sample

from keras_topo.pruning import Follower, channel_groups, prune_channels, register_handler


def producers(group):
    return [m.name for m in group.members if m.role == "produces"]


def groups_of(model, name):
    return [g for g in channel_groups(model) if name in producers(g)]


def widths(model):
    return {
        layer.name: layer.filters
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D)
    }


def padded_stem():
    """ResNetV2's stem: `keras.ops.pad` on the spatial axes around the stem conv and pool."""
    inputs = keras.Input((8, 8, 3))
    x = ops.pad(inputs, [[0, 0], [1, 1], [1, 1], [0, 0]])
    x = keras.layers.Conv2D(8, 3, name="stem")(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn")(x))
    x = ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    x = keras.layers.MaxPooling2D(3, strides=2)(x)
    y = conv(8, "a")(x)
    x = keras.layers.Add()([x, y])
    outputs = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(x))
    return randomize(keras.Model(inputs, outputs, name="padded_stem"))


def cross_stage():
    """CSPNet's stage: `keras.ops.split` into halves, a residual block on one, concatenate."""
    inputs = keras.Input((6, 6, 3))
    x = conv(8, "stem", activation="relu")(inputs)
    head, tail = ops.split(x, 2, axis=-1)
    y = conv(4, "block", activation="relu")(tail)
    tail = tail + y
    x = ops.concatenate([head, tail], axis=-1)
    x = conv(6, "transition")(x)
    outputs = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(x))
    return randomize(keras.Model(inputs, outputs, name="cross_stage"))


def sliced_and_reshaped():
    """Channel slices, a per-channel constant, transpose, reshape and a keepdims mean."""
    inputs = keras.Input((4, 4, 2))
    x = conv(6, "a")(inputs)
    x = x * np.linspace(0.5, 2.0, 6).astype("float32") + 1.0
    left = conv(3, "left")(x[..., :2])
    right = conv(3, "right")(x[:, :, :, 2:])
    x = ops.concatenate([left, right, x[:, :4]], axis=-1)  # 12 channels
    x = ops.transpose(x, (0, 2, 1, 3))
    s = ops.mean(x, axis=(1, 2), keepdims=True)
    x = x * keras.layers.Activation("sigmoid")(s)
    x = ops.reshape(x, (-1, 16, 12))
    x = ops.expand_dims(ops.max(x, axis=1), axis=1)
    outputs = keras.layers.Dense(3, name="head")(ops.squeeze(x, axis=1))
    return randomize(keras.Model(inputs, outputs, name="sliced"))


def test_raw_pad_in_the_stem_prunes():
    model = padded_stem()
    assert all(g.prunable for g in groups_of(model, "stem"))
    removed = assert_mask_equals_remove(model)
    assert widths(removed) == {"stem": 4, "a": 4}


def test_split_halves_are_groups_of_their_own_and_concatenate_back():
    model = cross_stage()
    halves = groups_of(model, "stem")
    assert [g.size for g in halves] == [4, 4] and all(g.prunable for g in halves)
    [tail] = [g for g in halves if "block" in producers(g)]  # the residual couples the tail
    removed = assert_mask_equals_remove(model)
    assert widths(removed) == {"stem": 4, "block": 2, "transition": 3}
    # global scope may prune the halves unevenly: the split moves to the kept counts
    uneven = assert_mask_equals_remove(model, criterion="random", scope="global", seed=3)
    assert uneven.count_params() < model.count_params()


def test_split_halves_keep_the_chosen_channels_of_the_stem():
    model = cross_stage()
    kept = [0, 2, 5, 7]  # the head keeps its channels 0 and 2, the tail its 1 and 3

    def scores(group):  # the channels to keep score 1
        offset = 4 if "block" in producers(group) else 0
        return np.isin(np.arange(group.size) + offset, kept).astype("float64")

    removed = prune_channels(model, 0.5, criterion=scores, layers=["stem"])
    x = sample(model)
    want = ops.convert_to_numpy(model.get_layer("stem")(x))[..., kept]
    got = ops.convert_to_numpy(removed.get_layer("stem")(x))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    masked = prune_channels(model, 0.5, criterion=scores, layers=["stem"], mode="mask")
    np.testing.assert_allclose(run(removed, x), run(masked, x), rtol=1e-4, atol=1e-4)


def test_slices_constants_transpose_reshape_and_reductions_prune():
    model = sliced_and_reshaped()
    cut = groups_of(model, "a")  # the slices cut a's channels into [0, 2) and [2, 6)
    assert [g.size for g in cut] == [2, 4] and all(g.prunable for g in cut)
    assert [producers(g) for g in channel_groups(model) if not g.prunable] == [[], ["head"]]
    removed = assert_mask_equals_remove(model)
    assert widths(removed) == {"a": 1 + 2, "left": 1, "right": 1}  # round(1.5) = 2 pruned


class Cube(keras.Operation):
    """A parameter-free raw op the registry does not know (no `weights` attribute)."""

    def call(self, x):
        return x * x * x

    def compute_output_spec(self, x):
        return keras.KerasTensor(x.shape, x.dtype)


def test_follower_teaches_a_parameter_free_raw_op():
    inputs = keras.Input((4, 4, 2))
    x = Cube(name="cube").symbolic_call(conv(6, "a")(inputs))
    model = randomize(keras.Model(inputs, conv(3, "b")(x)))
    [group] = groups_of(model, "a")
    assert group.blocked == ["unknown operation 'cube'"]
    register_handler(Cube, Follower())
    [group] = groups_of(model, "a")
    assert group.prunable
    removed = assert_mask_equals_remove(model, layers=["a"])
    assert widths(removed) == {"a": 3, "b": 3}
