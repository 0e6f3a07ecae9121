"""keras_topo.pruning with coupling="group": the channel-dependency graph and group pruning."""

import keras
import numpy as np
import pytest
from keras import ops
from subclassed_model import Subclassed
from test_pruning import randomize, resnet_like

from keras_topo import TopographicConv2D
from keras_topo.pruning import (
    Follower,
    channel_groups,
    count_params,
    prune_channels,
    register_handler,
)

ALL_CONVS = lambda layer: isinstance(layer, keras.layers.Conv2D)  # noqa: E731


def run(model, x):
    return ops.convert_to_numpy(model(x, training=False))


def sample(model, n=2, seed=1):
    shape = (n, *model.input_shape[1:])
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def assert_mask_equals_remove(model, fraction=0.5, **kwargs):
    """Removed == masked (<= 1e-4 relative), pruning changed the function, fewer params."""
    kwargs.setdefault("layers", ALL_CONVS)
    x = sample(model)
    removed = prune_channels(model, fraction, mode="remove", **kwargs)
    masked = prune_channels(model, fraction, mode="mask", **kwargs)
    got, want, unpruned = run(removed, x), run(masked, x), run(model, x)
    scale = max(1.0, np.abs(want).max())
    assert np.abs(got - want).max() <= 1e-4 * scale
    assert np.abs(want - unpruned).max() > 1e-3 * scale
    assert count_params(removed) < count_params(model)
    assert count_params(masked) == count_params(model)
    return removed


def group_of(groups, name):
    [group] = [g for g in groups if any(m.name == name and m.role == "produces" for m in g.members)]
    return group


def conv(filters, name, kernel=3, **kwargs):
    return keras.layers.Conv2D(filters, kernel, padding="same", name=name, **kwargs)


# --- hand-built models ---------------------------------------------------------------------------


def residual():
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn_a")(conv(8, "a")(inputs)))
    y = keras.layers.BatchNormalization(name="bn_b")(conv(8, "b")(x))
    x = keras.layers.Add(name="add")([x, y])
    z = conv(6, "c")(x)
    outputs = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(z))
    return randomize(keras.Model(inputs, outputs, name="residual"))


def concat_se_raw_ops():
    """Concatenation, a squeeze-and-excitation multiply, raw keras.ops (hard swish), Flatten."""
    inputs = keras.Input((6, 6, 2))
    a = conv(4, "a")(inputs)
    b = conv(6, "b")(inputs)
    x = keras.layers.Concatenate(name="cat")([a, b])
    x = x * keras.layers.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)  # MobileNetV3's hard swish
    s = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    s = conv(3, "se_reduce", kernel=1, activation="relu")(s)
    s = conv(10, "se_expand", kernel=1, activation="sigmoid")(s)
    x = keras.layers.Multiply(name="se_mul")([x, s])
    x = ops.maximum(x, 0.0)
    x = keras.layers.Flatten()(keras.layers.MaxPooling2D(3)(x))
    return randomize(keras.Model(inputs, keras.layers.Dense(3, name="head")(x)))


def depthwise_grouped_separable():
    inputs = keras.Input((6, 6, 3))
    x = conv(4, "a")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", groups=8, name="grouped_dw")(x)
    x = keras.layers.SeparableConv2D(5, 3, padding="same", depth_multiplier=2, name="sep")(x)
    x = keras.layers.PReLU(name="prelu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return randomize(keras.Model(inputs, keras.layers.Dense(2, name="head")(x)))


def nested():
    base = keras.Sequential(
        [keras.Input((6, 6, 3)), conv(6, "base_a"), keras.layers.ReLU(), conv(8, "base_b")],
        name="base",
    )
    x = keras.Input((6, 6, 3))
    inner = keras.Model(x, keras.layers.ReLU()(base(x)), name="backbone")
    model = keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            inner,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, name="head"),
        ]
    )
    return randomize(model)


def shared_layer():
    inputs = keras.Input((6, 6, 3))
    x = conv(6, "a")(inputs)
    shared = conv(6, "shared")
    y1 = shared(keras.layers.ReLU()(x))
    y2 = shared(keras.layers.ReLU()(y1))
    x = keras.layers.Add()([y1, y2])
    return randomize(keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x))))


def test_residual_group_couples_both_producers_and_the_consumer():
    groups = channel_groups(residual())
    group = group_of(groups, "a")
    assert group is group_of(groups, "b") and group.size == 8 and group.prunable
    roles = {m.name: m.role for m in group.members}
    assert roles["a"] == roles["b"] == "produces"
    assert roles["bn_a"] == roles["add"] == "passes" and roles["c"] == "reads"
    assert group_of(groups, "c").prunable and group_of(groups, "head").blocked == ["model output"]
    assert "group" in str(groups) and "bn_b (passes)" in str(groups)


def test_concat_se_and_raw_ops_are_one_traceable_graph():
    model = concat_se_raw_ops()
    groups = channel_groups(model)
    a, b = (group_of(groups, n) for n in ("a", "b"))
    assert (a.size, b.size) == (4, 6) and a is not b
    # the concatenation (4 + 6) meets the SE scale (one 10-channel space): the scale's space
    # is cut at the concatenation's offset, its two parts couple with a and b
    assert [g for g in groups if "se_expand" in [m.name for m in g.members]][:2] == [a, b]
    assert a.prunable and b.prunable and group_of(groups, "se_reduce").prunable
    removed = assert_mask_equals_remove(model)
    widths = [removed.get_layer(n).filters for n in ("a", "b", "se_reduce", "se_expand")]
    assert widths == [2, 3, 1, 2 + 3]


def test_se_scale_couples_with_the_scaled_tensor():
    inputs = keras.Input((6, 6, 2))
    x = conv(8, "a")(inputs)
    s = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    s = conv(8, "se", kernel=1, activation="sigmoid")(conv(2, "r", kernel=1)(s))
    x = ops.multiply(x, s)  # a raw op: (B, 6, 6, 8) * (B, 1, 1, 8)
    x = conv(4, "c")(x + 1.0)
    model = randomize(keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x))))
    groups = channel_groups(model)
    assert group_of(groups, "a") is group_of(groups, "se")
    removed = assert_mask_equals_remove(model)
    assert [removed.get_layer(n).filters for n in ("a", "se", "r", "c")] == [4, 4, 1, 2]


def test_depthwise_grouped_and_separable_follow_their_inputs():
    model = depthwise_grouped_separable()
    groups = channel_groups(model)
    assert group_of(groups, "a").size == 4
    assert {m.name for m in group_of(groups, "a").members} >= {"dw", "bn", "grouped_dw", "sep"}
    removed = assert_mask_equals_remove(model, layers=lambda layer: layer.name in ("a", "sep"))
    assert removed.get_layer("a").filters == 2
    assert removed.get_layer("dw").depth_multiplier == 2
    assert removed.get_layer("grouped_dw").groups == removed.get_layer("grouped_dw").filters == 4
    assert removed.get_layer("sep").filters == 3  # its own group (5 -> round(2.5) = 2 pruned)
    assert removed.get_layer("prelu").alpha.shape[-1] == 3


def test_grouped_conv_with_groups_below_channels_is_left_whole():
    inputs = keras.Input((6, 6, 3))
    x = conv(8, "a")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", groups=2, name="g2")(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    with pytest.warns(UserWarning, match="grouped conv 'g2'"):
        removed = prune_channels(model, 0.5, layers=["a"])
    assert removed.get_layer("a").filters == 8
    with pytest.warns(UserWarning, match="'g2' makes no channels of its own"):
        prune_channels(model, 0.5, layers=["g2"])


def test_nested_models_are_inlined_and_selectable():
    model = nested()
    groups = channel_groups(model)
    assert any(m.name == "head" for m in group_of(groups, "base_b").members)
    removed = assert_mask_equals_remove(model)
    assert [removed.get_layer(n).filters for n in ("base_a", "base_b")] == [3, 4]
    assert removed.get_layer("head").kernel.shape == (4, 2)
    only_inner = prune_channels(model, 0.5, layers=["base_b"])
    assert only_inner.get_layer("base_a").filters == 6


def test_shared_layer_stays_one_layer():
    model = shared_layer()
    groups = channel_groups(model)
    assert group_of(groups, "a") is group_of(groups, "shared")
    removed = assert_mask_equals_remove(model)
    shared = [layer for layer in removed.layers if layer.name.startswith("shared")]
    assert len(shared) == 1 and len(shared[0]._inbound_nodes) == 2
    assert shared[0].filters == 3


def test_shared_layer_in_expand_coupling_stays_shared_or_refuses():
    model = shared_layer()
    kept = prune_channels(model, 0.0, layers=["a"], coupling="expand", mode="remove")
    assert len([layer for layer in kept.layers if layer.name.startswith("shared")]) == 1
    with pytest.raises(ValueError, match="'shared' is called more than once"):
        prune_channels(model, 0.5, layers=["a"], coupling="expand", mode="remove")


# --- which channels go -------------------------------------------------------------------------


def test_group_importance_is_sum_of_mean_normalised_member_norms():
    model = residual()
    chosen = {}

    def record(group):
        chosen["size"] = group.size
        return np.arange(group.size, dtype="float64")[::-1]  # the last channels score lowest

    removed = prune_channels(model, 0.5, criterion=record, layers=["a"])
    keep = np.arange(4)
    a, b = (ops.convert_to_numpy(model.get_layer(n).kernel) for n in ("a", "b"))
    np.testing.assert_array_equal(ops.convert_to_numpy(removed.get_layer("a").kernel), a[..., keep])
    got_b = ops.convert_to_numpy(removed.get_layer("b").kernel)
    np.testing.assert_array_equal(got_b, b[:, :, keep][..., keep])  # reads and writes the group
    assert chosen["size"] == 8
    c = ops.convert_to_numpy(model.get_layer("c").kernel)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(removed.get_layer("c").kernel), c[:, :, keep]
    )
    gamma = ops.convert_to_numpy(model.get_layer("bn_b").gamma)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(removed.get_layer("bn_b").gamma), gamma[keep]
    )

    # "l2": numpy oracle of the documented rule (biases and betas excluded)
    def norms(w, axis):
        w = np.moveaxis(w, axis, 0).reshape(8, -1)
        n = np.sqrt((w**2).sum(1))
        return n / n.mean()

    w = {n: ops.convert_to_numpy(v) for n, v in _named_weights(model).items()}
    score = (
        norms(w["a/kernel"], -1)
        + norms(w["b/kernel"], -2)
        + norms(w["b/kernel"], -1)
        + norms(w["bn_a/gamma"], 0)
        + norms(w["bn_b/gamma"], 0)
        + norms(w["c/kernel"], -2)
    )
    expected = np.sort(np.argsort(score, kind="stable")[4:])
    l2 = prune_channels(model, 0.5, layers=["a"], mode="mask")
    zeroed = np.all(ops.convert_to_numpy(l2.get_layer("a").kernel) == 0, axis=(0, 1, 2))
    np.testing.assert_array_equal(np.flatnonzero(~zeroed), expected)


def _named_weights(model):
    return {f"{layer.name}/{v.name}": v for layer in model.layers for v in layer.weights}


def test_bn_scale_keeps_largest_gammas_and_mask_zeroes_every_member():
    model = residual()
    gammas = [np.abs(ops.convert_to_numpy(model.get_layer(n).gamma)) for n in ("bn_a", "bn_b")]
    gamma = sum(g / g.mean() for g in gammas)
    masked = prune_channels(model, 0.25, criterion="bn_scale", layers=["b"], mode="mask")
    w = {k: ops.convert_to_numpy(v) for k, v in _named_weights(masked).items()}
    for key, axis in (("a/kernel", 3), ("b/kernel", 3), ("bn_a/gamma", 0)):
        dead = np.all(np.moveaxis(w[key], axis, 0).reshape(8, -1) == 0, axis=1)
        assert dead.sum() == 2, key
    assert np.all(w["bn_b/beta"][dead] == 0) and np.all(w["c/kernel"][:, :, dead] == 0)
    assert np.all(w["b/kernel"][:, :, dead] == 0)  # b also reads the group
    np.testing.assert_array_equal(np.flatnonzero(dead), np.sort(np.argsort(gamma)[:2]))


def test_global_scope_and_round_to():
    model = depthwise_grouped_separable()
    layers = lambda layer: layer.name in ("a", "sep")  # noqa: E731
    removed = prune_channels(model, 0.5, layers=layers, scope="global", round_to=2)
    kept = [removed.get_layer("a").filters, removed.get_layer("sep").filters]
    assert all(k % 2 == 0 and k >= 2 for k in kept)
    assert sum(kept) < 9
    expand = prune_channels(residual(), 0.5, layers=["a", "c"], coupling="expand", scope="global")
    assert expand.get_layer("a").filters + expand.get_layer("c").filters == 7  # 14 - 7


def test_topographic_layers_keep_their_positions_and_default_selection():
    model = resnet_like()
    removed = assert_mask_equals_remove(model, 0.5, layers=None)
    for name in ("stem", "b1_conv2", "b2_conv2"):
        original, layer = model.get_layer(name), removed.get_layer(name)
        assert isinstance(layer, TopographicConv2D) and layer.filters < original.filters
        matches = (layer.positions[:, None, :] == original.positions[None, :, :]).all(-1)
        assert matches.sum() == layer.filters and (matches.sum(1) == 1).all()
    # the stem's group runs through the first residual sum: b1_conv1 reads it, b1_conv2 writes it
    assert removed.get_layer("b1_conv2").filters == removed.get_layer("stem").filters


# --- saving, training ----------------------------------------------------------------------------


def test_keras_file_round_trip_and_training_step(tmp_path):
    model = concat_se_raw_ops()
    removed = prune_channels(model, 0.5, layers=["se_reduce"])
    path = tmp_path / "pruned.keras"
    removed.save(path)
    loaded = keras.saving.load_model(path)
    x = sample(model, 4)
    np.testing.assert_allclose(run(loaded, x), run(removed, x), atol=1e-6)
    loaded.compile(optimizer="sgd", loss="mse")
    assert loaded.get_layer("se_reduce").kernel.shape[-1] == 1  # 3 -> round(1.5) = 2 pruned
    before = ops.convert_to_numpy(loaded.get_layer("head").kernel).copy()
    history = loaded.fit(x, np.zeros((4, 3), "float32"), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.array_equal(before, ops.convert_to_numpy(loaded.get_layer("head").kernel))


def test_report_lists_groups_and_costs():
    model = residual()
    removed, report = prune_channels(model, 0.5, layers=ALL_CONVS, report=True)
    text = str(report)
    assert "group" in text and "params" in text and "MACs" in text
    assert [(g.before, g.after) for g in report.groups] == [(8, 4), (6, 3)]
    assert report.cost["params_b"] == count_params(removed)
    assert report.measure_latency(batch_size=2, repeats=1)["latency_a"] > 0


# --- custom layers and bad input -----------------------------------------------------------------


@keras.saving.register_keras_serializable(package="keras_topo_tests")
class ChannelScale(keras.layers.Layer):
    """A per-channel scale the pruner does not know (until taught)."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        return x * self.scale


def custom_model():
    inputs = keras.Input((6, 6, 3))
    x = ChannelScale(name="scale")(conv(6, "a")(inputs))
    return randomize(keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x))))


def test_unknown_layer_blocks_its_group_with_a_warning_then_a_handler_teaches_it():
    model = custom_model()
    model.get_layer("scale").scale.assign(np.linspace(0.5, 2.0, 6))
    with pytest.warns(UserWarning, match="unknown operation 'scale'"):
        untouched = prune_channels(model, 0.5, layers=["a"])
    assert untouched.get_layer("a").filters == 6
    register_handler(ChannelScale, Follower(weights=("scale",)))
    removed = assert_mask_equals_remove(model, layers=["a"])
    assert removed.get_layer("scale").scale.shape == (3,)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"layers": lambda layer: False}, "selected no"),
        ({"layers": None}, "layers=None prunes the model's topographic layers"),
        ({"coupling": "tight"}, "coupling"),
        ({"scope": "model"}, "scope"),
        ({"round_to": 0}, "round_to"),
        ({"criterion": "l3"}, "criterion"),
        ({"criterion": lambda group: np.zeros(2)}, "must return 8 finite scores"),
    ],
)
def test_bad_input_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        prune_channels(residual(), 0.5, **{"layers": ["a"], **kwargs})


def test_fraction_leaving_a_group_empty_warns_and_keeps_one():
    inputs = keras.Input((4, 4, 1))
    x = conv(2, "tiny")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(x)))
    with pytest.warns(UserWarning, match=r"would prune all 2 channels of group \d+ \(tiny\)"):
        removed = prune_channels(model, 0.9, layers=["tiny"])
    assert removed.get_layer("tiny").filters == 1


def test_subclassed_model_raises_and_input_model_is_never_modified():
    model = Subclassed()
    model(np.zeros((1, 5, 5, 1), "float32"))
    with pytest.raises(ValueError, match="subclassed"):
        prune_channels(model, 0.5, layers=lambda layer: True)
    model = concat_se_raw_ops()
    before = [w.copy() for w in model.get_weights()]
    names = [layer.name for layer in model.layers]
    prune_channels(model, 0.5, layers=ALL_CONVS, mode="mask")
    prune_channels(model, 0.5, layers=ALL_CONVS)
    assert [layer.name for layer in model.layers] == names
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
