"""Attention written in raw `keras.ops` (keras-hub's MiT, hand-written transformers): heads split
off a Dense's channels by a reshape prune whole, coupled across query, key and value
(`keras_topo.pruning.head_axis`)."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_topo.pruning import (
    PruningHistory,
    channel_groups,
    count_macs,
    head_layers,
    prune_channels,
    replay,
)
from keras_topo.pruning.history import LayerPruning

TOKENS, WIDTH, HEADS = 5, 12, 3
DEPTH = WIDTH // HEADS


def raw_attention(reshape_layer=False, mix_heads=False):
    """One pre-norm-free attention block as MiT writes it: q, k, v Dense, a reshape to
    `(B, N, H, D)`, transposes, matmuls, softmax, a reshape back, the output Dense `proj`."""
    inputs = keras.Input((TOKENS, WIDTH))

    def split(t):
        if reshape_layer:
            t = keras.layers.Reshape((TOKENS, HEADS, DEPTH))(t)
        else:
            t = ops.reshape(t, (-1, TOKENS, HEADS, DEPTH))
        return ops.transpose(t, (0, 2, 1, 3))  # (B, H, N, D)

    q, k, v = (keras.layers.Dense(WIDTH, name=n)(inputs) for n in "qkv")
    scores = ops.matmul(split(q), ops.transpose(split(k), (0, 1, 3, 2))) * DEPTH**-0.5
    attention = keras.layers.Dropout(0.1)(ops.softmax(scores, axis=-1))
    heads = ops.matmul(attention, split(v))
    if mix_heads:  # a sum over the heads axis: heads no longer apart
        heads = heads + ops.sum(heads, axis=1, keepdims=True)
    merged = ops.reshape(ops.transpose(heads, (0, 2, 1, 3)), (-1, TOKENS, WIDTH))
    outputs = keras.layers.Add()([inputs, keras.layers.Dense(WIDTH, name="proj")(merged)])
    model = keras.Model(inputs, keras.layers.Dense(4, name="logits")(outputs))
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            layer.kernel.assign(rng.normal(0, WIDTH**-0.5, layer.kernel.shape))
            layer.bias.assign(rng.normal(0, 0.1, layer.bias.shape))
    return model


def sample(n=2):
    return np.random.default_rng(1).normal(size=(n, TOKENS, WIDTH)).astype("float32")


def run(model, x):
    return ops.convert_to_numpy(model(x, training=False))


def weights(model, name):
    layer = model.get_layer(name)
    return ops.convert_to_numpy(layer.kernel), ops.convert_to_numpy(layer.bias)


def attention_oracle(model, x, kept):
    """The block in numpy with only the heads `kept`, from the unpruned model's weights."""
    (wq, bq), (wk, bk), (wv, bv) = (weights(model, n) for n in "qkv")
    wo, bo = weights(model, "proj")
    wl, bl = weights(model, "logits")
    merged = np.zeros((x.shape[0], TOKENS, WIDTH))
    for h in kept:
        cols = slice(h * DEPTH, (h + 1) * DEPTH)
        q, k, v = (x @ w[:, cols] + b[cols] for w, b in ((wq, bq), (wk, bk), (wv, bv)))
        s = q @ k.transpose(0, 2, 1) * DEPTH**-0.5
        p = np.exp(s - s.max(-1, keepdims=True))
        merged[..., cols] = p / p.sum(-1, keepdims=True) @ v
    return (x + merged @ wo + bo) @ wl + bl


def head_scores_oracle(model):
    """l2 per head: each kernel's per-head norm over its mean, summed (biases excluded)."""
    total = 0
    for name, axis in (("q", 1), ("k", 1), ("v", 1), ("proj", 0)):
        kernel = np.moveaxis(weights(model, name)[0], axis, 0).reshape(HEADS, -1)
        norm = np.sqrt((kernel**2).sum(axis=1))
        total = total + norm / norm.mean()
    return total


def test_heads_split_by_a_reshape_are_one_group_of_query_key_value_and_output():
    (group,) = [g for g in channel_groups(raw_attention()) if g.size == HEADS]
    roles = {m.name: m.role for m in group.members}
    assert group.prunable
    assert {n: roles[n] for n in ("q", "k", "v", "proj")} == {
        "q": "produces",
        "k": "produces",
        "v": "produces",
        "proj": "reads",
    }


@pytest.mark.parametrize("reshape_layer", [False, True])
def test_removed_heads_compute_the_numpy_attention_of_the_kept_heads(reshape_layer):
    model, x = raw_attention(reshape_layer), sample()
    kept = np.sort(np.argsort(head_scores_oracle(model), kind="stable")[1:])  # one head goes
    pruned = prune_channels(model, 1 / HEADS, layers=["q"])
    columns = np.concatenate([np.arange(h * DEPTH, (h + 1) * DEPTH) for h in kept])
    for name in "qkv":
        np.testing.assert_array_equal(weights(pruned, name)[0], weights(model, name)[0][:, columns])
    np.testing.assert_array_equal(weights(pruned, "proj")[0], weights(model, "proj")[0][columns])
    np.testing.assert_allclose(run(pruned, x), attention_oracle(model, x, kept), atol=1e-4)
    masked = prune_channels(model, 1 / HEADS, layers=["q"], mode="mask")
    np.testing.assert_allclose(run(pruned, x), run(masked, x), atol=1e-5)


def test_expand_coupling_masks_the_query_exactly():
    model, x = raw_attention(), sample()
    removed = prune_channels(model, 0.5, layers=["q"], coupling="expand")
    masked = prune_channels(model, 0.5, layers=["q"], coupling="expand", mode="mask")
    np.testing.assert_allclose(run(removed, x), run(masked, x), atol=1e-5)
    assert not np.allclose(run(masked, x), run(model, x), atol=1e-3)


def test_head_layers_name_one_projection_per_group_of_heads():
    (layer,) = head_layers(raw_attention())  # any of them selects the whole group
    assert layer.name in ("q", "k", "v")
    x = keras.Input((TOKENS, WIDTH))
    attention = keras.layers.MultiHeadAttention(HEADS, DEPTH, name="mha")
    model = keras.Model(x, keras.layers.Dense(4)(attention(x, x)))
    assert [layer.name for layer in head_layers(model)] == ["mha"]


def test_a_fraction_leaving_no_head_is_refused_and_the_model_untouched():
    model = raw_attention()
    before = [ops.convert_to_numpy(w).copy() for w in model.weights]
    with pytest.raises(ValueError, match="all 3 heads of layer 'q'"):
        prune_channels(model, 0.9, layers=["q"])
    for old, new in zip(before, model.weights, strict=True):
        np.testing.assert_array_equal(old, ops.convert_to_numpy(new))


def test_heads_mixed_by_a_reduction_are_not_pruned():
    model = raw_attention(mix_heads=True)
    (group,) = [g for g in channel_groups(model) if ("q", "produces") in _roles(g)]
    assert any("does not keep attention heads apart" in reason for reason in group.blocked)
    with pytest.warns(UserWarning, match="Channels of layer 'q' are not pruned"):
        pruned = prune_channels(model, 0.5, layers=["q"])
    assert pruned.count_params() == model.count_params()


def _roles(group):
    return [(m.name, m.role) for m in group.members]


def test_count_macs_counts_the_attention_matmuls():
    dense = TOKENS * WIDTH * (4 * WIDTH + 4)  # q, k, v, proj and the logits
    matmuls = 2 * HEADS * TOKENS * TOKENS * DEPTH  # scores and their weighted values
    model = raw_attention()
    assert count_macs(model) == dense + matmuls
    pruned = prune_channels(model, 1 / HEADS, layers=["q"])
    kept = (HEADS - 1) / HEADS
    assert count_macs(pruned) == TOKENS * WIDTH * (4 * WIDTH * kept + 4) + matmuls * kept


def test_pruned_heads_survive_keras_save(tmp_path):
    model, x = raw_attention(reshape_layer=True), sample()
    pruned = prune_channels(model, 1 / HEADS, layers=head_layers(model))
    pruned.save(tmp_path / "pruned.keras")
    loaded = keras.models.load_model(tmp_path / "pruned.keras")
    np.testing.assert_allclose(run(loaded, x), run(pruned, x), atol=1e-6)


def test_a_history_removing_part_of_a_head_is_refused():
    partial = [LayerPruning(name, WIDTH, [0, 1]) for name in "qkv"]  # half of head 0
    with pytest.raises(ValueError, match="removes part of a unit of 4 channels"):
        replay(raw_attention(), PruningHistory(partial, "group", "remove"))


def test_a_constant_varying_along_the_heads_blocks_them():
    """`x * c` with `c` of shape `(1, H, 1, 1)` weighs each head differently: the heads are
    kept apart, but the constant cannot be narrowed with them, so they are not pruned."""
    inputs = keras.Input((TOKENS, WIDTH))
    q = keras.layers.Dense(WIDTH, name="q")(inputs)
    heads = ops.transpose(ops.reshape(q, (-1, TOKENS, HEADS, DEPTH)), (0, 2, 1, 3))
    heads = heads * np.arange(1.0, HEADS + 1, dtype="float32").reshape(1, HEADS, 1, 1)
    merged = ops.reshape(ops.transpose(heads, (0, 2, 1, 3)), (-1, TOKENS, WIDTH))
    model = keras.Model(inputs, keras.layers.Dense(4)(merged))
    (group,) = [g for g in channel_groups(model) if ("q", "produces") in _roles(g)]
    assert not group.prunable
