"""Structured pruning of transformer blocks: attention heads, MLP units, residual width."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_topo.pruning import channel_groups, count_macs, prune_channels
from keras_topo.pruning.graph import ChannelGraph
from keras_topo.pruning.importance import group_scores

TOKENS, WIDTH, HEADS, HIDDEN = 16, 32, 4, 64
ATTENTION = (keras.layers.MultiHeadAttention, keras.layers.GroupQueryAttention)
FAST = {"kernel_initializer": "zeros"}  # weights are drawn in numpy: no JAX init compilations
HEADS_AND_MLP = lambda layer: isinstance(layer, ATTENTION) or layer.name.startswith("fc1")  # noqa: E731


def vit_like(blocks=2, attention=None, norm=True):
    """A ViT-like model: (B, 16, 12) patches -> Dense embedding (32) -> pre-norm blocks of
    attention (4 heads) and a GELU MLP (64 units), each added to the residual -> pooled logits;
    random weights (non-zero biases, O(1) activations)."""
    attention = attention or (
        lambda b: keras.layers.MultiHeadAttention(HEADS, 8, name=f"mha{b}", **FAST)
    )
    norm_layer = keras.layers.LayerNormalization if norm else keras.layers.Identity
    x = keras.Input((TOKENS, 12))
    h = keras.layers.Dense(WIDTH, name="embed", **FAST)(x)
    for b in range(blocks):
        y = norm_layer(name=f"ln{b}a")(h)
        h = keras.layers.Add()([h, attention(b)(y, y)])
        y = norm_layer(name=f"ln{b}b")(h)
        y = keras.layers.Dense(HIDDEN, activation="gelu", name=f"fc1_{b}", **FAST)(y)
        h = keras.layers.Add()([h, keras.layers.Dense(WIDTH, name=f"fc2_{b}", **FAST)(y)])
    pooled = keras.layers.GlobalAveragePooling1D()(norm_layer(name="ln")(h))
    model = keras.Model(x, keras.layers.Dense(10, name="head", **FAST)(pooled))
    rng = np.random.default_rng(0)
    for weight in model.weights:
        fan_in = weight.shape[0] if len(weight.shape) > 1 else 1
        weight.assign(rng.normal(0.0, fan_in**-0.5, weight.shape).astype("float32"))
    return model


def run(model, x):
    return ops.convert_to_numpy(model(x, training=False))


def sample(n=2):
    return np.random.default_rng(1).normal(size=(n, TOKENS, 12)).astype("float32")


def numpy_weights(layer):
    return {"/".join(v.path.split("/")[-2:]): ops.convert_to_numpy(v) for v in layer.weights}


def head_scores_oracle(layer):
    """l2 per head: each kernel's per-head norm over its mean, summed (biases excluded)."""
    w = numpy_weights(layer)
    slices = [w[f"{n}/kernel"].transpose(1, 0, 2) for n in ("query", "key", "value")]
    slices.append(w["attention_output/kernel"])
    total = 0
    for rows in slices:
        norm = np.sqrt((rows.reshape(rows.shape[0], -1) ** 2).sum(axis=1))
        total = total + norm / norm.mean()
    return total


@pytest.mark.slow  # backend-agnostic graph logic: TensorFlow pass only
def test_heads_are_an_inner_group_of_their_layer():
    groups = channel_groups(vit_like())
    heads = [g for g in groups if g.size == HEADS]
    assert len(heads) == 2
    for b, group in enumerate(heads):
        assert group.prunable
        assert [(m.name, m.role) for m in group.members] == [(f"mha{b}", "produces")]
        names = {(name, axis) for _, name, axis, _ in group.entries}
        assert names == {
            ("query/kernel", 1), ("key/kernel", 1), ("value/kernel", 1),
            ("query/bias", 0), ("key/bias", 0), ("value/bias", 0), ("attention_output/kernel", 0),
        }  # fmt: skip


def test_heads_and_mlp_units_remove_equals_mask():
    model, x = vit_like(), sample()
    removed = prune_channels(model, 0.5, layers=HEADS_AND_MLP)
    masked = prune_channels(model, 0.5, layers=HEADS_AND_MLP, mode="mask")
    got, want = run(removed, x), run(masked, x)
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
    assert np.abs(want - run(model, x)).max() > 1e-3
    for b in range(2):
        assert removed.get_layer(f"mha{b}").get_config()["num_heads"] == HEADS // 2
        assert removed.get_layer(f"fc1_{b}").units == HIDDEN // 2
        assert removed.get_layer(f"fc2_{b}").kernel.shape == (HIDDEN // 2, WIDTH)
    assert removed.get_layer("embed").units == WIDTH  # the residual width only when asked


def test_kept_heads_keep_their_weights_chosen_by_the_numpy_oracle():
    model = vit_like()
    pruned = prune_channels(model, 0.5, layers=["mha0"])
    layer = model.get_layer("mha0")
    kept = np.sort(np.argsort(head_scores_oracle(layer), kind="stable")[2:])
    old, new = numpy_weights(layer), numpy_weights(pruned.get_layer("mha0"))
    for name in ("query", "key", "value"):
        np.testing.assert_array_equal(new[f"{name}/kernel"], old[f"{name}/kernel"][:, kept])
        np.testing.assert_array_equal(new[f"{name}/bias"], old[f"{name}/bias"][kept])
    np.testing.assert_array_equal(
        new["attention_output/kernel"], old["attention_output/kernel"][kept]
    )
    np.testing.assert_array_equal(new["attention_output/bias"], old["attention_output/bias"])


@pytest.mark.slow  # backend-agnostic graph logic: TensorFlow pass only
def test_head_scores_match_numpy_oracle():
    model = vit_like()
    graph = ChannelGraph(model)
    layer = model.get_layer("mha1")
    (block,) = graph.selected_layout(layer)
    group = next(g for g in graph.groups() if graph.root(g) == graph.find(block.space))
    got = group_scores(graph, group, "l2", np.random.default_rng(0))
    np.testing.assert_allclose(got, head_scores_oracle(layer), rtol=1e-6)


@pytest.mark.slow  # backend-agnostic graph logic: TensorFlow pass only
def test_global_scope_and_round_to():
    model = vit_like()
    pruned = prune_channels(model, 0.5, layers=HEADS_AND_MLP, scope="global")
    scores = []  # (normalised score, group): heads and MLP units of both blocks together
    for b in range(2):
        heads = head_scores_oracle(model.get_layer(f"mha{b}"))
        fc1, fc2 = (ops.convert_to_numpy(model.get_layer(f"fc{i}_{b}").kernel) for i in (1, 2))
        units = sum(
            n / n.mean() for n in (np.linalg.norm(fc1, axis=0), np.linalg.norm(fc2, axis=1))
        )
        scores += [(s / heads.mean(), f"mha{b}") for s in heads]
        scores += [(s / units.mean(), f"fc1_{b}") for s in units]
    pruned_names = [name for _, name in sorted(scores)[: len(scores) // 2]]
    for name, size in (("mha0", HEADS), ("mha1", HEADS), ("fc1_0", HIDDEN), ("fc1_1", HIDDEN)):
        layer = pruned.get_layer(name)
        kept = layer.get_config()["num_heads"] if name.startswith("mha") else layer.units
        assert kept == size - pruned_names.count(name)
    rounded = prune_channels(model, 0.3, layers=HEADS_AND_MLP, round_to=4)
    assert rounded.get_layer("fc1_0").units == 44  # 64 - round(19.2) = 45 -> 44
    assert rounded.get_layer("mha0").get_config()["num_heads"] == 4  # 4 - 1 = 3 -> 4


def test_grouped_query_attention_prunes_whole_key_value_groups():
    def gqa(b):
        return keras.layers.GroupQueryAttention(8, 4, 2, use_gate=True, name=f"mha{b}", **FAST)

    model, x = vit_like(attention=gqa), sample()
    removed = prune_channels(model, 0.5, layers=HEADS_AND_MLP)
    masked = prune_channels(model, 0.5, layers=HEADS_AND_MLP, mode="mask")
    got, want = run(removed, x), run(masked, x)
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
    layer = model.get_layer("mha0")
    config = removed.get_layer("mha0").get_config()
    assert (config["num_query_heads"], config["num_key_value_heads"]) == (2, 1)
    old, new = numpy_weights(layer), numpy_weights(removed.get_layer("mha0"))
    (group,) = [g for g in range(2) if np.array_equal(new["key/kernel"], old["key/kernel"][:, [g]])]
    query_heads = [2 * group, 2 * group + 1]  # key/value head g serves query heads 2g, 2g + 1
    np.testing.assert_array_equal(new["query/kernel"], old["query/kernel"][:, query_heads])
    np.testing.assert_array_equal(new["gate/kernel"], old["gate/kernel"][:, query_heads])
    np.testing.assert_array_equal(
        new["attention_output/kernel"], old["attention_output/kernel"][query_heads]
    )


def test_cross_attention_by_keywords_reads_each_input():
    query_in, context = keras.Input((TOKENS, WIDTH)), keras.Input((4, 12))
    memory = keras.layers.Dense(WIDTH, name="memory")(context)
    hidden = keras.layers.Dense(WIDTH, name="hidden")(query_in)
    attended = keras.layers.MultiHeadAttention(HEADS, 8, name="cross")(
        value=memory, key=memory, query=hidden
    )
    model = keras.Model([query_in, context], keras.layers.Dense(3)(attended))
    pruned = prune_channels(model, 0.5, layers=["memory"])
    w = numpy_weights(pruned.get_layer("cross"))
    assert w["query/kernel"].shape[0] == WIDTH
    assert w["key/kernel"].shape[0] == w["value/kernel"].shape[0] == WIDTH // 2


@pytest.mark.slow  # backend-agnostic graph logic: TensorFlow pass only
def test_residual_width_prunes_through_add_and_layer_norm():
    x = sample()
    for norm in (False, True):
        model = vit_like(norm=norm)
        removed = prune_channels(model, 0.25, layers=["embed"])
        masked = prune_channels(model, 0.25, layers=["embed"], mode="mask")
        mha = removed.get_layer("mha1")
        assert mha.get_weights()[0].shape == (24, HEADS, 8)
        assert mha.compute_output_shape((1, TOKENS, 24), (1, TOKENS, 24)) == (1, TOKENS, 24)
        assert removed.get_layer("fc1_0").kernel.shape == (24, HIDDEN)
        error = np.abs(run(removed, x) - run(masked, x)).max()
        if norm:  # layer norm's statistics span the pruned channels: remove != mask
            assert error > 1e-3
            assert removed.get_layer("ln0a").gamma.shape == (24,)
        else:
            assert error <= 1e-4


def test_a_fraction_leaving_no_head_is_refused_and_the_model_untouched():
    model = vit_like()
    before = [ops.convert_to_numpy(w).copy() for w in model.weights]
    with pytest.raises(ValueError, match="all 4 heads of layer 'mha0'"):
        prune_channels(model, 0.9, layers=["mha0"])
    for old, new in zip(before, model.weights, strict=True):
        np.testing.assert_array_equal(old, ops.convert_to_numpy(new))
    with pytest.warns(UserWarning, match="one is kept"):  # MLP units: one stays, as for convs
        assert prune_channels(model, 0.995, layers=["fc1_0"]).get_layer("fc1_0").units == 1


def test_attention_macs():
    x = keras.Input((TOKENS, WIDTH))
    y = keras.layers.MultiHeadAttention(HEADS, 8, value_dim=6, use_gate=True, **FAST)(x, x)
    projections = TOKENS * WIDTH * HEADS * (8 + 8 + 6 + 6)  # query, key, value, gate
    scores = TOKENS * TOKENS * HEADS * (8 + 6)
    assert count_macs(keras.Model(x, y)) == projections + scores + TOKENS * HEADS * 6 * WIDTH


def test_macs_of_a_model_without_a_sequence_length_need_one():
    x = keras.Input((None, WIDTH))
    y = keras.layers.MultiHeadAttention(HEADS, 8, **FAST)(x, x)
    model = keras.Model(x, keras.layers.Dense(HIDDEN)(y))
    with pytest.raises(ValueError, match="static shapes"):
        count_macs(model)
    for tokens in (TOKENS, 2 * TOKENS):  # scores grow with tokens squared
        projections = tokens * WIDTH * HEADS * 8 * 4  # query, key, value, output
        scores = tokens * tokens * HEADS * (8 + 8)
        want = projections + scores + tokens * WIDTH * HIDDEN
        assert count_macs(model, input_shape=(tokens, WIDTH)) == want
        assert count_macs(model, input_shape=[(tokens, WIDTH)]) == want
    with pytest.raises(ValueError, match="without the batch axis"):
        count_macs(model, input_shape=(1, TOKENS, WIDTH))
    with pytest.raises(ValueError, match="one per model input"):
        count_macs(model, input_shape=[(TOKENS, WIDTH)] * 2)


@pytest.mark.slow
def test_pruned_transformer_survives_keras_save(tmp_path):
    model, x = vit_like(), sample()
    pruned = prune_channels(model, 0.5, layers=HEADS_AND_MLP)
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    reloaded = keras.saving.load_model(path)
    assert reloaded.get_layer("mha0").get_config()["num_heads"] == HEADS // 2
    np.testing.assert_allclose(run(reloaded, x), run(pruned, x), atol=1e-6)
