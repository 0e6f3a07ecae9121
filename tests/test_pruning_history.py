"""The pruning history: recorded channels, JSON round trip, replay on another checkpoint."""

import keras
import numpy as np
import pytest
from test_pruning import randomize
from test_pruning_attention import vit_like
from test_pruning_groups import ALL_CONVS, residual, run, sample
from test_pruning_raw_heads import raw_attention
from test_pruning_raw_ops import cross_stage

from keras_topo.pruning import PruningHistory, prune_channels, replay


def checkpoint(build, seed):
    """The same architecture with other weights (another checkpoint)."""
    model = build()
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(rng.normal(0.0, 0.5, variable.shape).astype("float32"))
    return randomize(model, seed=seed)


def kernels(model):
    return {
        layer.name: keras.ops.convert_to_numpy(layer.kernel)
        for layer in model.layers
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))
    }


@pytest.mark.parametrize("build", [residual, cross_stage])
def test_history_replays_the_same_channels_on_another_checkpoint(build, tmp_path):
    first, second = checkpoint(build, 1), checkpoint(build, 2)
    pruned, report = prune_channels(first, 0.5, layers=ALL_CONVS, report=True)
    history = report.history
    assert history.coupling == "group" and history.layers
    widths = {name: k.shape[-1] for name, k in kernels(first).items()}
    for entry in history.layers:  # the recorded widths are the pruned model's
        assert (entry.before, entry.after) == (
            widths[entry.name],
            kernels(pruned)[entry.name].shape[-1],
        )
    path = tmp_path / "history.json"
    history.save(path)
    assert PruningHistory.load(path).to_dict() == history.to_dict()
    replayed = replay(second, str(path))
    assert {n: k.shape for n, k in kernels(replayed).items()} == {
        n: k.shape for n, k in kernels(pruned).items()
    }
    for entry in history.layers:  # oracle: the second checkpoint's kept filters' biases
        want = keras.ops.convert_to_numpy(second.get_layer(entry.name).bias)[entry.kept]
        got = keras.ops.convert_to_numpy(replayed.get_layer(entry.name).bias)
        np.testing.assert_array_equal(got, want)
    same = replay(first, history)  # on the first checkpoint: the pruned model itself
    x = sample(first)
    np.testing.assert_allclose(run(same, x), run(pruned, x), rtol=1e-6, atol=1e-6)
    masked = replay(second, history, mode="mask")
    np.testing.assert_allclose(run(masked, x), run(replayed, x), rtol=1e-4, atol=1e-4)


def test_expand_history_replays():
    first, second = checkpoint(residual, 1), checkpoint(residual, 2)
    pruned, report = prune_channels(first, 0.5, layers=["a", "c"], coupling="expand", report=True)
    assert [(e.name, e.before, e.after) for e in report.history.layers] == [
        ("a", 8, 4),
        ("c", 6, 3),
    ]
    replayed = replay(second, PruningHistory.from_dict(report.history.to_dict()))
    for entry in report.history.layers:
        kernel = kernels(second)[entry.name][..., entry.kept]  # expand: input rows stay
        np.testing.assert_array_equal(kernels(replayed)[entry.name], kernel)


def wider_a():
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(10, 3, padding="same", name="a")(inputs)
    x = keras.layers.Conv2D(6, 3, padding="same", name="c")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x), name="wider")


def renamed():
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="other")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x), name="renamed")


@pytest.mark.parametrize(
    "build, message",
    [
        (wider_a, "layer 'a' has 10 output channels, the history was recorded with 8"),
        (renamed, "it has no layer 'a'"),
    ],
)
def test_a_history_that_does_not_fit_raises_and_leaves_the_model_untouched(build, message):
    _, report = prune_channels(checkpoint(residual, 1), 0.5, layers=ALL_CONVS, report=True)
    model = build()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=message):
        replay(model, report.history)
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def test_bad_history_files_raise():
    with pytest.raises(ValueError, match="Not a keras-topo pruning history"):
        PruningHistory.from_dict({"layers": []})
    data = {"format": "keras_topo.pruning_history", "version": 1, "coupling": "group"}
    with pytest.raises(ValueError, match=r"removed channels \[8\] must be distinct indices"):
        PruningHistory.from_dict(
            {**data, "mode": "remove", "layers": [{"name": "a", "before": 8, "removed": [8]}]}
        )


@pytest.mark.parametrize("layers", ["mha0", "q"])
def test_attention_heads_replay_from_json(layers, tmp_path):
    """Heads of an attention layer (an entry "mha0/heads") and heads split off by a reshape
    (whole heads' channels of q, k and v) replay on another checkpoint, through a JSON file."""
    build = vit_like if layers == "mha0" else raw_attention
    model, other = build(), build()
    for variable in other.weights:  # another checkpoint: other weights, same architecture
        values = keras.ops.convert_to_numpy(variable)
        variable.assign(values[..., ::-1] if values.ndim else values)
    first, report = prune_channels(model, 0.5, layers=[layers], report=True)
    assert {entry.name for entry in report.history.layers} >= (
        {"mha0/heads"} if layers == "mha0" else {"q", "k", "v"}
    )
    report.history.save(tmp_path / "history.json")
    replayed = replay(other, tmp_path / "history.json")
    assert replayed.count_params() == first.count_params()
    masked = replay(other, tmp_path / "history.json", mode="mask")
    x = np.random.default_rng(2).normal(size=(2, *model.input_shape[1:])).astype("float32")
    np.testing.assert_allclose(run(replayed, x), run(masked, x), atol=1e-5)
