"""Follow-ups of the keras-hub zoo: MACs inside custom layers, tracing with the model's own
shapes, unique paths for layers of different custom-layer scopes."""

import keras
import numpy as np
import pytest

from keras_topo.pruning import count_macs


class ConvBlock(keras.layers.Layer):
    """A custom block: conv 3x3 -> BN -> ReLU -> depthwise 3x3 -> conv 1x1 (channels last)."""

    def __init__(self, filters, out, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(filters, 3, padding="same", name="conv")
        self.norm = keras.layers.BatchNormalization(name="bn")
        self.depthwise = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")
        self.project = keras.layers.Conv2D(out, 1, name="project")

    def call(self, x):
        x = keras.ops.relu(self.norm(self.conv(x)))
        return self.project(self.depthwise(x))


def _flat_block(x, filters, out):
    x = keras.layers.Conv2D(filters, 3, padding="same")(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    return keras.layers.Conv2D(out, 1)(x)


def _head(x):
    return keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x))


def test_count_macs_counts_inside_custom_layers_as_the_flat_model():
    inputs = keras.Input((8, 8, 3))
    custom = keras.Model(inputs, _head(ConvBlock(6, 4)(ConvBlock(8, 5)(inputs))))
    inputs = keras.Input((8, 8, 3))
    flat = keras.Model(inputs, _head(_flat_block(_flat_block(inputs, 8, 5), 6, 4)))
    # hand count: per block, conv 3x3 (H W F 9 C_in) + depthwise (H W F 9) + conv 1x1 (H W out F)
    first = 64 * 8 * 9 * 3 + 64 * 8 * 9 + 64 * 5 * 8
    second = 64 * 6 * 9 * 5 + 64 * 6 * 9 + 64 * 4 * 6
    expected = first + second + 4 * 10
    assert count_macs(flat) == expected
    assert count_macs(custom) == expected


class MLPBlock(keras.layers.Layer):
    """Dense -> GELU -> Dropout -> Dense on tokens, its sublayers named as keras-hub's are in
    every block (`dense_1`, `dropout`, `dense_2`)."""

    def __init__(self, hidden, width, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(hidden, name="dense_1")
        self.dropout = keras.layers.Dropout(0.1, name="dropout")
        self.out = keras.layers.Dense(width, name="dense_2")

    def call(self, x):
        return self.out(self.dropout(keras.ops.gelu(self.hidden(x))))


def _blocks_model():
    inputs = keras.Input((5, 4))
    x = MLPBlock(6, 4, name="block_a")(inputs)
    x = MLPBlock(7, 4, name="block_b")(x)
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(x)))


def test_layers_of_different_custom_blocks_are_measured_under_their_paths():
    """Two blocks' `dense_1` (a flat replay would repeat "dense_1" and "dropout") are made
    topographic and measured each under its path; each score equals a numpy oracle
    of its own pre-activation responses (tokens as samples)."""
    from keras_topo import make_topographic, positions
    from keras_topo.metrics import map_scores, measure_topography

    model = _blocks_model()
    hidden_layers = lambda layer: layer.name == "dense_1"  # noqa: E731
    topographic = make_topographic(model, hidden_layers, "grid")
    x = np.random.default_rng(1).standard_normal((6, 5, 4)).astype("float32")
    got = measure_topography(topographic, x, permutations=9, shuffles=2)
    assert list(got) == ["block_a/dense_1", "block_b/dense_1"]

    def dense(layer, inputs):
        kernel, bias = (keras.ops.convert_to_numpy(w) for w in layer.weights)
        return inputs @ kernel + bias

    gelu = lambda v: keras.ops.convert_to_numpy(keras.ops.gelu(v))  # noqa: E731
    block_a, block_b = model.layers[1:3]
    hidden_a = dense(block_a.hidden, x)
    hidden_b = dense(block_b.hidden, dense(block_a.out, gelu(hidden_a)))
    for key, hidden in (("block_a/dense_1", hidden_a), ("block_b/dense_1", hidden_b)):
        samples = hidden.reshape(-1, hidden.shape[-1]).astype("float64")
        distances = positions.pairwise_distances(np.asarray(got[key]["positions"]), "euclidean")
        want = map_scores.distance_correlation(np.corrcoef(samples.T), distances)
        assert got[key]["channels"] == hidden.shape[-1]
        assert got[key]["distance_correlation"] == pytest.approx(want, abs=1e-4)


class TokensToMap(keras.layers.Layer):
    """keras-hub MiT's MixFFN pattern: reshapes with the batch size read from `ops.shape`
    (None on symbolic inputs), a depthwise conv on the map, tokens again."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.depthwise = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")

    def call(self, x):
        batch, tokens, channels = keras.ops.shape(x)
        side = int(tokens**0.5)
        x = self.depthwise(keras.ops.reshape(x, (batch, side, side, channels)))
        return keras.ops.reshape(x, (batch, -1, channels))


def test_reshapes_with_the_symbolic_batch_size_are_traced_for_any_batch():
    from keras_topo import tracing

    inputs = keras.Input((16, 3))
    block = TokensToMap()
    model = keras.Model(inputs, block(inputs))
    view = tracing.layer_view(block)
    assert view, view.reason
    assert view.model.outputs[0].shape == (None, 16, 3)  # static again after the reshapes
    x = np.random.default_rng(0).standard_normal((3, 16, 3)).astype("float32")
    kernel = keras.ops.convert_to_numpy(block.depthwise.kernel)[..., 0]  # (3, 3, C)
    padded = np.pad(x.reshape(3, 4, 4, 3), ((0, 0), (1, 1), (1, 1), (0, 0)))
    want = sum(
        padded[:, i : i + 4, j : j + 4, :] * kernel[i, j] for i in range(3) for j in range(3)
    ) + keras.ops.convert_to_numpy(block.depthwise.bias)
    got = keras.ops.convert_to_numpy(view.model(x))
    np.testing.assert_allclose(got, want.reshape(3, 16, 3), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), got, rtol=1e-6, atol=1e-6)


def _every_layer(model):
    return list(model._flatten_layers(include_self=False, recursive=True))


@pytest.mark.slow
def test_keras_hub_mit_blocks_are_traced_and_every_conv_made_topographic():
    """MiT's MixFFN and SegFormerMultiheadAttention reshape with the symbolic batch size:
    traced, every Conv2D (patch embeddings, attention's spatial reduction) is reached; its
    DropPath passes channels through (`handlers.KERAS_HUB_FOLLOWERS`), blocking no group."""
    pytest.importorskip("keras_hub")
    import hub_models

    from keras_topo import make_topographic
    from keras_topo.layer_selection import is_topographic
    from keras_topo.pruning.graph import ChannelGraph, InlinedGraph

    model = hub_models.mit()
    convs = [layer for layer in _every_layer(model) if type(layer) is keras.layers.Conv2D]
    graph = InlinedGraph(model)
    assert not {cls for cls, _ in graph.opaque.values()} & {"MixFFN", "SegFormerMultiheadAttention"}
    assert sum(type(call.op) is keras.layers.Conv2D for call in graph.calls) == len(convs) == 4
    groups = ChannelGraph(model).groups()  # DropPath (opaque: branches on training) follows
    assert not [reason for group in groups for reason in group.blocked if "drop_path" in reason]
    topographic = make_topographic(model)
    assert sum(is_topographic(layer) for layer in _every_layer(topographic)) == len(convs)
    x = hub_models.sample_data(model, 2)[0]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(topographic(x)),
        keras.ops.convert_to_numpy(model(x)),
        rtol=1e-4,
        atol=1e-4,
    )


def _traced_transformer(name, opaque):
    """keras-hub backbone `name` of `tests/hub_models.py` as a classifier, its inlined graph
    (only the custom layer class `opaque` left opaque, which warns), `make_topographic`'s
    default copy, and a batch of 2 inputs."""
    pytest.importorskip("keras_hub")
    import hub_models

    from keras_topo import make_topographic
    from keras_topo.pruning.graph import InlinedGraph

    model = getattr(hub_models, name)()
    with pytest.warns(UserWarning, match=opaque):
        graph = InlinedGraph(model)
    assert {cls for cls, _ in graph.opaque.values()} == {opaque}
    return model, graph, make_topographic(model), hub_models.sample_data(model, 2)[0]


def _topographic_names(model):
    from keras_topo.layer_selection import is_topographic

    return [layer.name for layer in _every_layer(model) if is_topographic(layer)]


def _assert_same_outputs(a, b, x):
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(a(x)), keras.ops.convert_to_numpy(b(x)), rtol=1e-4, atol=1e-4
    )


@pytest.mark.slow
def test_keras_hub_swin_blocks_are_traced_through_their_batch_arithmetic():
    """SwinTransformerBlock's window partition does Python arithmetic on the batch size:
    traced at two batch sizes, its MLP's Dense layers are reached (WindowAttention, owning its
    relative position bias table, stays opaque); `make_topographic`'s default converts the MLP
    hidden layers (its one conv only cuts patches) and keeps the function."""
    model, graph, topographic, x = _traced_transformer("swin", "WindowAttention")
    layers = _every_layer(model)
    hidden = [layer for layer in layers if layer.name == "fc1"]
    assert len(hidden) == sum(type(layer).__name__ == "WindowAttention" for layer in layers) == 2
    assert {id(layer) for layer in hidden} <= {id(call.op) for call in graph.calls}
    assert _topographic_names(topographic) == ["fc1"] * len(hidden)
    _assert_same_outputs(topographic, model, x)


@pytest.mark.slow
def test_keras_hub_deit_encoder_is_traced_through_blocks_returning_none():
    """DeiTEncoderBlock returns `(y, None)` and DeiTEncoder `ops.empty` placeholders: the
    encoder is traced, its attention and MLP layers reached (DeiTEmbeddings, owning its
    tokens, stays opaque); `make_topographic`'s default finds the MLP hidden layers although
    each block splits its MLP across two custom layers, and converting them keeps the
    function."""
    model, graph, topographic, x = _traced_transformer("deit", "DeiTEmbeddings")
    dense = [layer for layer in _every_layer(model) if type(layer) is keras.layers.Dense]
    hidden = [layer for layer in dense if layer.path.endswith("mlp/dense")]
    assert len(hidden) == 2
    assert {id(layer) for layer in dense} <= {id(call.op) for call in graph.calls}
    assert _topographic_names(topographic) == ["dense"] * len(hidden)
    _assert_same_outputs(topographic, model, x)


@pytest.mark.slow
def test_keras_hub_dinov3_encoder_is_traced_with_its_unbatched_rotary_embeddings():
    """DINOv3's encoder takes rotary position embeddings `(tokens, dim)` with no batch axis:
    checked at their own size, the encoder is traced (DINOV3Embedding, owning its tokens, stays
    opaque); the default makes the MLP `up_proj` layers topographic; pruning them removes
    what masking zeroes."""
    from keras_topo.pruning import prune_channels

    model, _, topographic, x = _traced_transformer("dinov3", "DINOV3Embedding")
    assert _topographic_names(topographic) == ["up_proj", "up_proj"]
    _assert_same_outputs(topographic, model, x)
    with pytest.warns(UserWarning):  # the embedding layer stays opaque
        removed = prune_channels(topographic, 0.5)
        masked = prune_channels(topographic, 0.5, mode="mask")
    assert removed.count_params() < topographic.count_params()
    _assert_same_outputs(removed, masked, x)


@pytest.mark.slow
def test_keras_hub_vit_mlp_layers_are_measured_each_under_its_path():
    """keras-hub's ViT names every block's MLP layer `dense_1` and dropout `dropout`."""
    pytest.importorskip("keras_hub")
    import hub_models

    from keras_topo import make_topographic
    from keras_topo.metrics import measure_topography

    model = hub_models.vit()
    topographic = make_topographic(model)
    x, y = hub_models.sample_data(model, 4)
    got = measure_topography(topographic, x, y, permutations=9, shuffles=2)
    # The backbone's name is Keras' auto name ("vi_t_backbone", "_1" when another was built).
    (backbone,) = [layer.name for layer in topographic.layers if isinstance(layer, keras.Model)]
    assert backbone.startswith("vi_t_backbone")
    blocks = [f"{backbone}/vit_encoder/transformer_block_{i}/mlp/dense_1" for i in (1, 2)]
    assert list(got) == blocks
    assert all(got[key]["channels"] == 32 for key in blocks)
    assert got[blocks[0]]["distance_correlation"] != got[blocks[1]]["distance_correlation"]


def test_calibrated_pruning_reads_responses_through_blocks_sharing_layer_names():
    """The redundancy criterion's probe replays the inlined graph, where both blocks' layers
    are named `dense_1`, `dropout`, `dense_2`: copies under unique names read the responses."""
    from keras_topo import make_topographic
    from keras_topo.pruning import prune_channels

    hidden_layers = lambda layer: layer.name == "dense_1"  # noqa: E731
    blocks = make_topographic(_blocks_model(), hidden_layers, "grid")
    inputs = keras.Input((5, 4))
    model = keras.Model(inputs, blocks(inputs))  # nested: the probe replays the graph
    x = np.random.default_rng(1).standard_normal((16, 5, 4)).astype("float32")
    pruned = {
        mode: prune_channels(model, 0.5, criterion="redundancy", calibration_data=x, mode=mode)
        for mode in ("remove", "mask")
    }
    # hidden 6 -> 3 and 7 -> 3: (4*3 + 3) + (3*4 + 4) per block, then the head Dense(4 -> 3)
    assert pruned["remove"].count_params() == 2 * (15 + 16) + 15
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(pruned["remove"](x)),
        keras.ops.convert_to_numpy(pruned["mask"](x)),
        atol=1e-4,
    )


def _relative_difference(got, want):
    got, want = (np.asarray(keras.ops.convert_to_numpy(a), "float64") for a in (got, want))
    return np.abs(got - want).max() / np.abs(want).max()


@pytest.mark.slow
def test_keras_hub_mobilenet_v5_pruned_reloads_from_keras_file(tmp_path):
    """MobileNetV5's ConvNormAct holds `Activation(lambda x: gelu(x, approximate=False))`:
    inlined, the copy saves it as the named "gelu" (`layer_saving`), and the file loads."""
    pytest.importorskip("keras_hub")
    import hub_models

    from keras_topo import make_topographic
    from keras_topo.pruning import prune_channels

    model = hub_models.mobilenet_v5()
    pruned = prune_channels(make_topographic(model), 0.5)
    assert pruned.count_params() < 0.5 * model.count_params()
    pruned.save(tmp_path / "pruned.keras")
    loaded = keras.models.load_model(tmp_path / "pruned.keras")
    x = hub_models.sample_data(model, 4)[0]
    assert _relative_difference(loaded(x), pruned(x)) <= 1e-5


@pytest.mark.slow
def test_keras_hub_dinov2_saving_that_would_lose_trained_embeddings_raises(tmp_path):
    """keras-hub 0.32's DINOV2Embedding saves its trained (interpolated) position embeddings
    only when the signed sum of their change is positive, and recomputes them on load: plain
    Keras reloads another model. keras-topo's copies check that saving at save time."""
    pytest.importorskip("keras_hub")
    import hub_models

    from keras_topo.pruning import prune_channels

    model = hub_models.dinov2()
    (embedding,) = [
        layer for layer in _every_layer(model) if type(layer).__name__ == "DINOV2Embedding"
    ]
    x = hub_models.sample_data(model, 4)[0]
    trained = embedding.interpolated_position_embeddings
    initial = keras.ops.convert_to_numpy(trained)
    change = np.abs(np.random.default_rng(0).standard_normal(trained.shape)) + 0.1
    for sign in (1.0, -1.0):  # the signed sum of (initial - trained): skipped, then synced
        trained.assign(initial + sign * 0.5 * change.astype("float32"))
        path = tmp_path / f"model_{sign:+.0f}.keras"
        model.save(path)  # plain Keras, keras-hub's saving
        plain = _relative_difference(keras.models.load_model(path)(x), model(x))
        pruned = prune_channels(model, 0.5, layers=lambda layer: layer.name == "fc1")
        if sign > 0:
            assert plain > 1e-2  # keras-hub's bug: the trained embeddings are lost
            with pytest.raises(ValueError, match="interpolated_position_embeddings"):
                pruned.save(tmp_path / "pruned.keras")
        else:
            assert plain <= 1e-5
            pruned.save(tmp_path / "pruned.keras")
            loaded = keras.models.load_model(tmp_path / "pruned.keras")
            assert _relative_difference(loaded(x), pruned(x)) <= 1e-5
