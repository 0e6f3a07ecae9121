"""Names in pruned models: a layer keeps its name where no other layer of the inlined graph has
it, else gets its path (keras-hub names a dense layer of every transformer block `dense_1`), so
a pruned layer is found by its block; compensation refits the right block's layer."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_topo.pruning import prune_channels, replay


class Block(keras.layers.Layer):
    """Dense `fc` (hidden) -> ReLU -> Dense `proj` (width) on `(N, width)`: every block's
    sublayers carry the same names."""

    def __init__(self, hidden, width, **kwargs):
        super().__init__(**kwargs)
        self.fc = keras.layers.Dense(hidden, activation="relu", name="fc")
        self.proj = keras.layers.Dense(width, name="proj")

    def call(self, x):
        return self.proj(self.fc(x))


def blocks_model(seed=0, name="net"):
    """Input (4) -> Block a (6) -> Block b (8) -> Dense mid (5) -> Dense head (3)."""
    inputs = keras.Input((4,))
    x = Block(6, 4, name="block_a")(inputs)
    x = Block(8, 4, name="block_b")(x)
    x = keras.layers.Dense(5, name="mid")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(x), name=name)
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    return model


def layer_names(model):
    """Sorted names of `model`'s layers, inputs left out."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    return sorted(layer.name for layer in layers)


def run(model, x):
    return ops.convert_to_numpy(model(x, training=False))


def sample(n=32, seed=1):
    return np.random.default_rng(seed).normal(size=(n, 4)).astype("float32")


PATH_NAMES = ["block_a_fc", "block_a_proj", "block_b_fc", "block_b_proj", "head", "mid"]


def test_group_rebuild_names_colliding_layers_by_path():
    model = blocks_model()
    fcs = lambda layer: layer.name == "fc"  # noqa: E731
    removed = prune_channels(model, 0.5, layers=fcs, mode="remove")
    masked = prune_channels(model, 0.5, layers=fcs, mode="mask")
    for pruned in (removed, masked):
        assert layer_names(pruned) == PATH_NAMES
    assert [removed.get_layer(f"block_{b}_fc").units for b in "ab"] == [3, 4]
    np.testing.assert_array_equal(  # a carried-over layer keeps its name and weights
        ops.convert_to_numpy(removed.get_layer("mid").kernel),
        ops.convert_to_numpy(model.get_layer("mid").kernel),
    )
    x = sample()
    np.testing.assert_allclose(run(removed, x), run(masked, x), rtol=1e-5, atol=1e-5)


def test_expand_rebuild_names_colliding_layers_by_path():
    model = blocks_model()
    removed = prune_channels(model, 0.4, layers=["mid"], coupling="expand", mode="remove")
    assert removed.get_layer("mid").units == 3
    assert set(PATH_NAMES) <= set(layer_names(removed))
    masked = prune_channels(model, 0.4, layers=["mid"], coupling="expand", mode="mask")
    x = sample()
    np.testing.assert_allclose(run(removed, x), run(masked, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("nested", [False, True])
def test_compensation_refits_each_blocks_own_consumer(nested):
    """Both blocks' `proj` read a pruned `fc`: each is refit (its kernel changes from the
    uncompensated prune) under its own path name, and remove == mask; the blocks sit in the
    model itself or in a nested one (calibration probes a replay either way)."""
    model, prefix = blocks_model(), ""
    if nested:
        inputs = keras.Input((4,))
        model, prefix = keras.Model(inputs, model(inputs)), "net_"
    fcs = lambda layer: layer.name == "fc"  # noqa: E731
    x = sample()
    plain = prune_channels(model, 0.5, layers=fcs)
    refit = {
        mode: prune_channels(model, 0.5, layers=fcs, mode=mode, calibration_data=x, compensate=True)
        for mode in ("remove", "mask")
    }
    for block in ("block_a", "block_b"):
        before = ops.convert_to_numpy(plain.get_layer(f"{prefix}{block}_proj").kernel)
        after = ops.convert_to_numpy(refit["remove"].get_layer(f"{prefix}{block}_proj").kernel)
        assert before.shape == after.shape
        assert np.abs(after - before).max() > 1e-3
    np.testing.assert_allclose(run(refit["remove"], x), run(refit["mask"], x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("coupling", ["group", "expand"])
def test_colliding_layers_are_scored_recorded_and_replayed_each_under_its_path(coupling):
    """Both blocks' `fc` keep their own largest-L2 filters (not one block's scores applied to
    both); the history records each under its path; replaying it on another checkpoint keeps
    the same filters, which an oracle (that checkpoint's kept biases) confirms."""
    model = blocks_model()
    fcs = lambda layer: layer.name == "fc"  # noqa: E731
    pruned, report = prune_channels(model, 0.5, layers=fcs, coupling=coupling, report=True)
    entries = {entry.name: entry for entry in report.history.layers}
    assert sorted(entries) == ["block_a_fc", "block_b_fc"]
    for block, width in (("block_a", 6), ("block_b", 8)):
        layer = model.get_layer(block)
        norms = [np.linalg.norm(ops.convert_to_numpy(layer.fc.kernel), axis=0)]
        if coupling == "group":  # the group's consumer rows count too, each slice mean-scaled
            norms.append(np.linalg.norm(ops.convert_to_numpy(layer.proj.kernel), axis=1))
        scores = sum(norm / norm.mean() for norm in norms)
        want = np.sort(np.argsort(-scores, kind="stable")[: width // 2])
        np.testing.assert_array_equal(entries[f"{block}_fc"].kept, want)
    other = blocks_model(seed=3)
    replayed = replay(other, report.history)
    for block in ("block_a", "block_b"):
        bias = ops.convert_to_numpy(other.get_layer(block).fc.bias)
        np.testing.assert_array_equal(
            ops.convert_to_numpy(replayed.get_layer(f"{block}_fc").bias),
            bias[entries[f"{block}_fc"].kept],
        )
