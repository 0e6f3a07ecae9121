"""Traced views of custom layers (keras_topo.tracing) and the transformations that walk them."""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

import keras_topo
from keras_topo import tracing
from keras_topo.conversion import has_topography
from keras_topo.layer_selection import is_topographic, walk_layers
from keras_topo.pruning import channel_groups, prune_channels


class ConvBnRelu(keras.layers.Layer):
    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.conv = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)
        self.bn = keras.layers.BatchNormalization()

    def call(self, x):
        return ops.relu(self.bn(self.conv(x)))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


class Residual(keras.layers.Layer):
    """conv-bn-relu, conv-bn, raw `+` with the input, raw relu."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.first = ConvBnRelu(filters)
        self.conv = keras.layers.Conv2D(filters, 3, padding="same")
        self.bn = keras.layers.BatchNormalization()

    def call(self, x):
        return ops.relu(x + self.bn(self.conv(self.first(x))))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


class OwnScale(keras.layers.Layer):
    """A conv times a variable of its own: opaque."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(filters, 1)
        self.scale = self.add_weight(shape=(filters,), initializer="ones")

    def call(self, x):
        return self.conv(x) * self.scale


class Branchy(keras.layers.Layer):
    """Python control flow on a tensor value: opaque."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(filters, 1)

    def call(self, x):
        y = self.conv(x)
        if float(ops.convert_to_numpy(ops.mean(y))) > 0:
            return y
        return -y

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)


class TrainingBranch(keras.layers.Layer):
    """Python `if training:` in its call: the trace would freeze one branch, so opaque."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(filters, 1)

    def call(self, x, training=None):
        y = self.conv(x)
        return y * 0.5 if training else y


class TrainingPassed(TrainingBranch):
    """`training` only passed on to sublayers: traced."""

    def __init__(self, filters, **kwargs):
        super().__init__(filters, **kwargs)
        self.bn = keras.layers.BatchNormalization()

    def call(self, x, training=None):
        return self.bn(self.conv(x), training=training)


class SymbolicDiffers(keras.layers.Layer):
    """Computes `2 x` on symbolic inputs and `3 x` on values: its trace is another function."""

    def call(self, x):
        return x * (2.0 if isinstance(x, keras.KerasTensor) else 3.0)


class RejectsItsConfig(keras.layers.Layer):
    """`get_config()` holds a key its constructor rejects (keras-hub's ViT patching does)."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.conv = keras.layers.Conv2D(filters, 1)

    def call(self, x):
        return self.conv(x)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "num_patches": 4}


class WithNone(keras.layers.Layer):
    """Returns `(y, None)`, as keras-hub's `DeiTEncoderBlock`: Keras refuses it as a node."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(filters, 3, padding="same")

    def call(self, x):
        return ops.relu(self.conv(x)) + x, None


class CallsWithNone(keras.layers.Layer):
    """Two `WithNone` blocks, their `None` outputs dropped; returns a constant too, as
    keras-hub's `DeiTEncoder` (`ops.empty` placeholders): traced."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [WithNone(filters) for _ in range(2)]

    def call(self, x):
        for block in self.blocks:
            x, _ = block(x)
        return x, ops.ones((2,))


class Windowed(keras.layers.Layer):
    """A conv on windows of 4 rows, partitioned with Python arithmetic on the batch size as
    Swin's window partition (`None * 2` on symbolic inputs): traced at two batch sizes."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.conv = keras.layers.Conv2D(filters, 3, padding="same")

    def call(self, x):
        batch, height, width, channels = ops.shape(x)
        windows = ops.reshape(x, (batch * (height // 4), 4, width, channels))
        y = self.conv(windows)
        return ops.reshape(y, (ops.shape(y)[0] // (height // 4), height, width, self.filters))


class BatchIndexed(keras.layers.Layer):
    """Adds each sample's index in the batch: depends on the batch size beyond reshapes."""

    def call(self, x):
        index = ops.cast(ops.arange(ops.shape(x)[0]), x.dtype)
        return x + ops.reshape(index, (-1, 1, 1, 1))


class Table(keras.layers.Layer):
    """Returns a `(8, 8)` table of its own, no batch axis (as DINOv3's rotary embeddings)."""

    def build(self, input_shape):
        self.table = self.add_weight(shape=(8, 8), initializer="random_normal")

    def call(self, x):
        return ops.convert_to_tensor(self.table)

    def compute_output_shape(self, input_shape):
        return (8, 8)


class ScaledByTable(keras.layers.Layer):
    """A conv scaled by a `(width, channels)` table: an input whose first axis is no batch."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(8, 3, padding="same")

    def call(self, x, table):
        return self.conv(x) * table


def _model(middle=None):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = ConvBnRelu(8, name="block")(x)
    if middle is not None:
        x = middle(x)
    x = Residual(8, name="residual")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="head")(x))


def _randomize_batch_norms(model):
    """Non-trivial batch-norm statistics, so that the checks see them."""
    rng = np.random.default_rng(1)
    for layer in walk_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            for variable in layer.weights:
                value = rng.uniform(0.5, 1.5, variable.shape)
                variable.assign(value.astype("float32"))


def _x(n=2):
    return np.random.default_rng(0).standard_normal((n, 8, 8, 3)).astype("float32")


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _layer(model, name):
    return next(layer for layer in walk_layers(model) if layer.name == name)


def test_traced_view_equals_the_layer_and_reuses_its_sublayers():
    model = _model()
    _randomize_batch_norms(model)
    residual = model.get_layer("residual")
    view = tracing.layer_view(residual)
    assert view, view.reason
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 8)).astype("float32")
    np.testing.assert_allclose(
        _numpy(view.model(x, training=False)), _numpy(residual(x, training=False)), atol=1e-5
    )
    inner = {id(layer) for layer in view.model.layers}
    assert {id(residual.first), id(residual.conv), id(residual.bn)} <= inner
    assert tracing.layer_view(residual) is view  # cached per layer and input signature
    tracing.clear_caches()
    again = tracing.layer_view(residual)
    assert again is not view and again.reason is None


@pytest.mark.parametrize(
    ("layer", "reason"),
    [
        (OwnScale(8), "owns variables directly"),
        (Branchy(8), "fails on symbolic inputs"),
        (TrainingBranch(8), "branches on `training`"),
        (SymbolicDiffers(), "computes another function"),
        (BatchIndexed(), "fails on symbolic inputs"),
    ],
)
def test_opaque_layers_say_why(layer, reason):
    inputs = keras.Input((8, 8, 8))
    layer(inputs)
    view = tracing.layer_view(layer)
    assert view.model is None
    assert reason in view.reason


def test_sublayers_returning_none_are_inlined_into_the_trace():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x, _ = CallsWithNone(8, name="encoder")(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    encoder = model.get_layer("encoder")
    view = tracing.layer_view(encoder)
    assert view, view.reason
    inner = {id(layer) for layer in view.model._flatten_layers(include_self=False)}
    assert {id(block.conv) for block in encoder.blocks} <= inner
    assert not inner & {id(block) for block in encoder.blocks}  # each a nested model of its call
    x = np.random.default_rng(0).standard_normal((3, 8, 8, 8)).astype("float32")
    want = x
    for block in encoder.blocks:  # numpy oracle: relu(conv(x)) + x, conv through its own call
        want = np.maximum(_numpy(block.conv(want)), 0) + want
    got, constant = view.model(x)
    np.testing.assert_allclose(_numpy(got), want, atol=1e-5)
    np.testing.assert_array_equal(_numpy(constant), np.ones(2))
    topographic = keras_topo.make_topographic(model)
    names = {layer.name for layer in walk_layers(topographic) if is_topographic(layer)}
    assert {block.conv.name for block in encoder.blocks} <= names
    np.testing.assert_allclose(
        _numpy(topographic(_x(), training=False)), _numpy(model(_x(), training=False)), atol=1e-5
    )


def test_python_arithmetic_on_the_batch_size_is_traced_for_any_batch():
    model = _model(Windowed(8, name="windowed"))
    windowed = model.get_layer("windowed")
    view = tracing.layer_view(windowed)
    assert view, view.reason
    assert view.model.inputs[0].shape == (None, 8, 8, 8)
    targets = [op.newshape for op in view.model.operations if hasattr(op, "newshape")]
    assert targets == [(-1, 4, 8, 8), (-1, 8, 8, 8)]
    for batch in (1, 7):  # neither a traced (3, 5) nor the checked (2) batch size
        x = np.random.default_rng(batch).standard_normal((batch, 8, 8, 8)).astype("float32")
        np.testing.assert_allclose(_numpy(view.model(x)), _numpy(windowed(x)), atol=1e-5)
    names = {layer.name for layer in walk_layers(keras_topo.make_topographic(model))}
    assert windowed.conv.name in names
    convs = lambda layer: isinstance(layer, keras.layers.Conv2D)  # noqa: E731
    removed = prune_channels(model, 0.5, layers=convs)
    masked = prune_channels(model, 0.5, layers=convs, mode="mask")
    np.testing.assert_allclose(
        _numpy(removed(_x(), training=False)), _numpy(masked(_x(), training=False)), atol=1e-4
    )


def test_an_input_without_a_batch_axis_is_checked_at_its_own_size():
    inputs = keras.Input((8, 8, 3))
    scaled = ScaledByTable(name="scaled")
    x = scaled(inputs, Table()(inputs))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    view = tracing.layer_view(scaled)
    assert view, view.reason
    assert [t.shape for t in view.model.inputs] == [(None, 8, 8, 3), (8, 8)]
    names = {layer.name for layer in walk_layers(keras_topo.make_topographic(model))}
    assert scaled.conv.name in names
    table = _numpy(model.layers[1].table)
    want = np.stack([_numpy(scaled.conv(x[None]))[0] * table for x in _x(3)])
    np.testing.assert_allclose(_numpy(view.model([_x(3), table])), want, atol=1e-5)


def test_training_passed_to_sublayers_is_traced():
    layer = TrainingPassed(4)
    layer(keras.Input((8, 8, 3)))
    view = tracing.layer_view(layer)
    assert view, view.reason
    x = _x()
    _randomize_batch_norms(view.model)
    for training in (False, True):  # the view follows the flag it is called with
        np.testing.assert_allclose(
            _numpy(view.model(x, training=training)),
            _numpy(layer(x, training=training)),
            atol=1e-5,
        )


def test_marks_override_the_rules():
    class Marked(ConvBnRelu):
        pass

    class Unmarked(Marked):
        pass

    tracing.mark_opaque(Marked)
    tracing.mark_traceable(Unmarked)
    inputs = keras.Input((8, 8, 3))
    marked, unmarked = Marked(4), Unmarked(4)
    marked(inputs)
    unmarked(inputs)
    assert "marked opaque" in tracing.layer_view(marked).reason
    assert tracing.layer_view(unmarked)
    assert not tracing.layer_view(keras.layers.Conv2D(2, 1))  # Keras' own: handlers
    with pytest.raises(ValueError, match="Layer subclass"):
        tracing.mark_opaque(int)


def test_make_topographic_reaches_convs_inside_custom_layers():
    model = _model()
    _randomize_batch_norms(model)
    topographic = keras_topo.make_topographic(model)
    names = sorted(layer.name for layer in walk_layers(topographic) if is_topographic(layer))
    inner = [model.get_layer("block").conv, model.get_layer("residual").first.conv]
    inner.append(model.get_layer("residual").conv)
    assert names == sorted(["stem", *(layer.name for layer in inner)])
    kinds = {type(layer) for layer in topographic.layers}
    assert ConvBnRelu not in kinds and Residual not in kinds  # changed inside: a graph
    np.testing.assert_allclose(
        _numpy(topographic(_x(), training=False)), _numpy(model(_x(), training=False)), atol=1e-5
    )
    stem_only = keras_topo.make_topographic(model, layers=["stem"])
    assert isinstance(stem_only.get_layer("block"), ConvBnRelu)  # unchanged: the user's class
    assert stem_only.get_layer("block") is not model.get_layer("block")


def test_strip_topography_round_trip():
    model = _model()
    _randomize_batch_norms(model)
    plain = keras_topo.strip_topography(keras_topo.make_topographic(model))
    assert not any(is_topographic(layer) for layer in walk_layers(plain))
    assert not has_topography(plain)
    np.testing.assert_allclose(
        _numpy(plain(_x(), training=False)), _numpy(model(_x(), training=False)), atol=1e-5
    )


def test_pruning_inside_custom_layers_remove_equals_mask():
    model = _model()
    _randomize_batch_norms(model)
    convs = lambda layer: isinstance(layer, keras.layers.Conv2D)  # noqa: E731
    removed = prune_channels(model, 0.5, layers=convs)
    masked = prune_channels(model, 0.5, layers=convs, mode="mask")
    np.testing.assert_allclose(
        _numpy(removed(_x(), training=False)), _numpy(masked(_x(), training=False)), atol=1e-4
    )
    widths = sorted(layer.filters for layer in removed.layers if convs(layer))
    assert widths == [4, 4, 4, 4]  # 8 filters each, halved; the residual sum couples two
    assert not any(isinstance(layer, (ConvBnRelu, Residual)) for layer in removed.layers)


def test_untraceable_layer_keeps_its_groups_whole():
    model = _model(OwnScale(8, name="own_scale"))
    _randomize_batch_norms(model)
    convs = lambda layer: isinstance(layer, keras.layers.Conv2D)  # noqa: E731
    with pytest.warns(UserWarning, match=r"'own_scale' \(OwnScale\): owns variables"):
        groups = channel_groups(model)
    blocked = [g for g in groups if any(m.name == "own_scale" for m in g.members)]
    assert blocked and not any(g.prunable for g in blocked)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        removed = prune_channels(model, 0.5, layers=convs)
        masked = prune_channels(model, 0.5, layers=convs, mode="mask")
    np.testing.assert_allclose(
        _numpy(removed(_x(), training=False)), _numpy(masked(_x(), training=False)), atol=1e-4
    )
    block_conv = next(
        layer
        for layer in removed.layers
        if convs(layer) and layer.name == model.get_layer("block").conv.name
    )
    assert block_conv.filters == 8  # its output enters the opaque layer: kept whole


def test_measure_finds_layers_in_nested_models_and_custom_layers():
    inner = _model()
    inputs = keras.Input((8, 8, 3))
    model = keras_topo.make_topographic(keras.Model(inputs, inner(inputs)))
    scores = keras_topo.metrics.measure_topography(model, _x(8), permutations=9, shuffles=2)
    expected = [layer.name for layer in walk_layers(model) if is_topographic(layer)]
    assert len(expected) == 4
    assert list(scores) == expected
    assert all(np.isfinite(s["distance_correlation"]) for s in scores.values())


def test_a_layer_whose_config_does_not_round_trip_is_carried_over():
    model = _model(RejectsItsConfig(8, name="rejects"))
    with pytest.raises(TypeError):
        RejectsItsConfig.from_config(model.get_layer("rejects").get_config())
    assert not has_topography(model)
    topographic = keras_topo.make_topographic(model, layers=["stem"])
    copy = topographic.get_layer("rejects")
    assert isinstance(copy, RejectsItsConfig) and copy is not model.get_layer("rejects")
    np.testing.assert_allclose(_numpy(topographic(_x())), _numpy(model(_x())), atol=1e-5)
    copy.conv.kernel.assign(np.zeros(copy.conv.kernel.shape, "float32"))  # not shared
    assert np.abs(_numpy(model.get_layer("rejects").conv.kernel)).sum() > 0
    plain = keras_topo.strip_topography(topographic)
    np.testing.assert_allclose(_numpy(plain(_x())), _numpy(topographic(_x())), atol=1e-5)


@pytest.mark.slow
def test_keras_hub_mobilenet_v3():
    pytest.importorskip("keras_hub")
    import hub_models  # the shared keras-hub builders (they import keras_hub)

    model = hub_models.mobilenet_v3()  # blocks: ConvBnActBlock, InvertedResidualBlock, ...
    _randomize_batch_norms(model)
    side = hub_models.SIDE
    x = np.random.default_rng(0).standard_normal((2, side, side, 3)).astype("float32")
    convs = [
        layer
        for layer in walk_layers(model)
        if type(layer) is keras.layers.Conv2D and layer.filters >= 3
    ]
    topographic = keras_topo.make_topographic(model)
    made = [layer for layer in walk_layers(topographic) if is_topographic(layer)]
    assert len(made) >= 0.9 * len([conv for conv in convs if not _is_squeeze(conv)])
    np.testing.assert_allclose(
        _numpy(topographic(x, training=False)), _numpy(model(x, training=False)), atol=1e-4
    )
    pick = lambda layer: type(layer) is keras.layers.Conv2D and layer.groups == 1  # noqa: E731
    removed = prune_channels(model, 0.5, layers=pick)
    masked = prune_channels(model, 0.5, layers=pick, mode="mask")
    np.testing.assert_allclose(
        _numpy(removed(x, training=False)), _numpy(masked(x, training=False)), atol=1e-4
    )
    assert removed.count_params() < 0.6 * model.count_params()


def _is_squeeze(conv):
    """A squeeze-and-excitation conv (reads a 1 x 1 pooled input): no map by default."""
    return all(d == 1 for d in conv._inbound_nodes[0].arguments.keras_tensors[0].shape[1:3])
