"""prune_channels(criterion="redundancy", compensate=True): ranking, compensation, bad input."""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

from keras_topo import TopographicConv2D
from keras_topo.pruning import prune_channels
from keras_topo.pruning import responses as responses_module
from keras_topo.pruning.compensation import least_squares_map
from keras_topo.pruning.graph import ChannelGraph
from keras_topo.pruning.redundancy import RIDGE, map_check, neighbour_scores, redundancy_scores
from keras_topo.pruning.responses import position_indices, response_moments

CONVS = lambda layer: isinstance(layer, keras.layers.Conv2D)  # noqa: E731


def images(n, seed):
    """Spatially smooth random images `(n, 6, 6, 3)` (neighbouring pixels correlate)."""
    noise = np.random.default_rng(seed).normal(size=(n, 7, 7, 3))
    return (noise[:, 1:, 1:] + noise[:, :-1, 1:] + noise[:, 1:, :-1]).astype("float32")


def run(model, x):
    return ops.convert_to_numpy(model(x, training=False))


def relative_error(model, pruned, x):
    want = run(model, x)
    return np.abs(run(pruned, x) - want).max() / np.abs(want).max()


def set_weights(layer, **values):
    for variable in layer.weights:
        name = variable.name
        if name in values:
            variable.assign(np.asarray(values[name], dtype="float32"))


def duplicated(layer, rng):
    """Gives a conv (and its batch norm) filters equal in pairs: 2j+1 copies 2j."""
    kernel = rng.normal(size=layer.kernel.shape)
    kernel[..., 1::2] = kernel[..., 0::2]
    values = {"kernel": kernel}
    if layer.use_bias:
        bias = rng.normal(size=layer.bias.shape) * 0.3
        bias[1::2] = bias[0::2]
        values["bias"] = bias
    set_weights(layer, **values)


def randomize_batch_norm(layer, rng, pairs=False):
    c = layer.gamma.shape[0]
    values = {
        "gamma": rng.uniform(0.5, 1.5, c),
        "beta": rng.normal(0, 0.5, c),
        "moving_mean": rng.normal(0, 0.5, c),
        "moving_variance": rng.uniform(0.5, 2.0, c),
    }
    for value in values.values():
        if pairs:
            value[1::2] = value[0::2]
    set_weights(layer, **values)


def chain_model(topographic=True, duplicate=True, seed=0):
    """conv(8) -> BN -> ReLU -> conv(5) -> GAP -> dense(3); the first conv's channels on a
    line map, duplicated in neighbouring pairs when `duplicate`."""
    rng = np.random.default_rng(seed)
    conv = TopographicConv2D if topographic else keras.layers.Conv2D
    kwargs = {"topography": "line"} if topographic else {}
    inputs = keras.Input((6, 6, 3))
    x = conv(8, 3, padding="same", name="producer", **kwargs)(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(5, 3, padding="same", name="consumer")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(x))
    if duplicate:
        duplicated(model.get_layer("producer"), rng)
    randomize_batch_norm(model.get_layer("bn"), rng, pairs=duplicate)
    return model


def residual_model(duplicate=True, seed=0):
    """stem conv(8) -> ReLU -> [conv(8) -> BN] + stem -> ReLU -> conv(4, no bias) -> GAP ->
    dense(3): the stem, the branch conv and the sum are one group of 8 channels."""
    rng = np.random.default_rng(seed)
    inputs = keras.Input((6, 6, 3))
    stem = keras.layers.ReLU()(keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs))
    branch = keras.layers.Conv2D(8, 3, padding="same", name="branch")(stem)
    branch = keras.layers.BatchNormalization(name="bn")(branch)
    x = keras.layers.ReLU()(keras.layers.Add()([stem, branch]))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="after")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(x))
    if duplicate:
        duplicated(model.get_layer("stem"), rng)
        branch_layer = model.get_layer("branch")
        kernel = rng.normal(size=branch_layer.kernel.shape) * 0.3
        kernel[:, :, 1::2, :] = 0  # reads one of each pair: the pairs stay equal
        kernel[..., 1::2] = kernel[..., 0::2]
        set_weights(branch_layer, kernel=kernel, bias=np.zeros(8))
    randomize_batch_norm(model.get_layer("bn"), rng, pairs=duplicate)
    return model


def kept_producer_filters(model, pruned, name):
    """Indices of the filters of `name` that survive in a masked model."""
    kernel = ops.convert_to_numpy(pruned.get_layer(name).kernel)
    return np.flatnonzero(np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0) > 0)


@pytest.mark.parametrize("coupling", ["group", "expand"])
@pytest.mark.parametrize("mode", ["remove", "mask"])
def test_duplicated_neighbours_pruned_by_half_exactly_with_compensation(coupling, mode):
    model = chain_model()
    calibration, x = images(64, 0), images(16, 1)
    pruned = prune_channels(
        model, 0.5, "redundancy", mode=mode, coupling=coupling, calibration_data=calibration,
        compensate=True,
    )  # fmt: skip
    assert relative_error(model, pruned, x) <= 1e-4
    if mode == "mask":  # one of each duplicated pair stays
        kept = kept_producer_filters(model, pruned, "producer")
        assert sorted(kept // 2) == [0, 1, 2, 3]
    else:
        assert pruned.get_layer("producer").filters == 4


def test_duplicated_channels_change_the_output_without_compensation():
    model = chain_model()
    pruned = prune_channels(model, 0.5, "redundancy", calibration_data=images(64, 0))
    assert relative_error(model, pruned, images(16, 1)) > 1e-2


def test_map_neighbours_predict_duplicates_and_report_says_so():
    model = chain_model()
    pruned, report = prune_channels(
        model, 0.5, "redundancy", calibration_data=images(64, 0), neighbours=2, report=True,
        compensate=True, mode="mask",
    )  # fmt: skip
    assert sorted(kept_producer_filters(model, pruned, "producer") // 2) == [0, 1, 2, 3]
    details = report.groups[0].calibration
    assert details["map"]["neighbours"] > 0.999 > details["map"]["random"]
    assert details["compensated"] == ["consumer"]
    assert "map neighbours" in str(report)


@pytest.mark.parametrize("mode", ["remove", "mask"])
def test_compensation_exact_inside_a_residual_group(mode):
    model = residual_model()
    pruned = prune_channels(
        model, 0.5, "redundancy", layers="stem", mode=mode, calibration_data=images(64, 0),
        compensate=True,
    )  # fmt: skip
    assert relative_error(model, pruned, images(16, 1)) <= 1e-4


@pytest.mark.parametrize("build", [chain_model, residual_model])
def test_compensation_lowers_the_error_of_plain_removal_on_random_weights(build):
    model = build(duplicate=False, seed=3)
    layers = CONVS if build is residual_model else None
    calibration, held_out = images(128, 0), images(32, 1)
    errors = [
        relative_error(
            model,
            prune_channels(
                model,
                0.5,
                "l2",
                layers=layers,
                calibration_data=calibration if c else None,
                compensate=c,
            ),  # fmt: skip
            held_out,
        )
        for c in (False, True)
    ]
    assert errors[1] < 0.8 * errors[0]


def oracle_order(covariance):
    """Greedy removal order by the ridge residual variance, each regression solved anew."""
    lam = RIDGE * np.mean(np.diag(covariance))
    left, order = list(range(len(covariance))), []
    while left:
        residuals = []
        for i in left:
            others = [j for j in left if j != i]
            gram = covariance[np.ix_(others, others)] + lam * np.eye(len(others))
            beta = np.linalg.lstsq(gram, covariance[others, i], rcond=None)[0]
            residuals.append(covariance[i, i] + lam - covariance[i, others] @ beta)
        order.append(left.pop(int(np.argmin(residuals))))
    return order


def test_ranking_matches_a_numpy_oracle_of_the_residual_variance_rule():
    model = chain_model(topographic=False, duplicate=False, seed=5)
    calibration = images(64, 0)
    probe = keras.Model(model.inputs[0], model.get_layer("consumer").input)
    responses = run(probe, calibration).reshape(-1, 8).astype("float64")
    covariance = np.cov(responses, rowvar=False, bias=True)
    order = oracle_order(covariance)
    assert np.array_equal(np.argsort(redundancy_scores(covariance)), order)
    pruned = prune_channels(
        model, 0.375, "redundancy", layers="producer", mode="mask", calibration_data=calibration
    )
    assert np.array_equal(kept_producer_filters(model, pruned, "producer"), np.sort(order[3:]))


def test_neighbour_ranking_with_every_channel_a_neighbour_is_the_full_ranking():
    rng = np.random.default_rng(0)
    factors = rng.normal(size=(200, 4))
    samples = factors @ rng.normal(size=(4, 7)) + 0.3 * rng.normal(size=(200, 7))
    covariance = np.cov(samples, rowvar=False)
    positions = rng.normal(size=(7, 2))
    np.testing.assert_array_equal(
        neighbour_scores(covariance, positions, 6), redundancy_scores(covariance)
    )


def test_dead_channels_are_regularised_never_nan():
    model = chain_model(topographic=False, duplicate=False)
    producer = model.get_layer("producer")
    kernel = ops.convert_to_numpy(producer.kernel)
    kernel[..., :4] = 0  # four dead channels: constant after batch norm and ReLU
    set_weights(producer, kernel=kernel)
    for criterion in ("l1", "redundancy"):  # l1 keeps two dead channels: a singular system
        pruned = prune_channels(
            model, 0.25, criterion, layers="producer", calibration_data=images(32, 0),
            compensate=True,
        )  # fmt: skip
        assert all(np.all(np.isfinite(ops.convert_to_numpy(w))) for w in pruned.weights)
        assert relative_error(model, pruned, images(8, 1)) <= 1e-4


def weights_of(model):
    return [ops.convert_to_numpy(w).copy() for w in model.weights]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"criterion": "redundancy"}, "needs calibration_data"),
        ({"compensate": True}, "needs calibration_data"),
        ({"compensate": 1, "calibration_data": images(4, 0)}, "compensate must be"),
        ({"criterion": "redundancy", "calibration_data": np.zeros((4, 6, 5, 3))}, "shape"),
        ({"criterion": "redundancy", "calibration_data": np.zeros((6, 6, 3))}, "shape"),
        ({"compensate": True, "calibration_data": np.full((4, 6, 6, 3), np.nan)}, "finite"),
        ({"criterion": "redundancy", "calibration_data": images(4, 0), "scope": "global"},
         'scope="layer"'),
        ({"criterion": "l2", "neighbours": 2}, "redundancy"),
    ],
)  # fmt: skip
def test_bad_input_raises_before_anything_changes(kwargs, message):
    model = chain_model()
    before = weights_of(model)
    with pytest.raises(ValueError, match=message):
        prune_channels(model, 0.5, **kwargs)
    for a, b in zip(before, weights_of(model), strict=True):
        np.testing.assert_array_equal(a, b)


def test_non_finite_responses_raise():
    model = chain_model(duplicate=False)
    set_weights(model.get_layer("producer"), kernel=np.full((3, 3, 3, 8), 3e38))
    before = weights_of(model)
    with pytest.raises(ValueError, match="not finite"):
        prune_channels(
            model, 0.5, "redundancy", calibration_data=np.ones((4, 6, 6, 3)), compensate=True
        )
    for a, b in zip(before, weights_of(model), strict=True):
        np.testing.assert_array_equal(a, b)


def test_neighbours_need_a_topographic_group():
    model = chain_model(topographic=False)
    with pytest.raises(ValueError, match="topographic positions"):
        prune_channels(
            model, 0.5, "redundancy", layers="producer", calibration_data=images(8, 0),
            neighbours=2,
        )  # fmt: skip


def test_expand_compensation_refuses_a_summed_layer():
    model = residual_model()
    with pytest.raises(ValueError, match='coupling="group"'):
        prune_channels(
            model, 0.5, layers="branch", coupling="expand", calibration_data=images(8, 0),
            compensate=True,
        )  # fmt: skip


def test_a_separable_consumer_is_named_not_compensated():
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="producer")(inputs)
    x = keras.layers.SeparableConv2D(4, 3, padding="same", name="separable")(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))
    with pytest.warns(UserWarning, match="separable"):
        _, report = prune_channels(
            model, 0.5, layers="producer", calibration_data=images(8, 0), compensate=True,
            report=True,
        )  # fmt: skip
    assert report.groups[0].calibration["not compensated"] == ["separable"]


def consumer_responses(model, x):
    """The consumer's input `(samples, 8)` over `x` (all positions), float64."""
    probe = keras.Model(model.inputs[0], model.get_layer("consumer").input)
    return run(probe, x).reshape(-1, 8).astype("float64")


def consumer_moments(model, x):
    """`Moments` of the consumer's input, by the pruner's calibration pass."""
    graph = ChannelGraph(model)
    key = next(call for call in graph.calls if call.op.name == "consumer").inputs[0]
    return response_moments(graph, [key], [x])[key]


def test_compensation_fit_is_least_squares_on_the_stacked_responses():
    model = chain_model(topographic=False, duplicate=False, seed=2)
    x = images(32, 0)
    kept, removed = np.array([0, 2, 3, 5, 6]), np.array([1, 4, 7])
    coefficients, offset = least_squares_map(
        consumer_moments(model, x), np.arange(8), kept, removed, intercept=True
    )
    responses = consumer_responses(model, x)  # 32 images x 36 positions
    design = np.column_stack([responses[:, kept], np.ones(len(responses))])
    want = np.linalg.lstsq(design, responses[:, removed], rcond=None)[0]
    np.testing.assert_allclose(coefficients, want[:-1], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(offset, want[-1], rtol=1e-4, atol=1e-6)


def test_calibration_samples_the_same_positions_of_every_image(monkeypatch):
    monkeypatch.setattr(responses_module, "CALIBRATION_POSITIONS", 10)
    model = chain_model(topographic=False, duplicate=False, seed=2)
    x = images(16, 0)
    moments = consumer_moments(model, x)
    chosen = consumer_responses(model, x).reshape(16, 36, 8)[:, position_indices(36, 10)]
    chosen = chosen.reshape(-1, 8)
    assert moments.count == 160 and len(set(position_indices(36, 10))) == 10
    # float32 responses from two forward passes (batched differently): equal to ~1e-6
    np.testing.assert_allclose(moments.mean, chosen.mean(axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        moments.covariance(), np.cov(chosen, rowvar=False, bias=True), rtol=1e-5, atol=1e-7
    )


def test_map_check_counts_live_channels_only_and_warns_nothing():
    rng = np.random.default_rng(1)
    samples = rng.normal(size=(300, 3)) @ rng.normal(size=(3, 6)) + 0.5 * rng.normal(size=(300, 6))
    samples[:, 2] = 1.0  # a dead channel: zero variance
    covariance = np.cov(samples, rowvar=False, bias=True)
    positions = np.stack([np.arange(6.0), np.zeros(6)], axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shares = map_check(covariance, positions, 2, np.random.default_rng(0))
    centred = samples - samples.mean(axis=0)
    live = [0, 1, 3, 4, 5]
    explained = []
    for i in live:
        others = centred[:, [j for j in live if j != i]]
        fit = others @ np.linalg.lstsq(others, centred[:, i], rcond=None)[0]
        explained.append(1 - np.var(centred[:, i] - fit) / np.var(centred[:, i]))
    assert shares["all"] == pytest.approx(np.mean(explained), rel=1e-5)


def test_ranking_of_a_wider_group_matches_the_oracle():
    rng = np.random.default_rng(4)
    samples = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 24))
    samples += 0.2 * rng.normal(size=samples.shape)
    samples[:, 1::5] = samples[:, ::5] + 0.01 * rng.normal(size=(400, 5))  # near-duplicates
    covariance = np.cov(samples, rowvar=False)
    assert np.array_equal(np.argsort(redundancy_scores(covariance)), oracle_order(covariance))


def test_a_nested_model_is_compensated_exactly():
    inner = chain_model()
    inputs = keras.Input((6, 6, 3))
    outer = keras.Model(inputs, keras.layers.Activation("linear")(inner(inputs)))
    pruned = prune_channels(
        outer, 0.5, "redundancy", mode="mask", calibration_data=images(64, 0), compensate=True
    )
    assert relative_error(outer, pruned, images(16, 1)) <= 1e-4
