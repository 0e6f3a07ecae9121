"""Topography on transformer layers: Dense, EinsumDense and MultiHeadAttention, tokens as samples."""

import keras
import numpy as np
import pytest
from keras import ops
from reference_loss import reference_loss
from scipy import stats

import keras_topo
from keras_topo import Topography, layer_selection, objectives
from keras_topo.layer_selection import is_topographic
from keras_topo.metrics import map_scores
from keras_topo.token_topography import (
    TopographicDense,
    TopographicEinsumDense,
    TopographicMultiHeadAttention,
)
from keras_topo.topographic_loss_logger import topographic_losses


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def tiny_vit(patch_embedding="dense", image=8, patch=4, hidden=8, heads=2, mlp=12, depth=2):
    """A functional ViT from keras.layers: patches, [LN, MHA, +, LN, Dense-gelu-Dense, +] x depth,
    LN, token mean, Dense head (3 classes)."""
    side = image // patch
    inputs = keras.Input((image, image, 3))
    if patch_embedding == "conv":
        x = keras.layers.Conv2D(hidden, patch, strides=patch, name="embed")(inputs)
        x = keras.layers.Reshape((side * side, hidden))(x)
    else:
        x = keras.layers.Reshape((side, patch, side, patch, 3))(inputs)
        x = keras.layers.Permute((1, 3, 2, 4, 5))(x)
        x = keras.layers.Reshape((side * side, patch * patch * 3))(x)
        x = keras.layers.Dense(hidden, name="embed")(x)
    for i in range(depth):
        y = keras.layers.LayerNormalization()(x)
        y = keras.layers.MultiHeadAttention(heads, hidden // heads, name=f"attn{i}")(y, y)
        x = keras.layers.Add()([x, y])
        y = keras.layers.LayerNormalization(name=f"ln{i}")(x)
        y = keras.layers.Dense(mlp, activation="gelu", name=f"fc{i}")(y)
        y = keras.layers.Dropout(0.1)(y)
        x = keras.layers.Add()([x, keras.layers.Dense(hidden, name=f"proj{i}")(y)])
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.LayerNormalization()(x))
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


def spatial_oracle(samples, target):
    """1 - Pearson(correlation of channels over samples, target) over pairs i < j, numpy."""
    rows, cols = np.triu_indices(samples.shape[1], 1)
    corr = np.corrcoef(samples.astype("float64"), rowvar=False)
    return 1.0 - stats.pearsonr(corr[rows, cols], target[rows, cols]).statistic


def test_dense_activation_loss_takes_every_token_as_a_sample():
    x = 1.0 + np.random.randn(3, 5, 4).astype("float32")
    layer = TopographicDense(
        6, activation="relu", topography="line", topographic_weight=2.0, bias_initializer="ones"
    )
    outputs = layer(x)
    pre = x @ to_numpy(layer.kernel) + to_numpy(layer.bias)
    np.testing.assert_allclose(to_numpy(outputs), np.maximum(pre, 0), atol=1e-6)
    # The paper's cosine over the 15 tokens of the batch (one "image" of 15 positions).
    expected = 2.0 * reference_loss(pre.reshape(1, 15, 6), keras_topo.positions.line(6))
    np.testing.assert_allclose(to_numpy(layer.losses[0]), expected, rtol=1e-5)
    per_sequence = 2.0 * reference_loss(pre, keras_topo.positions.line(6))
    assert abs(per_sequence - expected) > 1e-3  # not the per-sequence cosine of a Conv1D


@pytest.mark.parametrize("features", [4, 9])  # fewer / more inputs than units: both Gram sides
def test_dense_spatial_loss_over_tokens_matches_numpy(features):
    x = 3.0 + np.random.randn(3, 5, features).astype("float32")  # a mean the loss must remove
    layer = TopographicDense(6, topography=Topography("grid", objective="spatial"))
    layer(x)
    pre = x @ to_numpy(layer.kernel) + to_numpy(layer.bias)
    expected = spatial_oracle(pre.reshape(-1, 6), layer._target)
    np.testing.assert_allclose(to_numpy(layer.losses[0]), expected, rtol=1e-4)


def test_einsum_dense_spatial_loss_and_weights_loss_use_its_output_channel_axis():
    x = np.random.randn(2, 6, 5).astype("float32")
    spatial = TopographicEinsumDense(
        "btd,ed->bte",
        output_shape=(None, 7),
        bias_axes="e",
        topography=Topography(objective="spatial"),
    )
    spatial(x)
    kernel = to_numpy(spatial.kernel)  # (7, 5): the output channels on axis 0
    pre = np.einsum("btd,ed->bte", x, kernel) + to_numpy(spatial.bias)
    expected = spatial_oracle(pre.reshape(-1, 7), spatial._target)
    np.testing.assert_allclose(to_numpy(spatial.losses[0]), expected, rtol=1e-4)

    weights = TopographicEinsumDense(
        "btd,ed->bte", (None, 8), topography=Topography(objective="weights", shrink_factor=2)
    )
    weights(x)
    kernel = to_numpy(weights.kernel)
    expected = objectives.weight_smoothness_loss(kernel.T, 2)
    np.testing.assert_allclose(to_numpy(weights.losses[0]), to_numpy(expected), rtol=1e-5)
    wrong_axis = objectives.weight_smoothness_loss(kernel.reshape(5, 8), 2)  # axis not moved
    assert abs(to_numpy(wrong_axis) - to_numpy(expected)) > 1e-4


def test_attention_map_is_its_output_projection():
    q = np.random.randn(2, 4, 6).astype("float32")
    layer = TopographicMultiHeadAttention(
        2, 3, output_shape=5, topography=Topography(objective="weights", shrink_factor=1)
    )
    out = layer(q, q)
    assert layer.filters == 5 and to_numpy(out).shape == (2, 4, 5)
    kernel = to_numpy(layer._output_dense.kernel)  # (heads, head_dim, 5)
    expected = objectives.weight_smoothness_loss(kernel, 1)
    np.testing.assert_allclose(to_numpy(layer.losses[0]), to_numpy(expected), rtol=1e-5)

    paper = TopographicMultiHeadAttention(2, 3, output_shape=6, topography="line")
    out, scores = paper(q, q, return_attention_scores=True)
    expected = reference_loss(to_numpy(out).reshape(1, 8, 6), keras_topo.positions.line(6))
    np.testing.assert_allclose(to_numpy(paper.losses[0]), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="needs output_shape=C"):
        TopographicMultiHeadAttention(2, 3)


def attention_model(attention, width=6):
    """`x (4, width)` -> LayerNorm -> `attention(y, y)` -> + x -> Dense(3): a residual block."""
    inputs = keras.Input((4, width))
    y = keras.layers.LayerNormalization()(inputs)
    x = keras.layers.Add()([inputs, attention(y, y)])
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


def test_grouped_query_attention_map_is_its_output_projection(tmp_path):
    q = np.random.randn(2, 4, 6).astype("float32")
    layer = keras_topo.TopographicGroupedQueryAttention(
        3, 4, 2, feature_dim=6, topography=Topography(objective="weights", shrink_factor=1)
    )
    out = layer(q, q)
    assert layer.filters == 6 and to_numpy(out).shape == (2, 4, 6)
    kernel = to_numpy(layer._output_dense.kernel)  # (query heads, head_dim, 6)
    expected = objectives.weight_smoothness_loss(kernel, 1)
    np.testing.assert_allclose(to_numpy(layer.losses[0]), to_numpy(expected), rtol=1e-5)

    attention = keras.layers.GroupQueryAttention(3, 4, 2, name="gqa")
    model = attention_model(attention)
    topo = keras_topo.make_topographic(model, layers=["gqa"], topography="line")
    converted = topo.get_layer("gqa")
    assert type(converted) is keras_topo.TopographicGroupedQueryAttention
    assert converted.num_key_value_heads == 2 and converted.filters == 6
    np.testing.assert_allclose(to_numpy(topo(q)), to_numpy(model(q)), atol=1e-5)
    inner = attention(*(2 * [to_numpy(model.layers[1](q))]))  # the paper's cosine over 8 tokens
    expected = reference_loss(to_numpy(inner).reshape(1, 8, 6), keras_topo.positions.line(6))
    np.testing.assert_allclose(to_numpy(sum(topo.losses)), expected, rtol=1e-4)
    topo.save(tmp_path / "gqa.keras")
    loaded = keras.saving.load_model(tmp_path / "gqa.keras")
    np.testing.assert_allclose(to_numpy(loaded(q)), to_numpy(model(q)), atol=1e-5)
    plain = keras_topo.strip_topography(loaded)
    assert type(plain.get_layer("gqa")) is keras.layers.GroupQueryAttention
    assert plain.losses == []
    with pytest.raises(ValueError, match="needs feature_dim=C"):
        keras_topo.TopographicGroupedQueryAttention(3, 4, 2)
    with pytest.raises(ValueError, match="Pass feature_dim=query.shape"):
        keras_topo.TopographicGroupedQueryAttention(3, 4, 2, feature_dim=5)(q, q)


def test_regularizer_on_a_dense_without_tokens_takes_the_batch_as_samples():
    x = np.random.randn(6, 4).astype("float32")
    layer = keras.layers.Dense(5, activity_regularizer=keras_topo.TopographicRegularizer("line"))
    out = to_numpy(layer(x))
    expected = reference_loss(out.reshape(1, 6, 5), keras_topo.positions.line(5))
    np.testing.assert_allclose(to_numpy(layer.losses[0]), expected, rtol=1e-5)


@pytest.mark.slow  # a whole model: the TensorFlow pass (tests/conftest.py)
def test_make_topographic_on_a_vit_defaults_to_the_mlp_hidden_layers(tmp_path):
    x = np.random.randn(2, 8, 8, 3).astype("float32")
    for patch_embedding in ("dense", "conv"):  # a conv patch embedding is not a map
        model = tiny_vit(patch_embedding)
        topo = keras_topo.make_topographic(model, topography=Topography(objective="spatial"))
        chosen = [layer.name for layer in keras_topo.topographic_layers(topo)]
        assert chosen == ["fc0", "fc1"]
        np.testing.assert_allclose(to_numpy(topo(x)), to_numpy(model(x)), atol=1e-5)
        assert len(topo.losses) == 2
    topo = keras_topo.make_topographic(model, layers=["attn0", "fc1", "head"], topography="grid")
    assert [type(layer) for layer in keras_topo.topographic_layers(topo)] == [
        TopographicMultiHeadAttention,
        TopographicDense,
        TopographicDense,
    ]
    assert topo.get_layer("attn0").filters == 8
    np.testing.assert_allclose(to_numpy(topo(x)), to_numpy(model(x)), atol=1e-5)
    topo.save(tmp_path / "vit.keras")
    loaded = keras.saving.load_model(tmp_path / "vit.keras")
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), atol=1e-5)
    plain = keras_topo.strip_topography(loaded)
    assert type(plain.get_layer("attn0")) is keras.layers.MultiHeadAttention
    assert type(plain.get_layer("fc1")) is keras.layers.Dense
    assert plain.losses == [] and not keras_topo.topographic_layers(plain)
    np.testing.assert_allclose(to_numpy(plain(x)), to_numpy(model(x)), atol=1e-5)


class _MlpIn(keras.layers.Layer):
    """The first half of an MLP in a custom layer of its own (as keras-hub DeiT's `mlp`)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(8, activation="gelu", name="split_hidden")

    def call(self, x):
        return self.dense(x)


class _MlpOut(keras.layers.Layer):
    """The second half, with the residual (as keras-hub DeiT's `output_layer`)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(6, name="split_out")

    def call(self, x, residual):
        return self.dense(x) + residual


def test_mlp_hidden_rule():
    inputs = keras.Input((4, 6))
    hidden = keras.layers.Dense(8, name="hidden")(inputs)
    x = keras.layers.Activation("relu")(hidden)
    x = keras.layers.Dropout(0.1)(x)
    x = keras.layers.Dense(6, name="out")(x)
    x = keras.layers.Dense(6, name="raw_out")(ops.gelu(keras.layers.Dense(8, name="raw_hidden")(x)))
    x = _MlpOut()(_MlpIn()(x), x)  # an MLP split across two custom layers: seen through
    linear = keras.layers.Dense(5, name="linear")(x)  # no activation before the next Dense
    x = keras.layers.Dense(5, activation="relu", name="last")(keras.layers.Dense(4)(linear))
    model = keras.Model(inputs, x)
    hidden = layer_selection.mlp_hidden_layers(model)
    chosen = [layer.name for layer in layer_selection.walk_layers(model) if id(layer) in hidden]
    assert chosen == ["hidden", "raw_hidden", "split_hidden"]
    topographic = keras_topo.make_topographic(model)  # no attention, no conv: the MLP rule
    made = [
        layer.name for layer in layer_selection.walk_layers(topographic) if is_topographic(layer)
    ]
    assert sorted(made) == ["hidden", "raw_hidden", "split_hidden"]
    einsum = keras.layers.EinsumDense("btd,d->bt", output_shape=(4,))  # no channel axis
    einsum(np.zeros((1, 4, 6), "float32"))
    assert layer_selection.topographic_class(einsum) is None


@pytest.mark.slow  # a whole model: the TensorFlow pass (tests/conftest.py)
def test_a_few_training_steps_lower_the_topographic_term():
    model = tiny_vit(depth=1)
    x = np.random.randn(16, 8, 8, 3).astype("float32")
    y = np.arange(16) % 3
    for objective in ("activation", "spatial"):
        topography = Topography(objective=objective, weight=10.0)
        topo = keras_topo.make_topographic(model, topography=topography)
        # Eagerly: six steps of a tiny model cost less than tracing a training step.
        topo.compile(
            keras.optimizers.Adam(0.03), "sparse_categorical_crossentropy", run_eagerly=True
        )
        before = topographic_losses(topo, x)["topo_loss"]
        topo.fit(x, y, batch_size=16, epochs=6, verbose=0)
        after = topographic_losses(topo, x)["topo_loss"]
        assert after < 0.7 * before, (objective, before, after)


def test_neighbourhoods_covering_every_unit_give_the_full_spatial_loss():
    x = np.random.randn(2, 5, 9).astype("float32")
    target = Topography().target(9)
    full = objectives.spatial_correlation_loss(x, target)
    table = objectives.neighbour_table(Topography().positions(9), radius=2.0)
    assert table[0].shape == (9, 9) and table[1].min() == 1.0
    sampled = objectives.neighbourhood_spatial_loss(
        x, target, objectives.sample_neighbourhoods(table, 3, seed=1)
    )
    np.testing.assert_allclose(to_numpy(sampled), to_numpy(full), rtol=1e-5)


def test_sampled_neighbourhoods_match_a_numpy_oracle_and_follow_the_seed():
    samples = np.random.randn(40, 16).astype("float32")
    positions = keras_topo.positions.grid(16)  # 4 x 4 sheet, neighbours 1/3 apart
    target = keras_topo.positions.target_similarity(positions)
    indices, valid = objectives.neighbour_table(positions, radius=0.5)
    distances = keras_topo.positions.pairwise_distances(positions)
    for unit in range(16):
        np.testing.assert_array_equal(
            indices[unit][valid[unit] > 0], np.flatnonzero(distances[unit] <= 0.5)
        )
    centres = np.array([0, 5, 5, 15])
    chosen = (indices[centres], valid[centres])
    loss = objectives.neighbourhood_spatial_loss(samples, target, chosen)
    expected = np.mean(
        [
            spatial_oracle(samples[:, units], target[np.ix_(units, units)])
            for units in (np.flatnonzero(distances[c] <= 0.5) for c in centres)
        ]
    )
    np.testing.assert_allclose(to_numpy(loss), expected, rtol=1e-4)

    topography = Topography(objective="spatial", neighbourhoods=2, radius=0.5)
    draws = []
    for _ in range(2):
        keras.utils.set_random_seed(7)
        layer = TopographicDense(16, topography=topography)
        draws.append([to_numpy(layer._neighbourhoods()[0]) for _ in range(3)])
    np.testing.assert_array_equal(draws[0], draws[1])  # the same seed: the same draws
    assert any(not np.array_equal(draws[0][0], d) for d in draws[0][1:])  # new draws per step
    layer(samples[None])
    assert np.isfinite(to_numpy(layer.losses[0]))


def value_and_input_gradient(fn, x):
    """`(fn(x), d fn / d x)` as numpy, on the active backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = fn(x)
        return to_numpy(value), to_numpy(tape.gradient(value, x))
    if backend == "jax":
        import jax

        value, grad = jax.value_and_grad(fn)(x)
        return to_numpy(value), np.asarray(grad)
    import torch

    x = torch.tensor(x, requires_grad=True)
    value = fn(x)
    value.backward()
    return to_numpy(value.detach()), x.grad.numpy()


def finite_differences(fn, x, step=1e-5):
    """Central differences of a float64 numpy `fn` at every entry of `x`."""
    x = x.astype("float64")
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        shift = np.zeros_like(x)
        shift[index] = step
        grad[index] = (fn(x + shift) - fn(x - shift)) / (2 * step)
    return grad


@pytest.mark.parametrize("objective", ["activation", "spatial", "sampled"])
def test_dense_loss_from_its_inputs_matches_numpy_value_and_gradient(objective):
    """The input-side Gram (one-matmul gradient, sampled blocks read from the `(C, C)`
    covariance) against float64 numpy oracles of the outputs and their finite differences."""
    x = 1.0 + np.random.randn(2, 3, 4).astype("float32")
    sampled = objective == "sampled"
    settings = {"neighbourhoods": 2, "radius": 0.5} if sampled else {}
    topography = Topography(objective="activation" if objective == "activation" else "spatial")
    layer = TopographicDense(
        16, topography=topography.replace(**settings), bias_initializer="random_normal"
    )
    layer.build(x.shape)
    kernel, bias = to_numpy(layer.kernel).astype("float64"), to_numpy(layer.bias)
    indices, valid = objectives.neighbour_table(layer.positions, radius=0.5)
    centres = np.array([0, 9])
    if sampled:
        layer._neighbourhoods = lambda: (indices[centres], valid[centres])

    def oracle(inputs):
        pre = inputs.reshape(-1, 4) @ kernel + bias
        if objective == "activation":
            return reference_loss(pre[None], layer.positions)
        if not sampled:
            return spatial_oracle(pre, layer._target)
        chosen = [indices[c][valid[c] > 0] for c in centres]
        return np.mean([spatial_oracle(pre[:, u], layer._target[np.ix_(u, u)]) for u in chosen])

    assert layer._loss_from_inputs(x)
    value, grad = value_and_input_gradient(layer._input_side_loss, x)
    np.testing.assert_allclose(value, oracle(x), rtol=1e-4)
    np.testing.assert_allclose(grad, finite_differences(oracle, x), rtol=2e-3, atol=1e-5)


def test_neighbourhood_settings_are_validated():
    with pytest.raises(ValueError, match='"spatial"'):
        Topography(neighbourhoods=4, radius=0.2)
    with pytest.raises(ValueError, match="radius must be a positive number"):
        Topography(objective="spatial", neighbourhoods=4)
    with pytest.raises(ValueError, match="give neighbourhoods"):
        Topography(objective="spatial", radius=0.2)
    with pytest.raises(ValueError, match="larger radius"):
        objectives.neighbour_table(keras_topo.positions.grid(16), radius=0.1)


@pytest.mark.slow  # a whole model: the TensorFlow pass (tests/conftest.py)
def test_measure_topography_reads_tokens_of_the_pre_activation_output():
    model = tiny_vit()
    topo = keras_topo.make_topographic(model, layers=["fc0", "attn1"], topography="grid")
    x = np.random.randn(12, 8, 8, 3).astype("float32")
    y = np.arange(12) % 3
    scores = keras_topo.metrics.measure_topography(topo, x, y, permutations=19, shuffles=5)
    assert list(scores) == ["fc0", "attn1"] and scores["attn1"]["channels"] == 8
    layer = topo.get_layer("fc0")
    norm = to_numpy(keras.Model(topo.input, topo.get_layer("ln0").output)(x))
    pre = norm @ to_numpy(layer.kernel) + to_numpy(layer.bias)  # (12, 4 tokens, 12)
    corr = np.corrcoef(pre.reshape(-1, 12).astype("float64"), rowvar=False)
    distances = keras_topo.positions.pairwise_distances(layer.positions)
    rows, cols = np.triu_indices(12, 1)
    expected = -stats.spearmanr(corr[rows, cols], distances[rows, cols]).statistic
    assert scores["fc0"]["distance_correlation"] == pytest.approx(expected, abs=1e-4)
    pooled = pre.mean(axis=1)
    class_means = np.stack([pooled[y == k].mean(axis=0) for k in range(3)])
    selectivity = map_scores.class_selectivity(class_means)
    assert scores["fc0"]["selectivity_adjacent_morans_i"] == pytest.approx(
        map_scores.sheet_morans_i(selectivity, distances), abs=1e-4
    )


def test_sheet_morans_i_equals_the_direct_formula_on_grid_neighbours():
    values = np.random.randn(9)
    distances = keras_topo.positions.pairwise_distances(keras_topo.positions.grid(9))
    side = 3
    total, weight_sum = 0.0, 0.0
    z = values - values.mean()
    for i in range(9):
        r, c = divmod(i, side)
        neighbours = [
            (r + dr) * side + c + dc
            for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1))
            if 0 <= r + dr < side and 0 <= c + dc < side
        ]
        for j in neighbours:
            total += z[i] * z[j] / len(neighbours)
            weight_sum += 1.0 / len(neighbours)
    expected = 9 / weight_sum * total / np.sum(z**2)
    assert map_scores.sheet_morans_i(values, distances) == pytest.approx(expected, rel=1e-10)
    smooth = np.arange(9) // 3  # rows of equal values: strongly positive
    assert map_scores.sheet_morans_i(smooth, distances) > 0.4


@pytest.mark.slow  # a whole model: the TensorFlow pass (tests/conftest.py)
def test_keras_hub_vit_gets_maps_on_its_mlp_hidden_layers():
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64
    )
    x = np.random.rand(2, 32, 32, 3).astype("float32")
    topo = keras_topo.make_topographic(backbone, topography=Topography(objective="spatial"))
    chosen = keras_topo.topographic_layers(topo)  # inside the encoder's custom blocks
    assert [(type(layer), layer.filters) for layer in chosen] == [(TopographicDense, 64)] * 2
    np.testing.assert_allclose(to_numpy(topo(x)), to_numpy(backbone(x)), atol=1e-4)
    assert len(topo.losses) == 2
    plain = keras_topo.strip_topography(topo)
    assert not keras_topo.topographic_layers(plain)
    np.testing.assert_allclose(to_numpy(plain(x)), to_numpy(backbone(x)), atol=1e-4)
